"""The layer tar reader: Go-style reading (PAX and GNU extensions, PAX globals ignored), name cleaning.

Our own reader, not ``tarfile``'s: PAX global headers must be ignored the Go way, contents must be
skipped by seeking, and per-member ``TarInfo`` objects would cost too much memory. The header rules
(numbers, checksum, PAX records, caps) are the tar codec's, ``ocisquash.tar.header``, which the outer
archive reader follows too.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

from ocisquash import limits as limits_mod
from ocisquash.errors import FormatError, OcisquashError
from ocisquash.merge.records import LayerInput, MergeLimits, Meta
from ocisquash.tar import header as tar
from ocisquash.tar.header import EXTENSIONS, HEADER_ONLY
from ocisquash.tar.header import ZERO as ZERO  # the writer pads with it too

COPY = 1 << 20
REFILL = 1 << 16
_SEEK_MIN = 1 << 18
REGULAR = frozenset(("0", "7"))
REGULAR_FLAGS = frozenset((b"0", b"\0", b"7"))
_SHARED_METAS = 1 << 14


class Hdr:
    __slots__ = ("dev", "linkname", "meta", "name", "size", "type")

    def __init__(
        self, name: str, type_: str, size: int, linkname: str, meta: Meta, dev: tuple[int, int]
    ) -> None:
        self.name = name
        self.type = type_
        self.size = size  # bytes of data that follow the header (0 for header-only types)
        self.linkname = linkname
        self.meta = meta
        self.dev = dev


class Source:
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
            chunk = self.f.read(max(need, REFILL))
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
            chunk = self.f.read(min(n, COPY))
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
            chunk = self.f.read(min(n, COPY))
            if not chunk:
                raise FormatError(f"layer {self.label}: truncated tar (file contents cut short)")
            n -= len(chunk)
            self.consumed += len(chunk)
            yield chunk

    def drain(self) -> None:
        self.consumed += len(self.buf) - self.pos
        self.buf, self.pos = b"", 0
        while True:
            chunk = self.f.read(COPY)
            if not chunk:
                return
            self.consumed += len(chunk)


class Reader:
    """Go-style tar reader: yields real members; PAX globals are skipped, never applied."""

    def __init__(self, src: Source, limits: MergeLimits) -> None:
        self.src = src
        self.limits = limits
        self.label = src.label
        self.where = f"layer {src.label}"  # what the codec's cap errors name
        self.names: dict[bytes, tuple[str, str]] = {}  # decoded uname/gname, shared between entries
        self.extra_bytes = 0  # extra PAX records kept so far (max_xattr_total)
        # Metadata records shared between entries with the same fields (a Meta is never changed once
        # made): files of one layer often share mode, owner and time, and memory per path is what
        # limits a big image. Bounded, so a layer of all-different times costs a dict of fixed size.
        self.metas: dict[tuple[int, int, int, str, str, int | str], Meta] = {}

    def _bad(self, what: str) -> FormatError:
        return FormatError(f"layer {self.label}: {what}")

    def _block(self) -> bytes | None:
        block = self.src.read(512)
        if len(block) == 512:
            return block
        if not block:
            return None
        raise self._bad("truncated tar (a header is cut short)")

    def _ext_data(self, size: int, type_: int) -> bytes:
        tar.check_extension(size, type_, self.limits.max_pax_header, self.where)
        padded = (size + 511) & ~511
        data = self.src.read(padded)
        if len(data) != padded:
            kind = "PAX" if type_ in b"xXg" else "GNU long name"
            raise self._bad(f"truncated tar (a {kind} header is cut short)")
        return data[:size]

    def __iter__(self) -> Iterator[Hdr]:
        pax: dict[str, str] | None = None
        longname: bytes | None = None
        longlink: bytes | None = None
        while True:
            block = self._block()
            if block is None:
                if pax is not None or longname is not None or longlink is not None:
                    raise self._bad("truncated tar (extension header without its member)")
                return
            if block == ZERO:
                nxt = self._block()
                if nxt is None or nxt == ZERO:
                    return
                raise self._bad("invalid tar (a single zero block followed by data)")
            try:
                size, chk = tar.size_and_checksum(block)
            except ValueError as e:
                raise self._bad(f"invalid tar header ({e})") from None
            if not tar.checksum_ok(block, chk):
                raise self._bad("invalid tar header (checksum mismatch)")
            if size < 0:
                raise self._bad("invalid tar header (negative size)")
            t = block[156]
            if t in EXTENSIONS:
                if t == 0x53:  # "S"
                    raise self._bad("GNU sparse files are not supported (write the layer without --sparse)")
                data = self._ext_data(size, t)
                if t == 0x67:  # "g": global records; Go readers hand them out as entries, appliers ignore
                    pax = longname = longlink = None  # they belonged to the global header
                    continue
                if t in b"xX":
                    try:
                        # not counted: the records a member keeps are capped by max_xattr, which a user
                        # can raise for a trusted layer (the outer archive, without such a cap, counts)
                        pax = tar.parse_pax(data, None)
                    except ValueError as e:
                        raise self._bad(str(e)) from None
                elif t == 0x4C:
                    longname = tar.cstr(data)
                else:
                    longlink = tar.cstr(data)
                continue
            yield self._member(block, size, pax, longname, longlink)
            pax = longname = longlink = None

    def _member(
        self, block: bytes, size: int, pax: dict[str, str] | None,
        longname: bytes | None, longlink: bytes | None,
    ) -> Hdr:
        type_ = chr(block[156])
        try:
            mode, uid, gid, mtime_ = tar.owner_fields(block)
            dev = tar.device(block) if type_ in "34" else (0, 0)
        except ValueError as e:
            raise self._bad(f"invalid tar header ({e})") from None
        mode &= 0o7777
        mtime: int | str = mtime_
        name = tar.decode(longname if longname is not None else tar.raw_name(block))
        linkname = tar.decode(longlink if longlink is not None else tar.raw_linkname(block))
        ids = self.names
        raw_ids = block[265:329]
        both = ids.get(raw_ids)
        if both is None:
            both = ids[raw_ids] = (tar.decode(tar.cstr(block[265:297])), tar.decode(tar.cstr(block[297:329])))
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
                        size = tar.pax_number(v, "size")
                    elif k == "uid":
                        uid = tar.pax_number(v, "uid")
                    elif k == "gid":
                        gid = tar.pax_number(v, "gid")
                    elif k == "uname":
                        uname = v
                    elif k == "gname":
                        gname = v
                    elif k == "mtime":
                        mtime = tar.pax_time(v)
                    elif k.startswith("GNU.sparse."):
                        raise self._bad(f"{name}: PAX sparse files are not supported")
                    elif k not in ("hdrcharset", "comment"):
                        rest.append((k, v))
            except ValueError as e:
                raise self._bad(f"{name}: {e}") from None
            if size < 0:
                raise self._bad("invalid tar header (negative size)")
            if rest:
                kept = sum(len(k) + len(v) for k, v in rest)
                if kept > self.limits.max_xattr:
                    raise limits_mod.exceeded("max_xattr", f"layer {self.label}: {name}: {kept} bytes of xattrs "
                                                           "and other PAX records (Linux takes 64 KiB at most)")
                self.extra_bytes += kept
                if self.extra_bytes > self.limits.max_xattr_total:
                    raise limits_mod.exceeded("max_xattr_total", f"layer {self.label}: more than "
                                                                 f"{self.limits.max_xattr_total} bytes of xattrs")
                rest.sort()
                extra = tuple(rest)
        if type_ == "\x00":
            type_ = "5" if name.endswith("/") else "0"
        if "\x00" in name or "\x00" in linkname:
            raise self._bad(f"{name!r}: NUL in a member name")
        tar.check_path(name, linkname, self.limits.max_path, self.where)
        if type_ in HEADER_ONLY:
            size = 0  # Go: no data follows these types, whatever the size field says
        elif type_ not in REGULAR:
            raise self._bad(f"{name}: unsupported tar entry type {type_!r}")
        if extra is None:
            key = (mode, uid, gid, uname, gname, mtime)
            meta = self.metas.get(key)
            if meta is None:
                meta = Meta(mode, uid, gid, uname, gname, mtime, None)
                if len(self.metas) < _SHARED_METAS:
                    self.metas[key] = meta
        else:
            meta = Meta(mode, uid, gid, uname, gname, mtime, extra)
        return Hdr(name, type_, size, linkname, meta, dev)


def is_clean(name: str) -> bool:
    """True when ``components`` has nothing to clean in ``name`` (the common case)."""
    return "/." not in name and "//" not in name and name[:1] not in "./" and not name.endswith("/")


def clean_name(name: str) -> str | None:
    """``name`` cleaned as ``components`` does, joined again (itself when it needs no cleaning)."""
    if is_clean(name):
        return name
    comps = components(name)
    return "/".join(comps) if comps is not None else None


def components(name: str) -> list[str] | None:
    """Clean a member name like umoci/containerd: strip ``/`` and ``./``, resolve ``..`` lexically.

    Returns the components (empty for the root), or None when the name escapes the root.
    """
    if is_clean(name):
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


def open_layer(
    layer: LayerInput, seek_ok: bool, opener: Callable[[], BinaryIO] | None = None
) -> tuple[BinaryIO, Source]:
    """Open a layer (``open_scan`` when ``seek_ok``, else ``opener`` or ``open``) behind a ``Source``."""
    try:
        f = layer.open_scan() if seek_ok else (opener or layer.open)()
    except OcisquashError:
        raise
    except OSError as e:
        raise FormatError(f"layer {layer.label}: cannot open: {e}") from e
    return f, Source(f, seek_ok, layer.label)


class EntrySink(Protocol):
    """Where ``read_layer`` can hand each entry instead of keeping it (the tree's ``Applier``)."""

    def entry(self, h: Hdr, offset: int) -> None: ...
    def end_layer(self, entries: int, consumed: int) -> None: ...


def apply_entry(apply: EntrySink, h: Hdr, offset: int, src: Source) -> None:
    """Hand ``h`` to ``apply``; an error it raises waits for the end of the stream, which is read (and
    so verified) first: a layer whose bytes are not the ones its digest names says so, not what a
    corrupt header in it made of the tree."""
    try:
        apply.entry(h, offset)
    except OcisquashError:
        src.skip((h.size + 511) & ~511)
        src.drain()
        raise


class BodySink(Protocol):
    """Where ``read_layer`` can offer each regular file's contents as the stream reaches them."""

    def body(self, h: Hdr, offset: int, src: Source) -> bool:
        """Take the ``h.size`` bytes (and padding) ``src`` stands at, or leave them: False."""
        ...


def read_layer(
    layer: LayerInput, lim: MergeLimits, apply: EntrySink | None = None, bodies: BodySink | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[Hdr, int]], int]:
    """One layer's headers, each with the offset where its data starts, and the stream's length.

    With ``apply``, each header goes there instead and none is kept (the list returned is empty).
    Without ``bodies`` the layer is opened for a headers-only scan (``open_scan``: contents may be
    seeked over); with it, read in full and verified (``open_once``), each regular file's contents
    offered to ``bodies`` first. ``progress`` is called with the bytes read since its last call."""
    f, src = open_layer(layer, bodies is None, layer.open_once if bodies is not None else None)
    try:
        entries: list[tuple[Hdr, int]] = []
        count = 0
        cap = lim.max_entries_per_layer
        reported = 0
        for h in Reader(src, lim):
            if count >= cap:
                raise limits_mod.exceeded("max_entries_per_layer", f"layer {layer.label}: too many tar entries")
            count += 1
            offset = src.consumed  # where this entry's data starts: pass 2 copies from here
            if apply is not None:
                apply_entry(apply, h, offset, src)
            else:
                entries.append((h, offset))
            size = h.size
            if bodies is not None and h.type in REGULAR and bodies.body(h, offset, src):
                size = 0
            if size and not src.skip((size + 511) & ~511):
                raise FormatError(f"layer {layer.label}: truncated tar (file contents cut short)")
            if progress is not None and src.consumed - reported >= COPY:
                progress(src.consumed - reported)
                reported = src.consumed
        src.drain()
        if progress is not None and src.consumed > reported:
            progress(src.consumed - reported)
        if apply is not None:
            apply.end_layer(count, src.consumed)
        return entries, src.consumed
    except OSError as e:
        raise FormatError(f"layer {layer.label}: read error: {e}") from e
    finally:
        f.close()
