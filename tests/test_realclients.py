"""Real clients as the oracle (issue 10): what docker, containerd and podman (overlay and vfs stores) load
from ocisquash's output must be exactly what they load from the original image.

The daemons are our own (tests/realclients.py), started once for this module; every image is built,
squashed, loaded and captured once, and each test compares two captured trees of one loader: type,
content, mode, owner, mtime (directories too), link target, hardlink groups and xattrs.

Scenarios (each squashed with the real CLI to a ``.tar``, the form ``docker load`` is promised to read):

- ``trap``: the trap steps (tests/fixtures.py) as moby's diff writes them (``as_moby_diff``), from a
  ``docker save`` tar and from an OCI layout, to scratch, onto the parent (``--parent``, the first two
  layers) and with ``--from-layer 3``.
- ``priv``: a parent whose ``/priv`` is 0700 123:456 with an old mtime, and two layers above it that
  edit ``/priv/sub/f``: squashed onto the parent, ``/priv`` must keep all three in every loader.
- ``--parent auto`` (issue 23): the trap and priv layouts (base and app side by side) and ``docker save app
  base`` of the build, their base found by the shared layers, load as the originals in every loader.
- ``build``: an image built by ``docker build`` on our dockerd (chmod/chown of directories, hardlinks,
  deletions of lower files, a directory replaced), squashed onto its base and to scratch; and the
  daemon's own ``docker build --squash`` of the same Dockerfile as a second reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fixtures import TRAP_CONFIG, TRAP_STEPS, LayerBuilder, build_docker, build_oci, trap_layers
from oracle import Snapshot
from realclients import DOCKER_TOUCHED, FRESH, LOADERS, ClientError, Clients, as_moby_diff, compare_trees, start_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.tools]

TS = "1700000000"
MTIME = 1700000000
PRIV_MTIME = 1500000000  # 2017-07-14: the parent's /priv, older than anything else in the image
SUB_MTIME = 1500000100
CLAMP = PRIV_MTIME + 50  # --rewrite-timestamp's T for priv: after /priv's mtime, before what the layers above made


# ------------------------------------------------------------------------------------------ the daemons

@pytest.fixture(scope="module")
def rc() -> Iterator[Clients]:
    c = start_or_skip()
    try:
        yield c
    finally:
        c.stop()


def squash(*args: str | os.PathLike[str]) -> None:
    """``python -m ocisquash squash ARGS --timestamp TS -q``, as tests/test_squash.py runs it."""
    stamp = [] if "--timestamp" in args else ["--timestamp", TS]  # a job may give its own (--rewrite-timestamp)
    argv = [sys.executable, "-m", "ocisquash", "squash", *[os.fspath(a) for a in args], *stamp, "-q"]
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    if p.returncode != 0:
        raise ClientError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr}")


@dataclass
class Image:
    """A tarball every loader reads, or the error that made it (a failed squash is the test's failure)."""

    tar: Path | None
    error: str = ""


# ------------------------------------------------------------------------------------------ the images

def _trap(work: Path) -> dict[str, Image]:
    raw = [x.getvalue() if isinstance(x, LayerBuilder) else x.read_bytes() if isinstance(x, Path) else x
           for x in trap_layers()]
    layers = as_moby_diff(raw, MTIME)
    oci = work / "trap.oci"
    build_oci(oci, "l2", layers[:2], history=TRAP_STEPS)
    build_oci(oci, "latest", layers, TRAP_CONFIG, history=TRAP_STEPS)
    orig = build_docker(oci, "latest", work / "trap.docker.tar", "rc/trap:orig")
    parent = build_docker(oci, "l2", work / "trap-l2.docker.tar", "rc/trap:l2")
    ocitar = work / "trap.oci.tar"  # an OCI layout tar, as podman save --format oci-archive writes
    with tarfile.open(ocitar, "w") as t:
        for p in sorted(oci.rglob("*")):
            t.add(p, p.relative_to(oci).as_posix(), recursive=False)
    inputs: dict[str, list[str | os.PathLike[str]]] = {"docker": [orig.path], "oci": [ocitar, "--image", "latest"]}
    cuts: dict[str, list[str | os.PathLike[str]]] = {"scratch": [], "parent": ["--parent", parent.path],
                                                    "from3": ["--from-layer", "3"]}
    jobs = {f"trap-{i}-{c}": [*inputs[i], *cuts[c]] for i in inputs for c in cuts}
    jobs["trap-oci-parent"] = [ocitar, "--image", "latest", "--parent", "l2"]
    jobs["trap-oci-auto"] = [ocitar, "--image", "latest", "--parent", "auto"]  # l2 found: the shared layers
    return {"trap-orig": Image(orig.path), **_squash_all(jobs, work)}


def priv_layers() -> list[bytes]:
    """/priv 0700 123:456 (old mtime) in the parent; two layers above edit /priv/sub/f, as docker writes them."""
    base = LayerBuilder()
    base.dir("etc").file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    base.dir("priv", 0o700, 123, 456, mtime=PRIV_MTIME).dir("priv/sub", 0o750, 7, 8, mtime=SUB_MTIME)
    base.file("priv/sub/f", "v1\n", 0o640, 7, 8)
    edit = LayerBuilder(mtime=MTIME + 60)  # moby's diff writes each ancestor, unchanged, with the change
    edit.dir("priv", 0o700, 123, 456, mtime=PRIV_MTIME).dir("priv/sub", 0o750, 7, 8, mtime=SUB_MTIME)
    edit.file("priv/sub/f", "v2\n", 0o640, 7, 8)
    add = LayerBuilder(mtime=MTIME + 120)  # a new file changes /priv/sub's mtime, not /priv's
    add.dir("priv", 0o700, 123, 456, mtime=PRIV_MTIME).dir("priv/sub", 0o750, 7, 8)
    add.file("priv/sub/f", "v3\n", 0o640, 7, 8).file("priv/sub/g", "g\n")
    return [base.getvalue(), edit.getvalue(), add.getvalue()]


def _priv(work: Path) -> dict[str, Image]:
    layers = priv_layers()
    oci = work / "priv.oci"
    build_oci(oci, "base", layers[:1])
    build_oci(oci, "latest", layers, {"Cmd": ["/bin/sh"]})
    orig = build_docker(oci, "latest", work / "priv.docker.tar", "rc/priv:orig")
    parent = build_docker(oci, "base", work / "priv-base.docker.tar", "rc/priv:base")
    jobs: dict[str, list[str | os.PathLike[str]]] = {
        "priv-docker-parent": [orig.path, "--parent", parent.path],
        "priv-docker-from2": [orig.path, "--from-layer", "2"],
        "priv-oci-parent": [oci, "--image", "latest", "--parent", "base"],
        "priv-oci-auto": [oci, "--image", "latest", "--parent", "auto"],
        "priv-docker-scratch": [orig.path],
        # issue 23: the new layer's times later than T set to T, the kept layer's left alone
        "priv-docker-clamped": [orig.path, "--parent", parent.path, "--rewrite-timestamp", "--timestamp", str(CLAMP)],
    }
    return {"priv-orig": Image(orig.path), **_squash_all(jobs, work)}


def _squash_all(jobs: dict[str, list[str | os.PathLike[str]]], work: Path) -> dict[str, Image]:
    def one(key: str) -> Image:
        out = work / f"{key}.tar"
        try:
            squash(*jobs[key], out, "--tag", f"rc/{key}:sq")
        except ClientError as e:
            return Image(None, str(e))
        return Image(out)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(jobs, pool.map(one, jobs), strict=True))


