"""``--platform all --parent auto``: each platform of a multi-platform image finds its own base.

The images are umoci-built layouts made into two-platform indexes (``platforms.make_index``): an app
whose platforms' manifests carry the base annotations naming the base's platform manifests, and one
without annotations whose base is another image of the same layout, sharing its bottom layers. Each
platform of the squash is unpacked by umoci and compared with the original's, its kept layers are the
base's blobs, and a platform whose base cannot be found is the one-line error naming the platform.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from conftest import check_tools
from fixtures import LayerBuilder, build_oci
from oracle import assert_same_rootfs
from platforms import blob, make_index, platform_manifests, tag_platforms
from test_squash import cli, ok

from ocisquash.autoparent import BASE_DIGEST, BASE_NAME

AMD, ARM = "linux/amd64", "linux/arm64/v8"


def layers(arch: str, base: LayerBuilder | None = None) -> list[LayerBuilder]:
    """A base layer (``base``, else one for ``arch``) and two app layers: one adds files, one edits and deletes."""
    if base is None:
        base = LayerBuilder()
        base.dir("etc").file("etc/os-release", f"ID=test\nARCH={arch}\n").dir("usr").dir("usr/bin")
        base.file("usr/bin/tool", f"a {arch} binary\n".encode() * 64, 0o755)
    app = LayerBuilder(mtime=1704067300).dir("app").file("app/main", f"app for {arch}\n", 0o755)
    app.file("app/secret", "build token\n", 0o600)
    fix = LayerBuilder(mtime=1704067400).dir("app").file("app/main", f"app for {arch}, fixed\n", 0o755)
    fix.whiteout("app/secret")
    return [base, app, fix]


def layout(tmp: Path, *, annotate: bool, shared_base: bool = False, platforms: tuple[str, ...] = (AMD, ARM),
           decoy: bool = False) -> Path:
    """``app`` (3 layers per platform) and ``base`` (its bottom layer) as two-platform indexes in one layout.

    ``annotate``: each app manifest names its platform's base manifest (base.digest) and ``base``
    (base.name), as buildah writes them. ``shared_base``: both platforms' bases have one layer (their
    configs differ): only the platform tells them apart. ``platforms``: those the base has (the app has
    both). ``decoy``: an amd64 image sharing two of the app's layers, which the annotation must beat."""
    lay = tmp / "in"
    common = LayerBuilder().dir("etc").file("etc/os-release", "ID=test\n") if shared_base else None
    per = {p: layers(p.split("/")[1], common) for p in (AMD, ARM)}
    for p, ls in per.items():
        arch = p.split("/")[1]
        build_oci(lay, f"app-{arch}", ls)
        if p in platforms:
            build_oci(lay, f"base-{arch}", ls[:1])
        if decoy and p == AMD:
            build_oci(lay, "decoy", ls[:2])
    base = make_index(lay, "base", {p: f"base-{p.split('/')[1]}" for p in platforms})
    notes = {p: {BASE_DIGEST: base.get(p, "sha256:" + "0" * 64), BASE_NAME: "base"} for p in (AMD, ARM)}
    make_index(lay, "app", {p: f"app-{p.split('/')[1]}" for p in (AMD, ARM)}, notes if annotate else None)
    if decoy:
        make_index(lay, "decoy", {AMD: "decoy"})
    return lay


def squash_all(lay: Path, out: Path, *extra: str) -> dict[str, Any]:
    return ok(cli("squash", lay, out, "--image", "app", "--platform", "all", "--parent", "auto", "--json",
                  *extra)).json()


def check_platforms(lay: Path, out: Path, tmp: Path) -> None:
    """Each platform of ``out:app``: the base's layer kept byte for byte, one squashed layer on it, and
    umoci unpacks it to the same rootfs as the input's platform."""
    bases, got = platform_manifests(lay, "base"), platform_manifests(out, "app")
    assert sorted(got) == [AMD, "linux/arm64"]
    for plat, man in got.items():
        kept = bases[plat]["layers"]
        assert [ly["digest"] for ly in man["layers"][:1]] == [ly["digest"] for ly in kept]
        assert blob(out, kept[0]["digest"]) == blob(lay, kept[0]["digest"])
        assert len(man["layers"]) == 2
        cfg = json.loads(blob(out, man["config"]["digest"]))
        assert f"{cfg['os']}/{cfg['architecture']}" == plat
    before, after = tag_platforms(lay, "app"), tag_platforms(out, "app")
    for plat in got:
        assert_same_rootfs(f"{lay}:{before[plat]}", f"{out}:{after[plat]}", tmp)


def test_each_platform_finds_its_annotated_base(tmp_path: Path) -> None:
    check_tools()
    lay = layout(tmp_path, annotate=True, decoy=True)
    rep = squash_all(lay, tmp_path / "out")
    plats = {p["image"].rsplit("[", 1)[1].rstrip("]"): p for p in rep["platforms"]}
    assert sorted(plats) == [AMD, ARM]
    for p in plats.values():
        # the decoy shares two amd64 layers; the annotation names the base, which keeps one
        got = (p["parent_rule"], p["parent_image"], p["kept_layers"], p["layers_after"])
        assert got == ("annotation", "base", 1, 2)
    assert (rep["parent_rule"], rep["parent_image"], rep["kept_layers"]) == ("annotation", "base", 2)
    check_platforms(lay, tmp_path / "out", tmp_path)
    table = ok(cli("squash", lay, "--image", "app", "--platform", "all", "--parent", "auto", "--dry-run"))
    assert "--parent auto: found base by annotation" in table.stderr


def test_each_platform_finds_its_base_by_shared_layers(tmp_path: Path) -> None:
    # no annotations; the bases of both platforms have the same layer: without the platform, a tie
    check_tools()
    lay = layout(tmp_path, annotate=False, shared_base=True)
    rep = squash_all(lay, tmp_path / "out.tar", "--format", "oci-archive")
    assert [(p["parent_rule"], p["kept_layers"]) for p in rep["platforms"]] == [("shared layers", 1)] * 2
    assert rep["parent_rule"] == "shared layers"
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(tmp_path / "out.tar") as tf:
        tf.extractall(out, filter="data")
    check_platforms(lay, out, tmp_path)


def test_a_platform_without_a_base_is_the_error_naming_it(tmp_path: Path) -> None:
    check_tools()
    lay = layout(tmp_path, annotate=True, platforms=(AMD,))
    r = cli("squash", lay, tmp_path / "out", "--image", "app", "--platform", "all", "--parent", "auto")
    assert r.rc == 1 and "Traceback" not in r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("error"))
    assert f"--platform {ARM}: " in line and "no parent image found (its annotations name base@sha256:" in line
    assert "--parent REF" in r.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # nothing half-written beside it either
