"""The layer merge: many layer tar streams in, one tar stream out.

The model is two passes. ``plan()`` reads the headers of every layer (kept parent layers too) and
applies them to an in-memory metadata tree the way ``umoci unpack`` (the oracle, FORMATS.md §3) does,
so it knows the final tree and, when squashing onto kept layers, the tree those layers give. The
merged layer is the structural difference of the two trees: every path whose state differs, plus an
explicit ``.wh.NAME`` for the topmost path of each parent subtree that is gone. ``write()`` then
streams each squashed layer once, in order, and writes the merged layer: file contents are copied in
large blocks, never held in memory.

``stream()`` gives the same merge reading each squashed layer only once (a gzip layer is inflated
once, not twice): it reads them top down and writes each file's contents as they pass unless a layer
above names the path, checks those guesses against the finished plan, and asks the caller to fall
back to the two passes (``Retry``) in the rare case one was wrong. A squash uses it.

Tar parsing is our own (not ``tarfile``'s reader): PAX global headers must be ignored the Go way,
contents must be skipped by seeking, and per-member ``TarInfo`` objects would cost too much memory.
Headers are written with ``tarfile.TarInfo.tobuf``.
"""

from __future__ import annotations

import contextlib
import heapq
import io
import os
import pickle
import signal
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ocisquash import limits as limits_mod
from ocisquash.errors import FormatError, OcisquashError, OutputError, UnsafePath


