"""An ``ocisquash.Image`` squashes and writes the image it holds: the input is not opened again, a
compressed tarball not decompressed again, a registry tag not resolved again (issue 21 item 3)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostileregistry import Conn, HostileServer, Request, TinyImage, serve_image, tiny_image

import ocisquash
from ocisquash import archive, convert, sources, squash

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "testdata" / "sample.docker.tar"
TS = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)


def _counting(calls: list[str], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*a: Any, **k: Any) -> Any:
        calls.append(name)
        return fn(*a, **k)
    return counted


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets "open" for each input opened and "spool" for each one decompressed whole."""
    calls: list[str] = []
    opener = _counting(calls, "open", sources.open_source)
    for module in (sources, squash, convert):
        monkeypatch.setattr(module, "open_source", opener)
    monkeypatch.setattr(archive, "decompressing_reader", _counting(calls, "spool", archive.decompressing_reader))
    return calls


def test_a_compressed_tarball_is_opened_and_decompressed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gz = tmp_path / "sample.tar.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes(), mtime=0))
    calls = _count_opens(monkeypatch)
    with ocisquash.open(gz) as src:
        image = src.image()
        flat = image.squash(tmp_path / "flat.tar", timestamp=TS)
        image.squash(tmp_path / "top.tar", cut=ocisquash.Cut.from_layer(-1), timestamp=TS)
        copy = image.write(tmp_path / "copy.tar")
    assert calls == ["open", "spool"]
    assert (flat.layers_before, flat.layers_after) == (len(image.diff_ids), 1) and copy.config == image.id
    # the same bytes as a squash that opens the input itself (the CLI's path)
    by_path = ocisquash.squash_image(gz, tmp_path / "by-path.tar", timestamp=TS)
    assert calls == ["open", "spool", "open", "spool"]
    assert by_path.manifest == flat.manifest
    assert (tmp_path / "flat.tar").read_bytes() == (tmp_path / "by-path.tar").read_bytes()


def _two_images_one_tag(first: TinyImage, second: TinyImage, moved: list[bool],
                        tag_requests: list[str]) -> Callable[[Request, Conn], None]:
    """``a/b:1`` names ``first`` until ``moved[0]``, then ``second``; both are served by digest."""
    def override(req: Request, conn: Conn) -> bool:
        if req.path == "/v2/a/b/manifests/1":
            tag_requests.append(req.method)
        img = second if moved[0] or req.path.endswith(second.digest) or \
            req.path.removeprefix("/v2/a/b/blobs/") in second.blobs else None
        if img is None:
            return False
        body = img.manifest if "/manifests/" in req.path else img.blobs.get(req.path.rsplit("/", 1)[-1], b"")
        hdrs = {"Content-Length": str(len(body)), "Docker-Content-Digest": img.digest,
                "Content-Type": "application/vnd.oci.image.manifest.v1+json" if "/manifests/" in req.path
                else "application/octet-stream"}
        if not body:
            return False
        conn.respond(200, b"" if req.method == "HEAD" else body, hdrs)
        return True
    return serve_image(first, override=override)


def _files(path: Path) -> set[str]:
    """The file names of the one layer of a squashed docker tarball."""
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        with tarfile.open(fileobj=outer.extractfile(manifest[0]["Layers"][-1])) as layer:
            return {m.name for m in layer.getmembers() if m.isfile()}


def test_a_moved_tag_still_squashes_and_writes_the_image_first_seen(tmp_path: Path) -> None:
    first, second = tiny_image(files={"first.txt": b"1\n"}), tiny_image(files={"second.txt": b"2\n"})
    moved, tag_requests = [False], []
    handler = _two_images_one_tag(first, second, moved, tag_requests)
    with HostileServer(handler, lifetime=120) as server, \
            ocisquash.registry_access(ocisquash.RegistryAccess(tls_verify=False)):
        ref = f"docker://{server.netloc}/a/b:1"
        with ocisquash.open(ref) as src:
            image = src.image()
            seen = image.id
            resolved = len(tag_requests)
            moved[0] = True  # the tag now names the second image
            report = image.squash(tmp_path / "flat.tar", timestamp=TS)
            copy = image.write(tmp_path / "copy.tar")
        assert len(tag_requests) == resolved  # neither resolved the tag again
        # the control: opening the reference again now finds the second image
        with ocisquash.open(ref) as again:
            assert again.image().id != seen
    assert report.layers_after == 1 and copy.config == seen
    assert _files(tmp_path / "flat.tar") == {"first.txt"}
    with ocisquash.open(tmp_path / "flat.tar") as out:
        assert out.image().config["history"][-1]["comment"] == f"create new from {seen}"


def test_a_parent_image_is_read_from_the_image_held(trap_oci: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``Cut.onto(image)`` with an image of another, compressed input: its layers' IDs come from the
    image already open; the parent's input is neither opened nor decompressed again."""
    base = tmp_path / "base.tar"
    with ocisquash.open(trap_oci.path) as src:
        src.image("l2").write(base)
    gz = tmp_path / "base.tar.gz"
    gz.write_bytes(gzip.compress(base.read_bytes(), mtime=0))
    calls = _count_opens(monkeypatch)
    with ocisquash.open(trap_oci.path) as src, ocisquash.open(gz) as bases:
        parent = bases.image()
        held = src.image("latest").squash(tmp_path / "held.tar", cut=ocisquash.Cut.onto(parent), timestamp=TS)
        assert calls == ["open", "open", "spool"]
    assert (held.kept_layers, held.layers_after) == (2, 3)
    # the same bytes as naming the parent's file, which opens (and decompresses) it again
    by_path = ocisquash.squash_image(trap_oci.path, tmp_path / "by-path.tar", image="latest",
                                     cut=ocisquash.Cut.onto(path=gz), timestamp=TS)
    assert calls.count("spool") == 2
    assert (tmp_path / "held.tar").read_bytes() == (tmp_path / "by-path.tar").read_bytes()
    assert by_path.manifest == held.manifest
