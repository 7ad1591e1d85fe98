"""Refuse an output path that is, or lies inside, one of the inputs, before anything is read or written.

Writing OUT replaces it (a tarball) or adds to it (a layout directory), so an OUT that resolves to an
input would destroy the input as it is read. "Resolves to" is judged by the file system, not by the
text of the paths: the same path, another name for the same file (a hardlink, a symlink, a bind
mount: the same ``st_dev`` and ``st_ino``), or any path inside an input layout directory (its
``index.json``, a blob, a new file beside them). The one case allowed is OUT *being* an input layout
directory: the image is then added to the layout beside what it holds, which is documented and
serialised by the layout lock (see ``formats.commit``).
"""

from __future__ import annotations

import os
import stat

from ocisquash.errors import UsageError


def _identity(path: str, fd: int) -> tuple[int, int, bool] | None:
    """``(st_dev, st_ino, is_dir)`` of what ``path`` names (symlinks followed), or None if nothing.
    ``-`` is the file descriptor ``fd`` (standard input or output) when it is a regular file, as in
    ``ocisquash - app.tar < app.tar``: a pipe or terminal is never an input's file."""
    try:
        st = os.fstat(fd) if path == "-" else os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        if path == "-":
            return None  # a closed standard stream
        raise
    if path == "-" and not stat.S_ISREG(st.st_mode):
        return None
    return st.st_dev, st.st_ino, stat.S_ISDIR(st.st_mode)


def _ancestors(path: str) -> list[tuple[int, int]]:
    """Identities of the existing directories above ``path`` (resolved: ``..`` and symlinks as the
    kernel follows them), nearest first."""
    here = os.path.realpath(path)
    out: list[tuple[int, int]] = []
    while True:
        parent = os.path.dirname(here)
        if parent == here:
            return out
        here = parent
        ident = _identity(here, -1)
        if ident is not None:
            out.append(ident[:2])


def refuse_overlap(out: str | None, inputs: list[tuple[str, str]]) -> None:
    """Raise ``UsageError`` (exit 2) when ``out`` would overwrite an input.

    ``inputs``: ``(what, path)`` pairs, e.g. ``("IN", "app.tar")`` or ``("--parent", "base.tar")``;
    ``-`` is standard input (for IN) or output (for OUT), compared when it is a regular file. A
    ``docker://`` reference names no file: it is never compared (a registry is not the file system).
    """
    from ocisquash.registry.ref import is_registry_ref

    if out is None or is_registry_ref(out):
        return
    out_id = _identity(out, 1)
    out_above: list[tuple[int, int]] | None = None
    shown = "standard output" if out == "-" else out
    for what, path in inputs:
        if is_registry_ref(path):
            continue
        in_id = _identity(path, 0)
        if in_id is None:
            continue
        if path == "-":
            what, path = "IN", "(standard input)"
        if out_id is not None and out_id[:2] == in_id[:2]:
            if in_id[2]:
                continue  # OUT is the input layout directory itself: add to it (documented)
            raise UsageError(f"{shown}: is the input {what} {path} (the same file); writing it would destroy the input",
                             hint="write the output to another file")
        if in_id[2] and out != "-":
            if out_above is None:
                out_above = _ancestors(out)
            if in_id[:2] in out_above:
                raise UsageError(f"{out}: is inside the input layout {what} {path}; writing it would change the input",
                                 hint="write the output outside the layout, or give the layout directory itself "
                                      "to add the image to it")


def same_file(a: str, b: str) -> bool:
    """Whether two input paths name one file (``-``, a missing path or a reference: not)."""
    try:
        return a != "-" and b != "-" and os.path.samefile(a, b)
    except (OSError, ValueError):  # missing, a reference, a pipe name: not both one file
        return False