@dataclass(frozen=True)
class LayerInput:
    """One layer as the merge sees it: a label for messages and two ways to open its tar stream.

    ``open()`` returns a fresh, sequential, decompressed tar stream that verifies the blob's digest and
    the layer's diff ID and raises ``DigestMismatch`` when its end is reached with the wrong bytes; read
    it to EOF. ``open_scan()`` returns a stream for a headers-only pass: it may be seekable (a plain tar
    on disk), so contents can be skipped with ``seek``, and need not verify.
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


@dataclass(frozen=True)
class MergeLimits:
    """Safety caps for untrusted layers (names as in ``ocisquash.limits``); ``LimitExceeded`` names them."""

    max_entries_per_layer: int = 10_000_000
    max_path: int = 65_536
    """Characters of one member name or link target."""
    max_pax_header: int = 1 << 20
    """Bytes of one PAX or GNU long-name/link record (Go's archive/tar refuses more than 1 MiB too)."""
    max_symlink_hops: int = 255
    """Symlinks followed while resolving one path (the limit of umoci's securejoin)."""

    @classmethod
    def current(cls) -> MergeLimits:
        """The caps in force in ``ocisquash.limits`` (defaults, environment, ``--limit``)."""
        lim = limits_mod.current()
        return cls(lim.max_entries_per_layer, lim.max_path, lim.max_pax_header)


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


@dataclass
class MergePlan:
    """The result of pass 1: statistics for ``analyze``/``--dry-run`` and the recipe ``write`` follows."""

    keep: int
    layers: list[LayerStats]
    largest_hidden: list[HiddenFile]
    """Largest hidden regular files of all layers, biggest first (``path`` is the name it was added as)."""
    dropped_files: int
    """Hidden regular files of the squashed layers: they do not reach the merged layer."""
    dropped_bytes: int
    out_entries: int
    """Entries the merged layer will hold (whiteouts included)."""
    out_whiteouts: int
    out_content_bytes: int
    final_paths: int
    """Paths in the final tree (root excluded)."""
    _head: list[tuple[str, str, _Meta | None]] = field(repr=False, default_factory=list)
    _specials: list[tuple[str, _Ino, list[str]]] = field(repr=False, default_factory=list)
    _plinks: list[tuple[str, str]] = field(repr=False, default_factory=list)
    _bodies: dict[int, dict[int, tuple[str, list[str], int, _Meta]]] = field(repr=False, default_factory=dict)
    _limits: MergeLimits = field(repr=False, default_factory=MergeLimits)
    _plink_meta: dict[str, _Meta] = field(repr=False, default_factory=dict)
    _padded: int = field(repr=False, default=0)
    _read: tuple[int, ...] = field(repr=False, default=())
    """Layers ``stream`` has read in full already: they are read again only for bodies it did not keep."""
    _spooled: dict[int, dict[int, int]] = field(repr=False, default_factory=dict)
    """Per layer, the bodies ``stream`` kept (data offset in the layer -> offset in its spool)."""

    def _pass2_layers(self) -> list[int]:
        """The layers the writer visits, in order: those with bodies to copy, and squashed ones not
        read in full yet (to verify them)."""
        n = len(self.layers)
        return sorted(set(self._bodies).union(i for i in range(self.keep, n) if i not in self._read))

    def _reread(self, i: int) -> bool:
        spooled = self._spooled.get(i, {})
        return i not in self._read or any(off not in spooled for off in self._bodies.get(i, ()))

    def bytes_to_copy(self) -> int:
        """Uncompressed bytes the writer reads from layers (what its ``progress`` callback counts up to)."""
        return sum(self.layers[i].tar_bytes for i in self._pass2_layers() if self._reread(i))

    def out_tar_bytes(self) -> int:
        """Size of the merged tar: exact for contents and padding, headers estimated at one block
        each plus one more for names over 100 bytes or extended records."""
        blocks = self.out_entries + 2
        for _, path, meta in self._head:
            if len(path) > 99 or (meta is not None and meta[6]):
                blocks += 2
        return blocks * 512 + self._padded

    def totals(self) -> dict[str, int]:
        """Figures for reports: tar bytes before/after (after estimated), squashed input bytes, drops."""
        kept = sum(s.tar_bytes for s in self.layers[: self.keep])
        return {
            "bytes_before": sum(s.tar_bytes for s in self.layers),
            "bytes_after": kept + self.out_tar_bytes(),
            "bytes_squashed": sum(s.tar_bytes for s in self.layers[self.keep :]),
            "files_dropped": self.dropped_files,
            "bytes_dropped": self.dropped_bytes,
        }


@dataclass
class WriteStats:
    """What ``write`` produced: entries, bytes written to ``out`` (uncompressed) and content bytes."""

    entries: int = 0
    bytes_written: int = 0
    content_bytes: int = 0
    refetched: int = 0
    """Bodies ``stream`` did not keep from its one read and copied by a second read of their layer."""


# --------------------------------------------------------------------------------------------------
# In-memory tree. Compact slotted records: memory grows with paths, not bytes.

# (mode & 0o7777, uid, gid, uname, gname, mtime, extra PAX records). mtime is an int, or the PAX
# string when it has a fraction, so sub-second times survive unchanged.
_Meta = tuple[int, int, int, str, str, int | str, tuple[tuple[str, str], ...] | None]
_IMPLICIT: _Meta = (0o755, 0, 0, "", "", 0, None)  # what umoci's MkdirAll(0777) gives under umask 022


class _Dir:
    __slots__ = ("children", "meta")

    def __init__(self, meta: _Meta | None) -> None:
        self.children: dict[str, _Dir | _Ino] = {}
        self.meta = meta  # None: created implicitly as a missing parent


class _Ino:
    """A non-directory inode; several names may share it (hardlinks)."""

    __slots__ = ("dev", "kind", "layer", "meta", "nlink", "ordinal", "origin", "size", "target")

    def __init__(
        self, kind: str, layer: int, ordinal: int, origin: str, size: int,
        meta: _Meta | None, target: str, dev: tuple[int, int] | None,
    ) -> None:
        self.kind = kind  # "0" regular, "2" symlink, "3" char, "4" block, "6" fifo
        self.layer = layer
        self.ordinal = ordinal  # offset of the creating entry's data in its layer: where pass 2 copies from
        self.origin = origin  # real path it was created at
        self.size = size
        self.meta = meta  # link headers to this inode carry it
        self.target = target  # symlink target
        self.dev = dev
        self.nlink = 0


_Node = _Dir | _Ino
_AUFS = frozenset((".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"))
_OPAQUE = ".wh..wh..opq"


# --------------------------------------------------------------------------------------------------
# Tar reading.

_ZERO = bytes(512)
_COPY = 1 << 20
_REFILL = 1 << 16
_SEEK_MIN = 1 << 18
_EXT_TYPES = frozenset(b"xXgLKS")
_HEADER_ONLY = frozenset("123456")
_REGULAR = frozenset(("0", "7"))
_REGULAR_FLAGS = frozenset((b"0", b"\0", b"7"))


class _Hdr:
    __slots__ = ("dev", "linkname", "meta", "name", "size", "type")

    def __init__(
        self, name: str, type_: str, size: int, linkname: str, meta: _Meta, dev: tuple[int, int]
    ) -> None:
        self.name = name
        self.type = type_
        self.size = size  # bytes of data that follow the header (0 for header-only types)
        self.linkname = linkname
        self.meta = meta
        self.dev = dev


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        if field[0] & 0x40:
            value -= 1 << (8 * len(field) - 1)
        return value
    text = field.strip(b" \x00")
    return int(text, 8) if text else 0


def _cstr(field: bytes) -> bytes:
    i = field.find(0)
    return field if i < 0 else field[:i]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class _Source:
    """A buffered reader over one layer stream that can skip contents (by seeking when it can)."""

    def __init__(self, f: BinaryIO, seek_ok: bool, label: str) -> None:
        self.f = f
        self.label = label
        self.buf = b""
        self.pos = 0
        self.end: int | None = None
        self.consumed = 0
        if seek_ok:
            try:
                if f.seekable():
                    here = f.tell()
                    self.end = f.seek(0, io.SEEK_END)
                    f.seek(here)
            except (OSError, ValueError):
                self.end = None

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at EOF."""
        avail = len(self.buf) - self.pos
        if avail >= n:
            out = self.buf[self.pos : self.pos + n]
            self.pos += n
            self.consumed += n
            return out
        parts = [self.buf[self.pos :]]
        need = n - avail
        self.buf, self.pos = b"", 0
        while need > 0:
            chunk = self.f.read(max(need, _REFILL))
            if not chunk:
                break
            if len(chunk) > need:
                parts.append(chunk[:need])
                self.buf, self.pos = chunk, need
                need = 0
            else:
                parts.append(chunk)
                need -= len(chunk)
        out = b"".join(parts)
        self.consumed += len(out)
        return out

    def skip(self, n: int) -> bool:
        """Skip ``n`` bytes; False if the stream ended first."""
        self.consumed += n
        avail = len(self.buf) - self.pos
        if avail >= n:
            self.pos += n
            return True
        n -= avail
        self.buf, self.pos = b"", 0
        if self.end is not None and n >= _SEEK_MIN:
            here = self.f.seek(n, io.SEEK_CUR)
            return here <= self.end
        while n > 0:
            chunk = self.f.read(min(n, _COPY))
            if not chunk:
                return False
            n -= len(chunk)
        return True

    def chunks(self, n: int) -> Iterator[bytes]:
        """Yield exactly ``n`` bytes in large blocks; FormatError if the stream ends first."""
        avail = len(self.buf) - self.pos
        if avail:
            take = min(avail, n)
            yield self.buf[self.pos : self.pos + take]
            self.pos += take
            self.consumed += take
            n -= take
        while n > 0:
            chunk = self.f.read(min(n, _COPY))
            if not chunk:
                raise FormatError(f"layer {self.label}: truncated tar (file contents cut short)")
            n -= len(chunk)
            self.consumed += len(chunk)
            yield chunk

    def drain(self) -> None:
        self.consumed += len(self.buf) - self.pos
        self.buf, self.pos = b"", 0
        while True:
            chunk = self.f.read(_COPY)
            if not chunk:
                return
            self.consumed += len(chunk)


def _parse_pax(data: bytes, label: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            break
        sp = data.find(b" ", pos, pos + 24)
        try:
            length = int(data[pos:sp]) if sp > pos else -1
        except ValueError:
            length = -1
        if length <= sp - pos or pos + length > n or data[pos + length - 1] != 0x0A:
            raise FormatError(f"layer {label}: malformed PAX extended header")
        rec = data[sp + 1 : pos + length - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            raise FormatError(f"layer {label}: malformed PAX record")
        out[_decode(rec[:eq])] = _decode(rec[eq + 1 :])
        pos += length
    return out


class _Reader:
    """Go-style tar reader: yields real members; PAX globals are skipped, never applied."""

    def __init__(self, src: _Source, limits: MergeLimits) -> None:
        self.src = src
        self.limits = limits
        self.label = src.label
        self.names: dict[bytes, tuple[str, str]] = {}  # decoded uname/gname, shared between entries

    def _bad(self, what: str) -> FormatError:
        return FormatError(f"layer {self.label}: {what}")

    def _block(self) -> bytes | None:
        block = self.src.read(512)
        if len(block) == 512:
            return block
        if not block:
            return None
        raise self._bad("truncated tar (a header is cut short)")

    def _ext_data(self, size: int, kind: str) -> bytes:
        if size > self.limits.max_pax_header:
            raise limits_mod.exceeded(
                "max_pax_header", f"layer {self.label}: a {kind} header of {size} bytes is too large"
            )
        padded = (size + 511) & ~511
        data = self.src.read(padded)
        if len(data) != padded:
            raise self._bad(f"truncated tar (a {kind} header is cut short)")
        return data[:size]

    def __iter__(self) -> Iterator[_Hdr]:
        pax: dict[str, str] | None = None
        longname: bytes | None = None
        longlink: bytes | None = None
        while True:
            block = self._block()
            if block is None:
                if pax is not None or longname is not None or longlink is not None:
                    raise self._bad("truncated tar (extension header without its member)")
                return
            if block == _ZERO:
                nxt = self._block()
                if nxt is None or nxt == _ZERO:
                    return
                raise self._bad("invalid tar (a single zero block followed by data)")
            try:
                try:
                    chk = int(block[148:156].rstrip(b"\x00 ") or b"0", 8)
                    size = int(block[124:136].rstrip(b"\x00") or b"0", 8)
                except ValueError:
                    chk = _octal(block[148:156])
                    size = _octal(block[124:136])
            except ValueError:
                raise self._bad("invalid tar header (bad number field)") from None
            # The checksum is the byte sum with its own field read as spaces. Adler-32's low half is
            # 1 + that byte sum mod 65521, computed in C: a congruence check first, exact sums only
            # on a mismatch (signed-byte checksums, or a corrupt header).
            field = sum(block[148:156])
            if (chk - 256 + field - (zlib.adler32(block) & 0xFFFF) + 1) % 65521:
                unsigned = sum(block) - field + 256
                signed = unsigned - 2 * sum(b for b in block if b > 127) + 2 * sum(
                    b for b in block[148:156] if b > 127
                )
                if chk not in (unsigned, signed):
                    raise self._bad("invalid tar header (checksum mismatch)")
            if size < 0:
                raise self._bad("invalid tar header (negative size)")
            t = block[156]
            if t in _EXT_TYPES:
                if t == 0x53:  # "S"
                    raise self._bad("GNU sparse files are not supported (write the layer without --sparse)")
                data = self._ext_data(size, "PAX" if t in b"xXg" else "GNU long name")
                if t == 0x67:  # "g": global records; Go readers hand them out as entries, appliers ignore
                    pax = longname = longlink = None  # they belonged to the global header
                    continue
                if t in b"xX":
                    pax = _parse_pax(data, self.label)
                elif t == 0x4C:
                    longname = _cstr(data)
                else:
                    longlink = _cstr(data)
                continue
            yield self._member(block, size, pax, longname, longlink)
            pax = longname = longlink = None

    def _member(
        self, block: bytes, size: int, pax: dict[str, str] | None,
        longname: bytes | None, longlink: bytes | None,
    ) -> _Hdr:
        type_ = chr(block[156])
        try:
            try:  # the common case: plain octal digits, NUL- or space-terminated
                mode = int(block[100:108].rstrip(b"\x00") or b"0", 8) & 0o7777
                uid = int(block[108:116].rstrip(b"\x00") or b"0", 8)
                gid = int(block[116:124].rstrip(b"\x00") or b"0", 8)
                mtime: int | str = int(block[136:148].rstrip(b"\x00") or b"0", 8)
            except ValueError:  # base-256, embedded NULs: the general parser
                mode = _octal(block[100:108]) & 0o7777
                uid = _octal(block[108:116])
                gid = _octal(block[116:124])
                mtime = _octal(block[136:148])
            dev = (_octal(block[329:337]), _octal(block[337:345])) if type_ in "34" else (0, 0)
        except ValueError:
            raise self._bad("invalid tar header (bad number field)") from None
        raw = _cstr(block[0:100])
        if block[257:263] == b"ustar\x00":  # POSIX ustar/PAX: name prefix field
            prefix = _cstr(block[345:500])
            if prefix:
                raw = prefix + b"/" + raw
        name = _decode(longname if longname is not None else raw)
        linkname = _decode(longlink if longlink is not None else _cstr(block[157:257]))
        ids = self.names
        raw_ids = block[265:329]
        both = ids.get(raw_ids)
        if both is None:
            both = ids[raw_ids] = (_decode(_cstr(block[265:297])), _decode(_cstr(block[297:329])))
        uname, gname = both
        extra: tuple[tuple[str, str], ...] | None = None
        if pax:
            rest: list[tuple[str, str]] = []
            try:
                for k, v in pax.items():
                    if k == "path":
                        if longname is None:
                            name = v
                    elif k == "linkpath":
                        if longlink is None:
                            linkname = v
                    elif k == "size":
                        size = int(v)
                    elif k == "uid":
                        uid = int(v)
                    elif k == "gid":
                        gid = int(v)
                    elif k == "uname":
                        uname = v
                    elif k == "gname":
                        gname = v
                    elif k == "mtime":
                        mtime = v if "." in v else int(v)
                        float(v)
                    elif k.startswith("GNU.sparse."):
                        raise self._bad(f"{name}: PAX sparse files are not supported")
                    elif k not in ("hdrcharset", "comment"):
                        rest.append((k, v))
            except ValueError:
                raise self._bad(f"{name}: bad numeric PAX record") from None
            if size < 0:
                raise self._bad("invalid tar header (negative size)")
            if rest:
                rest.sort()
                extra = tuple(rest)
        if type_ == "\x00":
            type_ = "5" if name.endswith("/") else "0"
        if "\x00" in name or "\x00" in linkname:
            raise self._bad(f"{name!r}: NUL in a member name")
        if len(name) > self.limits.max_path or len(linkname) > self.limits.max_path:
            raise limits_mod.exceeded("max_path", f"layer {self.label}: a member name or link target is too long")
        if type_ in _HEADER_ONLY:
            size = 0  # Go: no data follows these types, whatever the size field says
        elif type_ not in _REGULAR:
            raise self._bad(f"{name}: unsupported tar entry type {type_!r}")
        return _Hdr(name, type_, size, linkname, (mode, uid, gid, uname, gname, mtime, extra), dev)


def _is_clean(name: str) -> bool:
    """True when ``_components`` has nothing to clean in ``name`` (the common case)."""
    return "/." not in name and "//" not in name and name[:1] not in "./" and not name.endswith("/")


def _clean(name: str) -> str | None:
    """``name`` cleaned as ``_components`` does, joined again (itself when it needs no cleaning)."""
    if _is_clean(name):
        return name
    comps = _components(name)
    return "/".join(comps) if comps is not None else None


def _components(name: str) -> list[str] | None:
    """Clean a member name like umoci/containerd: strip ``/`` and ``./``, resolve ``..`` lexically.

    Returns the components (empty for the root), or None when the name escapes the root.
    """
    if _is_clean(name):
        return name.split("/")
    out: list[str] = []
    for c in name.split("/"):
        if c == "" or c == ".":
            continue
        if c == "..":
            if not out:
                return None
            out.pop()
        else:
            out.append(c)
    return out


# --------------------------------------------------------------------------------------------------
# Pass 1: apply headers to the tree.


class _Applier:
    def __init__(self, limits: MergeLimits, stats: list[LayerStats]) -> None:
        self.root = _Dir(_IMPLICIT)
        self.limits = limits
        self.stats = stats
        self.heap: list[HiddenFile] = []
        self.label = ""
        self.layer = 0
        self.upper: set[str] = set()
        self.track = True

    # ---- helpers
    def _resolve(self, comps: list[str]) -> tuple[list[str], _Node | None]:
        """Resolve a parent path through symlinks in the tree as it is now (securejoin semantics).

        Returns the real components and the node there (None when it does not exist, or lies below
        something that is not a directory).
        """
        cur = self.root
        for c in comps:  # fast path: every component is an existing directory
            node = cur.children.get(c)
            if type(node) is not _Dir:
                break
            cur = node
        else:
            return list(comps), cur
        root = self.root
        names: list[str] = []
        nodes: list[_Node | None] = []
        todo = comps[::-1]
        hops = 0
        while todo:
            c = todo.pop()
            if c == "" or c == ".":
                continue
            if c == "..":
                if names:
                    names.pop()
                    nodes.pop()
                continue
            here = nodes[-1] if nodes else root
            node = here.children.get(c) if type(here) is _Dir else None
            if type(node) is _Ino and node.kind == "2":
                hops += 1
                if hops > self.limits.max_symlink_hops:
                    raise FormatError(
                        f"layer {self.label}: too many levels of symlinks resolving {'/'.join(comps)!r}"
                    )
                target = node.target
                if target.startswith("/"):
                    names.clear()
                    nodes.clear()
                todo.extend(reversed(target.split("/")))
                continue
            names.append(c)
            nodes.append(node)
        return names, (nodes[-1] if nodes else root)

    def _mkdirs(self, names: list[str], shown: str) -> _Dir:
        cur = self.root
        for n in names:
            child = cur.children.get(n)
            if child is None:
                child = _Dir(None)
                cur.children[n] = child
            elif type(child) is not _Dir:
                raise FormatError(
                    f"layer {self.label}: {shown!r}: a parent ({'/'.join(names)!r}) is not a directory"
                )
            cur = child
        return cur

    def _drop(self, node: _Node) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            if type(n) is _Dir:
                stack.extend(n.children.values())
            else:
                assert type(n) is _Ino
                n.nlink -= 1
                if n.nlink == 0 and n.kind == "0":
                    st = self.stats[n.layer]
                    st.hidden_files += 1
                    st.hidden_bytes += n.size
                    item = HiddenFile(n.size, n.origin, n.layer)
                    if len(self.heap) < LARGEST_HIDDEN:
                        heapq.heappush(self.heap, item)
                    elif self.heap and item > self.heap[0]:
                        heapq.heapreplace(self.heap, item)

    def _whiteout(self, parent: _Dir, ppath: str, name: str | None) -> None:
        # umoci walks the target and removes every path this layer has not written (upper paths are
        # the layer's own entries and their ancestors): a whiteout never hides its own layer's entries.
        upper = self.upper
        todo = [(parent, ppath, c) for c in parent.children] if name is None else [(parent, ppath, name)]
        while todo:
            d, dpath, c = todo.pop()
            path = f"{dpath}/{c}" if dpath else c
            node = d.children[c]
            if path not in upper:
                del d.children[c]
                self._drop(node)
            elif type(node) is _Dir:
                todo.extend((node, path, cc) for cc in node.children)

    def _mark_upper(self, path: str) -> None:
        upper = self.upper
        p = path
        while p not in upper:
            upper.add(p)
            i = p.rfind("/")
            if i < 0:
                break
            p = p[:i]

    # ---- one layer
    def apply_layer(self, index: int, label: str, entries: list[tuple[_Hdr, int]], consumed: int) -> None:
        """Apply one layer's entries (header, offset of its data), as ``_read_layer`` gives them."""
        self.layer = index
        self.label = label
        self.upper = set()
        # Only a whiteout looks at what its own layer wrote: a layer with none needs no record of it.
        self.track = any(".wh." in h.name for h, _ in entries)
        st = self.stats[index]
        for h, offset in entries:
            self._entry(h, offset, st)
        st.entries = len(entries)
        st.tar_bytes = consumed
        self.upper = set()

    def _entry(self, h: _Hdr, ordinal: int, st: LayerStats) -> None:
        comps = _components(h.name)
        if comps is None:
            raise UnsafePath(f"layer {self.label}: member {h.name!r} escapes the root")
        if h.type in _REGULAR:
            st.files_added += 1
            st.bytes_added += h.size
        if not comps:
            # The root itself: containerd and moby skip it, but umoci (the oracle) gives the rootfs a
            # directory entry's mode, owner and times (checked with `umoci raw add-layer`), so keep them.
            if h.type == "5":
                self.root.meta = h.meta
            return
        if comps[0] in _AUFS:
            return  # AUFS metadata, not content
        base = comps[-1]
        if base.startswith(".wh."):
            names, pnode = self._resolve(comps[:-1])
            if base == _OPAQUE:
                if type(pnode) is _Dir:
                    self._whiteout(pnode, "/".join(names), None)
                return
            target = base[4:]
            if target in ("", ".", ".."):
                raise UnsafePath(f"layer {self.label}: whiteout {h.name!r} names no file in its directory")
            if type(pnode) is _Dir and target in pnode.children:
                self._whiteout(pnode, "/".join(names), target)
            return
        names, pnode = self._resolve(comps[:-1])
        if type(pnode) is not _Dir:
            pnode = self._mkdirs(names, h.name)
        names.append(base)
        path = "/".join(names)
        children = pnode.children
        existing = children.get(base)
        t = h.type
        if t == "5":
            if type(existing) is _Dir:
                existing.meta = h.meta  # dir over dir: new attributes, children kept
            else:
                if existing is not None:
                    self._drop(existing)
                children[base] = _Dir(h.meta)
        else:
            if existing is not None:
                del children[base]
                self._drop(existing)
            if t == "1":
                # umoci 0.4.7 ignores a link header's mode, owner, mtime and xattrs: the new name
                # shares the target inode's metadata (checked with `umoci raw add-layer`). The target
                # is looked up after the old name is gone, as umoci does.
                ino = self._link_target(h)
            elif t in _REGULAR:
                ino = _Ino("0", self.layer, ordinal, path, h.size, h.meta, "", None)
            elif t == "2":
                ino = _Ino("2", self.layer, ordinal, path, 0, h.meta, h.linkname, None)
            else:
                ino = _Ino(t, self.layer, ordinal, path, 0, h.meta, "", h.dev if t != "6" else None)
            ino.nlink += 1
            children[base] = ino
        if self.track:
            self._mark_upper(path)

    def _link_target(self, h: _Hdr) -> _Ino:
        comps = _components(h.linkname)
        if comps is None:
            raise UnsafePath(f"layer {self.label}: hardlink {h.name!r} -> {h.linkname!r} escapes the root")
        node: _Node | None = None
        if comps:
            _, pnode = self._resolve(comps[:-1])
            if type(pnode) is _Dir:
                node = pnode.children.get(comps[-1])
        if node is None:
            raise FormatError(
                f"layer {self.label}: hardlink {h.name!r} points to {h.linkname!r}, which is in no layer "
                "at that point"
            )
        if type(node) is _Dir:
            raise FormatError(f"layer {self.label}: hardlink {h.name!r} points to a directory ({h.linkname!r})")
        assert type(node) is _Ino
        return node


def _copy_tree(root: _Dir) -> _Dir:
    """Copy the directory structure (inodes are shared: they never change once created)."""
    new = _Dir(root.meta)
    stack = [(root, new)]
    while stack:
        src, dst = stack.pop()
        ch = dst.children
        for k, v in src.children.items():
            if type(v) is _Dir:
                d = _Dir(v.meta)
                ch[k] = d
                stack.append((v, d))
            else:
                ch[k] = v
    return new


def _scan(layer: LayerInput, seek_ok: bool, opener: Callable[[], BinaryIO] | None = None) -> tuple[BinaryIO, _Source]:
    """Open a layer (``open_scan`` when ``seek_ok``, else ``opener`` or ``open``) behind a ``_Source``."""
    try:
        f = layer.open_scan() if seek_ok else (opener or layer.open)()
    except OcisquashError:
        raise
    except OSError as e:
        raise FormatError(f"layer {layer.label}: cannot open: {e}") from e
    return f, _Source(f, seek_ok, layer.label)


def _read_layer(layer: LayerInput, lim: MergeLimits) -> tuple[list[tuple[_Hdr, int]], int]:
    """One layer's headers, each with the offset where its data starts, and the stream's length."""
    f, src = _scan(layer, True)
    try:
        entries: list[tuple[_Hdr, int]] = []
        cap = lim.max_entries_per_layer
        for h in _Reader(src, lim):
            if len(entries) >= cap:
                raise limits_mod.exceeded("max_entries_per_layer", f"layer {layer.label}: too many tar entries")
            offset = src.consumed  # where this entry's data starts: pass 2 copies from here
            if h.size and not src.skip((h.size + 511) & ~511):
                raise FormatError(f"layer {layer.label}: truncated tar (file contents cut short)")
            entries.append((h, offset))
        src.drain()
        return entries, src.consumed
    except OSError as e:
        raise FormatError(f"layer {layer.label}: read error: {e}") from e
    finally:
        f.close()


# Worker processes read (decompress and parse) layers while the main process applies earlier ones:
# parsing tar headers is Python work bound to one core by the GIL, and a squash has two. Workers
# are forked, so they inherit the layers' openers; results and our errors come back pickled.
#
# Not multiprocessing.Pool: its workers share one task queue lock with the parent, and tearing a
# pool down after an error while a worker waits on that lock hangs for ever (issue 10, seen in 2 of
# 200 plans). Here each worker has a pipe of its own and takes a fixed share of the layers (worker w
# reads layers w, w + W, ...); nothing is shared, so the parent can stop a worker at any point.
PARALLEL_MIN_BYTES = 32 << 20


def _worker_count(layers: Sequence[LayerInput]) -> int:
    raw = os.environ.get("OCISQUASH_WORKERS")
    if raw is not None and raw.strip().isdigit():
        return max(1, min(int(raw), len(layers)))
    if len(layers) < 2 or sum(ly.work for ly in layers) < PARALLEL_MIN_BYTES or not hasattr(os, "fork"):
        return 1
    return min(2, os.cpu_count() or 1, len(layers))


_LEN = struct.Struct("<Q")


def _read_job(layer: LayerInput, lim: MergeLimits) -> tuple[Any, ...]:
    try:
        entries, consumed = _read_layer(layer, lim)
        # Plain tuples pickle several times faster than slotted objects.
        flat = [(h.name, h.type, h.size, h.linkname, h.meta, h.dev, off) for h, off in entries]
        return ("ok", flat, consumed)
    except OcisquashError as e:
        return ("error", type(e), str(e), e.hint)


def _worker(layers: Sequence[LayerInput], lim: MergeLimits, first: int, step: int, fd: int) -> None:
    """A forked worker's whole life: read its share of the layers, send each result down ``fd``."""
    # Ctrl-C reaches the whole process group: the parent reports it and stops its workers, which
    # must not print tracebacks of their own; the parent's SIGTERM handler must not run here either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with os.fdopen(fd, "wb") as out:
        for i in range(first, len(layers), step):
            data = pickle.dumps(_read_job(layers[i], lim), pickle.HIGHEST_PROTOCOL)
            out.write(_LEN.pack(len(data)))
            out.write(data)
            out.flush()


def _read_layers(layers: Sequence[LayerInput], lim: MergeLimits) -> Iterator[tuple[list[tuple[_Hdr, int]], int]]:
    workers = _worker_count(layers)
    if workers <= 1:
        for layer in layers:
            yield _read_layer(layer, lim)
        return
    pids: list[int] = []
    pipes: list[BinaryIO] = []
    try:
        for w in range(workers):
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the parent's code
                code = 0
                try:
                    os.close(r)
                    for p in pipes:
                        p.close()
                    _worker(layers, lim, w, workers, wfd)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
            os.close(wfd)
            pipes.append(os.fdopen(r, "rb"))
        for i in range(len(layers)):
            pipe = pipes[i % workers]
            head = pipe.read(_LEN.size)
            data = pipe.read(_LEN.unpack(head)[0]) if len(head) == _LEN.size else b""
            if not data:
                raise OcisquashError(f"internal error: the worker reading layer {layers[i].label} died")
            res = pickle.loads(data)
            if res[0] == "error":
                raise res[1](res[2], hint=res[3])
            yield [(_Hdr(*t[:6]), t[6]) for t in res[1]], res[2]
    finally:
        # Done, failed or abandoned: a worker may still be reading a layer. It holds nothing the
        # parent needs, so stop it and reap it.
        for p in pipes:
            p.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def plan(layers: Sequence[LayerInput], keep: int = 0, *, limits: MergeLimits | None = None) -> MergePlan:
    """Pass 1: read every layer's headers, apply them in memory and decide what the merged layer holds.

    ``keep`` layers at the bottom stay as they are (0: squash to scratch); ``keep == len(layers)``
    gives an empty merged layer.
    """
    lim = limits or MergeLimits.current()
    if not 0 <= keep <= len(layers):
        raise ValueError(f"keep={keep} outside 0..{len(layers)}")
    stats = [LayerStats(i, layer.label, i < keep) for i, layer in enumerate(layers)]
    ap = _Applier(lim, stats)
    parent: _Dir | None = _Dir(_IMPLICIT) if keep == 0 else None
    for i, (entries, consumed) in enumerate(_read_layers(layers, lim)):
        if i == keep and parent is None:
            parent = _copy_tree(ap.root)
        ap.apply_layer(i, layers[i].label, entries, consumed)
    return _finish_plan(ap, parent, keep, lim)


def _finish_plan(
    ap: _Applier, parent: _Dir | None, keep: int, lim: MergeLimits,
    read: tuple[int, ...] = (), spooled: dict[int, dict[int, int]] | None = None,
) -> MergePlan:
    if parent is None:
        parent = _copy_tree(ap.root)
    stats = ap.stats
    out = _diff(ap.root, parent)
    out.keep = keep
    out._limits = lim
    out._read = read
    out._spooled = spooled if spooled is not None else {}
    out.layers = stats
    out.largest_hidden = sorted(ap.heap, reverse=True)
    out.dropped_files = sum(s.hidden_files for s in stats[keep:])
    out.dropped_bytes = sum(s.hidden_bytes for s in stats[keep:])
    return out


class _Hits:
    """What the layers above a layer name, to guess which of its files they leave alone.

    A path is hit when a layer above has an entry or a whiteout at it, or at an ancestor as a
    non-directory, a whiteout or an opaque directory. Names are taken as spelled (cleaned, not
    resolved through symlinks): a wrong guess is caught once the plan is complete.
    """

    def __init__(self) -> None:
        self.exact: set[str] = set()
        self.below: set[str] = set()  # every path strictly under one of these is hit
        self.linked: set[str] = set()  # hardlink targets named above: a hit body may live on there
        self.all = False

    def add(self, headers: Iterator[_Hdr]) -> None:
        exact, below = self.exact, self.below
        for h in headers:
            comps = _components(h.name)
            if not comps or comps[0] in _AUFS:
                continue
            base = comps[-1]
            if base.startswith(".wh."):
                parent = "/".join(comps[:-1])
                if base == _OPAQUE:
                    if not parent:
                        self.all = True
                    below.add(parent)
                else:
                    gone = f"{parent}/{base[4:]}" if parent else base[4:]
                    exact.add(gone)
                    below.add(gone)
                continue
            path = "/".join(comps)
            exact.add(path)
            if h.type != "5":
                below.add(path)
            if h.type == "1":
                target = _clean(h.linkname)
                if target:
                    self.linked.add(target)

    def hit(self, path: str) -> bool:
        if path in self.linked:
            return False
        if self.all or path in self.exact:
            return True
        below = self.below
        i = path.rfind("/")
        while i > 0:
            path = path[:i]
            if path in below:
                return True
            i = path.rfind("/")
        return False


class _Spool:
    """Decompressed file bodies kept for the merged layer, in one unlinked temporary file.

    ``stream`` reads the squashed layers top down but writes the merged layer parents first, so a
    body that passes before its directories are known waits here; each is stored with its tar
    padding, at an offset the writer reads it back from.
    """

    def __init__(self, directory: str | None) -> None:
        self.f = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.fd = self.f.fileno()
        self.buf = bytearray()
        self.size = 0  # bytes written to the file so far (buf follows)
        self.where: dict[int, dict[int, int]] = {}  # layer -> data offset in the layer -> spool offset
        self.rbuf = memoryview(b"")  # read-ahead window of the file, from offset rstart
        self.rstart = 0

    def add(self, layer: int, offset: int, src: _Source, size: int) -> None:
        """Store the ``size`` bytes of contents (and their padding) ``src`` stands at."""
        self.where.setdefault(layer, {})[offset] = self.size + len(self.buf)
        padded = (size + 511) & ~511
        if padded < _REFILL:
            data = src.read(padded)
            if len(data) != padded:
                raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
            self.buf += data
            if len(self.buf) >= _COPY:
                self._flush()
            return
        self._flush()
        for chunk in src.chunks(size):
            self._write(chunk)
        rest = padded - size
        if rest:
            tail = src.read(rest)
            if len(tail) != rest:
                raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
            self.buf += tail

    def _write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.size += n
        except OSError as e:
            raise OutputError(f"cannot write the temporary file of file contents: {e}") from e

    def _flush(self) -> None:
        if self.buf:
            self._write(self.buf)
            self.buf = bytearray()

    def seal(self) -> None:
        """Done adding: everything to the file, for reading back."""
        self._flush()

    def _read(self, at: int, n: int) -> memoryview:
        """``n`` bytes at ``at``, through a read-ahead window: the writer asks for the bodies of a
        layer in the order they were stored, so one large read serves many small files."""
        lo = at - self.rstart
        if lo < 0 or lo + n > len(self.rbuf):
            want = max(n, _COPY)
            try:
                data = os.pread(self.fd, want, at)
            except OSError as e:
                raise OutputError(f"cannot read the temporary file of file contents: {e}") from e
            if len(data) < n:
                raise OutputError("the temporary file of file contents was cut short")
            self.rbuf, self.rstart, lo = memoryview(data), at, 0
        return self.rbuf[lo : lo + n]

    def copy(self, start: int, size: int, w: _Writer) -> None:
        """Copy ``size`` bytes of contents stored at ``start`` to ``w`` (with the output's padding)."""
        if size < _REFILL:
            w.small(self._read(start, size), size)
            return
        pos, end = start, start + size
        while pos < end:
            n = min(_COPY, end - pos)
            try:
                chunk = os.pread(self.fd, n, pos)
            except OSError as e:
                raise OutputError(f"cannot read the temporary file of file contents: {e}") from e
            if len(chunk) != n:
                raise OutputError("the temporary file of file contents was cut short")
            w.data(chunk)
            pos += n
        w.pad(size)

    def close(self) -> None:
        self.rbuf = memoryview(b"")
        self.f.close()


def stream(
    layers: Sequence[LayerInput],
    keep: int,
    out: BinaryIO,
    *,
    limits: MergeLimits | None = None,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[MergePlan], None] | None = None,
    spool_dir: str | None = None,
) -> tuple[MergePlan, WriteStats]:
    """``plan`` and ``write`` in one, reading each squashed layer once (a gzip layer is inflated once).

    The kept layers' headers are read first. The squashed layers are then read top down, each in
    full and verified: its headers are kept, and each regular file's contents go to a temporary file
    (``_Spool``, in ``spool_dir`` or TMPDIR) unless a layer above names its path (``_Hits``: those
    are certainly hidden). Then every header is applied bottom up, as ``plan`` does (``on_plan`` sees
    the plan), and the merged layer is written in the one order ``write`` uses, contents copied from
    the temporary file. A body the guess left out but the plan wants (a hardlink's target whiteout
    above, a name reached through a symlink) is copied by a second read of its layer alone;
    ``WriteStats.refetched`` counts those bodies.

    Memory: the headers of the squashed layers are held until they are applied.
    """
    lim = limits or MergeLimits.current()
    n = len(layers)
    if not 0 <= keep <= n:
        raise ValueError(f"keep={keep} outside 0..{n}")
    wstats = WriteStats()
    ap = _Applier(lim, [LayerStats(i, layer.label, i < keep) for i, layer in enumerate(layers)])
    for i, (entries, consumed) in enumerate(_read_layers(layers[:keep], lim)):
        ap.apply_layer(i, layers[i].label, entries, consumed)
    parent = _copy_tree(ap.root) if keep else _Dir(_IMPLICIT)
    spool = _Spool(spool_dir)
    try:
        read = _read_all_once(layers, keep, spool, lim, progress)
        for k in range(len(read)):
            entries, consumed = read[k]
            ap.apply_layer(keep + k, layers[keep + k].label, entries, consumed)
            read[k] = ([], consumed)  # headers applied: let them go
        p = _finish_plan(ap, parent, keep, lim, tuple(range(keep, n)), spool.where)
        spool.seal()
        if on_plan is not None:
            on_plan(p)
        _write_layer(p, layers, _Writer(out, wstats), progress, spool)
    finally:
        spool.close()
    return p, wstats


