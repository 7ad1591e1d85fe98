"""Compression: sniffing by magic bytes, readers that read every gzip member and zstd frame (skippable
frames too), clean errors for corrupt or truncated streams, deterministic writers, media types."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import struct
import zlib

import pytest
import zstandard

from ocisquash import compression as c
from ocisquash import errors, model
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
    assert c.parse_codec("zstd") is Codec.ZSTD
    for bad in ("xz", "bzip2", "lz4", "GZIP"):
        with pytest.raises(errors.UsageError):
            c.parse_codec(bad)
    assert c.check_level(Codec.GZIP, None) == c.DEFAULT_LEVEL[Codec.GZIP]
    with pytest.raises(errors.UsageError):
        c.check_level(Codec.GZIP, 9)
    with pytest.raises(errors.UsageError):
        c.check_level(Codec.ZSTD, 0)
    assert c.check_level(Codec.ZSTD, 19) == 19


def test_media_types() -> None:
    assert c.codec_of_media_type(model.OCI_LAYER_GZIP) is Codec.GZIP
    assert c.codec_of_media_type(model.DOCKER_LAYER_GZIP) is Codec.GZIP
    assert c.codec_of_media_type(model.DOCKER_FOREIGN) is Codec.GZIP
    assert c.codec_of_media_type(model.OCI_LAYER_ND + "+zstd") is Codec.ZSTD
    assert c.codec_of_media_type(model.DOCKER_LAYER_ZSTD) is Codec.ZSTD
    assert c.codec_of_media_type(model.OCI_LAYER) is Codec.NONE
    assert c.codec_of_media_type(model.DOCKER_LAYER) is Codec.NONE
    assert c.codec_of_media_type("application/x-unknown") is None
    for codec in (Codec.NONE, Codec.GZIP, Codec.ZSTD):
        for docker in (False, True):
            mt = c.layer_media_type(codec, docker)
            assert c.codec_of_media_type(mt) is codec
            assert mt.startswith("application/vnd.docker." if docker else "application/vnd.oci.")
