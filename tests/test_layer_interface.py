"""The ``Layer`` reading interface (``blob``, ``uncompressed``, ``plain_file``, ``copy_blob``) and the
one-way import graph of ``ocisquash.formats`` (issue 12 item 4)."""

from __future__ import annotations

import ast
import gzip
import io
import os
from pathlib import Path

import pytest
from layertar import f, layer

from ocisquash.compression import Codec
from ocisquash.digest import Digest
from ocisquash.errors import DigestMismatch
from ocisquash.image import Check, Layer
from ocisquash.streams import LayerStream

ROOT = Path(__file__).resolve().parent.parent / "ocisquash"
TAR = layer(f("a", b"x" * 5000), f("b", b"y" * 3000))
BLOB = gzip.compress(TAR, mtime=0)


def gz_layer(blob: bytes = BLOB, diff_id: Digest | None = None) -> Layer:
    return Layer(index=0, diff_id=diff_id or Digest.of(TAR), size=len(blob), media_type=None,
                 digest=Digest.of(BLOB), opener=lambda: io.BytesIO(blob), what="layer 1", codec=Codec.GZIP)


def read_all(s: LayerStream) -> bytes:
    out = b""
    try:
        while chunk := s.read(1 << 16):
            out += chunk
    finally:
        s.close()
    return out


def test_blob_and_uncompressed_give_the_stored_and_the_tar_bytes() -> None:
    ly = gz_layer()
    b = ly.blob()
    try:
        assert b.read() == BLOB
    finally:
        b.close()
    s = ly.uncompressed()
    assert isinstance(s, LayerStream)
    assert read_all(s) == TAR


def test_uncompressed_checks_the_diff_id_unless_told_what_is_checked_already() -> None:
    wrong = gz_layer(diff_id=Digest.of(b"something else"))
    with pytest.raises(DigestMismatch, match="diff ID"):
        read_all(wrong.uncompressed())
    assert read_all(wrong.uncompressed(Check.BLOB)) == TAR  # the blob digest is right
    assert read_all(wrong.uncompressed(Check.NONE)) == TAR


def test_a_changed_blob_fails_unless_nothing_is_checked() -> None:
    bad = BLOB[:-12] + bytes(b ^ 0xFF for b in BLOB[-12:-8]) + BLOB[-8:]
    for check in (Check.ALL, Check.BLOB):
        with pytest.raises(DigestMismatch):
            read_all(gz_layer(bad).uncompressed(check))


def test_skip_rest_still_checks_the_blob_digest() -> None:
    # Large enough that the read-ahead thread is far from the end when skip_rest is called.
    tar = layer(f("big", os.urandom(24 << 20)))
    blob = gzip.compress(tar, compresslevel=1, mtime=0)
    bad = blob[:-12] + bytes(b ^ 0xFF for b in blob[-12:-8]) + blob[-8:]
    ly = Layer(index=0, diff_id=Digest.of(tar), size=len(bad), media_type=None, digest=Digest.of(blob),
               opener=lambda: io.BytesIO(bad), what="big", codec=Codec.GZIP)
    s = ly.uncompressed(Check.BLOB)
    try:
        assert s.read(512)[:3] == b"big"
        with pytest.raises(DigestMismatch):
            s.skip_rest()
    finally:
        s.close()


def test_plain_file_only_for_a_plain_tar_on_disk(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        gz_layer().plain_file()
    p = tmp_path / "layer.tar"
    p.write_bytes(TAR)
    plain = Layer(index=0, diff_id=Digest.of(TAR), size=len(TAR), media_type=None, digest=Digest.of(TAR),
                  opener=lambda: p.open("rb"), what="plain", is_plain_file=True, codec=Codec.NONE)
    with plain.plain_file() as fh:
        assert fh.seekable()
        fh.seek(512)
        assert fh.read(5) == b"xxxxx"


def test_copy_blob_copies_the_stored_bytes_and_checks_both_digests() -> None:
    out = io.BytesIO()
    assert gz_layer().copy_blob(out) == len(TAR)
    assert out.getvalue() == BLOB
    with pytest.raises(DigestMismatch, match="diff ID"):
        gz_layer(diff_id=Digest.of(b"other")).copy_blob(io.BytesIO())


def _imports(path: Path) -> set[str]:
    """The ``ocisquash`` modules a file imports (``from ocisquash.x import y`` counts as x and x.y)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ocisquash"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ocisquash"))
    return out


UPWARD = ("squash", "sources", "sink", "transfer", "listing", "api")


def test_formats_import_one_way() -> None:
    """commit <- layoutnames <- ocilayout <- dockersave <- ocitar <- builtin, base beside them: the commit base and the
    format interface know no format, a reader no writer of another format, the format objects stand on
    all, staging (several writers into one sink) stands on the commit base only, and nothing in formats
    reaches up into squash, sources or the sink dispatch."""
    fmt = ROOT / "formats"
    allowed = {"commit": set(), "base": {"commit"}, "layoutnames": {"commit"},
               "ocilayout": {"commit", "layoutnames"}, "dockersave": {"commit", "ocilayout"},
               "ocitar": {"commit", "layoutnames", "ocilayout", "dockersave"},
               "walk": {"base", "commit", "layoutnames", "ocilayout", "dockersave"},
               "builtin": {"base", "commit", "layoutnames", "ocilayout", "dockersave", "ocitar", "walk"},
               "staging": {"commit"}}
    assert {p.stem for p in fmt.glob("*.py")} - {"__init__"} == set(allowed)
    for name, ok in allowed.items():
        got = _imports(fmt / f"{name}.py")
        used = {m.split(".")[2] for m in got if m.startswith("ocisquash.formats.")}
        assert used <= ok, name
        upward = {m for m in got if m.count(".") and m.split(".")[1] in UPWARD}
        assert upward == set(), name
    assert "ocisquash.image" not in _imports(fmt / "commit.py")


def test_the_old_direction_split_modules_are_gone() -> None:
    assert not (ROOT / "layout.py").exists()
    assert not (ROOT / "dockerarchive.py").exists()
    assert len((ROOT / "sink.py").read_text().splitlines()) < 80  # the open_sink dispatch only