_Once = list[tuple[list[tuple[_Hdr, int]], int]]  # per squashed layer, bottom up: headers, length


def _read_all_once(
    layers: Sequence[LayerInput], keep: int, spool: _Spool, lim: MergeLimits,
    progress: Callable[[int], None] | None,
) -> _Once:
    """Read the squashed layers top down, each once (``_read_once``), each guessing from those above."""
    hits = _Hits()
    read: _Once = []
    for i in range(len(layers) - 1, keep - 1, -1):
        entries, consumed = _read_once(i, layers[i], hits, spool, lim, progress)
        hits.add(h for h, _ in entries)
        read.append((entries, consumed))
    read.reverse()
    return read


def _read_once(
    index: int, layer: LayerInput, hits: _Hits, spool: _Spool, lim: MergeLimits,
    progress: Callable[[int], None] | None,
) -> tuple[list[tuple[_Hdr, int]], int]:
    """Read one layer in full (verified): its headers with their data offsets and its length; the
    bodies ``hits`` leaves alone go to ``spool`` on the way."""
    f, src = _scan(layer, False, layer.open_once)
    entries: list[tuple[_Hdr, int]] = []
    cap = lim.max_entries_per_layer
    reported = 0
    try:
        for h in _Reader(src, lim):
            if len(entries) >= cap:
                raise limits_mod.exceeded("max_entries_per_layer", f"layer {layer.label}: too many tar entries")
            offset = src.consumed
            entries.append((h, offset))
            size = h.size
            if h.type in _REGULAR:
                path = _clean(h.name)
                # Whiteouts and AUFS metadata are not files; a file with ".wh." elsewhere in its path
                # is merely left to a second read, should the plan want it.
                if path and ".wh." not in path and not hits.hit(path):
                    spool.add(index, offset, src, size)
                    size = 0
            if size and not src.skip((size + 511) & ~511):
                raise FormatError(f"layer {layer.label}: truncated tar (file contents cut short)")
            if progress is not None and src.consumed - reported >= _COPY:
                progress(src.consumed - reported)
                reported = src.consumed
        src.drain()
        if progress is not None and src.consumed > reported:
            progress(src.consumed - reported)
        return entries, src.consumed
    except OSError as e:
        raise FormatError(f"layer {layer.label}: read error: {e}") from e
    finally:
        f.close()


