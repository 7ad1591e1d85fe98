"""The format seam, proved from outside: a format of this test's own, registered in ``formatlist``,
read and written by the public API as the built-in ones are.

The toy format is a directory holding ``toy.json`` (the image's names and its manifest digest) and its
blobs flat under ``blobs/HEX``: no ``index.json``, nothing any built-in format claims. Nothing in the
package knows it; if a format still had to be named in ``sources``, ``squash``, ``validate`` or the
sink dispatch, squashing through it would fail here.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import BinaryIO

import pytest
from fixtures import build_oci
from layertar import f, layer, wh

import ocisquash
from ocisquash import formatlist, model, sink
from ocisquash.archive import DirTree, Tree
from ocisquash.compression import codec_of_media_type
from ocisquash.convert import convert
from ocisquash.digest import Digest
from ocisquash.formats.base import Checker, Format
from ocisquash.formats.commit import Sink
from ocisquash.image import Candidate, Image, Layer

WHEN = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


class ToySink(Sink):
    """Blobs written flat as they come; ``toy.json`` last, at commit; the directory removed on abort."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.root = Path(path)
        self.label = path
        (self.root / "blobs").mkdir(parents=True)

    def has(self, digest: Digest) -> bool:
        return (self.root / "blobs" / digest.encoded).exists()

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        buf = io.BytesIO()
        produce(buf)
        data = buf.getvalue()
        d = Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())
        (self.root / "blobs" / d.encoded).write_bytes(data)
        return d, len(data)

    def commit(self) -> None:
        [img] = self.images  # a toy holds one image
        (self.root / "toy.json").write_text(json.dumps({"names": img.tags, "manifest": str(img.manifest.digest)}))

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Toy(Format):
    name, title = "toy", "a toy image directory"  # holds one image, no index: the defaults

    def claims(self, tree: Tree) -> bool:
        return isinstance(tree, DirTree) and tree.exists("toy.json")

    def _manifest(self, tree: Tree) -> tuple[list[str], Digest, model.Manifest]:
        doc = json.loads(tree.read("toy.json", 1 << 16))
        d = Digest.parse(doc["manifest"])
        return list(doc["names"]), d, model.Manifest.parse(tree.read(f"blobs/{d.encoded}", 1 << 20), "toy manifest")

    def candidates(self, tree: Tree) -> list[Candidate]:
        names, d, man = self._manifest(tree)
        return [Candidate(names, man.config.digest, d, partial(self._load, tree, names, d, man))]

    def _load(self, tree: Tree, names: list[str], d: Digest, man: model.Manifest) -> Image:
        cfg = model.ImageConfig.parse(tree.read(f"blobs/{man.config.digest.encoded}", 1 << 20), "toy config")
        layers = [Layer(i, diff_id, ld.size, ld.media_type, ld.digest, partial(tree.open, f"blobs/{ld.digest.encoded}"),
                        f"toy layer {i + 1}", codec=codec_of_media_type(ld.media_type))
                  for i, (ld, diff_id) in enumerate(zip(man.layers, cfg.diff_ids, strict=True))]
        return Image(names, cfg, layers, manifest=man, manifest_digest=d, source=tree.label)

    def claims_output(self, path: str) -> bool:
        return path.endswith(".toy")

    def open_sink(self, path: str) -> Sink:
        return ToySink(path)

    def walk(self, tree: Tree, checker: Checker) -> None:
        names, _, man = self._manifest(tree)
        cpath = f"blobs/{man.config.digest.encoded}"
        cfg = checker.config(cpath, "toy config") if checker.blob(cpath, man.config.digest, man.config.size,
                                                                   "config") else None
        checker.image(", ".join(names), cfg, [(f"blobs/{ld.digest.encoded}", ld.digest, ld.size,
                                               codec_of_media_type(ld.media_type)) for ld in man.layers])


