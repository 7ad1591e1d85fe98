"""``--parent auto`` (``Cut.auto()``): the base found by the manifest's base annotations, else by the
longest shared chain of layers, else a clear error.

First the rules as pure logic on hand-made diff IDs (``ocisquash.autoparent``); then real images:
buildah builds whose manifests carry ``org.opencontainers.image.base.digest`` (base in the same layout,
in another file, missing), an annotation-free multi-image ``docker save``, a registry image built
``FROM`` a base in the same registry (``base.name``), and an annotated base that is not a prefix. Each
squash is unpacked by umoci and compared with the original, and its kept layers are the base's blobs.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import registryd
from conftest import check_tools, needs, skip_or_fail
from fixtures import build_docker, build_oci, sample_layers, to_docker25
from oracle import assert_same_rootfs, skopeo
from test_squash import cli, ok, read_image

from ocisquash import api
from ocisquash.autoparent import (
    BASE_DIGEST,
    BASE_NAME,
    Known,
    base_annotations,
    by_annotation,
    by_shared_layers,
    chain_ids,
    find,
)
from ocisquash.digest import Digest
from ocisquash.errors import FormatError, NotFound, UsageError


def d(i: int) -> Digest:
    return Digest.parse("sha256:" + hashlib.sha256(str(i).encode()).hexdigest())


def k(label: str, layers: list[int], *, image: int | None = None, manifest: int | None = None,
      names: tuple[str, ...] = ()) -> Known:
    return Known(label, names or (label,), None if manifest is None else d(1000 + manifest),
                 d(2000 + (image if image is not None else sum(layers) * 7 + len(layers))),
                 tuple(d(i) for i in layers))


def fake_image(layers: list[int], annotations: dict[str, str] | None = None, *, manifest: int = 0) -> Any:
    return SimpleNamespace(config=SimpleNamespace(diff_ids=[d(i) for i in layers]), id=d(999),
                           index_annotations={}, label="app", manifest_digest=d(1000 + manifest),
                           manifest=SimpleNamespace(annotations=annotations or {}))


# ------------------------------------------------------------------------------------------ pure rules

def test_chain_ids_name_stacks_not_layers() -> None:
    a, b = chain_ids([d(1), d(2)]), chain_ids([d(2), d(2)])
    assert a[0] == d(1) and b[0] == d(2)  # a one-layer stack is named by its layer's diff ID
    assert a[1] != b[1]  # the same top layer on another stack is another chain
    assert chain_ids([d(1), d(2), d(3)])[:2] == a


def test_longest_shared_chain_wins() -> None:
    image = [d(i) for i in (1, 2, 3, 4, 5)]
    others = [k("os", [1]), k("runtime", [1, 2, 3]), k("sibling", [1, 2, 9]), k("other", [7, 1])]
    found = by_shared_layers(image, d(999), others)
    assert found is not None and found.rule == "shared layers"
    assert found.base.label == "runtime" and found.keep == 3


def test_sibling_and_same_layers_are_no_parent() -> None:
    image = [d(i) for i in (1, 2, 3)]
    # a sibling shares two layers but has one of its own; "twin" has all the image's layers; "self" is it
    others = [k("sibling", [1, 2, 8]), k("twin", [1, 2, 3]), Known("self", ("self",), None, d(999), (d(1), d(2)))]
    assert by_shared_layers(image, d(999), [*others[:2]]) is None
    found = by_shared_layers(image, d(999), [k("os", [1]), *others])
    assert found is not None and found.base.label == "os"


def test_the_image_itself_is_never_its_parent() -> None:
    me = Known("app", ("app",), None, d(999), (d(1), d(2)))
    assert by_shared_layers([d(1), d(2), d(3)], d(999), [me]) is None


def test_tie_between_different_images_is_an_error_listing_them() -> None:
    image = [d(i) for i in (1, 2, 3)]
    with pytest.raises(FormatError) as e:
        by_shared_layers(image, d(999), [k("base:a", [1, 2], image=1), k("base:b", [1, 2], image=2), k("os", [1])])
    assert "2 images share the image's bottom 2 layers" in str(e.value)
    assert "base:a" in (e.value.hint or "") and "base:b" in (e.value.hint or "")


def test_one_image_under_two_names_is_no_tie() -> None:
    twice = [k("base:1", [1, 2], image=5), k("base:latest", [1, 2], image=5)]
    found = by_shared_layers([d(1), d(2), d(3)], d(999), twice)
    assert found is not None and found.keep == 2


def test_annotated_base_must_be_a_prefix() -> None:
    ok = by_annotation([d(1), d(2), d(3)], k("base", [1, 2]))
    assert (ok.rule, ok.keep) == ("annotation", 2)
    with pytest.raises(FormatError, match="not a prefix"):
        by_annotation([d(1), d(2), d(3)], k("base", [1, 4]))
    with pytest.raises(FormatError, match="not a prefix"):
        by_annotation([d(1), d(2)], k("base", [1, 2, 3]))


def test_base_annotations_read_and_empty_values_ignored() -> None:
    assert base_annotations({BASE_NAME: "", BASE_DIGEST: str(d(1))}) == (None, d(1))
    assert base_annotations({BASE_NAME: "reg.example/base:1"}) == ("reg.example/base:1", None)
    assert base_annotations({BASE_DIGEST: "sha256:nothex"}) == (None, None)
    assert base_annotations({}) == (None, None)


def test_find_takes_the_annotated_base_over_a_longer_shared_chain() -> None:
    # "mid" shares more layers, but the annotation names "os" by its manifest digest
    img = fake_image([1, 2, 3, 4], {BASE_DIGEST: str(d(1000 + 7))})
    found = find(img, [lambda: [k("mid", [1, 2, 3], manifest=3), k("os", [1], manifest=7)]])
    assert (found.rule, found.base.label, found.keep) == ("annotation", "os", 1)
    by_name = find(fake_image([1, 2, 3, 4], {BASE_NAME: "docker.io/library/os:12"}),
                   [lambda: [k("mid", [1, 2, 3]), k("x", [1], names=("os:12",))]])
    assert (by_name.rule, by_name.base.label) == ("annotation", "x")


def test_an_annotation_naming_the_image_itself_is_passed_over() -> None:
    # buildah with --layers can name the cached image of an earlier step: here, under the image's own name
    img = fake_image([1, 2, 3], {BASE_NAME: "localhost/app:latest"})
    me = Known("app", ("localhost/app:latest",), None, d(999), (d(1), d(2), d(3)))
    found = find(img, [lambda: [me, k("base", [1])]])
    assert (found.rule, found.base.label) == ("shared layers", "base")


def test_find_falls_back_to_shared_layers_then_errors_with_the_hint() -> None:
    img = fake_image([1, 2, 3], {BASE_DIGEST: str(d(1000 + 42))})
    found = find(img, [lambda: [k("mid", [1, 2])], list])
    assert (found.rule, found.keep) == ("shared layers", 2)
    asked: list[tuple[str | None, Digest | None]] = []

    def registry(name: str | None, digest: Digest | None) -> Known | None:
        asked.append((name, digest))
        return None

    with pytest.raises(NotFound) as e:
        find(img, [lambda: [k("other", [5])]], registry)
    assert asked == [(None, d(1000 + 42))]
    assert "no parent image found" in str(e.value) and str(d(1000 + 42)) in str(e.value)
    assert "--parent REF" in (e.value.hint or "") and "--from-layer N" in (e.value.hint or "")


def test_find_asks_the_registry_for_a_base_not_at_hand() -> None:
    img = fake_image([1, 2, 3], {BASE_NAME: "reg.example/base:1"})
    found = find(img, [list], lambda name, digest: k("reg.example/base:1", [1]) if name else None)
    assert (found.rule, found.keep) == ("annotation", 1)


def test_cut_auto_spellings() -> None:
    assert api.Cut.parse("auto") == api.Cut("auto", spec="auto")
    assert api.Cut.parse("auto:base.tar") == api.Cut("auto", parent_path="base.tar", spec="auto:base.tar")
    assert api.Cut.auto() == api.Cut("auto")
    assert api.Cut.auto(Path("b.tar")).parent_path == "b.tar"
    assert api.Cut.parse("./auto").kind == "parent"
    with pytest.raises(UsageError):
        api.Cut("auto", parent_ref="x")
    with pytest.raises(UsageError):
        api.Cut.auto("")


# ------------------------------------------------------------------------------------------ real images

def squashed(args: list[str | Path], out: Path) -> dict[str, Any]:
    """Squash with ``--parent auto`` into an OCI layout tar ``out``; its ``--json`` report."""
    return ok(cli("squash", *args, out, "--format", "oci-archive", "--json")).json()


def check(original: str, out: Path, base: Path, keep: int, tmp_path: Path, *, base_tag: str | None = None) -> None:
    """``out`` unpacks to ``original``'s rootfs, and its bottom ``keep`` layers are the base's blobs."""
    assert_same_rootfs(original, f"oci-archive:{out}", tmp_path)
    got, want = read_image(out), read_image(base, base_tag)
    assert len(want.layers) == keep and got.layers[:keep] == want.layers
    assert len(got.layers) == keep + 1


class Buildah:
    """buildah in a throw-away store under ``root`` (vfs, chroot isolation: no root, no daemon)."""

    def __init__(self, root: Path) -> None:
        self.opts = ["--root", str(root / "root"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]

    def __call__(self, *argv: str) -> None:
        p = subprocess.run(["buildah", *self.opts, *argv], capture_output=True, text=True, timeout=300, check=False)
        assert p.returncode == 0, f"buildah {argv[0]}: {p.stderr}"

    def bud(self, ctx: Path, containerfile: str, tag: str, *extra: str) -> None:
        (ctx / "Containerfile").write_text(containerfile)
        self("bud", "-q", "--isolation", "chroot", *extra, "-t", tag, str(ctx))


def need_buildah() -> None:
    check_tools()
    problem = needs(("buildah",), "apt-get install buildah", root="(buildah's container store)")
    if problem:
        skip_or_fail(problem)


def context(tmp: Path) -> Path:
    ctx = tmp / "ctx"
    (ctx / "dir").mkdir(parents=True)
    (ctx / "a.txt").write_text("base a\n")
    (ctx / "dir" / "x.bin").write_bytes(bytes(range(256)) * 8)
    (ctx / "b.txt").write_text("app overwrites a\n")
    (ctx / "c.txt").write_text("app adds c\n")
    return ctx


BASE_FILE = "FROM scratch\nCOPY a.txt /a.txt\nCOPY dir/ /dir/\n"
APP_FILE = "FROM {base}\nCOPY b.txt /a.txt\nCOPY c.txt /c.txt\n"  # one layer, as bud without --layers makes


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``base.tar`` (2 layers) and ``app.tar`` built ``FROM oci-archive:base.tar`` (1 more), by buildah.

    The app is built without ``--layers``: with it, buildah's annotations name the image of the step
    before the last (an intermediate or a cached image), not the ``FROM`` one (see docs/commands.md)."""
    need_buildah()
    tmp = tmp_path_factory.mktemp("built")
    ctx, b = context(tmp), Buildah(tmp / "store")
    try:
        b.bud(ctx, BASE_FILE, "base", "--layers")
        b("push", "-q", "base", f"oci-archive:{tmp / 'base.tar'}:base")
        b.bud(ctx, APP_FILE.format(base=f"oci-archive:{tmp / 'base.tar'}"), "app")
        b("push", "-q", "app", f"oci-archive:{tmp / 'app.tar'}:app")
    finally:
        shutil.rmtree(tmp / "store", ignore_errors=True)
    yield tmp