def _diff(final: _Dir, parent: _Dir) -> MergePlan:
    """Compare the final tree with the parent tree and lay out the merged layer.

    Deleted parent paths get explicit ``.wh.NAME`` entries (topmost path only), never opaque markers,
    even for a directory deleted and then recreated: the diff is structural, so every parent child
    that survives unchanged needs no entry at all, while an opaque marker would force re-writing each
    of them (FORMATS.md also says writers SHOULD prefer explicit whiteouts).
    """
    p = MergePlan(0, [], [], 0, 0, 0, 0, 0, 0)
    head = p._head
    names_new: dict[_Ino, list[str]] = {}  # names to write, per inode
    names_same: dict[_Ino, list[str]] = {}  # names the parent tree holds for the same inode
    final_paths = 0
    whiteouts = 0
    # Depth-first pre-order with sorted children: each directory right before its subtree, so
    # parents come before children; its whiteouts follow it.
    # The root is written when its attributes changed, and also when a layer set them explicitly over a
    # parent that never did, even to the implicit values: an unpacker applies a "./" entry's mtime,
    # but leaves a root no entry names at the time it created it.
    root_set = final.meta is not _IMPLICIT and parent.meta is _IMPLICIT
    stack: list[tuple[str, _Dir, _Dir | None, bool]] = [("", final, parent, final.meta != parent.meta or root_set)]
    unchanged = 0  # directories whose own metadata is the parent's: written only as ancestors
    while stack:
        path, fd, pd, emit = stack.pop()
        if emit:
            head.append(("5", path, fd.meta))
        elif path:
            head.append(("?", path, fd.meta))
            unchanged += 1
        children = fd.children
        if pd is not None:
            gone = sorted(n for n in pd.children if n not in children)
            whiteouts += len(gone)
            head.extend(("w", f"{path}/.wh.{n}" if path else f".wh.{n}", None) for n in gone)
        pch = pd.children if pd is not None else None
        subdirs: list[tuple[str, _Dir, _Dir | None, bool]] = []
        for name in sorted(children):
            node = children[name]
            full = f"{path}/{name}" if path else name
            final_paths += 1
            pn = pch.get(name) if pch is not None else None
            if type(node) is _Dir:
                pdir = pn if type(pn) is _Dir else None
                subdirs.append((full, node, pdir, pdir is None or pdir.meta != node.meta))
            else:
                assert type(node) is _Ino
                if pn is node:
                    names_same.setdefault(node, []).append(full)
                else:
                    names_new.setdefault(node, []).append(full)
        stack.extend(reversed(subdirs))
    p.final_paths = final_paths
    p.out_whiteouts = whiteouts
    if unchanged:
        # Every ancestor of a written entry is written too, with its final metadata: an overlay
        # unpacker (docker's overlay2, containerd) gives a directory the layer does not name mode
        # 0755, owner root and the time of the load, hiding the parent's (issue 10).
        need = _ancestors(head, names_new)
        p._head = head = [("5", path, meta) if tag == "?" else (tag, path, meta)
                          for tag, path, meta in head if tag != "?" or path in need]
    entries = len(head)
    content = 0
    for ino, new in names_new.items():
        new.sort()
        same = names_same.get(ino)
        if same:
            # The parent tree still holds this inode under an unchanged name: link to it.
            target = min(same)
            p._plinks.extend((n, target) for n in new)
            assert ino.meta is not None
            p._plink_meta[target] = ino.meta
            entries += len(new)
            continue
        body = ino.origin if ino.origin in new else new[0]
        links = [n for n in new if n != body]
        entries += 1 + len(links)
        if ino.kind == "0":
            assert ino.meta is not None
            p._bodies.setdefault(ino.layer, {})[ino.ordinal] = (body, links, ino.size, ino.meta)
            content += ino.size
            p._padded += (ino.size + 511) & ~511
        else:
            p._specials.append((body, ino, links))
    p._specials.sort(key=lambda s: s[0])
    p._plinks.sort()
    p.out_entries = entries
    p.out_content_bytes = content
    return p


