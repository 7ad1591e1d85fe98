"""A layer's size as docker 20.10 with overlay2 reports it (``docker history`` SIZE; ``docker images`` sums them).

moby stores a layer's size when it unpacks it: overlay2's ``ApplyDiff`` unpacks the tar into the layer's
diff directory and returns ``directory.Size`` of it (``pkg/directory``): a walk with ``lstat`` that skips
directories and zero-size entries and counts every other entry's size once per inode. So a regular file
counts its size, a symlink the length of its target, a hardlink nothing more than its inode already
counts; directories, whiteouts (overlay2 makes them 0/0 character devices), opaque markers (an xattr),
devices and FIFOs count nothing. ``docker images`` SIZE is the sum over the image's layers (moby's
``roLayer.Size`` adds its parents' sizes). The tar's own bytes (headers, padding, PAX records) never count.

This module replays that from a layer's tar headers alone, without unpacking: the last entry of a path
wins, a directory replaced by a non-directory takes what was below it, a hardlink shares its target's
inode (a target the layer does not hold counts nothing, as no inode of this layer is made for it).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from ocisquash.tarheader import Header

DIRECTORY = "5"
HARDLINK = "1"
SYMLINK = "2"
REGULAR = "0"  # tarheader folds every regular-file spelling into "0"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def _clean(name: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def diff_size(headers: Iterable[Header]) -> int:
    """The size docker records for a layer whose tar has these member headers, in order."""
    inode_of: dict[str, int] = {}  # path -> inode number (an index into sizes)
    sizes: list[int] = []
    dirs: set[str] = set()
    for h in headers:
        path = _clean(h.name)
        if not path:
            continue
        head, _, base = path.rpartition("/")
        if base == OPAQUE:
            continue
        if base.startswith(WHITEOUT):  # a 0/0 character device at the deleted path: no size
            path = f"{head}/{base[len(WHITEOUT):]}" if head else base[len(WHITEOUT):]
            size = 0
        elif h.type == DIRECTORY:
            inode_of.pop(path, None)
            dirs.add(path)
            continue
        elif h.type == HARDLINK:
            target = inode_of.get(_clean(h.linkname))
            _replace(path, inode_of, dirs)
            if target is not None:
                inode_of[path] = target
            continue
        elif h.type == SYMLINK:
            size = len(h.linkname.encode("utf-8", "surrogateescape"))
        elif h.type == REGULAR:
            size = h.size
        else:  # devices, FIFOs: size 0
            size = 0
        _replace(path, inode_of, dirs)
        inode_of[path] = len(sizes)
        sizes.append(size)
    return sum(sizes[i] for i in set(inode_of.values()))


def _replace(path: str, inode_of: dict[str, int], dirs: set[str]) -> None:
    """A non-directory entry at ``path``: a directory there goes, with everything this layer put below it."""
    if path in dirs:
        dirs.discard(path)
        below = path + "/"
        for p in [p for p in inode_of if p.startswith(below)]:
            del inode_of[p]
        dirs.difference_update([d for d in dirs if d.startswith(below)])
