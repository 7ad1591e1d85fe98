"""The walk of a layout's ``index.json``: a missing child manifest is skipped whatever size its descriptor
claims (a platform nobody pulled); a missing top-level one is an error that says so, before any cap."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_badinput import HandImage, index_of, jbytes, layout_files, sha, write_dir

from ocisquash import errors
from ocisquash.archive import DirTree
from ocisquash.formats import ocilayout
from ocisquash.model import OCI_INDEX, OCI_MANIFEST

HUGE = 1 << 40  # over any max_json cap


def _missing(size: int) -> dict[str, object]:
    return {"mediaType": OCI_MANIFEST, "digest": "sha256:" + sha(b"never written"), "size": size,
            "platform": {"os": "linux", "architecture": "arm64"}}


@pytest.mark.parametrize("size", [10, HUGE])
def test_missing_child_manifest_is_skipped(tmp_path: Path, size: int) -> None:
    img = HandImage()
    nested = jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX,
                     "manifests": [img.descriptor(), _missing(size)]})
    top = {"mediaType": OCI_INDEX, "digest": "sha256:" + sha(nested), "size": len(nested),
           "annotations": {"org.opencontainers.image.ref.name": "1"}}
    root = write_dir(tmp_path / "lay", layout_files(img, index=index_of([top]),
                                                    extra_blobs={sha(nested): nested}))
    got = ocilayout.entries(DirTree(str(root)))
    assert [e.descriptor.digest.encoded for e in got] == [sha(img.manifest_bytes())]


@pytest.mark.parametrize("size", [10, HUGE])
def test_missing_top_manifest_is_named(tmp_path: Path, size: int) -> None:
    root = write_dir(tmp_path / "lay", layout_files(HandImage(), index=index_of([_missing(size)])))
    with pytest.raises(errors.MissingBlob, match=r"named in index\.json is missing"):
        ocilayout.entries(DirTree(str(root)))


def test_oversized_present_child_is_refused(tmp_path: Path) -> None:
    img = HandImage()
    big = {**img.descriptor(), "size": HUGE}
    nested = jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [big]})
    top = {"mediaType": OCI_INDEX, "digest": "sha256:" + sha(nested), "size": len(nested)}
    root = write_dir(tmp_path / "lay", layout_files(img, index=index_of([top]), extra_blobs={sha(nested): nested}))
    with pytest.raises(errors.LimitExceeded, match="max_json"):
        ocilayout.entries(DirTree(str(root)))


def test_shared_layers_are_looked_up_once_per_listing(tmp_path: Path) -> None:
    """Images of one layout share their layers: whether a blob is a plain file is asked once per blob."""
    from collections import Counter

    from listing_inputs import Img, layer_tar, write_oci

    from ocisquash.formats import builtin

    base, top = layer_tar({"base": b"b" * 100}), layer_tar({"top": b"t"})
    root = write_oci(tmp_path / "lay", [Img([f"docker.io/acme/a:{i}"], f"2023-01-0{i + 1}T00:00:00Z",
                                            [base] + [top] * (i % 2)) for i in range(4)])
    tree = DirTree(str(root))
    asked: Counter[str] = Counter()
    real = tree.exists

    def exists(name: str) -> bool:
        asked[name] += 1
        return real(name)

    tree.exists = exists  # type: ignore[method-assign]
    images = [c.load() for c in builtin.layout_candidates(tree)]
    assert len(images) == 4 and all(ly.is_plain_file for img in images for ly in img.layers)
    blobs = {k: n for k, n in asked.items() if k.startswith("blobs/")}
    assert blobs == {f"blobs/sha256/{sha(base)}": 1, f"blobs/sha256/{sha(top)}": 1}
    (root / "blobs" / "sha256" / sha(top)).unlink()
    again = [c.load() for c in builtin.layout_candidates(tree)]  # a new listing asks again
    assert [ly.is_plain_file for img in again for ly in img.layers] == [True, True, False, True, True, False]