def _ancestors(head: list[tuple[str, str, _Meta | None]], names_new: dict[_Ino, list[str]]) -> set[str]:
    """The directories above every entry the merged layer writes (the root excluded)."""
    need: set[str] = set()

    def up(path: str) -> None:
        i = path.rfind("/")
        while i > 0:
            path = path[:i]
            if path in need:
                return
            need.add(path)
            i = path.rfind("/")

    for tag, path, _ in head:
        if tag != "?":
            up(path)
    for names in names_new.values():
        for name in names:
            up(name)
    return need


# --------------------------------------------------------------------------------------------------
# Pass 2: write the merged layer.

_WHITEOUT_META: _Meta = (0o644, 0, 0, "", "", 0, None)


def _tobuf(
    name: str, type_: str, meta: _Meta, size: int, linkname: str, dev: tuple[int, int] | None
) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type = type_.encode()
    mode, ti.uid, ti.gid, ti.uname, ti.gname, mtime, extra = meta
    ti.mode = mode
    pax = dict(extra) if extra else {}
    if isinstance(mtime, str):
        # keep the exact PAX text (nanoseconds would not survive a float); the ustar field gets
        # the whole seconds
        pax["mtime"] = mtime
        ti.mtime = int(mtime.split(".", 1)[0] or "0")
    else:
        ti.mtime = mtime
    ti.pax_headers = pax
    ti.size = size
    ti.linkname = linkname
    if dev is not None:
        ti.devmajor, ti.devminor = dev
    return ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


