"""The layer tar reader: Go-style parsing (PAX and GNU extensions, PAX globals ignored), name cleaning.

Our own reader, not ``tarfile``'s: PAX global headers must be ignored the Go way, contents must be
skipped by seeking, and per-member ``TarInfo`` objects would cost too much memory.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

from ocisquash import limits as limits_mod
from ocisquash.errors import FormatError, OcisquashError
from ocisquash.merge.records import LayerInput, MergeLimits, Meta

ZERO = bytes(512)
COPY = 1 << 20
REFILL = 1 << 16
_SEEK_MIN = 1 << 18
_EXT_TYPES = frozenset(b"xXgLKS")
_HEADER_ONLY = frozenset("123456")
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
        try:
            # POSIX: keywords are UTF-8; one that is not could never be written back (nor meant anything)
            key = rec[:eq].decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"layer {label}: a PAX keyword that is not UTF-8") from None
        out[key] = _decode(rec[eq + 1 :])
        pos += length
    return out


class Reader:
    """Go-style tar reader: yields real members; PAX globals are skipped, never applied."""

    def __init__(self, src: Source, limits: MergeLimits) -> None:
        self.src = src
        self.limits = limits
        self.label = src.label
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
    ) -> Hdr:
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
        if len(name) > self.limits.max_path or len(linkname) > self.limits.max_path:
            raise limits_mod.exceeded("max_path", f"layer {self.label}: a member name or link target is too long")
        if type_ in _HEADER_ONLY:
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
