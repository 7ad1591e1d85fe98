"""The squash report's numbers: the dry run's predicted size is what ``--compression none`` writes, byte
for byte; "before" and "after" compressed sizes are compared like for like; the names the output keeps.

The image is built by umoci from hand-made layers holding every kind of entry that needs more than one
512-byte header: long names, non-ASCII names, a large uid, xattrs, sub-second mtimes, long link targets,
hardlinks to a lower layer, overwritten, deleted and opaque-hidden files.
"""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import pytest
from fixtures import MTIME, BuiltImage, LayerBuilder, build_oci
from test_squash import cli, decompress, ok, read_image

from ocisquash.merge import tarwrite
from ocisquash.merge.records import Meta

LONG_DIR = "usr/share/" + "/".join(["a-rather-long-directory-name"] * 4)
LONG_FILE = f"{LONG_DIR}/and-a-file-whose-name-alone-is-long-enough.txt"
LONG_TARGET = "../" * 10 + "x" * 120


def _subsecond(b: LayerBuilder, path: str, data: bytes, mtime: float) -> None:
    ti = tarfile.TarInfo(path)
    ti.mtime, ti.mode, ti.uname, ti.gname = mtime, 0o644, "", ""
    b.add(ti, data)


def pax_layers() -> list[LayerBuilder]:
    l1 = LayerBuilder()
    l1.dir("usr").dir("usr/share").dir(LONG_DIR)
    l1.file(LONG_FILE, b"long" * 300)
    l1.dir("dé").file("dé/ünïcödé-ñame.txt", "héllo wörld\n")
    l1.file("bigid", b"owned by a large uid\n", uid=3_000_000, gid=4_000_000)
    l1.file("caps", b"\x7fELF" + b"\0" * 700, mode=0o755, xattrs={"security.capability": b"\x01\0\0\x02\0\x20"})
    _subsecond(l1, "fine-time", b"t" * 33, MTIME + 0.123456)
    l1.symlink("far", LONG_TARGET)
    l1.dir("lib").file("lib/big", b"B" * 5000)
    l1.dir("etc").file("etc/conf", b"old config\n" * 50)
    l1.file("secret", b"S" * 4096)
    l1.dir("cache").file("cache/one", b"1" * 900).file("cache/two", b"2" * 1100)
    l2 = LayerBuilder(mtime=MTIME + 10)
    l2.dir("bin").hardlink("bin/big-link", "lib/big")  # a hardlink to a file of the lower layer
    l2.hardlink(f"{LONG_DIR}/linked-under-a-long-name-{'y' * 40}", LONG_FILE)
    l2.file("etc/conf", b"new config\n")
    l2.whiteout("secret")
    l2.opaque("cache").file("cache/three", b"3" * 10)
    l2.file("ünï-top", b"u" * 513)
    l3 = LayerBuilder(mtime=MTIME + 20)
    l3.file(f"{LONG_DIR}/{'z' * 99}", b"z" * 1)
    l3.hardlink("bin/conf-link", "etc/conf")
    l3.symlink("bin/far2", LONG_TARGET + "/deeper")
    return [l1, l2, l3]


@pytest.fixture(scope="module")
def pax_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_oci(tmp_path_factory.mktemp("pax") / "img.oci", "latest", pax_layers())


@pytest.mark.parametrize("cut", [[], ["--from-layer", "2"]], ids=["scratch", "from-layer-2"])
def test_dry_run_predicts_the_bytes_written(pax_image: BuiltImage, tmp_path: Path, cut: list[str]) -> None:
    src = str(pax_image.path)
    dry = ok(cli("squash", src, "--dry-run", "--json", *cut)).json()
    out = tmp_path / "out.oci"
    rep = ok(cli("squash", src, out, "--format", "oci-dir", "--compression", "none", "--json", *cut)).json()
    written = read_image(out)
    merged = written.layers[-1]
    assert decompress(merged) == merged, "--compression none wrote a compressed layer"
    # the merged layer needed PAX headers (else this test would not test them)
    assert b"PaxHeader" in merged or b"path=" in merged
    kept = sum(len(decompress(b)) for b in written.layers[:-1])
    assert dry["bytes_after_uncompressed"] == kept + len(merged)
    assert rep["bytes_after_uncompressed"] == dry["bytes_after_uncompressed"]


def _random_meta(rng: random.Random) -> Meta:
    uid = rng.choice([0, 1000, 8**7 - 1, 8**7, 3_000_000])
    mtime: int | str = rng.choice([0, MTIME, 8**11 - 1, 8**11, f"{MTIME}.{rng.randrange(1, 10**9)}"])
    extra = rng.choice([None, (("SCHILY.xattr.user.k", "v" * rng.randrange(1, 300)),)])
    uname = rng.choice(["", "root", "ü" * 3, "n" * 33])
    return Meta(rng.choice([0o644, 0o4755, 0o777]), uid, rng.choice([0, 8**7]), uname, "", mtime, extra)


def _random_name(rng: random.Random) -> str:
    parts = [rng.choice(["a", "dé", "x" * rng.randrange(1, 120), "ünï", "sp ace", "日本"])
             for _ in range(rng.randrange(1, 5))]
    return "/".join(parts)


