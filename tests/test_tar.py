"""The tar codec (``ocisquash.tar``) and the two readers that follow its rules: the outer archive's
(``ocisquash.tarheader``) and the merge's layer reader (``ocisquash.merge.tarread``)."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fuzz import images as I
from hypothesis import given, settings
from hypothesis import strategies as st
from layertar import Entry, f, inputs, layer
from untrusted import (
    assert_clean_error,
    cli,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    header,
    layout_dir,
    load_all,
    pad,
)

from ocisquash import limits, merge, tarheader
from ocisquash.errors import FormatError, LimitExceeded, OcisquashError, UnsafePath
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


def go_octal(field: bytes) -> int | None:
    """The reference: Go's parseOctal (trim spaces and NULs, cut at a NUL, ParseUint base 8), None for an error."""
    text = field.strip(b" \x00")
    cut = text.find(0)
    text = text if cut < 0 else text[:cut]
    if text and not all(0x30 <= c <= 0x37 for c in text):
        return None
    return int(text, 8) if text else 0


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(b"00178 \x00+-_ox\t"), max_size=12).map(bytes))
def test_octal_reads_what_go_reads(field: bytes) -> None:
    want = go_octal(field)
    if want is None:
        assert tar.octal(field, 0, len(field)) == -1
        with pytest.raises(ValueError, match="bad size field"):
            tar.number(field, "size")
    else:
        assert tar.octal(field, 0, len(field)) == tar.number(field, "size") == want
    block = I.raw_header("a", size_field=field.ljust(12, b"\x00")[:12])
    if want is not None:  # in place, at its offset in a header: the same
        assert tar.size_and_checksum(block)[0] == want


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


def test_pax_records_are_counted_in_the_outer_archive_and_capped_by_what_a_layer_keeps() -> None:
    """The outer reader refuses a PAX header of more than 10,000 records; a layer member's records are
    bounded by max_xattr instead, which names a cap a user can raise for a trusted layer."""
    with pytest.raises(FormatError, match="more than 10000 records"):
        outer(pax_member(b"6 a=b\n" * 10_001))
    many = b"".join(I.pax_record(f"SCHILY.xattr.user.a{i}", b"v") for i in range(10_001))
    with pytest.raises(LimitExceeded, match=r"cap max_xattr\)"):
        layer_reader(pax_member(many))
    assert layer_reader(pax_member(b"".join(I.pax_record(f"SCHILY.xattr.user.a{i}", b"v") for i in range(3))))


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


