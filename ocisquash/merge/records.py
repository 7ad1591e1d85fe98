"""What the merge takes and gives, outside the plan: layer inputs, limits, statistics, metadata.

Kept apart so every part of the merge (reader, tree, plan, writer) can use them without importing
each other.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from ocisquash import limits as limits_mod
from ocisquash.gcpause import gc_paused as gc_paused  # the merge's callers import it from here


@dataclass(frozen=True)
class LayerInput:
    """One layer as the merge sees it: a label for messages and two ways to open its tar stream.

    ``open()`` returns a fresh, sequential, decompressed tar stream that verifies the blob's digest and
    the layer's diff ID and raises ``DigestMismatch`` when its end is reached with the wrong bytes; read
    it to EOF. ``open_scan()`` returns a stream for a headers-only pass: it may be seekable (a plain tar
    on disk), so contents can be skipped with ``seek``, and need not verify. A stream that is also
    ``SkipsRest`` is finished with ``skip_rest()`` once the merge needs nothing more from it.
    """

    label: str
    open: Callable[[], BinaryIO]
    open_scan: Callable[[], BinaryIO]
    work: int = 0
    """Stored size of the layer: when the layers hold enough, pass 1 reads them in worker processes
    (measured: worth it for gzip layers and for plain ones alike, from a few tens of MB)."""
    open_once: Callable[[], BinaryIO] | None = None
    """A stream like ``open()``'s that checks the diff ID too, for ``stream``'s one read of a layer
    (needed where ``open()`` leaves that check to pass 1); None: ``open()`` does."""
    plain: bool = False
    """An uncompressed tar on disk: ``open_scan`` seeks over contents, so ``stream`` reads its headers
    alone and copies its contents from the layer itself when it writes, verifying it then, instead of
    keeping them in its temporary file (measured on the bench image's docker tar: writing 230 MB
    there cost 0.165 s, 8% of a squash)."""

    def __reduce__(self) -> tuple[type[LayerInput], tuple[object, ...]]:
        # Compiled with mypyc, a frozen dataclass unpickles by setting fields, which it refuses.
        return (LayerInput, (self.label, self.open, self.open_scan, self.work, self.open_once, self.plain))


@dataclass(frozen=True)
class MergeLimits:
    """Safety caps for untrusted layers (names as in ``ocisquash.limits``); ``LimitExceeded`` names them."""

    max_entries_per_layer: int = 600_000
    max_path: int = 4096
    """Characters of one member name or link target."""
    max_pax_header: int = 1 << 20
    """Bytes of one PAX or GNU long-name/link record (Go's archive/tar refuses more than 1 MiB too)."""
    max_symlink_hops: int = 255
    """Symlinks followed while resolving one path (the limit of umoci's securejoin)."""
    max_xattr: int = 1 << 16
    """Bytes of the extra PAX records (xattrs) one member keeps."""
    max_xattr_total: int = 64 << 20
    """Bytes of extra PAX records the members of one layer keep, in all."""
    max_paths: int = 600_000
    """Entries one merge applies, over all its layers (each path is held until the layer is written)."""

    def __reduce__(self) -> tuple[type[MergeLimits], tuple[int, ...]]:
        # see LayerInput.__reduce__; every field, or a worker would run with the defaults
        return (MergeLimits, (self.max_entries_per_layer, self.max_path, self.max_pax_header, self.max_symlink_hops,
                              self.max_xattr, self.max_xattr_total, self.max_paths))

    @classmethod
    def current(cls) -> MergeLimits:
        """The caps in force in ``ocisquash.limits`` (defaults, environment, ``--limit``)."""
        lim = limits_mod.current()
        return cls(lim.max_entries_per_layer, lim.max_path, lim.max_pax_header,
                   max_xattr=lim.max_xattr, max_xattr_total=lim.max_xattr_total, max_paths=lim.max_paths)


LARGEST_HIDDEN = 20
"""How many of the largest hidden files a plan remembers."""


@dataclass
class LayerStats:
    """What one layer holds and how much of it the layers above hide."""

    index: int
    label: str
    kept: bool
    entries: int = 0
    """Tar entries (PAX and GNU extension headers not counted)."""
    files_added: int = 0
    """Regular-file entries (hardlinks not counted)."""
    bytes_added: int = 0
    """Content bytes of those regular files."""
    hidden_files: int = 0
    """Regular files of this layer no name of the final tree still shows (overwritten or deleted)."""
    hidden_bytes: int = 0
    tar_bytes: int = 0
    """Length of the uncompressed tar stream."""


@dataclass(frozen=True, order=True)
class HiddenFile:
    """A regular file hidden by a later layer (or by a later entry of its own layer)."""

    size: int
    path: str
    layer: int

    def __reduce__(self) -> tuple[type[HiddenFile], tuple[int, str, int]]:
        # see LayerInput.__reduce__
        return (HiddenFile, (self.size, self.path, self.layer))


@dataclass
class WriteStats:
    """What ``write`` produced: entries, bytes written to ``out`` (uncompressed) and content bytes."""

    entries: int = 0
    bytes_written: int = 0
    content_bytes: int = 0
    refetched: int = 0
    """Bodies ``stream`` did not keep from its one read and copied by a second read of their layer."""


class SpoolIndex:
    """Where ``stream`` kept one layer's bodies: data offset in the layer -> offset in its spool.

    Two arrays of 8-byte numbers, 16 bytes a body, where a dict took about 100 with its int objects
    (memory per path). Bodies are added as the layer is read, so in increasing offset order.
    """

    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.keys = array("q")
        self.values = array("q")

    def add(self, offset: int, at: int) -> None:
        keys = self.keys
        if keys and offset <= keys[-1]:
            raise ValueError(f"spool index: offset {offset} after {keys[-1]}")  # read in order: never
        keys.append(offset)
        self.values.append(at)

    def get(self, offset: int) -> int | None:
        keys = self.keys
        i = bisect_left(keys, offset)
        return self.values[i] if i < len(keys) and keys[i] == offset else None

    def __contains__(self, offset: object) -> bool:
        return isinstance(offset, int) and self.get(offset) is not None

    def __len__(self) -> int:
        return len(self.keys)


# --------------------------------------------------------------------------------------------------
# File metadata, as read from a header and written back.

class Meta:
    """An entry's metadata, as read from its header and written back.

    A slotted record, one per entry: 88 bytes, where a 7-tuple takes 96 and a NamedTuple 104
    (measured with tracemalloc; memory per path is what limits a big image).
    """

    __slots__ = ("extra", "gid", "gname", "mode", "mtime", "uid", "uname")

    def __init__(
        self, mode: int, uid: int, gid: int, uname: str, gname: str, mtime: int | str,
        extra: tuple[tuple[str, str], ...] | None,
    ) -> None:
        self.mode = mode
        """Permission bits (``mode & 0o7777``)."""
        self.uid = uid
        self.gid = gid
        self.uname = uname
        self.gname = gname
        self.mtime = mtime
        """Seconds, or the PAX text when it has a fraction, so sub-second times survive unchanged."""
        self.extra = extra
        """Other PAX records (xattrs and the like), sorted; None when there are none."""

    def fields(self) -> tuple[int, int, int, str, str, int | str, tuple[tuple[str, str], ...] | None]:
        """The fields in order (what ``Meta(*fields)`` takes back)."""
        return (self.mode, self.uid, self.gid, self.uname, self.gname, self.mtime, self.extra)

    def __eq__(self, other: object) -> bool:
        return self is other or (type(other) is Meta and self.fields() == other.fields())

    def __hash__(self) -> int:
        return hash(self.fields())

    def __reduce__(self) -> tuple[type[Meta], tuple[object, ...]]:
        return (Meta, self.fields())

    def __repr__(self) -> str:
        return f"Meta{self.fields()!r}"


def _later(value: int | str, t: int) -> bool:
    """Whether a time (whole seconds, or PAX text ``[-]SECONDS[.FRACTION]``) is after ``t`` seconds.
    Compared as text, not as a float: nanoseconds would not survive one. Text that is no time (an
    ``atime`` record no reader checked) is not later."""
    if type(value) is int:
        return value > t
    text = str(value)
    secs, _, frac = text.partition(".")
    try:
        whole = int(secs)
    except ValueError:
        return False
    # -5.3 is before -5: a fraction moves a negative time down, a positive one up
    return whole > t or (whole == t and not text.startswith("-") and frac.strip("0") != "")


TIME_RECORDS = ("atime", "ctime")
"""PAX time records kept among a member's extra records (mtime is a field of its own)."""


def clamp_meta(meta: Meta, t: int) -> Meta | None:
    """``meta`` with every time later than ``t`` (mtime, and ``atime``/``ctime`` PAX records) set to
    ``t`` exactly, or None when none is later (``--rewrite-timestamp``, BuildKit's
    ``rewrite-timestamp``). A sub-second mtime clamped becomes whole seconds, so its PAX record may go
    away: the dry run sizes the clamped record, the writer writes it. atime and ctime records follow
    the mtime's rule rather than being dropped: a loader sets a file's atime from them (moby does), so
    dropping one would change the unpacked file beyond its times being clamped."""
    mtime_later = _later(meta.mtime, t)
    extra = meta.extra
    if extra is not None and any(k in TIME_RECORDS and _later(v, t) for k, v in extra):
        extra = tuple((k, str(t)) if k in TIME_RECORDS and _later(v, t) else (k, v) for k, v in extra)
    elif not mtime_later:
        return None
    return Meta(meta.mode, meta.uid, meta.gid, meta.uname, meta.gname, t if mtime_later else meta.mtime, extra)


IMPLICIT = Meta(0o755, 0, 0, "", "", 0, None)  # what umoci's MkdirAll(0777) gives under umask 022
"""A directory no entry named (a missing parent, or the root)."""
WHITEOUT_META = Meta(0o644, 0, 0, "", "", 0, None)
