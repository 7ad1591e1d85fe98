"""The synthetic images of bench/imagebuild.py are what the bench README says they are.

The rss-1m row divides a peak RSS by the path count of its layer, and the entry-heavy rows are only
comparable across machines if the recipe is seeded: these tests pin both, on small instances.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import tarfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import imagebuild  # noqa: E402


def _layers(layout: Path) -> tuple[list[Path], list[str]]:
    index = json.loads((layout / "index.json").read_text())
    man = json.loads(imagebuild.blob(layout, index["manifests"][0]["digest"]).read_text())
    config = json.loads(imagebuild.blob(layout, man["config"]["digest"]).read_text())
    return [imagebuild.blob(layout, x["digest"]) for x in man["layers"]], config["rootfs"]["diff_ids"]


def test_paths_image_has_exactly_the_paths_and_valid_digests(tmp_path: Path) -> None:
    info = imagebuild.ensure_paths_image(tmp_path, 2500)
    layout = Path(info["oci"])
    blobs, diff_ids = _layers(layout)
    assert len(blobs) == 2
    for b, diff_id in zip(blobs, diff_ids, strict=True):
        assert hashlib.sha256(b.read_bytes()).hexdigest() == b.name  # content-addressed
        assert "sha256:" + hashlib.sha256(gzip.decompress(b.read_bytes())).hexdigest() == diff_id
    with tarfile.open(blobs[0]) as tf:
        members = tf.getmembers()
    names = [m.name.rstrip("/") for m in members]
    assert len(members) == 2500 == info["paths"]
    assert len(set(names)) == len(names)
    for m in members:  # every parent directory comes before its children
        parent = os.path.dirname(m.name.rstrip("/"))
        assert not parent or parent in set(names[: names.index(m.name.rstrip("/"))])
    files = [m for m in members if m.isfile()]
    assert sum(1 for m in files if m.size == 0) >= len(files) // 2 - 1
    assert max(m.size for m in files) <= 400
    with tarfile.open(blobs[1]) as tf:
        assert "data/.wh.d0000" in tf.getnames()


def test_entry_recipe_is_seeded(tmp_path: Path) -> None:
    trees = []
    for run in ("a", "b"):
        root = tmp_path / run
        root.mkdir()
        for _, mutate in imagebuild.entry_layers(0.02):
            mutate(root)
        trees.append({str(p.relative_to(root)): (p.is_symlink(), p.lstat().st_mode,
                                                   p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
                      for p in root.rglob("*")})
    assert trees[0] == trees[1]
    assert len(trees[0]) > 500  # many small entries even at 2 %


def test_gzip_floor_writes_the_squashed_layer_deflated(tmp_path: Path) -> None:
    # bench/verify_floor.py --gzip: the floor row's work must be real (every blob read to its end, the
    # output a gzip of exactly the squashed layer), or the ratio it gives means nothing
    import subprocess

    blobs = []
    for i in range(3):
        p = tmp_path / f"b{i}.gz"
        p.write_bytes(gzip.compress(os.urandom(1000) * (i + 2000)))
        blobs.append(str(p))
    squashed = tmp_path / "layer.tar"
    squashed.write_bytes(b"".join(os.urandom(4096) for _ in range(600)))
    out = tmp_path / "out.gz"
    subprocess.run([sys.executable, str(BENCH / "verify_floor.py"), "--gzip", "2", str(squashed), str(out), *blobs],
                   check=True, timeout=120)
    assert gzip.decompress(out.read_bytes()) == squashed.read_bytes()
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"x" * 5000)[:-20])  # truncated: the floor must read it all
    bad = subprocess.run([sys.executable, str(BENCH / "verify_floor.py"), "--gzip", "2", str(squashed), str(out),
                          str(tmp_path / "bad.gz")], capture_output=True, timeout=120)
    assert bad.returncode != 0


def test_inflate_floor_computes_both_digests_of_every_blob(tmp_path: Path) -> None:
    # bench/verify_floor.py --inflate: the limit line of the --dry-run and analyze rows stands on this
    # work being what a verifying read does (each blob hashed, inflated, its contents hashed, to the end)
    import subprocess

    blobs, want = [], {}
    for i in range(3):
        raw = os.urandom(1000) * (i + 3000)  # one blob much larger than the rest, like the entry image's
        p = tmp_path / f"b{i}.gz"
        p.write_bytes(gzip.compress(raw * (40 if i == 0 else 1)))
        blobs.append(str(p))
        want[str(p)] = [hashlib.sha256(p.read_bytes()).hexdigest(),
                        hashlib.sha256(raw * (40 if i == 0 else 1)).hexdigest()]
    run = subprocess.run([sys.executable, str(BENCH / "verify_floor.py"), "--inflate", *blobs],
                         check=True, timeout=120, capture_output=True, text=True)
    assert json.loads(run.stdout) == want
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"x" * 5000)[:-20])  # truncated: read to the end, it fails
    bad = subprocess.run([sys.executable, str(BENCH / "verify_floor.py"), "--inflate", str(tmp_path / "bad.gz")],
                         capture_output=True, timeout=120)
    assert bad.returncode != 0


def test_forked_read_workers_spool_what_the_layers_above_them_hide(tmp_path: Path) -> None:
    # bench/forked_read.py, whose figure bench/README.md cites: serially the bottom layer's file that
    # the top layer replaces is not spooled; a worker reading the bottom layer first (largest first)
    # cannot know that, and spools exactly that file more
    import subprocess

    from conftest import check_tools
    from fixtures import LayerBuilder, build_oci

    check_tools()
    hidden = os.urandom(70_001)
    bottom = LayerBuilder().file("app/big", os.urandom(300_000)).file("app/conf", hidden)
    top = LayerBuilder().file("app/conf", b"new")
    image = build_oci(tmp_path / "img", "latest", [bottom, top]).path

    def spooled(mode: str) -> int:
        run = subprocess.run([sys.executable, str(BENCH / "forked_read.py"), str(image), mode],
                             check=True, timeout=120, capture_output=True, text=True)
        return sum(int(line.split()[-2]) for line in run.stdout.splitlines() if "spooled" in line)

    serial = spooled("serial")
    assert serial == 300_032 + 512  # app/big and the top layer's app/conf, each padded to 512 bytes
    assert spooled("workers") == serial + 70_144  # and the hidden app/conf, padded


def test_platforms_image_is_an_index_of_unshared_platforms(tmp_path: Path) -> None:
    # the sq-platforms rows compare --platform all with one squash per platform: each platform must be
    # a whole image of its own (its config naming its platform, no layer shared with the other), or the
    # row would measure less work than the separate squashes do
    scales = {"linux/amd64": 0.012, "linux/arm64/v8": 0.01}
    info = imagebuild.ensure_platforms_image(tmp_path, scales)
    layout = Path(info["oci"])
    assert layout == imagebuild.platforms_path(tmp_path)
    top = json.loads((layout / "index.json").read_text())["manifests"]
    assert len(top) == 1 and top[0]["annotations"]["org.opencontainers.image.ref.name"] == imagebuild.TAG
    index = json.loads(imagebuild.blob(layout, top[0]["digest"]).read_text())
    seen: list[set[str]] = []
    for entry, plat in zip(index["manifests"], scales, strict=True):
        p = entry["platform"]
        assert "/".join([p["os"], p["architecture"], *([p["variant"]] if "variant" in p else [])]) == plat
        man = json.loads(imagebuild.blob(layout, entry["digest"]).read_text())
        config = json.loads(imagebuild.blob(layout, man["config"]["digest"]).read_text())
        assert (config["os"], config["architecture"], config.get("variant")) == (p["os"], p["architecture"],
                                                                                  p.get("variant"))
        assert len(man["layers"]) == len(config["rootfs"]["diff_ids"]) == info["platforms"][plat]["layers"] == 6
        for x in man["layers"]:
            b = imagebuild.blob(layout, x["digest"])
            assert "sha256:" + hashlib.sha256(b.read_bytes()).hexdigest() == x["digest"]
            assert b.stat().st_size == x["size"]
        seen.append({x["digest"] for x in man["layers"]})
    assert not seen[0] & seen[1]
    sizes = [info["platforms"][p]["uncompressed_bytes"] for p in scales]
    assert sizes[0] > sizes[1] > 0  # the larger scale, the larger image