LAYER_CASES: dict[str, tuple[Callable[[], bytes], type[OcisquashError], str]] = {
    "huge-pax": (lambda: layer(Entry("p", data=b"x", pax={"comment": "c" * (1 << 20)})), LimitExceeded,
                 "(cap max_pax_header)"),
    "huge-gnu-longname": (lambda: layer(f("g/" + "n" * (1 << 20), b"x"), fmt=tarfile.GNU_FORMAT), LimitExceeded,
                          "(cap max_pax_header)"),
    "bad-checksum": (lambda: (lambda t: t[:148] + b"0000000\0" + t[156:])(layer(f("a", b"x"))), FormatError,
                     "checksum"),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_hostile_layer(case: str) -> None:
    """Through the merge: an extension header over the default cap, a zeroed checksum field."""
    build, cls, phrase = LAYER_CASES[case]
    with pytest.raises(cls) as e:
        merge.plan(inputs([build()]), 0)
    assert phrase in str(e.value)


# ------------------------------------------------------------------------------------------ outer archives


def ti(name: str, type_: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mode, t.mtime = type_, link, 0o644, I.MTIME
    return t


def docker_with(extra: list[tuple[tarfile.TarInfo, bytes | None]], drop: str | None = None) -> bytes:
    m = I.members_docker()
    pairs: list[tuple[tarfile.TarInfo, bytes | None]] = [(ti(k), v) for k, v in m.items() if k != drop]
    return I.tar_of(pairs + extra)


def _layer_path() -> str:
    return str(json.loads(I.members_docker()["manifest.json"])[0]["Layers"][0])


OUTER_CASES: dict[str, tuple[Callable[[], bytes], type[OcisquashError], str]] = {
    "traversal": (lambda: docker_with([(ti("../evil"), b"x")]), UnsafePath, "contains '..'"),
    "absolute": (lambda: docker_with([(ti("/etc/evil"), b"x")]), UnsafePath, "is absolute"),
    "backslash": (lambda: docker_with([(ti("a\\..\\b"), b"x")]), UnsafePath, "NUL or a backslash"),
    "duplicate": (lambda: docker_with([(ti("./manifest.json"), b"[]")]), UnsafePath, "appears twice"),
    "symlink-escape": (lambda: docker_with([(ti(_layer_path(), tarfile.SYMTYPE, "../../../etc/passwd"), None)],
                                           drop=_layer_path()), UnsafePath, "symlink leaving the archive"),
    "symlink-absolute": (lambda: docker_with([(ti(_layer_path(), tarfile.SYMTYPE, "/etc/passwd"), None)],
                                             drop=_layer_path()), UnsafePath, "symlink to an absolute path"),
    "symlink-cycle": (lambda: docker_with([(ti(_layer_path(), tarfile.SYMTYPE, "x"), None),
                                           (ti(_layer_path().rsplit("/", 1)[0] + "/x", tarfile.SYMTYPE,
                                               _layer_path().rsplit("/", 1)[1]), None)],
                                          drop=_layer_path()), UnsafePath, "too many links"),
    "hardlink-escape": (lambda: docker_with([(ti("h", tarfile.LNKTYPE, "../../etc/shadow"), None)]),
                        UnsafePath, "contains '..'"),
    "not-utf8-manifest": (lambda: docker_with([(ti("manifest.json"), b'[{"Config":"\xff"}]')], drop="manifest.json"),
                          FormatError, "not UTF-8 JSON"),
    "truncated-outer": (lambda: I.tar_of(I.members_docker())[:3000], FormatError, "unexpected end of data"),
}


@pytest.mark.parametrize("case", sorted(OUTER_CASES))
def test_hostile_outer_tar(case: str, tmp_path: Path) -> None:
    build, cls, phrase = OUTER_CASES[case]
    p = tmp_path / "in.tar"
    p.write_bytes(build())
    with pytest.raises(cls) as e:
        load_all(p)
    assert phrase in str(e.value)


def test_non_utf8_member_names_are_kept_apart(tmp_path: Path) -> None:
    """A member name that is not UTF-8 is just another name: the image beside it reads fine."""
    pairs = [(ti(k), v) for k, v in I.members_docker().items()]
    raw = I.tar_of([*pairs, (ti("blobs/caf\udce9"), b"x")])
    assert b"caf\xe9" in raw
    p = tmp_path / "in.tar"
    p.write_bytes(raw)
    assert load_all(p) > 0


def negative_size_tar() -> bytes:
    """A member whose base-256 size is negative: Python 3.11.7's tarfile loops for ever (CVE-2025-8194)."""
    neg = b"\xff" * 11 + b"\x00"  # -256 in GNU base-256
    return header("manifest.json", neg) + bytes(1024)


def pax_digits_tar(n: int = 1 << 20) -> bytes:
    """A PAX header of ``n`` digits: tarfile's regex parses it in quadratic time (CVE-2024-6232)."""
    return header("././@PaxHeader", size=n, type_=b"x") + pad(b"1" * n) + header("a") + bytes(1024)


def test_negative_base256_size(tmp_path: Path) -> None:
    p = tmp_path / "neg.tar"
    p.write_bytes(negative_size_tar())
    for cmd in ("images", "validate"):
        assert_clean_error(cli(cmd, p, timeout=20), "negative size")
    assert_clean_error(cli("squash", p, tmp_path / "o.tar", timeout=20), "negative size")


def test_base256_size_over_int64(tmp_path: Path) -> None:
    p = tmp_path / "big.tar"
    p.write_bytes(header("manifest.json", b"\x80" + b"\xff" * 11) + bytes(1024))
    assert_clean_error(cli("images", p, timeout=20), "over 2^63-1")


def test_pax_header_of_digits(tmp_path: Path) -> None:
    p = tmp_path / "pax.tar"
    p.write_bytes(pax_digits_tar())
    assert_clean_error(cli("images", p, timeout=20), "malformed PAX record")
    gz = tmp_path / "pax.tar.gz"
    gz.write_bytes(gzip.compress(pax_digits_tar(), mtime=0))
    assert_clean_error(cli("validate", gz, timeout=20), "malformed PAX record")


def test_pax_record_count_is_capped(tmp_path: Path) -> None:
    recs = b"6 a=b\n" * 20_000
    p = tmp_path / "pax.tar"
    p.write_bytes(header("././@PaxHeader", size=len(recs), type_=b"x") + pad(recs) + header("a") + bytes(1024))
    assert_clean_error(cli("images", p, timeout=20), "more than 10000 records")


def test_bad_checksum_in_a_later_header(tmp_path: Path) -> None:
    """tarfile stops silently at a later bad header, so members after it vanish; refuse instead."""
    good = I.tar_of(I.members_docker())
    h = bytearray(header("zzz", size=1))
    h[0] = ord("y")  # checksum no longer matches
    raw = good[:-1024].rstrip(b"\x00")
    raw = raw + bytes(-len(raw) % 512) + bytes(h) + pad(b"x") + bytes(1024)
    p = tmp_path / "c.tar"
    p.write_bytes(raw)
    assert_clean_error(cli("images", p, timeout=20), "bad header checksum")


def test_outer_pax_size_and_prefix_are_honoured(tmp_path: Path) -> None:
    """The new reader keeps what tarfile got right: PAX paths and sizes, ustar name prefixes."""
    members = I.members_docker()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for k, v in members.items():
            ti = tarfile.TarInfo(k)
            ti.size, ti.mtime = len(v), I.MTIME
            ti.pax_headers = {"comment": "x" * 300}
            tf.addfile(ti, io.BytesIO(v))
    p = tmp_path / "pax.tar"
    p.write_bytes(buf.getvalue())
    r = cli("validate", p, timeout=30)
    assert r.rc == 0, r.err + r.out


def test_outer_member_names_are_capped_at_path_max(tmp_path: Path) -> None:
    m = I.members_docker()
    m["x" * 5000] = b"x"
    p = tmp_path / "n.tar"
    p.write_bytes(I.tar_of(m))
    assert_clean_error(cli("images", p, timeout=20), "max_path")


# ------------------------------------------------------------------------------------------ against tarfile


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tarheader_agrees_with_tarfile_on_valid_archives(tmp_path: Path, fmt: int) -> None:
    """Names (long ones: ustar prefix, GNU L/K, PAX path/linkpath), types, sizes and data offsets as
    tarfile reads them from archives it wrote itself."""
    from ocisquash import tarheader

    long_dir = "d" * 90 + "/" + "e" * 60
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, type_, data, link in [
            ("a", tarfile.REGTYPE, b"x" * 700, ""), ("dir/", tarfile.DIRTYPE, None, ""),
            (long_dir + "/file", tarfile.REGTYPE, b"y" * 513, ""), ("l", tarfile.SYMTYPE, None, "a"),
            ("h", tarfile.LNKTYPE, None, "a"), ("fifo", tarfile.FIFOTYPE, None, ""),
            ("ll" if fmt == tarfile.USTAR_FORMAT else "L" * 150, tarfile.SYMTYPE, None,
             "t" if fmt == tarfile.USTAR_FORMAT else "T" * 150),
            ("caf\udce9" if fmt != tarfile.USTAR_FORMAT else "cafe", tarfile.REGTYPE, b"", ""),
        ]:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mtime = type_, link, I.MTIME
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    p = tmp_path / "t.tar"
    p.write_bytes(buf.getvalue())
    with open(p, "rb") as f:
        got = [(h.name, h.type, h.size, h.offset if h.type == "0" else None, h.linkname)
               for h in tarheader.headers(f, "t")]
    with tarfile.open(p, encoding="utf-8", errors="surrogateescape") as tf:
        want = [(ti.name + ("/" if ti.isdir() and not ti.name.endswith("/") else ""),
                 ti.type.decode(), ti.size if ti.isreg() else 0, ti.offset_data if ti.isreg() else None,
                 ti.linkname) for ti in tf]
    got = [(n if t != "5" or n.endswith("/") else n + "/", t, *rest) for n, t, *rest in got]
    assert got == want


def test_tarheader_refuses_a_single_truncated_member(tmp_path: Path) -> None:
    from ocisquash import tarheader
    from ocisquash.errors import FormatError

    raw = I.tar_of({"a": b"x" * 5000})
    for cut in (100, 512 + 10, 1200):
        p = tmp_path / "t.tar"
        p.write_bytes(raw[:cut])
        with open(p, "rb") as f, pytest.raises(FormatError, match="unexpected end of data"):
            list(tarheader.headers(f, "t"))


# ------------------------------------------------------------------------------------------ lying PAX sizes


def _lying_layer() -> bytes:
    """A layer whose PAX ``size=`` claims 1 TB for a member whose data is 3 bytes."""
    rec = b"size=1000000000000\n"
    rec = b"%d %s" % (len(rec) + 3, rec)
    return (header("././@PaxHeader", size=len(rec), type_=b"x") + pad(rec) + header("big", size=3)
            + pad(b"abc") + bytes(1024))


@pytest.mark.parametrize("kind", ["docker-tar", "oci-dir-gzip", "oci-dir-plain"])
@pytest.mark.parametrize("cmd", ["analyze", "dry-run", "squash", "validate"])
def test_pax_size_lie_is_truncation_everywhere(tmp_path: Path, cmd: str, kind: str) -> None:
    if kind == "docker-tar":
        p = tmp_path / "lie.tar"
        p.write_bytes(I.tar_of(I.members_docker(layers=[_lying_layer()])))
    else:
        p = layout_dir(tmp_path, I.members_oci(layers=[_lying_layer()], codec=kind.rsplit("-", 1)[1]
                                               .replace("plain", "none")))
    args = {"analyze": ["analyze", p], "dry-run": ["squash", "--dry-run", p, tmp_path / "o.tar"],
            "squash": ["squash", p, tmp_path / "o.tar"], "validate": ["validate", p]}[cmd]
    r = cli(*args)
    assert r.rc == 1, (r.rc, r.out, r.err)
    assert "truncated" in r.err + r.out, r.err + r.out