_USTAR_MAGIC = b"ustar\x0000"
# name mode uid gid size mtime chksum typeflag linkname magic+version uname gname devmajor devminor;
# the prefix field and the rest stay zero ("s" pads each field with NULs).
_USTAR_LAYOUT = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s167x")
_MAX7 = 8**7
_MAX11 = 8**11


def _ustar(
    name: str, type_: str, meta: _Meta, size: int, linkname: str, dev: tuple[int, int] | None
) -> bytes | None:
    """The header ``_tobuf`` gives, built directly when no PAX record is needed (most entries).

    Byte-identical to ``TarInfo.tobuf(PAX_FORMAT)`` for those (tested), at a fraction of the cost.
    """
    mode, uid, gid, uname, gname, mtime, extra = meta
    if extra or type(mtime) is not int or not (0 <= mtime < _MAX11 and 0 <= size < _MAX11):
        return None
    if not (0 <= uid < _MAX7 and 0 <= gid < _MAX7):
        return None
    if type_ == "5":
        name += "/"
    if not (name.isascii() and linkname.isascii() and uname.isascii() and gname.isascii()):
        return None
    if len(name) > 100 or len(linkname) > 100 or len(uname) > 32 or len(gname) > 32:
        return None
    if type_ in "34":
        major, minor = dev if dev is not None else (0, 0)
        if not (0 <= major < _MAX7 and 0 <= minor < _MAX7):
            return None
        devmajor, devminor = b"%07o\x00" % major, b"%07o\x00" % minor
    else:
        devmajor = devminor = b""
    h = _USTAR_LAYOUT.pack(
        name.encode(), b"%07o\x00" % (mode & 0o7777), b"%07o\x00" % uid, b"%07o\x00" % gid, b"%011o\x00" % size,
        b"%011o\x00" % mtime, b"        ", type_.encode(), linkname.encode(), _USTAR_MAGIC, uname.encode(),
        gname.encode(), devmajor, devminor,
    )
    # The checksum is the byte sum with its own field as spaces. Every byte here is ASCII, so the sum
    # is at most 512 * 127 = 65024, below Adler-32's modulus: its low half is exactly 1 + the sum.
    return h[:148] + b"%06o\x00 " % ((zlib.adler32(h) & 0xFFFF) - 1) + h[156:]


