"""Every blob is checked against what names it: digest, size, diff ID, media type and compressed stream;
an index cannot name itself."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from fuzz import images as I
from untrusted import (
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    layer_blob,
    load_all,
    oci_tar,
    swap_layer,
)

from ocisquash.errors import DigestMismatch, FormatError


def test_digest_lie(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        k = layer_blob(m)
        m[k] = m[k][:-1] + bytes([m[k][-1] ^ 1])
    with pytest.raises(DigestMismatch, match="content hashes to"):
        load_all(oci_tar(tmp_path, mutate))


def test_size_lie_longer(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        m[layer_blob(m)] += b"\0" * 10
    with pytest.raises(DigestMismatch, match="larger than its descriptor's size"):
        load_all(oci_tar(tmp_path, mutate))


def test_size_lie_shorter(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        k = layer_blob(m)
        m[k] = m[k][:-10]
    with pytest.raises(DigestMismatch, match="truncated"):
        load_all(oci_tar(tmp_path, mutate))


def test_diff_id_lie(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        swap_layer(m, gzip.compress(I.layer_tar({"other": b"content"}), mtime=0))
    with pytest.raises(DigestMismatch, match="diff ID"):
        load_all(oci_tar(tmp_path, mutate))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_truncated_compressed_stream(tmp_path: Path, codec: str) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        blob = m[layer_blob(m)]
        swap_layer(m, blob[: len(blob) // 2])
    with pytest.raises(FormatError, match=f"corrupt {codec} data"):
        load_all(oci_tar(tmp_path, mutate, codec))


def test_media_type_lies_about_compression(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        swap_layer(m, I.default_layers()[0])  # a plain tar under a +gzip media type
    with pytest.raises(FormatError, match="its media type says gzip but its bytes are none"):
        load_all(oci_tar(tmp_path, mutate))


def test_cyclic_index_cannot_pass_digest_checks(tmp_path: Path) -> None:
    """An index naming itself (a cycle needs a digest lie): refused before any walk."""
    def mutate(m: dict[str, bytes]) -> None:
        fake = "sha256:" + "ab" * 32
        body = I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_INDEX,
                         "manifests": [{"mediaType": I.OCI_INDEX, "digest": fake, "size": 10}]})
        m["blobs/sha256/" + "ab" * 32] = body
        m["index.json"] = I.jbytes({"schemaVersion": 2, "manifests": [
            {"mediaType": I.OCI_INDEX, "digest": fake, "size": len(body)}]})
    with pytest.raises(DigestMismatch, match="does not match its content"):
        load_all(oci_tar(tmp_path, mutate))
