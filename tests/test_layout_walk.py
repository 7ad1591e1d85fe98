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
