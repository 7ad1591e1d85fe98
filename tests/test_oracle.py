"""The oracle and the fixtures are tested too: the oracle must be able to fail, and every built image must
hold the traps it claims and unpack (with real tools) to the tree we expect."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures import (
    CAP,
    DEEP,
    EMPTY_TAR,
    LONG_TARGET,
    MTIME,
    N150,
    N255,
    NFC,
    NFD,
    USER_XATTRS,
    UTF8,
    BuiltImage,
    LayerBuilder,
    build_oci,
    oci_blob,
    oci_manifest,
)
from oracle import Snapshot, compare, skopeo_inspect, snapshot, snapshots, unpack_snapshot

EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


# ------------------------------------------------------------------------------- compare without tools

def _tree(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"hello\n")
    os.link(root / "d" / "f", root / "d" / "g")
    os.symlink("f", root / "d" / "s")
    return root


def test_compare_local_trees_equal_and_different(tmp_path: Path) -> None:
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert compare(snapshot(a), snapshot(b)) == []
    (b / "d" / "s").unlink()
    os.symlink("g", b / "d" / "s")
    os.chmod(b / "d" / "f", 0o600)
    (b / "extra").write_bytes(b"")
    diffs = compare(snapshot(a), snapshot(b))
    kinds = sorted(d.split()[0] for d in diffs)
    assert kinds == ["mode", "mode", "only-in-B", "target"], diffs  # f and g share the inode


# ------------------------------------------------------------------------------- the oracle can fail

def _small(mode: int = 0o644, uid: int = 0, xattr: bytes = b"\x00\x01", link: bool = True,
           target: str = "f", content: bytes = b"hello\n", mtime: int = MTIME, fifo: bool = True,
           extra: bool = False) -> bytes:
    b = LayerBuilder(mtime=MTIME)
    b.dir("d")
    b.file("d/f", content, mode, uid=uid, mtime=mtime, xattrs={"user.x": xattr})
    if link:
        b.hardlink("d/g", "d/f", mode, uid=uid, mtime=mtime, xattrs={"user.x": xattr})
    else:
        b.file("d/g", content, mode, uid=uid, mtime=mtime, xattrs={"user.x": xattr})
    b.symlink("d/s", target)
    if fifo:
        b.fifo("d/p")
    else:
        b.file("d/p")
    if extra:
        b.file("d/extra")
    return b.getvalue()


MUTANTS: dict[str, tuple[dict, str]] = {
    "setuid bit": ({"mode": 0o4644}, "mode"),
    "owner": ({"uid": 1}, "uid"),
    "xattr byte": ({"xattr": b"\x00\x02"}, "xattrs"),
    "hardlink grouping": ({"link": False}, "hardlink"),
    "symlink target": ({"target": "g"}, "target"),
    "content byte": ({"content": b"hellp\n"}, "content"),
    "type": ({"fifo": False}, "type"),
    "extra file": ({"extra": True}, "only-in-B"),
}


@pytest.fixture(scope="session")
def small_base(images_dir: Path) -> BuiltImage:
    return build_oci(images_dir / "small.oci", "base", [_small()])


@pytest.fixture(scope="session")
def small_base_snapshot(small_base: BuiltImage, images_dir: Path) -> Snapshot:
    return unpack_snapshot(small_base.ref, images_dir)


def test_identical_images_are_equal(small_base_snapshot: Snapshot, images_dir: Path, tmp_path: Path) -> None:
    again = build_oci(tmp_path / "again.oci", "base", [_small()])
    other = unpack_snapshot(again.ref, tmp_path)
    assert compare(small_base_snapshot, other) == []
    assert compare(small_base_snapshot, other, mtime=True) == []
    assert len(other) == 6 and other["d/g"].hardlinks == ("d/f", "d/g")


@pytest.mark.parametrize("name", MUTANTS)
def test_oracle_reports_one_difference(name: str, small_base_snapshot: Snapshot, tmp_path: Path) -> None:
    change, kind = MUTANTS[name]
    mutant = build_oci(tmp_path / "m.oci", "m", [_small(**change)])
    diffs = compare(small_base_snapshot, unpack_snapshot(mutant.ref, tmp_path))
    assert diffs, f"{name}: the oracle saw no difference"
    assert all(d.split()[0] == kind for d in diffs), diffs


def test_mtime_only_with_flag(small_base_snapshot: Snapshot, tmp_path: Path) -> None:
    mutant = build_oci(tmp_path / "m.oci", "m", [_small(mtime=MTIME + 1)])
    other = unpack_snapshot(mutant.ref, tmp_path)
    assert compare(small_base_snapshot, other) == []
    diffs = compare(small_base_snapshot, other, mtime=True)
    assert diffs and all(d.startswith("mtime") for d in diffs), diffs


def test_assert_same_rootfs_raises(same_rootfs: Callable[..., Snapshot], small_base: BuiltImage,
                                   tmp_path: Path) -> None:
    mutant = build_oci(tmp_path / "m.oci", "m", [_small(uid=7)])
    same_rootfs(small_base, small_base)
    with pytest.raises(AssertionError, match="uid"):
        same_rootfs(small_base, mutant)


# ------------------------------------------------------------------------------- the trap images

def _layer_entries(img: BuiltImage, i: int) -> list[tarfile.TarInfo]:
    manifest, _ = oci_manifest(img.path, img.name)
    blob = oci_blob(img.path, manifest["layers"][i]["digest"])
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as t:
        return t.getmembers()


def test_trap_layers_hold_the_traps(trap_oci: BuiltImage) -> None:
    cfg = skopeo_inspect(trap_oci.ref, config=True)
    assert len(cfg["rootfs"]["diff_ids"]) == 5 and cfg["rootfs"]["diff_ids"][3] == EMPTY_DIFF_ID
    assert sum(not h.get("empty_layer") for h in cfg["history"]) == 5
    l1, l2, l3, l4, l5 = (_layer_entries(trap_oci, i) for i in range(5))
    assert l1[0].name == "." and any(m.islnk() and m.linkname == DEEP for m in l1)
    assert any(m.pax_headers.get("SCHILY.xattr.security.capability") for m in l1)
    n2 = [m.name for m in l2]
    assert "./app/config.txt" in n2 and n2.index("app/opaque/.wh..wh..opq") > n2.index("app/opaque/new")
    assert any(m.islnk() and m.name == "hl/t4-link" and m.linkname == "hl/t4" for m in l3)  # to a lower layer
    assert "lib/x" in [m.name for m in l3] and "lib" not in [m.name for m in l3]
    assert l4 == []
    n5 = [m.name for m in l5]
    assert n5.count("app/dup") == 2 and f"app/names/.wh.{N255}" in n5


def _check_trap_tree(s: Snapshot) -> None:
    def content(p: str) -> str | None:
        return s[p].content()

    def same_bytes(p: str, text: str) -> bool:
        import hashlib
        return s[p].type == "file" and s[p].sha256 == hashlib.sha256(text.encode()).hexdigest()

    assert not [p for p in s if ".wh." in p], "whiteouts leaked into the rootfs"
    # hardlink traps
    assert same_bytes("hl/g1-b", "g1-old\n") and same_bytes("hl/g1-a", "g1-new\n")
    assert s["hl/g1-a"].hardlinks is None and s["hl/g1-b"].hardlinks is None
    assert same_bytes("hl/g2-a", "g2-old\n") and same_bytes("hl/g2-b", "g2-new\n")
    assert s["hl/g3-b"].hardlinks == ("hl/g3-a", "hl/g3-b", "hl/g3-c")
    assert s["hl/t4-link"].hardlinks == ("hl/t4", "hl/t4-link") and same_bytes("hl/t4", "t4-v2\n")
    assert same_bytes("hl/z-outside-link", "body\n") and "hl/d1" not in s
    assert same_bytes(DEEP, "deep-v2\n") and same_bytes("app/names/hardlink-to-deep", "deep-v1\n")
    # whiteouts, opaque dirs, re-created paths
    assert sorted(p for p in s if p.startswith("app/opaque/")) == [
        "app/opaque/keep", "app/opaque/keep/new", "app/opaque/new"]
    assert sorted(p for p in s if p.startswith("app/dir-to-delete")) == [
        "app/dir-to-delete", "app/dir-to-delete/again"]
    assert same_bytes("app/delete-me.txt", "back-again\n") and same_bytes("app/config.txt", "config v2 (modified)\n")
    # type swaps
    assert s["app/dir-to-file"].type == "file" and "app/dir-to-file/x" not in s
    assert s["app/file-to-dir"].type == "dir" and "app/file-to-dir/inner" in s
    assert s["app/dir-to-symlink"].target == "realdir" and "app/dir-to-symlink/d" not in s
    assert s["app/symlink-to-dir"].type == "dir" and s["app/file-to-symlink"].target == "config.txt"
    # symlinked parents put the files under usr/lib
    assert s["lib"].target == "usr/lib" and s["lib64"].target == "/usr/lib"
    assert same_bytes("usr/lib/x", "x via lib\n") and same_bytes("usr/lib/y", "y via /usr/lib\n")
    # modes, owners, xattrs, specials
    assert s["app/perm/setuid"].mode == 0o4755 and s["app/perm/setgid"].mode == 0o2755
    assert s["app/perm/sticky-dir"].mode == 0o1777 and s["app/perm/noperm"].mode == 0
    assert s["app/chmod-me"].mode == 0o600 and s["app/realdir"].mode == 0o700
    assert (s["app/own/odd"].uid, s["app/own/odd"].gid) == (123456, 654321) and s["app/names"].uid == 1000
    assert dict(s["app/xattr/user"].xattrs) == USER_XATTRS
    assert dict(s["app/xattr/cap-binary"].xattrs) == {"security.capability": CAP}
    assert dict(s["app/xattr-later"].xattrs) == {"user.added": b"yes"}
    assert s["dev/null"].rdev == (1, 3) and s["app/fifo"].type == "fifo"
    # names
    assert f"app/names/{NFC}" in s and f"app/names/{NFD}" in s and f"app/names/{N150}" in s
    assert f"app/names/{UTF8}" not in s and f"app/names/{N255}" not in s
    assert s["app/names/long-symlink"].target == LONG_TARGET
    assert same_bytes("app/dup", "second\n") and s["app/zeros"].size == 256 * 1024 + 5
    assert content("app/empty-file") == "0 bytes sha256:e3b0c44298fc1c14"


def test_trap_trees(trap_oci: BuiltImage, trap_umoci_oci: BuiltImage, images_dir: Path) -> None:
    hand, umoci_built = snapshots([trap_oci.ref, trap_umoci_oci.ref], images_dir)
    _check_trap_tree(hand)
    _check_trap_tree(umoci_built)
    assert compare(hand, umoci_built) == []


def test_trap_l2_tags(trap_oci: BuiltImage, trap_umoci_oci: BuiltImage, images_dir: Path) -> None:
    a, b = snapshots([f"{trap_oci.path}:l2", f"{trap_umoci_oci.path}:l2"], images_dir)
    assert compare(a, b) == []
    with pytest.raises(AssertionError):  # the expectations can fail: l2 is an earlier state
        _check_trap_tree(a)
    assert "app/delete-me.txt" not in a and sorted(p for p in a if p.startswith("app/opaque/")) == [
        "app/opaque/gone-in-l3", "app/opaque/keep", "app/opaque/keep/new", "app/opaque/new"]


# ------------------------------------------------------------------------------- other forms

FORMS = ["trap_docker", "trap_docker_legacy", "trap_docker25", "trap_containerd"]


@pytest.mark.parametrize("form", FORMS)
def test_docker_forms_accepted_and_equal(form: str, request: pytest.FixtureRequest, trap_oci: BuiltImage,
                                         images_dir: Path) -> None:
    img: BuiltImage = request.getfixturevalue(form)
    info = skopeo_inspect(f"docker-archive:{img.path}")
    assert len(info["Layers"]) == 5
    ref, other = snapshots([trap_oci.ref, img.ref], images_dir)
    assert compare(ref, other) == []


def _members(img: BuiltImage) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(img.path) as t:
        return {m.name: m for m in t.getmembers()}


def _json(img: BuiltImage, name: str) -> object:
    with tarfile.open(img.path) as t:
        f = t.extractfile(name)
        assert f is not None
        return json.loads(f.read())


def test_docker_form_shapes(trap_docker: BuiltImage, trap_docker_legacy: BuiltImage,
                            trap_docker25: BuiltImage, trap_containerd: BuiltImage) -> None:
    sk = _members(trap_docker)
    assert any(m.issym() and n.endswith("/layer.tar") for n, m in sk.items())
    legacy = _members(trap_docker_legacy)
    layers = [n for n in legacy if n.endswith("/layer.tar")]
    assert len(layers) == 5 and all(legacy[n].isfile() for n in layers) and "oci-layout" not in legacy
    assert _json(trap_docker_legacy, "manifest.json")[0]["RepoTags"] == ["ocisquash-test/trap:latest"]  # type: ignore[index]
    assert "repositories" in legacy
    d25 = list(_members(trap_docker25))
    assert d25 == sorted(d25) and {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(d25)
    item = _json(trap_docker25, "manifest.json")[0]  # type: ignore[index]
    cfg = _json(trap_docker25, item["Config"])
    assert [p.removeprefix("blobs/sha256/") for p in item["Layers"]] == [
        d.removeprefix("sha256:") for d in cfg["rootfs"]["diff_ids"]]  # type: ignore[index]
    cd = _members(trap_containerd)
    names = list(cd)
    assert cd[names[-1]].isdir() and not cd[names[0]].isdir()  # directory members last
    index = _json(trap_containerd, "index.json")
    nested = _json(trap_containerd, "blobs/sha256/" + index["manifests"][0]["digest"][7:])  # type: ignore[index]
    plats = [(m["platform"]["os"], m["platform"]["architecture"]) for m in nested["manifests"]]  # type: ignore[index]
    assert plats == [("linux", "amd64"), ("linux", "arm64"), ("unknown", "unknown")]
    assert "blobs/sha256/" + nested["manifests"][1]["digest"][7:] not in cd  # type: ignore[index]


@pytest.mark.parametrize("form", ["trap_zstd_oci", "trap_plain_oci"])
def test_compressed_forms_equal(form: str, request: pytest.FixtureRequest, trap_oci: BuiltImage,
                                images_dir: Path) -> None:
    img: BuiltImage = request.getfixturevalue(form)
    want = {"trap_zstd_oci": "tar+zstd", "trap_plain_oci": "layer.v1.tar"}[form]
    assert all(m["mediaType"].endswith(want) for m in skopeo_inspect(img.ref, raw=True)["layers"])
    ref, other = snapshots([trap_oci.ref, img.ref], images_dir)
    assert compare(ref, other) == []


def test_containerd_form_as_oci_archive(trap_containerd: BuiltImage, trap_oci: BuiltImage,
                                        images_dir: Path) -> None:
    ref, other = snapshots([trap_oci.ref, f"oci-archive:{trap_containerd.path}"], images_dir)
    assert compare(ref, other) == []


@pytest.mark.tools
def test_sample_image(sample_docker: BuiltImage, tmp_path: Path) -> None:
    assert sample_docker.path.stat().st_size < 200_000
    s = unpack_snapshot(sample_docker.ref, tmp_path)
    assert "app/build-secret.txt" not in s and "usr/share/doc" not in s
    assert s["app/data.bin"].hardlinks == ("app/data-link.bin", "app/data.bin")
    assert s["bin/hello"].target == "/app/hello.sh"


def test_empty_tar_constant() -> None:
    import hashlib
    assert "sha256:" + hashlib.sha256(EMPTY_TAR).hexdigest() == EMPTY_DIFF_ID
