"""A registry image read as a virtual OCI layout, so every reader of layouts reads registries too.

``RegistryTree`` answers the ``archive.Tree`` calls ``formats.ocilayout`` makes: ``index.json`` is made up of one
entry, the reference resolved to its manifest digest (a ``HEAD``, or a ``GET`` by tag when the
registry gives no digest); ``blobs/sha256/X`` is fetched from ``/manifests/X`` for a digest known to
be a manifest (the top one, and the children of each index read) and streamed from ``/blobs/X``
otherwise. So platform choice, caps, digest checks of every blob (``ocilayout.read_blob``,
``Layer.blob``'s ``VerifyingReader``) and ``validate`` are the layout code's own; nothing is
written to disk. A layer blob's opener says where it came from (``origin``), so a registry sink of
the same registry can mount it instead of uploading it.
"""

from __future__ import annotations

import io
from typing import IO

from ocisquash import model
from ocisquash.digest import Digest
from ocisquash.errors import FormatError, MissingBlob
from ocisquash.registry.client import MAX_MANIFEST, Client
from ocisquash.registry.ref import RegistryRef

CACHE_ONE = 1 << 20  # a config cached is at most this large (real ones: a few KiB to a few 100 KiB)
CACHE_ALL = 32 << 20  # bytes of configs one tree keeps
ACCEPT = ", ".join([model.OCI_INDEX, model.DOCKER_LIST, model.OCI_MANIFEST, model.DOCKER_MANIFEST])


class RegistryTree:
    """A read-only view of one registry reference with the shape of an OCI layout."""

    def __init__(self, ref: RegistryRef, client: Client | None = None) -> None:
        self.ref = ref
        self.client = client if client is not None else Client(ref)
        self.label = str(ref)
        self._manifests: dict[str, bytes | None] = {}  # digest -> bytes once fetched
        # digest -> a config's bytes: every entry of an index naming one config fetches it once per run
        self._small: dict[tuple[str, int], bytes] = {}
        self._cached = 0
        self._index: bytes | None = None

    # ---- the made-up index.json
    def _top(self) -> model.Descriptor:
        ref = self.ref
        media_type = None
        digest = ref.digest
        size = None
        if digest is None:
            resp = self.client.head_manifest(ref.reference, ACCEPT)
            if resp.status_code == 200:
                d = resp.headers.get("docker-content-digest")
                length = resp.headers.get("content-length", "")
                if d and length.isdigit():
                    digest = Digest.parse(d, where=f"{self.label}: Docker-Content-Digest")
                    size = int(length)
                    media_type = resp.headers.get("content-type", "").split(";")[0].strip() or None
            elif resp.status_code != 405:  # some registries refuse HEAD: GET by tag below
                raise self.client.fail(resp, f"manifest {ref.reference}")
        if digest is None or size is None or media_type is None:
            # Fetched once by tag (or by digest for a HEAD-less answer); checked by digest when read.
            data, ctype, header = self.client.get_manifest(ref.reference, ACCEPT)
            got = Digest.of(data)
            if digest is not None and got != digest:
                raise FormatError(f"{self.label}: the manifest's content hashes to {got}, not {digest}")
            if header and header != str(got):
                raise FormatError(f"{self.label}: the registry says the manifest is {header}, its content "
                                  f"hashes to {got}")
            digest, size = got, len(data)
            media_type = ctype or _media_type_of(data, self.label)
            self._manifests[str(digest)] = data
        if size > MAX_MANIFEST:
            raise FormatError(f"{self.label}: manifest is {size} bytes, over the {MAX_MANIFEST >> 20} MiB "
                              "registries accept")
        self._manifests.setdefault(str(digest), None)
        ann = {}
        if ref.tag is not None or ref.digest is None:
            ann[model.CONTAINERD_NAME] = ref.with_tag()
            ann[model.REF_NAME] = ref.tag or "latest"
        return model.Descriptor(media_type, digest, size, ann)

    def _index_json(self) -> bytes:
        if self._index is None:
            top = self._top()
            self._index = model.canonical_json({"schemaVersion": 2, "mediaType": model.OCI_INDEX,
                                                "manifests": [top.to_json()]})
        return self._index

    # ---- Tree
    def exists(self, name: str) -> bool:
        if name == "index.json":
            return True
        # A registry holds every blob its manifests name (unlike a layout, where a platform nobody pulled
        # is absent); blobs are fetched when needed, and a missing one is a clear 404 error then.
        return name.startswith("blobs/sha256/")

    def size(self, name: str) -> int:
        """A member's size when it is known without a request (the made-up index, a manifest read): a
        registry gives a blob's size in the descriptor that names it, which the readers have."""
        if name == "index.json":
            return len(self._index_json())
        data = self._manifests.get(self._digest_of(name))
        if data is None:
            raise FormatError(f"{self.label}: the size of {name} is known only from the descriptor naming it")
        return len(data)

    def is_seekable_file(self, name: str) -> bool:
        return False

    def names(self) -> list[str]:
        return ["index.json"]

    def read(self, name: str, max_size: int) -> bytes:
        if name == "index.json":
            return self._index_json()[: max_size + 1]
        digest = self._digest_of(name)
        if digest in self._manifests:
            data = self._manifests[digest]
            if data is None:
                data, _, _ = self.client.get_manifest(digest, ACCEPT)
                self._manifests[digest] = data
            self._learn_children(data)
            return data[: max_size + 1]
        key = (digest, max_size)
        if key in self._small:
            return self._small[key]
        f = self.open(name)
        try:
            # looped to the end: one read of a stream gives what one TLS record held (16 KiB)
            out = bytearray()
            while len(out) <= max_size and (piece := f.read(max_size + 1 - len(out))):
                out += piece
        finally:
            f.close()
        if len(out) <= CACHE_ONE and self._cached + len(out) <= CACHE_ALL:
            self._small[key] = bytes(out)
            self._cached += len(out)
        return bytes(out)

    def open(self, name: str) -> IO[bytes]:
        digest = self._digest_of(name)
        if digest in self._manifests:
            return io.BytesIO(self.read(name, MAX_MANIFEST))
        what = f"{self.label}: blob {digest}"
        return self.client.open_blob(digest, what)  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()

    def _digest_of(self, name: str) -> str:
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != "blobs":
            raise MissingBlob(f"{self.label}: no {name} in a registry")
        return f"{parts[1]}:{parts[2]}"

    def _learn_children(self, data: bytes) -> None:
        """An index's children are manifests: read them from ``/manifests/``."""
        try:
            obj = model.load_json(data, self.label)
        except FormatError:
            return
        if isinstance(obj, dict) and isinstance(obj.get("manifests"), list):
            for m in obj["manifests"]:
                if isinstance(m, dict) and isinstance(m.get("digest"), str):
                    self._manifests.setdefault(m["digest"], None)


def _media_type_of(data: bytes, label: str) -> str:
    obj = model.load_json(data, label)
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(mt, str) and mt:
        return mt
    if isinstance(obj, dict) and "manifests" in obj:
        return model.OCI_INDEX
    return model.OCI_MANIFEST