@pytest.fixture
def toy() -> Iterator[Toy]:
    fmt = Toy()
    formatlist.register(fmt)
    try:
        yield fmt
    finally:
        formatlist.unregister(fmt)


def _files(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
        return {m.name: (t.extractfile(m).read() if m.isfile() else b"") for m in t}  # type: ignore[union-attr]


def test_a_registered_format_is_squashed_through_and_read_back(tmp_path: Path, toy: Toy) -> None:
    lay = tmp_path / "lay"
    build_oci(lay, "app", [layer(f("keep", b"base")), layer(f("a", b"1"), f("b", b"2")),
                           layer(wh("a"), f("c", b"3"))])
    toy_in, toy_out = tmp_path / "in.toy", tmp_path / "out.toy"
    convert(f"{lay}", str(toy_in), image="app")  # into the toy format: chosen from the name alone
    assert (toy_in / "toy.json").is_file() and not (toy_in / "index.json").exists()
    with ocisquash.open(toy_in) as src:
        assert len(src.image().diff_ids) == 3  # read back by the toy's own reader

    report = ocisquash.squash_image(toy_in, toy_out, cut=ocisquash.Cut.from_layer(2), timestamp=WHEN)
    # The same squash of the original layout: the toy's round trip changes nothing of the image.
    ref = ocisquash.squash_image(lay, tmp_path / "ref", image="app", cut=ocisquash.Cut.from_layer(2), timestamp=WHEN)
    assert (report.config, report.diff_id, report.layers_after) == (ref.config, ref.diff_id, 2)

    with ocisquash.open(toy_out) as out:
        img = out.image()
        assert img.id == ref.config
        assert img.diff_ids[-1] == ref.diff_id
    man = json.loads((toy_out / "blobs" / report.manifest.split(":")[1]).read_bytes())  # type: ignore[union-attr]
    top = (toy_out / "blobs" / man["layers"][-1]["digest"].split(":")[1]).read_bytes()
    assert _files(top) == {"b": b"2", "c": b"3"}  # a and its whiteout both gone: a never reached the output
    assert ocisquash.validate_input(toy_out).ok  # the toy walks itself for validate

    # and the walk is a real check: a layer changed after the fact is found
    blob = toy_out / "blobs" / man["layers"][-1]["digest"].split(":")[1]
    blob.write_bytes(blob.read_bytes()[:-1] + bytes([blob.read_bytes()[-1] ^ 1]))
    found = ocisquash.validate_input(toy_out)
    assert not found.ok and any(man["layers"][-1]["digest"].split(":")[1] in x.where for x in found.findings)


def test_without_registration_the_toy_is_no_format(tmp_path: Path) -> None:
    """The toy is known through the table alone: unregistered, its directory is refused as a layout."""
    d = tmp_path / "x.toy"
    (d / "blobs").mkdir(parents=True)
    (d / "toy.json").write_text("{}")
    with pytest.raises(ocisquash.errors.FormatError, match="not an OCI image layout"):
        ocisquash.open(d).image()


def test_what_a_format_holds_decides_the_index_output(tmp_path: Path, toy: Toy) -> None:
    """``--platform all`` writes an index: a format says whether it can hold one (the toy cannot, and has
    no stand-in), a docker save tarball guessed from the name gives way to an OCI layout tar."""
    with pytest.raises(ocisquash.errors.UsageError, match="which a toy image directory cannot hold"):
        sink.index_format(str(tmp_path / "o.toy"), None)
    assert sink.index_format(str(tmp_path / "o.tar"), None).name == "oci"
    with pytest.raises(ocisquash.errors.UsageError, match="which a docker save tarball cannot hold"):
        sink.index_format(str(tmp_path / "o.tar"), "docker")
    assert formatlist.output_format(str(tmp_path / "o.toy"), None) is toy
    assert sink.guess_format(str(tmp_path / "o.toy")) == "toy"
    assert formatlist.output_format("docker://reg.example/a:1", "oci").name == "registry"  # a reference's own
