"""A hardened reader of tar headers for untrusted archives, in place of the interpreter's ``tarfile``.

Python 3.11's ``tarfile`` loops for ever on a member with a negative base-256 size (the shape of
CVE-2025-8194) and parses a large PAX header in quadratic time (CVE-2024-6232); both are reachable
from any tarball a user hands us. This reader walks headers only (member data is never read, just
skipped by offset), checks every header checksum, accepts numbers in octal or positive base-256 in
0…2^63−1, parses PAX records in one linear pass with a cap on their size and count, and refuses a
member whose data runs past the end of the file as truncated.

It serves the outer archive (``ocisquash.archive``); the layer reader in ``ocisquash.merge`` has
its own streaming parser with the same rules, which should come to share this one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ocisquash import limits
from ocisquash.errors import FormatError

BLOCK = 512
MAX_SIZE = (1 << 63) - 1  # sizes are signed 64-bit everywhere else (Go, the OCI spec's int64)
MAX_PAX_RECORDS = 10_000  # records in one PAX header: real archives carry a handful
_ZERO = bytes(BLOCK)
_REGULAR = frozenset("07\x00")
_HEADER_ONLY = frozenset("123456")


@dataclass(frozen=True)
class Header:
    """One member: its name and link target (decoded, undecodable bytes kept as surrogates), its type
    character (``0`` for every regular-file spelling), its data size and the file offset of its data."""

    name: str
    type: str
    linkname: str
    size: int
    offset: int


def _bad(label: str, what: str) -> FormatError:
    return FormatError(f"{label}: not a readable tar archive ({what})")


def number(field: bytes, label: str, what: str) -> int:
    """A numeric header field: NUL/space-terminated octal, or GNU base-256 (positive only), in 0…2^63−1."""
    if field and field[0] & 0x80:
        if field[0] & 0x40:
            raise _bad(label, f"negative {what}")
        value = int.from_bytes(bytes([field[0] & 0x3F]) + field[1:], "big")
    else:
        text = field.split(b"\x00", 1)[0].strip(b" ")
        if text and not all(0x30 <= c <= 0x37 for c in text):
            raise _bad(label, f"bad {what} field {field!r}")
        value = int(text, 8) if text else 0
    if value > MAX_SIZE:
        raise _bad(label, f"{what} {value} is over 2^63-1")
    return value


def _checksum_ok(block: bytes, label: str) -> bool:
    want = number(block[148:156], label, "checksum")
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if want == unsigned:
        return True
    # some old writers summed signed bytes
    signed = unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)
    return want == signed


def _cstr(field: bytes) -> bytes:
    i = field.find(0)
    return field if i < 0 else field[:i]


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def parse_pax(data: bytes, label: str, max_records: int = MAX_PAX_RECORDS) -> dict[str, str]:
    """PAX records ``"<len> <key>=<value>\\n"`` in one linear pass; a malformed record is an error."""
    out: dict[str, str] = {}
    pos, n, count = 0, len(data), 0
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            break
        count += 1
        if count > max_records:
            raise _bad(label, f"a PAX header with more than {max_records} records")
        # the length is a short decimal: looking 20 bytes ahead at most keeps the pass linear
        sp = data.find(b" ", pos, pos + 20)
        digits = data[pos:sp] if sp > pos else b""
        if not digits or not digits.isdigit():
            raise _bad(label, "malformed PAX record length")
        length = int(digits)
        end = pos + length
        if length <= len(digits) + 1 or end > n or data[end - 1] != 0x0A:
            raise _bad(label, "malformed PAX record")
        rec = data[sp + 1:end - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            raise _bad(label, "malformed PAX record (no key)")
        out[_decode(rec[:eq])] = _decode(rec[eq + 1:])
        pos = end
    return out


def _pax_size(value: str, label: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise _bad(label, f"bad PAX size {value[:40]!r}")
    size = int(value)
    if size > MAX_SIZE:
        raise _bad(label, f"PAX size {size} is over 2^63-1")
    return size


def _padded(size: int) -> int:
    """``size`` rounded up to whole blocks: what member data takes in the archive."""
    return (size + BLOCK - 1) // BLOCK * BLOCK


class _Blocks:
    """What both readers share: the position, and the rule that a header block cut short is an error."""

    def __init__(self, f: Any, label: str) -> None:
        self.f = f
        self.label = label
        self.pos = 0

    def _next(self) -> bytes:
        """The bytes of the block at ``pos``: fewer at the end of the data, none past it."""
        raise NotImplementedError

    def block(self) -> bytes | None:
        """The next 512-byte header block, or None at the end of the data."""
        data = self._next()
        if not data:
            return None
        if len(data) < BLOCK:
            raise _bad(self.label, "unexpected end of data: a header is cut short")
        self.pos += BLOCK
        return data

    def _truncated(self, what: str) -> FormatError:
        return _bad(self.label, f"unexpected end of data: {what} is truncated")


class _File(_Blocks):
    """Reads blocks at known offsets of a seekable file whose length is known."""

    def __init__(self, f: BinaryIO, label: str) -> None:
        super().__init__(f, label)
        # a member of an outer tar (archive.RangeReader) has no descriptor of its own: its end by seeking
        self.end = os.fstat(f.fileno()).st_size if hasattr(f, "fileno") else f.seek(0, os.SEEK_END)

    def _next(self) -> bytes:
        if self.pos >= self.end:
            return b""
        self.f.seek(self.pos)
        data: bytes = self.f.read(BLOCK)
        return data

    def skip(self, size: int, what: str) -> int:
        """Skip ``size`` bytes of data (padded to a block); returns their offset."""
        start = self.pos
        if start + size > self.end:
            raise self._truncated(what)
        self.pos = start + _padded(size)
        return start

    def read(self, size: int, what: str) -> bytes:
        start = self.skip(size, what)
        self.f.seek(start)
        data: bytes = self.f.read(size)
        return data


class _Stream(_Blocks):
    """The same over a stream read once (a decompressing reader): data is skipped by reading it."""

    def _take(self, n: int) -> int:
        got = 0
        while got < n:
            chunk = self.f.read(min(n - got, 1 << 20))
            if not chunk:
                break
            got += len(chunk)
        self.pos += got
        return got

    def _next(self) -> bytes:
        data = b""
        while len(data) < BLOCK:
            chunk = self.f.read(BLOCK - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def skip(self, size: int, what: str) -> int:
        start = self.pos
        padded = _padded(size)
        if self._take(padded) < padded:
            raise self._truncated(what)
        return start

    def read(self, size: int, what: str) -> bytes:
        padded = _padded(size)
        data = b""
        while len(data) < padded:
            chunk = self.f.read(padded - len(data))
            if not chunk:
                raise self._truncated(what)
            data += chunk
        self.pos += padded
        return data[:size]


def headers(f: BinaryIO, label: str, *, stream: bool = False) -> Iterator[Header]:
    """Every member header of the uncompressed tar ``f``, in order: a seekable file whose member data is
    skipped by offset, or (``stream``) a stream read once, whose data is read and dropped."""
    cap = limits.current().max_pax_header
    max_path = limits.current().max_path
    src: _File | _Stream = _Stream(f, label) if stream else _File(f, label)
    pax: dict[str, str] = {}
    glob: dict[str, str] = {}
    longname: bytes | None = None
    longlink: bytes | None = None
    first = True
    while True:
        block = src.block()
        if block is None:
            if first and not stream:
                raise _bad(label, "empty file")
            if pax or longname is not None or longlink is not None:
                raise _bad(label, "unexpected end of data: an extended header has no member")
            return
        if block == _ZERO:
            return  # the end-of-archive marker (a second zero block, or none, follows)
        if not _checksum_ok(block, label):
            raise _bad(label, "bad header checksum" if not first else "not a tar header")
        first = False
        size = number(block[124:136], label, "size")
        t = chr(block[156])
        if t in "xXgLK":
            if size > cap:
                raise limits.exceeded("max_pax_header", f"{label}: a {'PAX' if t in 'xXg' else 'GNU long name'} "
                                                        f"header of {size} bytes is too large")
            data = src.read(size, "an extended header")
            if t in "xX":
                pax = parse_pax(data, label)
            elif t == "g":
                glob.update(parse_pax(data, label))
            elif t == "L":
                longname = _cstr(data)
            else:
                longlink = _cstr(data)
            continue
        if t == "S":
            raise _bad(label, "a GNU sparse member")
        raw = _cstr(block[0:100])
        if block[257:263] == b"ustar\x00":  # POSIX: a name prefix (GNU uses those bytes for times)
            prefix = _cstr(block[345:500])
            if prefix:
                raw = prefix + b"/" + raw
        name = _decode(longname if longname is not None else raw)
        link = _decode(longlink if longlink is not None else _cstr(block[157:257]))
        rec = {**glob, **pax}
        if any(k.startswith("GNU.sparse.") for k in rec):
            raise _bad(label, f"member {name!r} is a sparse file")
        if "path" in rec and longname is None:
            name = rec["path"]
        if "linkpath" in rec and longlink is None:
            link = rec["linkpath"]
        if "size" in rec:
            size = _pax_size(rec["size"], label)
        pax, longname, longlink = {}, None, None
        if len(name.encode("utf-8", "surrogateescape")) > max_path or len(link) > max_path:
            raise limits.exceeded("max_path", f"{label}: a member name or link target is longer than {max_path}")
        if t in _REGULAR:
            t = "5" if t == "\x00" and name.endswith("/") else "0"
        if t in _HEADER_ONLY:
            size = 0  # links, directories, devices and FIFOs carry no data, whatever the size field says
        # unknown types are skipped over by their size, as tarfile does
        offset = src.skip(size, f"member {name!r}")
        yield Header(name, t, link, size, offset)