BASE_DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /priv/sub /data/keep /opq/old/deep /gone && echo v1 > /priv/sub/f && echo x > /opq/old/deep/x \\
 && echo base > /data/gone-file && echo 1 > /gone/1 && echo lower > /data/lower \\
 && chmod 700 /priv && chown 123:456 /priv && chmod 2750 /data && chown 5:6 /data \\
 && touch -d '2001-02-03 04:05:06' /priv/sub /priv /data/lower
"""
APP_DOCKERFILE = """\
FROM rc/build-base:1
RUN echo v2 > /priv/sub/f
RUN echo hl > /data/h1 && ln /data/h1 /data/h2 && ln /data/h1 /data/keep/h3 && ln /data/lower /data/lower-link
RUN rm /data/gone-file && rm -rf /gone /opq && mkdir -p /opq/new && echo n > /opq/new/n
RUN echo v3 > /priv/sub/f && chmod 711 /data/keep && chown 9:9 /data/keep && echo more > /data/more
"""


def _build(rc: Clients, work: Path) -> dict[str, Image]:
    ctx = work / "ctx"
    (ctx / "rootfs" / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox")
    if busybox is None:
        raise ClientError("busybox not installed (apt-get install -y busybox-static): docker build needs a shell")
    shutil.copy2(busybox, ctx / "rootfs" / "bin" / "busybox")
    (ctx / "base.Dockerfile").write_text(BASE_DOCKERFILE)
    (ctx / "app.Dockerfile").write_text(APP_DOCKERFILE)
    net = ["--network", "none"]  # the --squash build reuses the plain build's cached steps: the same files
    rc.docker("build", *net, "-q", "-f", str(ctx / "base.Dockerfile"), "-t", "rc/build-base:1", str(ctx))
    rc.docker("build", *net, "-q", "-f", str(ctx / "app.Dockerfile"), "-t", "rc/build-app:1", str(ctx))
    rc.docker("build", *net, "-q", "--squash", "-f", str(ctx / "app.Dockerfile"), "-t", "rc/build-app:msq", str(ctx))
    rc.adopt("build-orig", "rc/build-app:1")
    rc.adopt("build-moby", "rc/build-app:msq")
    both, orig = work / "build-both.tar", work / "build-orig.tar"
    rc.docker("save", "-o", str(both), "rc/build-app:1", "rc/build-base:1")
    rc.docker("save", "-o", str(orig), "rc/build-app:1")
    jobs: dict[str, list[str | os.PathLike[str]]] = {
        "build-parent": [both, "--image", "rc/build-app:1", "--parent", "rc/build-base:1"],
        "build-auto": [both, "--image", "rc/build-app:1", "--parent", "auto"],  # docker save app base, no annotation
        "build-scratch": [orig],
    }
    return {"build-orig": Image(orig), **_squash_all(jobs, work)}


@pytest.fixture(scope="module")
def images(rc: Clients, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image]:
    work = tmp_path_factory.mktemp("realclients")
    out = {**_trap(work), **_priv(work)}
    try:
        out.update(_build(rc, work))
    except ClientError as e:  # each build test fails with this; the others still run
        out.update({k: Image(None, f"docker build: {e}")
                    for k in ("build-orig", "build-parent", "build-auto", "build-scratch")})
    return out


def tree(rc: Clients, images: dict[str, Image], loader: str, key: str) -> Snapshot:
    img = images[key]
    if img.tar is None:
        pytest.fail(f"{key}: {img.error}", pytrace=False)
    try:
        return rc.tree(loader, key, img.tar)
    except ClientError as e:
        pytest.fail(f"{loader} cannot load {key}: {e}", pytrace=False)


def _not_trusted(name: str) -> bool:
    return not name.startswith("trusted.")


def assert_same(a: Snapshot, b: Snapshot, loader: str, what: str) -> None:
    """Equal trees in one loader. podman's vfs driver copies each layer's parent without its trusted.*
    xattrs, so an original of several layers loses them where a squash of it does not: not compared there."""
    diffs = compare_trees(a, b, mtime_skip=DOCKER_TOUCHED if loader == "docker" else frozenset(),
                          xattr_filter=_not_trusted if loader == "podman-vfs" else None)
    assert not diffs, f"{what} in {loader} differs from the original (A = original, B = squashed):\n" + \
        "\n".join(diffs[:60])


# ------------------------------------------------------------------------------------------ the harness

def test_the_harness_loaders_agree_on_the_originals(rc: Clients, images: dict[str, Image]) -> None:
    """The same original in docker, containerd, podman and podman-vfs gives the same tree: a fair oracle.

    Left out because the loaders differ, not the image: the root (podman gives an image whose top layer
    has no root entry 0555, containerd 0755; docker export has none), trusted.* xattrs (containerd's view
    drops them, so does podman's vfs copy of a lower layer), the xattrs docker export cannot show (all
    but security.capability), and the mtimes of /dev and /etc in docker (its init layer's; it creates
    them when the image has none). mtimes are compared to the second (docker export's tar has no more).
    """
    for key in ("trap-orig", "priv-orig", "build-orig"):
        trees = {loader: {p: e for p, e in tree(rc, images, loader, key).items() if p != "."}
                 for loader in LOADERS}
        for p in DOCKER_TOUCHED - trees["podman"].keys():  # docker's init layer makes them when missing
            trees["docker"].pop(p, None)
        assert len(trees["podman"]) > 5
        ctr, pod = trees["containerd"], trees["podman"]
        for other in ("containerd", "podman-vfs"):
            diffs = compare_trees(trees[other], pod, seconds=True, xattr_filter=_not_trusted)
            assert not diffs, f"{key}: {other} != podman:\n" + "\n".join(diffs)
        diffs = compare_trees(trees["docker"], pod, seconds=True, mtime_skip=DOCKER_TOUCHED,
                              xattr_filter=lambda k: k == "security.capability")
        assert not diffs, f"{key}: docker != podman:\n" + "\n".join(diffs)
        assert not any(e.mtime_ns == FRESH for p, e in ctr.items()), f"{key}: a directory no layer gave"


def test_the_harness_sees_a_difference(rc: Clients, images: dict[str, Image]) -> None:
    """The comparison is not blind: the trap original and its parent alone differ in every loader."""
    for loader in LOADERS:
        a = tree(rc, images, loader, "priv-orig")
        b = dict(a)
        b["priv"] = replace(b["priv"], mode=0o755)
        assert any(d == "mode      priv: 0700 != 0755" for d in compare_trees(a, b)), loader


# ------------------------------------------------------------------------------------------ the squashes

SQUASHES = {
    "trap-docker-scratch": "trap-orig", "trap-docker-parent": "trap-orig", "trap-docker-from3": "trap-orig",
    "trap-oci-scratch": "trap-orig", "trap-oci-parent": "trap-orig", "trap-oci-from3": "trap-orig",
    "trap-oci-auto": "trap-orig",
    "priv-docker-scratch": "priv-orig", "priv-docker-parent": "priv-orig", "priv-docker-from2": "priv-orig",
    "priv-oci-parent": "priv-orig", "priv-oci-auto": "priv-orig",
    "build-scratch": "build-orig", "build-parent": "build-orig", "build-auto": "build-orig",
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("key", list(SQUASHES))
def test_loads_as_the_original(key: str, loader: str, rc: Clients, images: dict[str, Image]) -> None:
    orig = tree(rc, images, loader, SQUASHES[key])
    assert_same(orig, tree(rc, images, loader, key), loader, key)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("key", ["priv-docker-parent", "priv-docker-from2", "priv-oci-parent", "priv-oci-auto"])
def test_parent_dir_metadata_intact(key: str, loader: str, rc: Clients, images: dict[str, Image]) -> None:
    """Issue 10's 'done means': /priv keeps 0700, 123:456 and its mtime after a squash onto the parent."""
    e = tree(rc, images, loader, key)["priv"]
    got = (oct(e.mode), e.uid, e.gid, "load time" if e.mtime_ns == FRESH else e.mtime_ns // 1_000_000_000)
    assert got == (oct(0o700), 123, 456, PRIV_MTIME)


@pytest.mark.parametrize("loader", LOADERS)
def test_rewrite_timestamp_clamps_only_the_new_layer(loader: str, rc: Clients, images: dict[str, Image]) -> None:
    """``--rewrite-timestamp`` as the loaders see it: the tree is the original's but for mtimes, which are
    ``min(original, T)`` for what the squashed layers made and the original's for the kept layer's files."""
    orig, clamped = tree(rc, images, loader, "priv-orig"), tree(rc, images, loader, "priv-docker-clamped")
    every = frozenset(orig) | frozenset(clamped)
    assert_diffs = compare_trees(orig, clamped, mtime_skip=every,
                                 xattr_filter=_not_trusted if loader == "podman-vfs" else None)
    assert not assert_diffs, "\n".join(assert_diffs[:60])
    kept = {"etc", "etc/passwd"}  # the parent layer's own files: never touched
    seen = 0
    for path, e in orig.items():
        if path in DOCKER_TOUCHED or e.mtime_ns == FRESH or path not in clamped:
            continue
        got = clamped[path].mtime_ns
        want = e.mtime_ns if path in kept else min(e.mtime_ns, CLAMP * 1_000_000_000)
        assert got == want, f"{loader}: {path} mtime {got} != {want}"
        seen += path not in kept and e.mtime_ns > CLAMP * 1_000_000_000
    assert seen >= 2, "no entry of the new layer was later than T: the check proved nothing"


# ------------------------------------------------------------------------------------------ moby's --squash

def test_moby_squash_as_a_second_reference(rc: Clients, images: dict[str, Image]) -> None:
    """``docker build --squash`` of the same Dockerfile (the plain build's cached steps, squashed by the
    daemon onto the FROM image) against the plain build, in docker; and ocisquash where moby differs.

    moby differs in one way, on purpose of its design rather than ours: it diffs the final tree against
    the parent and writes only what changed, so ``/data/lower`` (from the base, unchanged) is left out
    and ``/data/lower-link`` (a hardlink to it, made in a squashed step) can only be written as a
    separate copy: the hardlink group is broken. ocisquash must keep the group (it writes the lower file
    again with its link), and keep /priv's metadata, which moby keeps by writing every ancestor of a change.
    """
    orig = tree(rc, images, "docker", "build-orig")
    moby = rc.tree("docker", "build-moby")
    diffs = compare_trees(orig, moby, mtime_skip=DOCKER_TOUCHED)
    assert diffs == ["hardlink  data/lower: linked with ['data/lower-link'] != []",
                     "hardlink  data/lower-link: linked with ['data/lower'] != []"], "\n".join(diffs)
    assert moby["data/lower-link"].content() == orig["data/lower"].content()  # a copy, not a link
    assert moby["priv"] == orig["priv"] and orig["priv"].mode == 0o700
    ours = tree(rc, images, "docker", "build-parent")
    assert ours["data/lower-link"].hardlinks == ("data/lower", "data/lower-link")
    assert ours["data/lower"] == orig["data/lower"]


# ------------------------------------------------------------------------------------------ README's promise

def test_compressed_tarballs_load_as_readme_says(rc: Clients, images: dict[str, Image], tmp_path: Path) -> None:
    """README: docker load and podman load read ``.tar.gz`` output; ``.tar.zst`` podman, and docker from 23.0."""
    src = images["priv-docker-scratch"].tar
    assert src is not None
    version = rc.docker("version", "-f", "{{.Server.Version}}").stdout.strip()
    zstd_ok = int(version.split(".")[0]) >= 23
    for ext in (".tar.gz", ".tar.zst"):
        out = tmp_path / f"out{ext}"
        squash(src, out, "--tag", f"rc/compressed-{ext[5:]}:1")
        assert rc.load("podman", f"compressed{ext}", out).ref.endswith(f"rc/compressed-{ext[5:]}:1")
        if ext == ".tar.gz" or zstd_ok:
            assert rc.load("docker", f"compressed{ext}", out).ref == f"rc/compressed-{ext[5:]}:1"
        else:
            with pytest.raises(ClientError, match="invalid tar header"):
                rc.load("docker", f"compressed{ext}", out)
