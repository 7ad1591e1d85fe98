"""The outer archive's member reader, hardened for untrusted tarballs, in place of the interpreter's ``tarfile``.

Python 3.11's ``tarfile`` loops for ever on a member with a negative base-256 size (the shape of
CVE-2025-8194) and parses a large PAX header in quadratic time (CVE-2024-6232); both are reachable
from any tarball a user hands us. This reader walks headers only (member data is never read, just
skipped by offset) and refuses a member whose data runs past the end of the file as truncated. The
header rules (numbers, checksum, PAX records, caps) are the tar codec's, ``ocisquash.tar.header``,
which the merge's layer reader follows too.

It serves the outer archive (``ocisquash.archive``, ``ocisquash.validate``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from ocisquash import limits
from ocisquash.errors import FormatError
from ocisquash.tar import header as tar
from ocisquash.tar.header import BLOCK, ZERO

_REGULAR = frozenset("07\x00")


@dataclass(frozen=True)
class Header:
    """One member: its name and link target (decoded, undecodable bytes kept as surrogates), its type
    character (``0`` for every regular-file spelling), its data size and the file offset of its data."""

    name: str
    type: str
    linkname: str
    size: int
    offset: int


def _size(block: bytes, first: bool, label: str) -> int:
    """The size of a header block whose checksum holds; a bad checksum is said before a bad size."""
    try:
        size, checksum = tar.size_and_checksum(block)  # both read in place: the common case
        if tar.checksum_ok(block, checksum):
            return size
    except ValueError:
        pass
    try:  # a malformed or wrong field: find which, checksum first
        ok = tar.checksum_ok(block, tar.number(block[148:156], "checksum"))
    except ValueError:
        ok = False
    if not ok:
        raise _bad(label, "bad header checksum" if not first else "not a tar header")
    try:
        return tar.number(block[124:136], "size")
    except ValueError as e:
        raise _bad(label, str(e)) from None


def _bad(label: str, what: str) -> FormatError:
    return FormatError(f"{label}: not a readable tar archive ({what})")


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
        self.pos = start + tar.padded(size)
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
        padded = tar.padded(size)
        if self._take(padded) < padded:
            raise self._truncated(what)
        return start

    def read(self, size: int, what: str) -> bytes:
        padded = tar.padded(size)
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
        if block == ZERO:
            return  # the end-of-archive marker (a second zero block, or none, follows)
        size = _size(block, first, label)
        first = False
        if size < 0:
            raise _bad(label, "negative size")
        t = chr(block[156])
        if t in "xXgLK":
            tar.check_extension(size, block[156], cap, label)
            data = src.read(size, "an extended header")
            if t in "xXg":
                records = _pax(data, label)
                if t == "g":
                    glob.update(records)
                else:
                    pax = records
            elif t == "L":
                longname = tar.cstr(data)
            else:
                longlink = tar.cstr(data)
            continue
        if t == "S":
            raise _bad(label, "a GNU sparse member")
        name = tar.decode(longname if longname is not None else tar.raw_name(block))
        link = tar.decode(longlink if longlink is not None else tar.raw_linkname(block))
        rec = {**glob, **pax}
        if any(k.startswith("GNU.sparse.") for k in rec):
            raise _bad(label, f"member {name!r} is a sparse file")
        if "path" in rec and longname is None:
            name = rec["path"]
        if "linkpath" in rec and longlink is None:
            link = rec["linkpath"]
        if "size" in rec:
            try:
                size = tar.pax_number(rec["size"], "size")
            except ValueError as e:
                raise _bad(label, str(e)) from None
            if size < 0:
                raise _bad(label, "negative PAX size")
        pax, longname, longlink = {}, None, None
        tar.check_path(name, link, max_path, label)
        if t in _REGULAR:
            t = "5" if t == "\x00" and name.endswith("/") else "0"
        if t in tar.HEADER_ONLY:
            size = 0  # links, directories, devices and FIFOs carry no data, whatever the size field says
        # unknown types are skipped over by their size, as tarfile does
        offset = src.skip(size, f"member {name!r}")
        yield Header(name, t, link, size, offset)


def _pax(data: bytes, label: str) -> dict[str, str]:
    try:
        return tar.parse_pax(data)
    except ValueError as e:
        raise _bad(label, str(e)) from None
