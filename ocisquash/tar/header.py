"""Tar header rules, one set for every tar the project reads: numbers, checksum, PAX records, names, caps.

The tars are untrusted (a ``docker save`` tarball, an OCI tar, each layer in them), and what docker and
containerd make of them is Go's ``archive/tar``: reading a header as Go does means the members we see
are the ones they see. So: a number is octal (spaces and NULs trimmed, cut at a NUL) or base-256, and
fits in an int64; the checksum is the unsigned or signed byte sum, exactly; a PAX header is parsed in
one linear pass (``tarfile``'s was quadratic, CVE-2024-6232), with capped records, UTF-8 keywords and
decimal numbers. A violated rule raises ``ValueError`` with a short detail, which the reader completes
with where (the archive or the layer) in its own ``FormatError``; a cap raises ``LimitExceeded``.
"""

from __future__ import annotations

from zlib import adler32

from ocisquash import limits

BLOCK = 512
ZERO = bytes(BLOCK)
MAX_NUMBER = (1 << 63) - 1  # sizes are signed 64-bit everywhere else (Go, the OCI spec's int64)
MAX_PAX_RECORDS = 10_000  # records in one PAX header: real archives carry a handful
HEADER_ONLY = frozenset("123456")  # links, devices, directories, FIFOs: no data, whatever the size says
EXTENSIONS = frozenset(b"xXgLKS")  # type flags of the headers that describe the next member
_ASCII = bytes(range(128))


def octal(block: bytes, start: int, end: int) -> int:
    """The octal field ``block[start:end]`` as Go reads one: spaces and NULs trimmed at both ends, the
    text cut at a NUL, then octal digits only (no sign, no ``_``, no ``0o``, which ``int()`` takes);
    -1 when the field is not that (base-256, or malformed: ``number`` says which).

    A loop over native ints once compiled: ``int(field.strip(), 8)`` took ten times the instructions."""
    i = start
    while i < end and (block[i] == 0x20 or block[i] == 0):
        i += 1
    value = 0
    while i < end:
        c = block[i]
        if 0x30 <= c <= 0x37:
            value = value * 8 + (c - 0x30)
            i += 1
        elif c == 0:  # Go cuts the text at a NUL: what follows does not count
            return value
        elif c == 0x20:  # trailing spaces, and NULs after them, are trimmed; anything else is not
            while i < end and (block[i] == 0x20 or block[i] == 0):
                i += 1
            return value if i == end else -1
        else:
            return -1
    return value


def number(field: bytes, what: str) -> int:
    """A numeric field: GNU base-256 (top bit set; negative when the next bit is), or ``octal``; in
    int64's range."""
    if field and field[0] & 0x80:
        if field[0] & 0x40:  # two's complement over the whole field, the marker bit as the sign
            value = int.from_bytes(field, "big", signed=True)
        else:
            value = int.from_bytes(field, "big") - (1 << (8 * len(field) - 1))
    else:
        value = octal(field, 0, len(field))
        if value < 0:
            raise ValueError(f"bad {what} field {field!r}")
    if value > MAX_NUMBER:
        raise ValueError(f"{what} {value} is over 2^63-1")
    if value < -MAX_NUMBER - 1:
        raise ValueError(f"{what} {value} is under -2^63")
    return value


def size_and_checksum(block: bytes) -> tuple[int, int]:
    """The size and checksum fields of a header block (``number``'s rules; plain octal read in place)."""
    size, checksum = octal(block, 124, 136), octal(block, 148, 156)
    if size < 0 or checksum < 0:
        return number(block[124:136], "size"), number(block[148:156], "checksum")
    return size, checksum


def owner_fields(block: bytes) -> tuple[int, int, int, int]:
    """The mode, uid, gid and mtime fields of a header block, as ``size_and_checksum`` reads its two."""
    mode, uid, gid = octal(block, 100, 108), octal(block, 108, 116), octal(block, 116, 124)
    mtime = octal(block, 136, 148)
    if mode < 0 or uid < 0 or gid < 0 or mtime < 0:
        return (number(block[100:108], "mode"), number(block[108:116], "uid"), number(block[116:124], "gid"),
                number(block[136:148], "mtime"))
    return mode, uid, gid, mtime


def device(block: bytes) -> tuple[int, int]:
    """The device major and minor fields (character and block devices)."""
    return number(block[329:337], "devmajor"), number(block[337:345], "devminor")


