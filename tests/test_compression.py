"""Compression: sniffing by magic bytes, readers that read every gzip member and zstd frame (skippable
frames too), clean errors for corrupt or truncated streams, deterministic writers, media types."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import isal.igzip_threaded as igzip_threaded
import pytest
import zstandard

import ocisquash
from ocisquash import codecs, errors, model
from ocisquash import compression as c
from ocisquash.compression import Codec

DATA = (b"layer bytes " * 5000) + os.urandom(3000) + b"\0" * 4096


def _gzip_members(*parts: bytes) -> bytes:
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


def _zstd_frames(*parts: bytes) -> bytes:
    return b"".join(zstandard.ZstdCompressor().compress(p) for p in parts)


def _skippable(payload: bytes, n: int = 0) -> bytes:
    return struct.pack("<II", 0x184D2A50 + n, len(payload)) + payload


def read_all(blob: bytes, codec: Codec | None = None, chunk: int = 7919) -> bytes:
    r = c.decompressing_reader(io.BytesIO(blob), "blob", codec)
    out = bytearray()
    while data := r.read(chunk):
        out += data
    return bytes(out)


@pytest.mark.parametrize("blob,codec", [
    (gzip.compress(DATA), Codec.GZIP), (zstandard.ZstdCompressor().compress(DATA), Codec.ZSTD),
    (_skippable(b"meta") + _zstd_frames(DATA), Codec.ZSTD), (bz2.compress(DATA), Codec.BZIP2),
    (lzma.compress(DATA), Codec.XZ), (b"\0" * 1024, Codec.NONE), (b"", Codec.NONE),
])
def test_sniff(blob: bytes, codec: Codec) -> None:
    assert c.sniff_bytes(blob[: c.SNIFF_BYTES]) is codec


def test_sniff_plain_tar() -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        ti = tarfile.TarInfo("a")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    assert c.sniff_bytes(buf.getvalue()[:512]) is Codec.NONE


def test_truncated_zstd_multi_frame_and_skippable() -> None:
    """python-zstandard's reader returns what it has when the input ends inside a frame: ocisquash must not."""
    frames = _skippable(b"meta") + _zstd_frames(DATA[:5000], DATA[5000:])
    assert read_all(frames) == DATA
    for cut in (6, 13, len(frames) - 30, len(frames) - 1):
        with pytest.raises(errors.FormatError, match="truncated"):
            read_all(frames[:cut])


@pytest.mark.parametrize("blob", [
    gzip.compress(DATA), _gzip_members(DATA[:1000], b"", DATA[1000:]),
    zstandard.ZstdCompressor().compress(DATA), _zstd_frames(DATA[:7], DATA[7:50000], DATA[50000:]),
    _skippable(b"x" * 10) + _zstd_frames(DATA[:100]) + _skippable(b"", 5) + _zstd_frames(DATA[100:]),
    bz2.compress(DATA[:9]) + bz2.compress(DATA[9:]), lzma.compress(DATA), DATA,
])
def test_reads_every_member_and_frame(blob: bytes) -> None:
    assert read_all(blob) == DATA
    assert read_all(blob, chunk=1 << 20) == DATA


def test_zstd_frame_without_content_size() -> None:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(write_content_size=False).stream_writer(out, closefd=False) as w:
        w.write(DATA)
    assert read_all(out.getvalue() + _zstd_frames(b"more")) == DATA + b"more"


