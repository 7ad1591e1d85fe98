"""The tar codec (``ocisquash.tar``) and the two readers that follow its rules: the outer archive's
(``ocisquash.tarheader``) and the merge's layer reader (``ocisquash.merge.tarread``)."""

from __future__ import annotations

import io
import os
import re

import pytest
from fuzz import images as I
from hypothesis import given, settings
from hypothesis import strategies as st

from ocisquash import limits, tarheader
from ocisquash.errors import FormatError, LimitExceeded
from ocisquash.merge.records import MergeLimits
from ocisquash.merge.tarread import Reader, Source
from ocisquash.tar import header as tar

END = bytes(1024)


def outer(data: bytes) -> list[tuple[str, int]]:
    """What the outer archive reader makes of ``data``: (name, size) of each member."""
    return [(h.name, h.size) for h in tarheader.headers(io.BytesIO(data), "t", stream=True)]


def layer_reader(data: bytes) -> list[tuple[str, int]]:
    """What the merge's layer reader makes of ``data`` (member data skipped, as ``read_layer`` does)."""
    src = Source(io.BytesIO(data), False, "L")
    out = []
    for h in Reader(src, MergeLimits()):
        out.append((h.name, h.size))
        assert src.skip(tar.padded(h.size))
    return out


READERS = {"outer": outer, "layer": layer_reader}


def with_checksum(block: bytes, value: int) -> bytes:
    return block[:148] + b"%06o\x00 " % value + block[156:]


def byte_sum(block: bytes, signed: bool = False) -> int:
    """The reference: the byte sum with the checksum field as spaces, bytes read unsigned or signed."""
    b = block[:148] + b" " * 8 + block[156:]
    return sum(x - 256 if signed and x > 127 else x for x in b)


# ---------------------------------------------------------------------------------------------- numbers

@pytest.mark.parametrize(("field", "value"), [
    (b"0000644\x00", 0o644), (b"0000644 ", 0o644), (b"   644  ", 0o644), (b"\x00\x00644\x00\x00", 0o644),
    (b"644\x00junk", 0o644), (b"", 0), (bytes(8), 0), (b"        ", 0), (b"%011o\x00" % (8**11 - 1), 8**11 - 1),
    (b"\x80" + bytes(10) + b"\x01", 1), (b"\x80" + b"\x00" * 3 + b"\x7f" + b"\xff" * 7, (1 << 63) - 1),
    (b"\xff" * 8, -1), (b"\xff" * 7 + b"\xfe", -2), (b"\xff" * 11 + b"\x00", -256),
])
def test_number_reads_octal_and_base256_as_go_does(field: bytes, value: int) -> None:
    assert tar.number(field, "size") == value


@pytest.mark.parametrize(("field", "detail"), [
    (b"+000644\x00", "bad size field"), (b"-000644\x00", "bad size field"), (b"0o644\x00\x00\x00", "bad size field"),
    (b"6_44\x00", "bad size field"), (b"0000648\x00", "bad size field"), (b"64 4\x00", "bad size field"),
    (b"0x1f\x00", "bad size field"), (b"\x80" + b"\xff" * 11, "over 2^63-1"), (b"\xc0" + bytes(11), "under -2^63"),
])
def test_number_refuses_what_go_refuses(field: bytes, detail: str) -> None:
    """int() takes a sign, "_", "0o" and inner spaces, Go's ParseUint does not: a size one tool reads
    and another refuses would put member boundaries in different places."""
    with pytest.raises(ValueError, match=re.escape(detail)):
        tar.number(field, "size")


def test_size_fast_path_agrees_with_number() -> None:
    block = I.raw_header("a", size_field=b"\x00 0001750 \x00\x00")
    assert tar.size_and_checksum(block)[0] == tar.number(block[124:136], "size") == 0o1750
    bad = I.raw_header("a", size_field=b"00017\x0050\x00\x00")  # cut at the NUL, as Go does
    assert tar.size_and_checksum(bad)[0] == 0o17


# ---------------------------------------------------------------------------------------------- checksum

@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=512, max_size=512), st.sampled_from([-65521, -1, 0, 1, 65521]), st.booleans())
def test_checksum_is_the_exact_byte_sum(block: bytes, off: int, signed: bool) -> None:
    """The Adler-32 shortcut gives the sum modulo 65521; the check must still be exact."""
    want = byte_sum(block, signed) + off
    exact = off == 0 or want in (byte_sum(block), byte_sum(block, True))
    assert tar.checksum_ok(block, want) == exact


