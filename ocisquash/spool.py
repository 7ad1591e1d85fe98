"""Inputs that can be read only once: standard input, a named pipe.

A reader needs to seek an input (``manifest.json`` may be a tarball's last member, a parent image
is chosen from the same input as the image), but a pipe gives its bytes once, and opening a FIFO a
second time waits for a writer that never comes. So such an input is opened exactly once and copied,
decompressed, to a temporary file (in a directory the caller chooses: beside the output, where the
space is needed anyway, or ``$TMPDIR``), which is then indexed like any tarball on disk. The copy is
bounded by ``max_spool`` (and a whole tarball's decompression ratio by ``max_ratio``). The file is
unlinked as soon as it is made and read back through ``/proc/self/fd``, so nothing is left behind on
any exit, a SIGKILL included (a killed run once left 40 GB in ``$TMPDIR``). A device is no pipe:
``/dev/zero`` never ends, so a device (also on standard input) is refused, never spooled.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from typing import IO

from ocisquash import limits
from ocisquash.archive import TarTree, kind_of_mode
from ocisquash.compression import decompressing_reader
from ocisquash.errors import FormatError, OcisquashError, UsageError
from ocisquash.streams import CountingReader

SPOOL_PREFIX = ".ocisquash-input-"


def read_once(path: str) -> bool:
    """True for an input that cannot be read twice: ``-`` or a FIFO (devices and sockets are refused
    by the tarball opener, which names them)."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode  # follows links: /dev/stdin and /proc/self/fd/N name what they lead to
    except OSError:
        return False
    return stat.S_ISFIFO(mode)


def beside(dest: str | None) -> str | None:
    """Where to spool for an output ``dest``: its directory (the space is needed there anyway, and
    ``$TMPDIR`` is often a small tmpfs), or None (``$TMPDIR``) for standard output, a registry
    (``docker://``) or no output."""
    from ocisquash.registry.ref import is_registry_ref

    if dest is None or dest == "-" or is_registry_ref(dest):
        return None
    return os.path.dirname(os.path.abspath(dest))


def spool(path: str, directory: str | None = None) -> TarTree:
    """Open ``path`` (``-`` for standard input) once, copy it decompressed to a temporary file in
    ``directory`` (``$TMPDIR`` when None) and index that; the file has no name once made, and closing
    the tree frees it."""
    label = "<stdin>" if path == "-" else path
    if directory is not None and not os.path.isdir(directory):
        directory = None  # the output's own check names the missing directory
    src = _open(path, label)  # before the temporary file: a refused input leaves nothing to undo
    try:
        fd, tmp = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".tar", dir=directory)
    except OSError as e:
        src.close()
        raise FormatError(f"{label}: cannot make a temporary file to read it into: {e.strerror}",
                          hint="set TMPDIR to a writable directory") from None
    via_proc = os.path.exists(f"/proc/self/fd/{fd}")
    if via_proc:
        os.unlink(tmp)
        tmp = f"/proc/self/fd/{fd}"
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            _copy(src, out, label, directory or tempfile.gettempdir())
        return TarTree(tmp, label, temp=not via_proc, fd=fd if via_proc else None)
    except BaseException:
        os.close(fd)
        if not via_proc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        if not via_proc:
            os.close(fd)


def _open(path: str, label: str) -> IO[bytes]:
    if path == "-":
        if os.isatty(0):
            raise UsageError("refusing to read a tarball from a terminal", hint="pipe one in, or give a file")
        mode = os.fstat(0).st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise FormatError(f"{label}: is {kind_of_mode(mode)}, not an image file")
        return os.fdopen(os.dup(0), "rb")
    try:
        return open(path, "rb")  # closed by _copy
    except OSError as e:
        raise FormatError(f"{label}: cannot read: {e.strerror}") from None


def _copy(src: IO[bytes], out: IO[bytes], label: str, where: str) -> None:
    cap = limits.current().max_spool
    try:
        counted = CountingReader(src)
        reader = decompressing_reader(counted, label)  # type: ignore[arg-type]
        written = 0
        while data := reader.read(1 << 20):
            written += len(data)
            if written > cap:
                raise limits.exceeded("max_spool", f"{label}: more than {cap} bytes to hold in a temporary file "
                                                   "(a pipe can be read only once)")
            # a whole tarball has no per-layer byte cap, but a bomb is still a bomb
            limits.check_expansion(label, written, counted.count, total_cap=False)
            try:
                out.write(data)
            except OSError as e:
                raise FormatError(f"{label}: cannot hold it in a temporary file in {where}: {e.strerror}",
                                  hint="free some space there, or set TMPDIR (or write the output) elsewhere"
                                  ) from None
    except OcisquashError:
        raise
    except OSError as e:
        raise FormatError(f"{label}: cannot read: {e.strerror or e}") from None
    finally:
        src.close()