@pytest.mark.parametrize("codec,blob", [
    ("gzip", gzip.compress(DATA)), ("zstd", zstandard.ZstdCompressor(write_checksum=True).compress(DATA)),
    ("bzip2", bz2.compress(DATA)), ("xz", lzma.compress(DATA)),
], ids=["gzip", "zstd", "bzip2", "xz"])
def test_truncated_and_corrupt_streams(codec: str, blob: bytes) -> None:
    """Cut anywhere, the stream is an error; corrupt, too (zstd only detects it with frame checksums: the
    diff ID check catches the rest)."""
    for cut in (8, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(errors.FormatError):
            read_all(blob[:cut])
    with pytest.raises(errors.FormatError) as ei:
        read_all(blob[: len(blob) // 2])
    assert str(ei.value).startswith("blob: ") and codec in str(ei.value)
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    bad[len(bad) // 2 + 1] ^= 0xFF
    with pytest.raises(errors.FormatError):
        read_all(bytes(bad))


def test_gzip_crc_checked() -> None:
    blob = bytearray(gzip.compress(DATA))
    blob[-8] ^= 0x01  # the CRC32 in the trailer
    with pytest.raises(errors.FormatError):
        read_all(bytes(blob))


def test_trailing_garbage_after_gzip_is_an_error() -> None:
    with pytest.raises(errors.FormatError):
        read_all(gzip.compress(DATA) + b"garbage that is not gzip")


def test_declared_codec_must_match_bytes() -> None:
    with pytest.raises(errors.FormatError, match="media type says gzip"):
        read_all(zstandard.ZstdCompressor().compress(DATA), Codec.GZIP)
    with pytest.raises(errors.FormatError, match="media type says none"):
        read_all(gzip.compress(DATA), Codec.NONE)
    assert read_all(gzip.compress(DATA), Codec.GZIP) == DATA


@pytest.mark.parametrize("codec,level", [(Codec.GZIP, None), (Codec.GZIP, 1), (Codec.ZSTD, None), (Codec.ZSTD, 1),
                                         (Codec.NONE, None)])
def test_writer_round_trip_and_deterministic(codec: Codec, level: int | None) -> None:
    big = DATA * 60  # several of igzip_threaded's 1 MiB blocks

    def compress(threads: int) -> bytes:
        out = io.BytesIO()
        with c.compressing_writer(out, codec, level, threads=threads) as w:
            for i in range(0, len(big), 100_000):
                w.write(big[i:i + 100_000])
        assert not out.closed
        return out.getvalue()

    a, b, one = compress(2), compress(2), compress(1)
    assert a == b and a == one, "output depends on the run or the thread count"
    assert read_all(a) == big
    if codec is Codec.GZIP:
        assert a[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
        assert not a[3] & 0x08, "gzip header must not carry a file name"
        assert zlib.decompress(a, 31) == big
    elif codec is Codec.ZSTD:
        assert zstandard.ZstdDecompressor().stream_reader(a, read_across_frames=True).read() == big
    else:
        assert a == big


def test_levels_and_codec_names() -> None:
    assert codecs.parse("zstd") is Codec.ZSTD
    for bad in ("xz", "bzip2", "lz4", "GZIP"):
        with pytest.raises(errors.UsageError) as e:
            codecs.parse(bad)
        assert "gzip, zstd or none" in str(e.value)



# ------------------------------------------------------------------------------------------ levels
# The level table's tests, all here: the range each codec takes (the API's and the command line's,
# which read the same table), the default, and gzip's 0-9 mapped onto ISA-L.

@pytest.mark.parametrize(("codec", "lo", "hi", "default"), [(Codec.GZIP, 0, 9, 6), (Codec.ZSTD, 1, 19, 3),
                                                           (Codec.NONE, 0, 0, 0)])
def test_level_ranges(codec: Codec, lo: int, hi: int, default: int) -> None:
    assert c.check_level(codec, None) == default
    for ok_level in (lo, hi):
        assert c.check_level(codec, ok_level) == ok_level
    for bad in (lo - 1, hi + 1):
        with pytest.raises(errors.UsageError) as e:
            c.check_level(codec, bad)
        assert str(e.value) == f"--level {bad} is out of range for {codec.name}: {lo} to {hi}"
        with pytest.raises(errors.UsageError) as e:
            ocisquash.Compression(codec.name).check_level(bad)  # the API reads the same table
        assert str(e.value) == f"--level {bad} is out of range for {codec.name}: {lo} to {hi}"


def _gzip_at(level: int | None, data: bytes) -> bytes:
    out = io.BytesIO()
    with c.compressing_writer(out, Codec.GZIP, level) as w:
        w.write(data)
    return out.getvalue()


def test_gzip_levels_have_gzips_meaning() -> None:
    """0 stores; 1-3, 4-6 and 7-9 are ISA-L's levels 1, 2 and 3 (byte for byte); the default is 6."""
    # real text (the package's own sources), on which the levels compress as they do on a layer
    data = b"".join(p.read_bytes() for p in sorted(Path(c.__file__).parent.rglob("*.py")))
    out = {lvl: _gzip_at(lvl, data) for lvl in range(10)}
    for lvl, blob in out.items():
        assert zlib.decompress(blob, 31) == data, lvl
        assert blob[4:8] == b"\0\0\0\0" and not blob[3] & 0x08, "not deterministic"
    assert len(out[0]) > len(data), "level 0 is gzip's store: no compression"
    assert out[1] == out[2] == out[3] and out[4] == out[5] == out[6] and out[7] == out[8] == out[9]
    assert _gzip_at(None, data) == out[6]
    assert len(out[1]) > len(out[6]) > len(out[9])
    for gz, isal in ((1, 1), (6, 2), (9, 3)):
        raw = io.BytesIO()
        with igzip_threaded.open(raw, "wb", compresslevel=isal, threads=1) as w:  # type: ignore[no-untyped-call]
            w.write(data)
        assert out[gz][10:] == raw.getvalue()[10:], f"gzip level {gz} is not ISA-L's {isal}"


def test_media_types() -> None:
    assert c.codec_of_media_type("application/vnd.oci.image.layer.v1.tar+gzip") is Codec.GZIP
    assert c.codec_of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip") is Codec.GZIP
    assert c.codec_of_media_type(model.DOCKER_FOREIGN) is Codec.GZIP
    assert c.codec_of_media_type(model.OCI_LAYER_ND + "+zstd") is Codec.ZSTD
    assert c.codec_of_media_type("application/vnd.docker.image.rootfs.diff.tar.zstd") is Codec.ZSTD
    assert c.layer_media_type(Codec.ZSTD, docker=False) == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert c.codec_of_media_type(model.OCI_LAYER) is Codec.NONE
    assert c.codec_of_media_type(model.DOCKER_LAYER) is Codec.NONE
    assert c.codec_of_media_type("application/x-unknown") is None
    for codec in (Codec.NONE, Codec.GZIP, Codec.ZSTD):
        for docker in (False, True):
            mt = c.layer_media_type(codec, docker)
            assert c.codec_of_media_type(mt) is codec
            assert mt.startswith("application/vnd.docker." if docker else "application/vnd.oci.")


@pytest.mark.parametrize(("codec", "bad", "range_"), [("gzip", "10", "0 to 9"), ("gzip", "-1", "0 to 9"),
                                                     ("zstd", "0", "1 to 19"), ("zstd", "20", "1 to 19")])
def test_cli_level_out_of_range_is_one_usage_line(codec: str, bad: str, range_: str, tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
    out = tmp_path / "o.tar"
    r = subprocess.run([sys.executable, "-m", "ocisquash", "squash", str(sample), str(out), "--compression", codec,
                        f"--level={bad}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.splitlines() == [f"error: --level {bad} is out of range for {codec}: {range_}"]


def test_cli_gzip_level_9_is_isal_3(tmp_path: Path) -> None:
    """Through the command line: --level 9 is accepted and writes what ISA-L's best level writes."""
    sample = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
    blobs = {}
    for lvl in ("7", "9", "6"):
        out = tmp_path / f"l{lvl}"
        r = subprocess.run([sys.executable, "-m", "ocisquash", "squash", str(sample), str(out), "--compression", "gzip",
                            "--level", lvl, "--timestamp", "0", "-q"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        index = json.loads((out / "index.json").read_text())
        man = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
        blobs[lvl] = (out / "blobs" / "sha256" / man["layers"][-1]["digest"][7:]).read_bytes()
    assert blobs["7"] == blobs["9"] != blobs["6"]


@pytest.mark.parametrize(("level", "suggested"), [("4", "4"), ("-1", "6"), ("12", "6")])
def test_level_without_compression_hints_a_command_that_works(level: str, suggested: str, tmp_path: Path) -> None:
    """The hint of ``--level`` without ``--compression`` is a command that runs: an out-of-range level is
    not echoed into it."""
    sample = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
    out = tmp_path / "o.tar"
    r = subprocess.run([sys.executable, "-m", "ocisquash", "squash", str(sample), str(out), f"--level={level}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.splitlines()[1] == f"hint: e.g. --compression gzip --level {suggested}"
    ok = subprocess.run([sys.executable, "-m", "ocisquash", "squash", str(sample), str(out), "-q", "--compression",
                         "gzip", "--level", suggested], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
