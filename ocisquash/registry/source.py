"""A registry image as an input: the reference resolved to its manifest, documents fetched by digest and
checked against the descriptors naming them, layer blobs streamed (``blobstream``).

``registry.format`` builds the images from what this fetches. Its members (the ``archive.Tree`` a
``Source`` holds and ``validate`` reads) are the registry's blobs named by digest (``sha256:…``), and a
member exists only once a document read names it: the reference's own manifest, an index's children, a
manifest's config and layers, each with the size its descriptor gives. A manifest is fetched from
``/manifests/``, anything else from ``/blobs/``; nothing is written to disk. Configs are cached per digest
(an index whose entries share one config fetches it once).
"""

from __future__ import annotations

import io
from typing import IO

from ocisquash import limits, model
from ocisquash.digest import Digest, VerifyingReader
from ocisquash.errors import FormatError, MissingBlob
from ocisquash.registry.client import MAX_MANIFEST, Client
from ocisquash.registry.ref import RegistryRef

CACHE_ONE = 1 << 20  # a config cached is at most this large (real ones: a few KiB to a few 100 KiB)
CACHE_ALL = 32 << 20  # bytes of configs one input keeps
ACCEPT = ", ".join([model.OCI_INDEX, model.DOCKER_LIST, model.OCI_MANIFEST, model.DOCKER_MANIFEST])


class RegistryInput:
    """One registry reference read as an input: its manifest, and the blobs its documents name."""

    def __init__(self, ref: RegistryRef, client: Client | None = None) -> None:
        self.ref = ref
        self.client = client if client is not None else Client(ref)
        self.label = str(ref)
        self._known: dict[str, tuple[int, bool]] = {}  # digest -> (size its descriptor gives, is a manifest)
        self._manifests: dict[str, bytes] = {}  # digest -> a manifest's bytes, once fetched
        self._small: dict[tuple[str, int], bytes] = {}  # (digest, cap) -> a config's bytes
        self._cached = 0
        self._top: model.Descriptor | None = None

    def top(self) -> model.Descriptor:
        """The manifest (or index) the reference names, named as a layout's entry for it would be."""
        if self._top is None:
            self._top = self._resolve()
            self._known[str(self._top.digest)] = (self._top.size, True)
        return self._top

    def _resolve(self) -> model.Descriptor:
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
        ann = {}
        if ref.tag is not None or ref.digest is None:
            ann[model.CONTAINERD_NAME] = ref.with_tag()
            ann[model.REF_NAME] = ref.tag or "latest"
        return model.Descriptor(media_type, digest, size, ann)

    def document(self, desc: model.Descriptor, what: str) -> bytes:
        """A manifest, index or config named by ``desc``, checked against it (size and digest) and capped
        by ``max_json``; what it names becomes known."""
        cap = limits.current().max_json
        if desc.size > cap:
            raise limits.exceeded("max_json", f"{self.label}: {what} {desc.digest} is {desc.size} bytes, over the cap")
        self._known.setdefault(str(desc.digest), (desc.size, what != "config"))
        data = self.read(str(desc.digest), cap)
        VerifyingReader(io.BytesIO(data), desc.digest, desc.size, f"{self.label}: {what} {desc.digest}").verify()
        return data

    # ---- archive.Tree: members are blobs named by digest, known once a document names them
    def exists(self, name: str) -> bool:
        return name in self._known

    def size(self, name: str) -> int:
        return self._entry(name)[0]

    def is_seekable_file(self, name: str) -> bool:
        return False

    def names(self) -> list[str]:
        return sorted(self._known)

    def read(self, name: str, max_size: int) -> bytes:
        if self._entry(name)[1]:
            if name not in self._manifests:
                self._manifests[name] = self.client.get_manifest(name, ACCEPT)[0]
            data = self._manifests[name]
            self._learn(data)
            return data[: max_size + 1]
        key = (name, max_size)
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
        if self._entry(name)[1]:
            return io.BytesIO(self.read(name, MAX_MANIFEST))
        return self.client.open_blob(name, f"{self.label}: blob {name}")  # type: ignore[return-value]

    def close(self) -> None:
        self.client.close()

    def _entry(self, name: str) -> tuple[int, bool]:
        known = self._known.get(name)
        if known is None:
            raise MissingBlob(f"{self.label}: {name} is named by none of the documents read from the registry")
        return known

    def _learn(self, data: bytes) -> None:
        """What a manifest or index names becomes known: an index's children (manifests), a manifest's
        config and layers (blobs), with their descriptors' sizes. A document that does not parse names
        nothing (the reader that asked for it reports it)."""
        try:
            obj = model.load_json(data, self.label)
        except FormatError:
            return
        if not isinstance(obj, dict):
            return
        children, layers = obj.get("manifests"), obj.get("layers")
        children = children if isinstance(children, list) else []
        blobs = [obj.get("config"), *(layers if isinstance(layers, list) else [])]
        for descs, manifest in ((children, True), (blobs, False)):
            for d in descs:
                if isinstance(d, dict) and isinstance(d.get("digest"), str) and type(d.get("size")) is int:
                    self._known.setdefault(d["digest"], (d["size"], manifest))


def _media_type_of(data: bytes, label: str) -> str:
    obj = model.load_json(data, label)
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    if isinstance(mt, str) and mt:
        return mt
    if isinstance(obj, dict) and "manifests" in obj:
        return model.OCI_INDEX
    return model.OCI_MANIFEST