def test_buildah_writes_the_base_digest(built: Path) -> None:
    # what the next tests rely on: buildah names the base by its manifest digest (no name for oci-archive:)
    app = read_image(built / "app.tar").manifest or {}
    base_digest = "sha256:" + hashlib.sha256(read_image(built / "base.tar").manifest_raw or b"").hexdigest()
    assert app["annotations"][BASE_DIGEST] == base_digest
    assert len(app["layers"]) == 3


def test_annotation_base_in_the_same_layout(built: Path, tmp_path: Path) -> None:
    both = tmp_path / "both"
    for name in ("base", "app"):
        skopeo("copy", "-q", f"oci-archive:{built / (name + '.tar')}", f"oci:{both}:{name}")
    # a decoy sharing more layers: the annotation wins over the longest shared chain
    skopeo("copy", "-q", f"oci-archive:{built / 'app.tar'}", f"oci:{tmp_path / 'decoy'}:d")
    rep = squashed([both, "--image", "app", "--parent", "auto"], tmp_path / "out.tar")
    assert (rep["parent_rule"], rep["kept_layers"], rep["layers_after"]) == ("annotation", 2, 3)
    assert rep["parent_image"] == "base"
    check(f"oci-archive:{built / 'app.tar'}", tmp_path / "out.tar", built / "base.tar", 2, tmp_path)
    table = ok(cli("squash", both, "--image", "app", "--parent", "auto", "--dry-run"))
    assert "--parent auto: found base by annotation; keeps its 2 layers" in table.stderr


