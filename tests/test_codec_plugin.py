"""The compression seam, proved from outside: a codec of this test's own, registered in the one codec table
(``ocisquash.codecs``), written and read by the command line and the API as the built-in ones are.

The toy codec is a 4-byte magic (``TOY1``) and a zlib stream: nothing in the package knows it. If a codec
still had to be named in the public enum, the media types, the copy rules or the command line's parsing,
squashing or converting with ``--compression toy`` would fail here.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from fixtures import build_oci
from layertar import f, layer, wh
from typer.testing import CliRunner

import ocisquash
from ocisquash import codecs
from ocisquash.cli import app
from ocisquash.errors import UsageError

MAGIC = b"TOY1"


class _ToyReader:
    """The toy's decompressing reader: the magic, then zlib's stream inflated as it is read."""

    def __init__(self, src: BinaryIO) -> None:
        if src.read(4) != MAGIC:
            raise ValueError("not a toy stream")
        self._src, self._z, self._buf = src, zlib.decompressobj(), b""

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self._buf) < n) and not self._z.eof:
            chunk = self._src.read(65536)
            if not chunk:
                raise EOFError("toy stream ends early")
            self._buf += self._z.decompress(chunk)
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        return out


class _ToyWriter:
    def __init__(self, raw: BinaryIO, level: int) -> None:
        self._raw, self._z = raw, zlib.compressobj(level)
        raw.write(MAGIC)

    def write(self, data: Any) -> int:
        self._raw.write(self._z.compress(bytes(data)))
        return len(data)


@contextmanager
def _toy_writer(raw: BinaryIO, level: int, threads: int) -> Iterator[BinaryIO]:
    w = _ToyWriter(raw, level)
    yield w  # type: ignore[misc]
    raw.write(w._z.flush())


def _toy_codec() -> codecs.Codec:
    return codecs.Codec("toy", lambda head: head.startswith(MAGIC), (), "toy", writes=True, levels=(1, 9),
                        default_level=5, reader=_ToyReader, writer=_toy_writer, errors=(zlib.error,))


@pytest.fixture
def toy() -> Iterator[codecs.Codec]:
    codec = codecs.register(_toy_codec())  # the one place the toy is named
    try:
        yield codec
    finally:
        codecs.unregister(codec)


@pytest.fixture
def lay(tmp_path: Path) -> Path:
    path = tmp_path / "lay"
    build_oci(path, "app", [layer(f("keep", b"base")), layer(f("a", b"1" * 5000), f("b", b"2")),
                            layer(wh("a"), f("c", b"3" * 3000))])
    return path


def _manifest(out: Path) -> dict[str, Any]:
    index = json.loads((out / "index.json").read_bytes())
    return dict(json.loads(_blob(out, index["manifests"][0]["digest"])))


def _blob(out: Path, digest: str) -> bytes:
    data = (out / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest.split(":")[1]
    return data


def _files(blob: bytes) -> dict[str, bytes]:
    assert blob.startswith(MAGIC)
    with tarfile.open(fileobj=io.BytesIO(zlib.decompress(blob[4:]))) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]


def _check_toy_output(out: Path, codec: codecs.Codec, layers: int) -> list[bytes]:
    """The output's layers in the toy codec, under the table's media type; read back whole by ocisquash."""
    man = _manifest(out)
    assert len(man["layers"]) == layers
    toy_layers = [d for d in man["layers"] if d["mediaType"] == codec.media_type(docker=False)]
    assert codec.media_type(docker=False) == "application/vnd.oci.image.layer.v1.tar+toy"
    assert toy_layers, man["layers"]
    assert ocisquash.validate_input(out).ok  # every blob's digest and every diff ID, through the toy's reader
    with ocisquash.open(out) as src:
        assert len(src.image().diff_ids) == layers
    return [_blob(out, d["digest"]) for d in toy_layers]


def test_a_registered_codec_squashes_and_converts_through_the_cli(tmp_path: Path, lay: Path,
                                                                   toy: codecs.Codec) -> None:
    runner = CliRunner()
    out = tmp_path / "sq"
    r = runner.invoke(app, ["squash", str(lay), str(out), "--format", "oci-dir", "--from-layer", "2",
                            "--compression", "toy", "--level", "9", "-q"])
    assert r.exit_code == 0, r.output
    [top] = _check_toy_output(out, toy, 2)
    assert _files(top) == {"b": b"2", "c": b"3" * 3000}  # a and its whiteout gone

    conv = tmp_path / "conv"
    r = runner.invoke(app, ["convert", str(out), str(conv), "--format", "oci-dir", "--compression", "toy", "-q"])
    assert r.exit_code == 0, r.output
    assert len(_check_toy_output(conv, toy, 2)) == 2  # the kept gzip layer recompressed into the toy too

    # the toy's level range is the table's, in the command line's words
    r = runner.invoke(app, ["squash", str(lay), str(tmp_path / "bad"), "--compression", "toy", "--level", "12"])
    assert isinstance(r.exception, UsageError) and r.exception.exit_code == 2  # main() prints it on one line
    assert str(r.exception) == "--level 12 is out of range for toy: 1 to 9"
    assert not (tmp_path / "bad").exists()


def test_a_registered_codec_through_the_api(tmp_path: Path, lay: Path, toy: codecs.Codec) -> None:
    comp = ocisquash.Compression.parse("toy")
    assert comp is ocisquash.Compression("toy") and comp.codec is toy and isinstance(comp, ocisquash.Compression)
    assert comp.check_level(None) is None and comp.check_level(1) == 1
    out = tmp_path / "sq"
    report = ocisquash.squash_image(lay, out, image="app", format=ocisquash.OutputFormat.OCI_DIR, compression=comp)
    [top] = _check_toy_output(out, toy, 1)
    assert _files(top) == {"keep": b"base", "b": b"2", "c": b"3" * 3000}
    assert report.layers_after == 1 and report.bytes_after_compressed == len(top)

    # the same squash uncompressed has the same diff ID: the toy holds the very tar
    plain = ocisquash.squash_image(lay, tmp_path / "plain", image="app", format=ocisquash.OutputFormat.OCI_DIR,
                                   compression=ocisquash.Compression.NONE)
    assert plain.diff_id == report.diff_id

    conv = tmp_path / "conv"
    with ocisquash.open(out) as src:  # a toy layer copied as it is, keeping its media type
        src.image().write(conv, format=ocisquash.OutputFormat.OCI_DIR)
    assert _check_toy_output(conv, toy, 1) == [top]


def test_an_unregistered_codec_is_refused_with_the_tables_names(tmp_path: Path, lay: Path) -> None:
    r = CliRunner().invoke(app, ["squash", str(lay), str(tmp_path / "o"), "--compression", "toy"])
    assert isinstance(r.exception, UsageError)
    assert str(r.exception) == "unknown compression 'toy': use gzip, zstd or none"
    with pytest.raises(ValueError):
        ocisquash.Compression("toy")
    with pytest.raises(UsageError, match=r"use Compression.GZIP, Compression.ZSTD or Compression.NONE"):
        ocisquash.squash_image(lay, tmp_path / "o", compression="toy")  # type: ignore[arg-type]


def test_a_codec_without_a_reader_or_writer_is_not_registered() -> None:
    with pytest.raises(ValueError, match="a reader"):
        codecs.register(codecs.Codec("half", lambda head: False, writes=True, reader=_ToyReader))
    with pytest.raises(ValueError, match="registered already"):
        codecs.register(codecs.Codec("gzip", lambda head: False, reader=_ToyReader))
    assert "half" not in codecs.CODECS and codecs.CODECS["gzip"] is codecs.Codec.GZIP


def test_the_help_and_messages_come_from_the_table() -> None:
    from ocisquash.cli import common

    assert common.COMPRESSIONS == "gzip, zstd or none"
    assert common.LEVEL_HELP.startswith("Compression level: gzip 0-9 (default 6; ") and "zstd 1-19 (default 3)" in (
        common.LEVEL_HELP)
    assert [m.value for m in ocisquash.Compression] == [c.name for c in codecs.written()]  # the enum is the table's
