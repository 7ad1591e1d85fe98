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
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

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
    assert a[0] == str(d(1)) and b[0] == str(d(2))
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
