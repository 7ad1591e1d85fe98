"""The atomic-commit base every sink stands on: write under a temporary name, sync, rename, sync the directory.

A sink (``Sink``) writes blobs as they stream and publishes only in ``commit()``: a failed or
interrupted run leaves the old state, and ``abort()`` removes what was written. This module holds
what that takes, whatever the format: the sink base and its record of written images, the mapping of
``OSError`` to one-line output errors, background writeback so the final ``fsync`` has little left to
do, ``publish`` (rename a synced temporary into place, then sync its directory), and the lock writers
of one existing OCI layout take turns under. The formats (``ocilayout``, ``ocitar``, ``dockersave``,
``ocisquash.registry.sink``) build on it; it knows no format.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Literal, Protocol

from ocisquash import limits, model
from ocisquash.digest import Digest
from ocisquash.errors import OutputError
from ocisquash.model import Descriptor
from ocisquash.streams import Writer


@dataclass
class WrittenImage:
    """What a sink records of one image, to write the index (and manifest.json) at commit."""

    manifest: Descriptor
    config_digest: Digest
    layer_digests: list[Digest]
    tags: list[str]  # full references (``docker.io/acme/app:1.2``) or bare layout tags
    platform: model.Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)


class Reusable(Protocol):
    """A blob a sink may place without its bytes (an ``image.Layer``): its digest, and where it is read
    from (opaque but to the format that set it)."""

    @property
    def digest(self) -> Digest | None: ...

    @property
    def origin(self) -> object: ...


class Sink:
    """Base: blob writing and image bookkeeping shared by the directory and tar sinks."""

    docker: bool = False
    label: str = ""
    concurrency: Literal["none", "staged", "shared"] = "none"
    """How images may be written into this sink at once (``formats.staging``): ``shared``, its blob writes
    are safe from several threads; ``staged``, each image is staged apart and replayed in order; ``none``,
    one image after another."""

    def __init__(self) -> None:
        self.images: list[WrittenImage] = []

    # blob primitives, provided by subclasses
    def has(self, digest: Digest) -> bool:
        raise NotImplementedError

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        raise NotImplementedError

    def put_bytes(self, data: bytes) -> tuple[Digest, int]:
        def produce(w: BinaryIO) -> None:
            w.write(data)

        return self.put_stream(produce)

    def adopt_layer(self, layer: Reusable) -> bool:
        """Place ``layer`` without its bytes, when this output has it or can take it from where it is
        (containers/image's ``TryReusingBlob``); False: it is to be copied. Declines by default."""
        return False

    def add_image(self, image: WrittenImage) -> None:
        self.images.append(image)

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


_HINTS = {
    errno.ENOSPC: "free some space, or write the output to another file system",
    errno.EDQUOT: "free some space, or write the output to another file system",
    errno.EROFS: "the file system is read-only: write the output elsewhere",
    errno.EACCES: "no permission to write there: write the output elsewhere",
    errno.EPERM: "no permission to write there: write the output elsewhere",
}


def output_error(e: OSError, label: str) -> OutputError:
    """An OSError met while writing an output, as a one-line error naming the output."""
    reason = e.strerror or type(e).__name__
    reason = reason[:1].lower() + reason[1:]
    return OutputError(f"{label}: cannot write the output: {reason}", hint=_HINTS.get(e.errno or 0))


@contextlib.contextmanager
def writing(label: str) -> Iterator[None]:
    """Turns an OSError raised inside into ``output_error`` (use only around output operations)."""
    try:
        yield
    except OSError as e:
        raise output_error(e, label) from None


# Bytes written between two background fdatasyncs. The page cache holds a whole output (a 229 MB
# tar stays under vm.dirty_background_ratio), so without this the disk sees nothing until the fsync
# before the rename, which then took 0.35-0.45 s of a 3-4 s squash; syncing every 16 MiB on a thread
# left it 0.03 s (64 MiB: 0.11 s, the last step's bytes are still unwritten at the end).
WRITEBACK_STEP = 16 << 20


class Writeback:
    """Writes a file's bytes to disk while more are still being produced, so the fsync before the
    rename has little left to do: a thread runs ``fdatasync`` each time ``WRITEBACK_STEP`` more bytes
    have been written (kicks during a running fdatasync coalesce into one more). It only moves I/O
    earlier: the final fsync stays, and ``close()`` must be called before the file is closed."""

    def __init__(self, fd: int, label: str) -> None:
        self._fd = fd
        self._label = label
        self._pending = 0
        self._wake = threading.Event()
        self._stop = False
        self._kicked = False  # a step was reached: the thread owes one fdatasync, even if close() comes first
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None  # started at the first step: small files never need it

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending < WRITEBACK_STEP:
            return
        self._pending = 0
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ocisquash-writeback", daemon=True)
            self._thread.start()
        self._kicked = True
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            # A kick is served before a stop: which one the thread sees first must not decide whether the
            # error of a sync it owed is seen (under load, close() could win and skip it).
            if self._kicked:
                self._kicked = False
                try:
                    os.fdatasync(self._fd)
                except OSError as e:
                    self._error = e
                    return
            if self._stop:
                return

    def close(self) -> None:
        """Stops the thread, waiting for a running fdatasync (it uses the fd), and raises its error."""
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        # The kernel reports a writeback error once per open file: one the thread saw would not come
        # back from the final fsync, so it must be raised here.
        if self._error is not None:
            raise output_error(self._error, self._label)


class GuardedWriter(Writer, io.RawIOBase):
    """A file's write/flush with OSError mapped to OutputError: a blob's producer also reads input, so
    the mapping must sit on the output file itself, not around the producer."""

    def __init__(self, f: IO[bytes], label: str, writeback: Writeback | None = None) -> None:
        self._raw = f
        self._label = label
        self._writeback = writeback

    def write(self, data: Any) -> int:
        with writing(self._label):
            n: int = self._raw.write(data)
        if self._writeback is not None:
            self._writeback.wrote(n)
        return n

    def flush(self) -> None:
        with writing(self._label):
            super().flush()


def refuse_symlink(path: str) -> None:
    if os.path.islink(path):
        raise OutputError(f"{path}: is a symlink; refusing to write through it", hint="give the real path")

# The lock that serialises writers of one existing layout. Neither containers/image nor umoci locks
# index.json (containers/image#1028; umoci flocks only its own .umoci-* temporary directories against
# its gc), so the name is ours: it says what it guards. It exists only while a writer holds it.
LOCK_NAME = "index.json.lock"

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink",
          stat.S_IFREG: "a regular file"}


