"""A squash's output keeps the base annotations (``org.opencontainers.image.base.digest``/``base.name``)
only while they are true: when it keeps exactly the layers of the base they name.

First the rule as pure logic (``autoparent.squashed_annotations``) on hand-made IDs, including parents
with fewer or more layers than the named base; then buildah-built images (test_parent_auto's ``built``
fixture: ``app.tar`` built ``FROM`` ``base.tar``, its manifest naming the base) squashed onto scratch,
with ``--from-layer``, with ``--parent auto`` (the base in the same layout and in another file) and
with ``--parent`` naming the base, each output's manifest annotations read back from the written file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from oracle import skopeo
from test_parent_auto import built, d, k, squashed
from test_squash import cli, ok, read_image

from ocisquash.autoparent import BASE_DIGEST, BASE_NAME, Known, squashed_annotations

__all__ = ["built"]  # the module-scoped fixture, used here by name

OTHER = {"org.opencontainers.image.title": "app", "com.example.note": "kept"}
BASE = k("base", [1, 2], manifest=7, names=("registry.example/base:12",))
ANNOTATED = {BASE_DIGEST: str(d(1000 + 7)), BASE_NAME: "registry.example/base:12", **OTHER}


# ------------------------------------------------------------------------------------------ the rule

def test_onto_scratch_or_an_unknown_base_they_are_dropped() -> None:
    assert squashed_annotations(ANNOTATED, 0, None) == OTHER
    assert squashed_annotations(ANNOTATED, 0, BASE) == OTHER  # a base known but none of its layers kept
    assert squashed_annotations(ANNOTATED, 2, None) == OTHER  # --from-layer 3: the base's size is unknown


def test_kept_when_the_parent_is_the_named_base_whole() -> None:
    assert squashed_annotations(ANNOTATED, 2, BASE) == ANNOTATED
    # named by base.name alone, or a parent with no manifest digest (a docker save base): by name
    by_name = {BASE_NAME: "registry.example/base:12"}
    assert squashed_annotations(by_name, 2, BASE) == by_name
    no_digest = Known("base", ("registry.example/base:12",), None, BASE.image_id, BASE.diff_ids)
    assert squashed_annotations(ANNOTATED, 2, no_digest) == ANNOTATED


def test_another_parent_with_fewer_or_more_layers_drops_them() -> None:
    fewer = k("os", [1], manifest=3)
    more = k("mid", [1, 2, 3], manifest=5)
    assert squashed_annotations(ANNOTATED, 1, fewer) == OTHER
    assert squashed_annotations(ANNOTATED, 3, more) == OTHER
    # the named base itself, but a cut that keeps fewer or more than its layers (the API's own checks aside)
    assert squashed_annotations(ANNOTATED, 1, BASE) == OTHER
    assert squashed_annotations(ANNOTATED, 3, BASE) == OTHER


def test_same_size_but_another_image_drops_them() -> None:
    twin = k("base", [1, 2], manifest=8, names=("registry.example/base:12",))  # same name, another digest
    assert squashed_annotations(ANNOTATED, 2, twin) == OTHER
    other_name = Known("x", ("registry.example/other:1",), None, BASE.image_id, BASE.diff_ids)
    assert squashed_annotations({BASE_NAME: "registry.example/base:12"}, 2, other_name) == {}


def test_malformed_values_are_dropped_and_other_annotations_untouched() -> None:
    bad = {BASE_DIGEST: "sha256:nothex", BASE_NAME: "", **OTHER}
    assert squashed_annotations(bad, 2, BASE) == OTHER
    assert squashed_annotations(OTHER, 2, BASE) == OTHER
    assert squashed_annotations({}, 0, None) == {}


# ------------------------------------------------------------------------------------------ real images

def annotations_of(out: Path) -> dict[str, str]:
    man: dict[str, Any] = read_image(out).manifest or {}
    return man.get("annotations") or {}


def base_digest(built: Path) -> str:
    return "sha256:" + hashlib.sha256(read_image(built / "base.tar").manifest_raw or b"").hexdigest()


def input_annotations(built: Path) -> dict[str, str]:
    got = annotations_of(built / "app.tar")
    assert got[BASE_DIGEST] == base_digest(built)  # what the rest relies on: buildah named the base
    return got


def test_a_squash_onto_scratch_drops_them(built: Path, tmp_path: Path) -> None:
    before = input_annotations(built)
    rep = ok(cli("squash", built / "app.tar", tmp_path / "out.tar", "--format", "oci-archive", "--json")).json()
    assert (rep["kept_layers"], rep["layers_after"]) == (0, 1)
    after = annotations_of(tmp_path / "out.tar")
    assert BASE_DIGEST not in after and BASE_NAME not in after
    assert after == {k: v for k, v in before.items() if k not in (BASE_DIGEST, BASE_NAME)}


def test_from_layer_keeping_fewer_layers_than_the_base_drops_them(built: Path, tmp_path: Path) -> None:
    input_annotations(built)
    for n, keep in (("2", 1), ("3", 2)):  # 3: as many as the base has, but no base image is known to say so
        out = tmp_path / f"out{n}.tar"
        rep = ok(cli("squash", built / "app.tar", out, "--from-layer", n, "--format", "oci-archive",
                     "--json")).json()
        assert rep["kept_layers"] == keep
        assert not {BASE_DIGEST, BASE_NAME} & set(annotations_of(out)), n


def test_parent_auto_keeping_the_base_keeps_them(built: Path, tmp_path: Path) -> None:
    before = input_annotations(built)
    both = tmp_path / "both"
    for name in ("base", "app"):
        skopeo("copy", "-q", f"oci-archive:{built / (name + '.tar')}", f"oci:{both}:{name}")
    rep = squashed([both, "--image", "app", "--parent", "auto"], tmp_path / "same.tar")
    assert (rep["parent_rule"], rep["kept_layers"]) == ("annotation", 2)
    assert annotations_of(tmp_path / "same.tar") == before
    rep = squashed([built / "app.tar", "--parent", f"auto:{built / 'base.tar'}"], tmp_path / "other.tar")
    assert (rep["parent_rule"], rep["kept_layers"]) == ("annotation", 2)
    assert annotations_of(tmp_path / "other.tar") == before


def test_parent_naming_the_base_keeps_them(built: Path, tmp_path: Path) -> None:
    before = input_annotations(built)
    rep = squashed([built / "app.tar", "--parent", built / "base.tar"], tmp_path / "out.tar")
    assert rep["kept_layers"] == 2
    assert annotations_of(tmp_path / "out.tar") == before