def test_header_size_is_the_header_length_property() -> None:
    """Over generated entries of every type, the size a dry run adds up is the header the writer writes."""
    rng = random.Random(22)
    for _ in range(3000):
        type_ = rng.choice("012345")
        dev = (rng.choice([0, 1, 8**7 - 1]), rng.choice([3, 255])) if type_ in "34" else None
        link = _random_name(rng) if type_ in "12" else ""
        size = rng.choice([0, 1, 511, 8**11 - 1, 8**11]) if type_ == "0" else 0
        name, meta = _random_name(rng), _random_meta(rng)
        assert tarwrite.header_size(name, type_, meta, size, link, dev) == \
            len(tarwrite.header(name, type_, meta, size=size, linkname=link, dev=dev)), (name, type_, meta)


# ------------------------------------------------------------------------------------- like for like

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"


def test_docker_save_input_compares_uncompressed_sizes(tmp_path: Path) -> None:
    """A docker save tarball stores its layers uncompressed: no "before" compressed size, the saving on
    uncompressed sizes, and the report says why."""
    inp = read_image(SAMPLE)
    assert all(decompress(b) == b for b in inp.layers)
    r = ok(cli("squash", SAMPLE, tmp_path / "o.tar", "--json"))
    rep = r.json()
    assert rep["bytes_before_compressed"] is None
    assert rep["bytes_after_compressed"] == sum(map(len, read_image(tmp_path / "o.tar").layers))
    assert rep["compressed_note"] == "input layers were stored uncompressed"
    assert rep["saving_basis"] == "uncompressed"
    assert rep["saving"] == round(1 - rep["bytes_after_uncompressed"] / rep["bytes_before_uncompressed"], 4)
    table = ok(cli("squash", SAMPLE, tmp_path / "t.tar")).stderr
    assert "│ size (compressed)   │      — │" in table
    assert f"saves {rep['saving']:.0%} (uncompressed sizes: input layers were stored uncompressed)" in table
    dry = ok(cli("squash", SAMPLE, "--dry-run", "--json")).json()
    assert dry["bytes_before_compressed"] is None and dry["saving_basis"] == "uncompressed"
    assert dry["saving"] == rep["saving"]  # the dry run's size after is exact
    # kept layers are copied as stored (uncompressed here): the output has no compressed size either
    kept = ok(cli("squash", SAMPLE, tmp_path / "k.tar", "--from-layer", "2", "--json")).json()
    assert kept["bytes_before_compressed"] is None and kept["bytes_after_compressed"] is None
    assert kept["compressed_note"] == ("input layers were stored uncompressed; "
                                       "some output layers are stored uncompressed")
    assert kept["saving"] == round(1 - kept["bytes_after_uncompressed"] / kept["bytes_before_uncompressed"], 4)


def test_compressed_input_compares_compressed_sizes(pax_image: BuiltImage, tmp_path: Path) -> None:
    inp = read_image(pax_image.path)
    rep = ok(cli("squash", pax_image.path, tmp_path / "o.oci", "--json")).json()
    out = read_image(tmp_path / "o.oci")
    assert rep["bytes_before_compressed"] == sum(map(len, inp.layers))
    assert rep["bytes_after_compressed"] == sum(map(len, out.layers))
    assert rep["compressed_note"] is None and rep["saving_basis"] == "compressed"
    assert rep["saving"] == round(1 - rep["bytes_after_compressed"] / rep["bytes_before_compressed"], 4)
    # written uncompressed, the output has no compressed size either
    none = ok(cli("squash", pax_image.path, tmp_path / "n.oci", "--compression", "none", "--json")).json()
    assert none["bytes_before_compressed"] == rep["bytes_before_compressed"]
    assert none["bytes_after_compressed"] is None and none["saving_basis"] == "uncompressed"
    assert none["compressed_note"] == "output layers are stored uncompressed"


# ------------------------------------------------------------------------------------- names kept

def test_names_kept_without_tag_and_said(tmp_path: Path) -> None:
    table = ok(cli("squash", SAMPLE, tmp_path / "kept.tar")).stderr
    assert "tags: ocisquash/sample:latest (kept from the input; --tag to rename)" in table
    assert read_image(tmp_path / "kept.tar").docker_item["RepoTags"] == ["ocisquash/sample:latest"]
    rep = ok(cli("squash", SAMPLE, tmp_path / "kept2.tar", "--json")).json()
    assert rep["tags_kept_from_input"] is True and rep["tags"] == ["docker.io/ocisquash/sample:latest"]


def test_tag_renames_and_report_says_nothing_kept(tmp_path: Path) -> None:
    table = ok(cli("squash", SAMPLE, tmp_path / "new.tar", "--tag", "app:flat")).stderr
    assert "tags: app:flat\n" in table and "kept from the input" not in table
    assert read_image(tmp_path / "new.tar").docker_item["RepoTags"] == ["app:flat"]
    rep = ok(cli("squash", SAMPLE, tmp_path / "new2.tar", "--tag", "app:flat", "--json")).json()
    assert rep["tags_kept_from_input"] is False and rep["tags"] == ["docker.io/library/app:flat"]


def test_analyze_wasted_equals_squash_dropped(pax_image: BuiltImage) -> None:
    """One definition of waste: analyze's wasted bytes are the squash report's dropped bytes (here with
    hardlinks to a lower layer, an overwritten file, a whiteout and an opaque directory)."""
    an = json.loads(ok(cli("analyze", pax_image.path, "--json")).stdout)
    dry = ok(cli("squash", pax_image.path, "--dry-run", "--json")).json()
    # etc/conf's old 550 bytes, the secret's 4096, cache/one and cache/two's 900 + 1100
    assert an["wasted_bytes"] == dry["bytes_dropped"] == 550 + 4096 + 900 + 1100
    assert an["wasted_files"] == dry["files_dropped"] == 4