def not_regular(label: str, name: str, mode: int, want: str = "a regular file") -> OutputError:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return OutputError(f"{label}: {name} is {kind}, not {want}; refusing to write into this layout",
                       hint=f"an OCI layout has {want} there: remove {name}, or write to a new directory")


def read_regular(path: str, label: str, name: str, cap: int, cap_name: str) -> bytes:
    """A small file of an existing layout, read without ever blocking: its type is checked with
    ``lstat`` before it is opened (a FIFO would block ``open()``, a device could act on it), and again
    on the open file; the size cap is checked before anything is read."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(label, name, st.st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(label, name, st.st_mode)
        if st.st_size > cap:
            raise limits.exceeded(cap_name, f"{label}: {name} is {st.st_size} bytes, over the cap of {cap}")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise limits.exceeded(cap_name, f"{label}: {name} is over the cap of {cap} bytes")
    return data


class LayoutLock:
    """An exclusive ``flock`` on ``LOCK_NAME`` in a layout, held from the moment a sink opens an
    existing layout until its commit or abort: writers of one layout run one after another, so each
    reads ``index.json`` after the previous one wrote it, and the blobs a failed run removes are
    ones no other writer can have come to rely on.

    The file is removed on release so a layout is left as it was found. Removing a lock file is safe
    only because a locker checks, once it holds the lock, that the name still leads to the file it
    locked; if not (the holder removed it meanwhile), it locks the new one instead.
    """

    def __init__(self, root: str, label: str) -> None:
        self._path = os.path.join(root, LOCK_NAME)
        self._label = label
        self._fd: int | None = None
        while self._fd is None:
            fd = self._open()
            try:
                self._lock(fd)
                st, now = os.fstat(fd), lstat_or_none(self._path)
                if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    self._fd = fd
            finally:
                if self._fd is None:
                    os.close(fd)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(self._path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        st = lstat_or_none(self._path)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise not_regular(self._label, LOCK_NAME, st.st_mode)
        try:
            fd = os.open(self._path, flags)
        except FileNotFoundError:
            return self._open()  # its holder removed it between our two opens: create it
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise not_regular(self._label, LOCK_NAME, st.st_mode)
        return fd

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        with contextlib.suppress(OSError, ValueError):  # a closed stderr must not stop the write
            sys.stderr.write(f"note: {self._label}: waiting for another writer of this layout to finish\n")
            sys.stderr.flush()
        fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)  # while still locked: see the class docstring
        finally:
            os.close(fd)  # releases the lock


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None

def fsync_dir(path: str) -> None:
    """Make the renames and new names in directory ``path`` durable (a rename is an entry in its
    directory, which has to reach the disk too). File systems that cannot sync a directory say so
    with EINVAL; nothing more can be done there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        return  # a directory we may write but not read: the kernel's own writeback will do
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def publish(tmp: str, dest: str, directory: str) -> None:
    """Rename the synced temporary ``tmp`` over ``dest`` (atomic: a reader sees the old file or the
    whole new one), readable as a new file would be, and make the rename durable."""
    os.chmod(tmp, 0o644 & ~umask())
    os.replace(tmp, dest)
    fsync_dir(directory)