def checksum_ok(block: bytes, checksum: int) -> bool:
    """True when ``checksum`` is the block's byte sum with the checksum field read as spaces, bytes summed
    unsigned (POSIX) or signed (some old writers), as Go accepts."""
    field = field_high = 0
    for i in range(148, 156):
        c = block[i]
        field += c
        if c > 127:
            field_high += 1
    high = 0 if block.isascii() else len(block.translate(None, _ASCII))  # bytes over 127
    # Adler-32's low half, computed in C, is 1 + the byte sum mod 65521. The sum lies between 128 * high
    # and that + 127 * 512 = 65024 < 65521, so exactly one value of the congruence is in range: the sum.
    floor = 128 * high
    total = floor + ((adler32(block) & 0xFFFF) - 1 - floor) % 65521
    unsigned = total - field + 8 * 0x20
    return checksum == unsigned or (high > 0 and checksum == unsigned - 256 * (high - field_high))


def cstr(field: bytes) -> bytes:
    """A NUL-terminated string field's bytes."""
    cut = field.find(0)
    return field if cut < 0 else field[:cut]


def decode(raw: bytes) -> str:
    """Name bytes as text; bytes that are not UTF-8 are kept (as surrogates) and written back the same."""
    return raw.decode("utf-8", "surrogateescape")


def raw_name(block: bytes) -> bytes:
    """The name field, behind the POSIX name prefix when the block has one (GNU uses those bytes for times)."""
    raw = cstr(block[0:100])
    if block[257:263] == b"ustar\x00":
        prefix = cstr(block[345:500])
        if prefix:
            raw = prefix + b"/" + raw
    return raw


def raw_linkname(block: bytes) -> bytes:
    return cstr(block[157:257])


def padded(size: int) -> int:
    """``size`` rounded up to whole blocks: what member data takes in the archive."""
    return (size + BLOCK - 1) & ~(BLOCK - 1)


def parse_pax(data: bytes, max_records: int | None = MAX_PAX_RECORDS) -> dict[str, str]:
    """PAX records ``"<len> <key>=<value>\\n"`` in one linear pass; a malformed record is an error, and so
    are more than ``max_records`` (None: no count, where a cap on what is kept bounds them instead)."""
    out: dict[str, str] = {}
    pos, n, count = 0, len(data), 0
    while pos < n:
        if data[pos] == 0:  # NUL padding after the last record
            break
        count += 1
        if max_records is not None and count > max_records:
            raise ValueError(f"a PAX header with more than {max_records} records")
        # the length is a short decimal: looking 20 bytes ahead at most keeps the pass linear
        sp = data.find(b" ", pos, pos + 20)
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit():
            raise ValueError("malformed PAX record length")
        length = int(digits)
        end = pos + length
        if length <= len(digits) + 1 or end > n or data[end - 1] != 0x0A:
            raise ValueError("malformed PAX record")
        rec = data[sp + 1 : end - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            raise ValueError("malformed PAX record (no key)")
        try:
            # POSIX: keywords are UTF-8; one that is not could never be written back (nor meant anything)
            key = rec[:eq].decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a PAX keyword that is not UTF-8") from None
        out[key] = decode(rec[eq + 1 :])
        pos = end
    return out


def pax_number(value: str, what: str) -> int:
    """A decimal PAX record (size, uid, gid) as Go's ``strconv.ParseInt`` reads it: a sign, ASCII digits, int64."""
    digits = value[1:] if value[:1] in ("+", "-") else value
    if not digits or not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise ValueError(f"bad PAX {what} {value[:40]!r}")
    n = int(value)
    if not -MAX_NUMBER - 1 <= n <= MAX_NUMBER:
        raise ValueError(f"PAX {what} {n} is over 2^63-1")
    return n


def pax_time(value: str) -> int | str:
    """A PAX time: whole seconds as an int, or the text itself when it has a fraction (nanoseconds would not
    survive a float), checked as Go reads it: decimal seconds, then ``.`` and digits."""
    secs, dot, frac = value.partition(".")
    pax_number(secs, "mtime")
    if not dot:
        return int(secs)
    if frac and not (frac.isascii() and frac.isdigit()):
        raise ValueError(f"bad PAX mtime {value[:40]!r}")
    return value


def check_extension(size: int, type_: int, cap: int, where: str) -> None:
    """Refuse a PAX or GNU long-name header over ``cap`` (``max_pax_header``) before reading it."""
    if size > cap:
        kind = "PAX" if type_ in b"xXg" else "GNU long name"
        raise limits.exceeded("max_pax_header", f"{where}: a {kind} header of {size} bytes is too large")


def check_path(name: str, linkname: str, cap: int, where: str) -> None:
    """Refuse a member name or link target over ``cap`` bytes (``max_path``)."""
    # a character is at most 4 bytes of UTF-8 (a kept undecodable byte is one): most names need no encoding
    if (len(name) > cap // 4 and len(name.encode("utf-8", "surrogateescape")) > cap) or (
        len(linkname) > cap // 4 and len(linkname.encode("utf-8", "surrogateescape")) > cap
    ):
        raise limits.exceeded("max_path", f"{where}: a member name or link target is too long (over {cap} bytes)")
