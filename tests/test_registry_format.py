"""``docker://`` read as a ``Format`` of its own (issue 21 item 2), not as a make-believe OCI layout: the
images are listed from the manifest or index the registry serves, its members are blobs named by digest
and exist only once a document read names them (with their descriptors' sizes), and ``validate`` reads
every blob of every platform. Each test serves a tiny image from a loopback server (``hostileregistry``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hostileregistry import Conn, Handler, HostileServer, Request, serve_image, serve_index, tiny_image, tiny_index

import ocisquash
from ocisquash.errors import MissingBlob
from ocisquash.registry.format import REGISTRY
from ocisquash.registry.sink import Origin

STRANGER = "sha256:" + "0" * 64


@contextmanager
def served(handler: Handler) -> Iterator[tuple[HostileServer, str]]:
    """The server on loopback over plain HTTP, and the reference of its image ``a/b:1``."""
    with HostileServer(handler) as server, ocisquash.registry_access(ocisquash.RegistryAccess(tls_verify=False)):
        yield server, f"docker://{server.netloc}/a/b:1"


def test_a_registry_input_holds_only_the_blobs_its_documents_name() -> None:
    img = tiny_image()
    config, layer = img.blobs
    with served(serve_image(img)) as (server, ref):
        opened = REGISTRY.open_reference(ref)
        try:
            tree = opened.tree
            [cand] = opened.candidates
            assert (str(cand.manifest_digest), str(cand.image_id)) == (img.digest, config)
            # named as a layout's entry for it would be: the full name, and the tag as ref.name
            assert cand.names == [f"{server.netloc}/a/b:1", "1"]
            # listing the images read the manifest only: no blob was asked for
            assert [r.path for r in server.requests if "/blobs/" in r.path] == []
            assert tree.names() == sorted([img.digest, config, layer])
            assert (tree.size(img.digest), tree.size(config), tree.size(layer)) == \
                (len(img.manifest), len(img.blobs[config]), len(img.blobs[layer]))
            assert not tree.exists("index.json") and not tree.exists(f"blobs/sha256/{layer[7:]}")
            assert not tree.exists(STRANGER)
            with pytest.raises(MissingBlob, match="named by none of the documents"):
                tree.open(STRANGER)
            with pytest.raises(MissingBlob):
                tree.size(STRANGER)
            assert not any(STRANGER in r.path for r in server.requests)  # refused without asking

            image = cand.load()
            [ly] = image.layers
            assert (str(ly.digest), ly.size, ly.origin) == (layer, len(img.blobs[layer]), Origin(server.netloc, "a/b"))
            f = ly.opener()
            try:
                assert f.read() == img.blobs[layer]
            finally:
                f.close()
        finally:
            opened.tree.close()


def test_validate_reads_every_blob_of_every_platform_of_a_registry_index() -> None:
    img = tiny_image()
    index = tiny_index(img, ["linux/amd64", "linux/arm64"])
    phases: list[tuple[str, int | None]] = []
    with served(serve_index(index, img)) as (server, ref), ocisquash.open(ref) as src:
        val = src.validate(on_phase=lambda phase, total: phases.append((phase, total)))
        blob_gets = sorted(r.path.rsplit("/", 1)[1] for r in server.requests
                           if r.method == "GET" and "/blobs/" in r.path)
    assert val.ok, val.findings
    assert [i["name"] for i in val.images] == [f"{server.netloc}/a/b:1, 1 [linux/amd64]",
                                               f"{server.netloc}/a/b:1, 1 [linux/arm64]"]
    # the index, the manifest both platforms name, its config and its layer: each checked once, by reading it
    assert val.blobs_checked == 4
    assert blob_gets == sorted(img.blobs)  # each blob downloaded once: hashed and unpacked in one read
    # the progress bar's total is every member's size as its descriptor gives it, read before any blob
    assert phases == [("validating", len(index) + len(img.manifest) + sum(map(len, img.blobs.values())))]


def test_validate_reports_a_registry_blob_that_does_not_hash_to_its_digest() -> None:
    img = tiny_image()
    _, layer = img.blobs
    bad = bytearray(img.blobs[layer])
    bad[-1] ^= 0xFF  # the same size, other bytes

    def corrupt(req: Request, conn: Conn) -> bool:
        if not req.path.endswith(layer):
            return False
        conn.respond(200, b"" if req.method == "HEAD" else bytes(bad),
                     {"Content-Type": "application/octet-stream", "Content-Length": str(len(bad))})
        return True

    with served(serve_image(img, override=corrupt)) as (_, ref), ocisquash.open(ref) as src:
        val = src.validate()
    assert not val.ok
    wheres = {f.where for f in val.findings}
    assert wheres == {layer}, val.findings
    got = hashlib.sha256(bad).hexdigest()
    assert f"layer 1/1 hashes to sha256:{got}, not {layer}" in val.findings[0].message
    assert json.loads(json.dumps(val.to_json()))["ok"] is False


def test_validate_reports_a_layer_the_registry_does_not_serve() -> None:
    img = tiny_image()
    config, layer = img.blobs

    def unknown(req: Request, conn: Conn) -> bool:
        if not req.path.endswith(layer):
            return False
        conn.respond(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}',
                     {"Content-Type": "application/json"})
        return True

    with served(serve_image(img, override=unknown)) as (server, ref), ocisquash.open(ref) as src:
        val = src.validate()
        layer_gets = [r for r in server.requests if r.path.endswith(layer)]
    assert [f.where for f in val.findings] == [layer, layer], val.findings
    assert "blob unknown" in val.findings[0].message
    assert val.findings[1].message.startswith("cannot decompress: ") and "blob unknown" in val.findings[1].message
    # what was read is counted once: the manifest and the config, nothing of the layer
    assert (val.blobs_checked, val.bytes_read) == (2, len(img.manifest) + len(img.blobs[config]))
    assert len(layer_gets) == 3  # tried by the one read, then by the hash and the unpack that report it