@pytest.mark.parametrize("name", ["etc/a", "caf\u00e9/\u00fc" * 10, "\u00ff" * 50])
def test_checksum_signed_and_unsigned(name: str) -> None:
    block = name.encode()[:100].ljust(100, b"\x00") + I.raw_header("x")[100:]
    for s in (byte_sum(block), byte_sum(block, True)):
        assert tar.checksum_ok(block, s)
    assert not tar.checksum_ok(block, byte_sum(block) + 1)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_checksum_off_by_the_adler_modulus_is_refused(reader: str) -> None:
    """The layer reader's congruence check once took a checksum 65521 too large; Go refuses it."""
    good = I.raw_header("a", size=0)
    assert READERS[reader](good + END) == [("a", 0)]
    bad = with_checksum(good, byte_sum(good) + 65521)
    with pytest.raises(FormatError, match=r"checksum|not a tar header"):
        READERS[reader](bad + END)


# ---------------------------------------------------------------------------------------------- PAX

def pax_member(records: bytes, name: str = "a") -> bytes:
    return I.raw_header("././@PaxHeader", size=len(records), type_=b"x") + I.pad(records) + I.raw_header(name) + END


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize(("records", "detail"), [
    (I.pax_record("path", b"b"), None),
    (b"6 a=b\n" * 10_001, "more than 10000 records"),
    (b"1" * 5000, "malformed PAX record length"),
    (b"+7 a=bc\n", "malformed PAX record length"),
    (b"99 a=b\n", "malformed PAX record"),
    (b"6 =bc\n", "malformed PAX record"),
    (b"7 \xff\xfe=b\n", "PAX keyword that is not UTF-8"),
])
def test_both_readers_follow_one_pax_parser(reader: str, records: bytes, detail: str | None) -> None:
    if detail is None:
        assert READERS[reader](pax_member(records)) == [("b", 0)]
        return
    with pytest.raises(FormatError, match=detail):
        READERS[reader](pax_member(records))


@pytest.mark.parametrize(("value", "ok"), [("7", True), ("+7", True), ("-7", False), ("7e0", False), (" 7", False),
                                            ("1_0", False), ("", False), ("9" * 20, False)])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_pax_size_is_a_go_decimal(reader: str, value: str, ok: bool) -> None:
    data = I.raw_header("././@PaxHeader", size=len(rec := I.pax_record("size", value.encode())), type_=b"x")
    data += I.pad(rec) + I.raw_header("a") + I.pad(b"x" * 7) + END
    if ok:
        assert READERS[reader](data) == [("a", 7)]
    else:
        with pytest.raises(FormatError, match=r"PAX size|negative"):
            READERS[reader](data)


@pytest.mark.parametrize(("value", "ok"), [("1600000000", True), ("1600000000.123456789", True), ("-1.5", True),
                                            ("1.5e3", False), (".5", False), ("nan", False), ("1.", True)])
def test_pax_mtime_is_checked_as_go_reads_it(value: str, ok: bool) -> None:
    """float() took "1.5e3" and "nan", which Go's reader refuses; the text was then written back as is."""
    data = pax_member(I.pax_record("mtime", value.encode()))
    if ok:
        assert layer_reader(data) == [("a", 0)]
    else:
        with pytest.raises(FormatError, match="bad PAX mtime"):
            layer_reader(data)


# ---------------------------------------------------------------------------------------------- caps

@pytest.mark.parametrize("reader", sorted(READERS))
def test_path_cap_counts_bytes_in_both_readers(reader: str) -> None:
    """max_path is Linux's PATH_MAX, in bytes: 1,500 two-byte characters are over 2,048."""
    name = "\u00e9" * 1500
    data = pax_member(I.pax_record("path", name.encode()))
    if reader == "outer":
        with limits.scoped({"max_path": 2048}), pytest.raises(LimitExceeded, match="too long"):
            outer(data)
        with limits.scoped({"max_path": 3000}):
            assert outer(data) == [(name, 0)]
    else:
        with pytest.raises(LimitExceeded, match="too long"):
            list(Reader(Source(io.BytesIO(data), False, "L"), MergeLimits(max_path=2048)))
        assert next(iter(Reader(Source(io.BytesIO(data), False, "L"), MergeLimits(max_path=3000)))).name == name


def test_codec_imports_nothing_above_it() -> None:
    """The codec sits below both readers: it may import errors and limits, nothing else of ocisquash."""
    import ast

    root = os.path.join(os.path.dirname(tar.__file__ or ""), "")
    for fname in sorted(os.listdir(root)):
        if not fname.endswith(".py"):
            continue
        with open(os.path.join(root, fname)) as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for m in mods:
                if m.startswith("ocisquash"):
                    assert m in ("ocisquash", "ocisquash.errors", "ocisquash.limits"), (fname, m)
                    if m == "ocisquash" and isinstance(node, ast.ImportFrom):
                        assert {a.name for a in node.names} <= {"errors", "limits"}, (fname, m)