def test_annotation_base_in_another_file(built: Path, tmp_path: Path) -> None:
    rep = squashed([built / "app.tar", "--parent", f"auto:{built / 'base.tar'}"], tmp_path / "out.tar")
    assert (rep["parent_rule"], rep["kept_layers"]) == ("annotation", 2)
    check(f"oci-archive:{built / 'app.tar'}", tmp_path / "out.tar", built / "base.tar", 2, tmp_path)
    # the API's spelling does the same
    import ocisquash

    api_rep = ocisquash.squash_image(built / "app.tar", None, cut=ocisquash.Cut.auto(built / "base.tar"))
    assert (api_rep.parent_rule, api_rep.kept_layers) == ("annotation", 2)


def test_annotation_base_missing_is_the_error_with_the_hint(built: Path, tmp_path: Path) -> None:
    r = cli("squash", built / "app.tar", tmp_path / "out.tar", "--parent", "auto")
    assert r.rc == 1 and "Traceback" not in r.stderr
    base_digest = "sha256:" + hashlib.sha256(read_image(built / "base.tar").manifest_raw or b"").hexdigest()
    assert f"no parent image found (its annotations name localhost/base:latest@{base_digest} as its" in r.stderr
    assert "--parent REF" in r.stderr and "--from-layer N" in r.stderr
    assert not (tmp_path / "out.tar").exists()