class _Writer:
    def __init__(self, out: BinaryIO, stats: WriteStats) -> None:
        self.out = out
        self.stats = stats
        self.buf = bytearray()

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.out.write(data)
        except OSError as e:
            raise OutputError(f"cannot write the merged layer: {e}") from e
        self.stats.bytes_written += len(data)

    def flush(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = bytearray()

    def header(
        self, name: str, type_: str, meta: _Meta, *, size: int = 0, linkname: str = "",
        dev: tuple[int, int] | None = None,
    ) -> None:
        fast = _ustar(name, type_, meta, size, linkname, dev)
        self.buf += fast if fast is not None else _tobuf(name, type_, meta, size, linkname, dev)
        self.stats.entries += 1
        if len(self.buf) >= _COPY:
            self.flush()

    def data(self, chunk: bytes) -> None:
        if len(chunk) < _REFILL:
            self.buf += chunk
            if len(self.buf) >= _COPY:
                self.flush()
        else:
            self.flush()
            self._emit(chunk)
        self.stats.content_bytes += len(chunk)

    def small(self, data: bytes | memoryview, size: int) -> None:
        """A small file's contents: the first ``size`` bytes of ``data``, then zeros to the block."""
        buf = self.buf
        buf += memoryview(data)[:size]
        if size % 512:
            buf += _ZERO[: 512 - size % 512]
        self.stats.content_bytes += size
        if len(buf) >= _COPY:
            self.flush()

    def pad(self, size: int) -> None:
        if size % 512:
            self.buf += bytes(512 - size % 512)

    def finish(self) -> None:
        self.buf += bytes(1024)  # the end marker only: no 10240-byte record padding, like Go
        self.flush()


def write(
    plan: MergePlan,
    layers: Sequence[LayerInput],
    out: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> WriteStats:
    """Pass 2: stream the squashed layers once, in order, and write the merged layer tar to ``out``.

    ``progress`` is called with the number of input bytes consumed since its last call. Every
    squashed layer's ``open()`` stream is read to its end (where it verifies itself). A kept layer is
    opened too only in one rare case: a hardlink the squashed layers add to a kept file whose kept
    names are all gone, so the content must be copied from that kept layer. The output is the same,
    byte for byte, as ``stream``'s for the same layers.
    """
    stats = WriteStats()
    _write_layer(plan, layers, _Writer(out, stats), progress, None)
    return stats


def _write_layer(
    plan: MergePlan,
    layers: Sequence[LayerInput],
    w: _Writer,
    progress: Callable[[int], None] | None,
    spool: _Spool | None,
) -> None:
    """Write the merged layer in its one order: directories (each before its subtree) with the
    whiteouts below them, then special files, links to kept files, and regular files by layer and
    position, each followed by its hardlinks. Bodies come from ``spool`` when it holds them, else
    from a read of their layer."""
    for tag, path, meta in plan._head:
        if tag == "5":
            w.header(path or "./", "5", meta if meta is not None else _IMPLICIT)
        else:
            w.header(path, "0", _WHITEOUT_META)
    for body, ino, links in plan._specials:
        assert ino.meta is not None
        w.header(body, ino.kind, ino.meta, linkname=ino.target, dev=ino.dev)
        for link in links:
            w.header(link, "1", ino.meta, linkname=body)
    if plan._plinks:
        metas = _plink_metas(plan)
        for name, target in plan._plinks:
            w.header(name, "1", metas[target], linkname=target)
    for li in plan._pass2_layers():
        bodies = plan._bodies.get(li, {})
        spooled = plan._spooled.get(li, {})
        _copy_layer(li, layers[li], bodies, spooled, spool, plan._limits, w, progress,
                    plan.layers[li].tar_bytes if li < len(plan.layers) else 0, li not in plan._read)
    w.finish()


def _plink_metas(plan: MergePlan) -> dict[str, _Meta]:
    # Only parent inodes can be link targets here; their metadata was kept in pass 1.
    found: dict[str, _Meta] = {}
    want = {t for _, t in plan._plinks}
    for path in want:
        meta = plan._plink_meta.get(path)
        if meta is None:
            raise OcisquashError(f"internal error: no metadata for hardlink target {path!r}")
        found[path] = meta
    return found


def _copy_body(src: _Source, w: _Writer, name: str, meta: _Meta, size: int) -> None:
    """Write a regular file's header as ``name`` and copy its ``size`` bytes of contents from ``src``
    (which stands at them), consuming the input's padding and writing zeros for the output's."""
    w.header(name, "0", meta, size=size)
    padded = (size + 511) & ~511
    if size < _REFILL:  # most files: one slice, no generator
        data = src.read(padded)
        if len(data) != padded:
            raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
        w.small(data, size)
        return
    for chunk in src.chunks(size):
        w.data(chunk)
    if padded != size and not src.skip(padded - size):
        raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
    w.pad(size)


def _copy_layer(
    index: int,
    layer: LayerInput,
    bodies: dict[int, tuple[str, list[str], int, _Meta]],
    spooled: dict[int, int],
    spool: _Spool | None,
    limits: MergeLimits,
    w: _Writer,
    progress: Callable[[int], None] | None,
    total: int,
    verify: bool,
) -> None:
    """Copy the contents the plan chose from one layer, in their order in the layer: from the spool
    when it holds them, else by their offsets in one read of the layer (no header is parsed again).

    The layer is read when a body is not in the spool, or to ``verify`` it: then the stream is read
    to its end (where it verifies itself); the 512-byte header in front of each copied body is
    checked to be a regular file's, so a layer that changed between the two reads fails instead of
    giving wrong contents.
    """
    label = layer.label
    f: BinaryIO | None = None
    src: _Source | None = None
    try:
        if verify:
            f, src = _scan(layer, False)
        reported = 0
        for off in sorted(bodies):
            body, links, size, meta = bodies[off]
            at = spooled.get(off)
            if at is not None and spool is not None:
                w.header(body, "0", meta, size=size)
                spool.copy(at, size, w)
            else:
                if src is None:
                    f, src = _scan(layer, False)
                w.stats.refetched += spool is not None
                if not src.skip(off - 512 - src.consumed):
                    raise FormatError(f"layer {label}: truncated tar (file contents cut short)")
                block = src.read(512)
                if len(block) != 512 or block[156:157] not in _REGULAR_FLAGS:
                    raise FormatError(f"layer {label}: the layer changed between the two reads")
                _copy_body(src, w, body, meta, size)
                if progress is not None and src.consumed - reported >= _COPY:
                    progress(src.consumed - reported)
                    reported = src.consumed
            for link in links:
                w.header(link, "1", meta, linkname=body)
        if src is None or f is None:
            return
        skip_rest = getattr(f, "skip_rest", None)
        if skip_rest is not None:
            # Nothing more to copy: a stream that can check its remaining bytes without
            # decompressing them does so (the layer's diff ID was checked in pass 1).
            skip_rest()
            src.consumed = max(src.consumed, total)
        else:
            src.drain()
        if progress is not None and src.consumed > reported:
            progress(src.consumed - reported)
    except OSError as e:
        raise FormatError(f"layer {label}: read error: {e}") from e
    finally:
        if f is not None:
            f.close()