def _annotate(layout: Path, tag: str, annotations: dict[str, str]) -> None:
    """Give ``layout:tag``'s manifest these annotations (a new blob; the index entry follows it)."""
    index = json.loads((layout / "index.json").read_text())
    for e in index["manifests"]:
        if (e.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            m = json.loads((layout / "blobs" / "sha256" / e["digest"].split(":")[1]).read_bytes())
            m["annotations"] = annotations
            raw = json.dumps(m).encode()
            (layout / "blobs" / "sha256" / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
            e.update(digest="sha256:" + hashlib.sha256(raw).hexdigest(), size=len(raw))
    (layout / "index.json").write_text(json.dumps(index))


def test_annotated_base_not_a_prefix_is_an_error(tmp_path: Path) -> None:
    check_tools()
    lay = tmp_path / "lay"
    layers = sample_layers()
    build_oci(lay, "app", layers)
    build_oci(lay, "other", [layers[1]])  # the app's second layer alone: not its bottom
    build_oci(lay, "base", layers[:1])  # a real prefix the shared-layers rule would take
    _annotate(lay, "app", {BASE_NAME: "other"})
    r = cli("squash", lay, tmp_path / "out.tar", "--image", "app", "--parent", "auto")
    assert r.rc == 1 and "Traceback" not in r.stderr
    assert "the base image the annotations name (other, 1 layers) is not the bottom of this image" in r.stderr
    assert not (tmp_path / "out.tar").exists()


def _docker_save(tars: list[Path], out: Path) -> None:
    """One ``docker save A B`` tarball (Docker 25 shape) from single-image ones: blobs pooled, the
    image lists (manifest.json, index.json, repositories) joined."""
    files: dict[str, bytes] = {}
    lists: dict[str, Any] = {"manifest.json": [], "index.json": None, "repositories": {}}
    for t in tars:
        with tarfile.open(t) as tf:
            for m in tf.getmembers():
                if not m.isfile():
                    continue
                data = tf.extractfile(m).read()  # type: ignore[union-attr]
                if m.name == "manifest.json":
                    lists[m.name].extend(json.loads(data))
                elif m.name == "index.json":
                    idx = json.loads(data)
                    if lists[m.name] is None:
                        lists[m.name] = idx
                    else:
                        lists[m.name]["manifests"].extend(idx["manifests"])
                elif m.name == "repositories":
                    lists[m.name].update(json.loads(data))
                else:
                    files[m.name] = data
    files.update({k: json.dumps(v).encode() for k, v in lists.items()})
    with tarfile.open(out, "w") as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tf.addfile(info, io.BytesIO(files[name]))


def test_shared_layers_in_a_docker_save_of_app_and_base(tmp_path: Path) -> None:
    check_tools()
    layers = sample_layers()
    parts = []
    for name, ls in (("app", layers), ("base", layers[:1]), ("mid", layers[:2])):
        oci = build_oci(tmp_path / f"{name}.oci", name, ls)
        legacy = build_docker(oci.path, name, tmp_path / f"{name}.legacy.tar", f"{name}:1")
        parts.append(to_docker25(legacy.path, tmp_path / f"{name}.tar").path)
    _docker_save(parts[:2], tmp_path / "app-base.tar")
    rep = squashed([tmp_path / "app-base.tar", "--image", "app:1", "--parent", "auto"], tmp_path / "out.tar")
    assert (rep["parent_rule"], rep["kept_layers"]) == ("shared layers", 1)
    assert rep["parent_image"] == "base:1"
    check(f"docker-archive:{parts[0]}", tmp_path / "out.tar", parts[1], 1, tmp_path)
    # with mid also there, the longer shared chain wins; read from a pipe, as docker save | ocisquash
    _docker_save(parts, tmp_path / "all.tar")
    r = ok(cli("squash", "-", "-", "--image", "app:1", "--parent", "auto", "--format", "oci-archive", "--json",
               stdin=tmp_path / "all.tar", stdout=tmp_path / "out2.tar"))
    r.to_file = True
    assert (r.json()["parent_rule"], r.json()["kept_layers"], r.json()["parent_image"]) == ("shared layers", 2, "mid:1")
    check(f"docker-archive:{parts[0]}", tmp_path / "out2.tar", parts[2], 2, tmp_path)
    # alone, the app has no parent at hand: the error, and nothing written
    r = cli("squash", parts[0], tmp_path / "out3.tar", "--parent", "auto")
    assert r.rc == 1 and "no parent image found" in r.stderr and "(its annotations" not in r.stderr


def test_registry_image_whose_base_is_in_the_same_registry(tmp_path: Path) -> None:
    need_buildah()
    problem = registryd.problem()
    if problem is not None:
        skip_or_fail(problem)
    ctx, b = context(tmp_path), Buildah(tmp_path / "store")
    with registryd.Registry(tmp_path / "reg") as reg:
        try:
            b.bud(ctx, BASE_FILE, "base", "--layers")
            b("push", "-q", "--tls-verify=false", "base", f"docker://{reg.host}/lib/base:1")
            b.bud(ctx, APP_FILE.format(base=f"{reg.host}/lib/base:1"), "app", "--tls-verify=false")
            b("push", "-q", "--tls-verify=false", "app", f"docker://{reg.host}/team/app:1")
        finally:
            shutil.rmtree(tmp_path / "store", ignore_errors=True)
        app = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reg.host}/team/app:1").stdout)
        assert app["annotations"][BASE_NAME] == f"{reg.host}/lib/base:1"  # buildah names a registry base
        skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{reg.host}/team/app:1", f"oci:{tmp_path / 'o'}:app")
        skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{reg.host}/lib/base:1", f"oci:{tmp_path / 'o'}:base")
        rep = squashed([f"docker://{reg.host}/team/app:1", "--parent", "auto", "--tls-verify=false"],
                       tmp_path / "out.tar")
    assert (rep["parent_rule"], rep["kept_layers"]) == ("annotation", 2)
    check(f"oci:{tmp_path / 'o'}:app", tmp_path / "out.tar", tmp_path / "o", 2, tmp_path, base_tag="base")

