"""Pushing to a registry: blobs first (each at most once), then manifests, tags last.

A blob the repository already has (``HEAD``) is not uploaded; a kept layer read from another
repository of the same registry is mounted (``POST …/blobs/uploads/?mount=D&from=REPO``), so kept
parent layers never travel again. A produced blob (the squashed layer) is uploaded while it is
produced, in ``CHUNK``-byte ``PATCH``es; a registry that refuses chunks gets it in one ``PUT`` from
a temporary spool file. Configs and manifests are small: they are held until ``commit()``, which
pushes configs, then each manifest by digest, then the tags. A run that fails before its tags cancels
its open upload and writes no tag, so the registry's names are as they were (blobs and manifests it
uploaded are unreferenced and left to the registry's garbage collection). A registry cannot set
several tags at once: they are PUT one by one, last, and when one fails the error says which tags
were written and which were not. Every upload ``Location`` is resolved against the request it answers
(``Client.location``, RFC 3986) and gets credentials only if it is on the registry's own origin.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

import httpx

from ocisquash import model, reference
from ocisquash.digest import Digest, HashingWriter
from ocisquash.errors import OcisquashError, OutputError
from ocisquash.formats.commit import Reusable, Sink, WrittenImage
from ocisquash.registry.auth import AuthError
from ocisquash.registry.client import Client, RegistryError
from ocisquash.registry.ref import RegistryRef

CHUNK = 8 << 20  # bytes per PATCH: big enough that requests cost little, small enough to hold in memory
_REFUSED_CHUNKS = (400, 404, 405, 411, 413, 415, 416, 501)


@dataclass(frozen=True)
class Origin:
    """Where a source layer lives: the registry API host and repository (for a cross-repo mount)."""

    host: str
    repo: str


class RegistrySink(Sink):
    """``docker://HOST/REPO[:TAG]`` as an output."""

    docker = True  # a registry takes Docker and OCI manifests alike: keep the source's family

    def __init__(self, ref: RegistryRef, client: Client | None = None) -> None:
        super().__init__()
        if ref.digest is not None:
            raise OutputError(f"{ref}: an output is named by a tag, not a digest",
                              hint=f"write to docker://{ref.name}:TAG")
        self.ref = ref
        self.label = str(ref)
        self.client = client if client is not None else Client(ref, push=True)
        self._known: set[Digest] = set()
        self._small: dict[Digest, bytes] = {}
        self._open_upload: str | None = None
        self._pushed: set[Digest] = set()

    # ---- blobs
    def has(self, digest: Digest) -> bool:
        if digest in self._known:
            return True
        if self.client.has_blob(str(digest)):
            self._known.add(digest)
            return True
        return False

    def put_bytes(self, data: bytes) -> tuple[Digest, int]:
        d = Digest.of(data)
        self._small[d] = data  # a config or a manifest: pushed at commit, the right way for each
        return d, len(data)

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        up = _Upload(self)
        hw = HashingWriter(up)  # type: ignore[arg-type]
        try:
            produce(hw)  # type: ignore[arg-type]
            d = hw.digest()
            up.finish(d)
        except BaseException:
            up.cancel()
            raise
        self._known.add(d)
        return d, hw.count

    def adopt_layer(self, layer: Reusable) -> bool:
        """Place a copied layer without its bytes when the registry has it or can mount it."""
        d = layer.digest
        if d is None:
            return False
        if self.has(d):
            return True
        origin = layer.origin
        if not isinstance(origin, Origin) or origin.host != self.ref.api_host or origin.repo == self.ref.repo:
            return False
        self.client.want_scope(origin.repo, {"pull"})
        what = f"mount {d} from {origin.repo}"
        resp = self.client.request("POST", f"/v2/{self.ref.repo}/blobs/uploads/", what=what,
                                   params={"mount": str(d), "from": origin.repo})
        resp.close()
        if resp.status_code == 201:
            self._known.add(d)
            return True
        if resp.status_code == 202:  # the registry would not mount: it opened an upload instead
            loc = self.client.location(resp, what)
            if loc:
                self._delete(loc)
        return False

    def _delete(self, location: str) -> None:
        # best effort: an upload left open expires on the registry (a foreign 401 is not answered either)
        with contextlib.suppress(RegistryError, AuthError, httpx.HTTPError):
            self.client.request("DELETE", location, what="cancel upload").close()

    def _push_blob(self, d: Digest, data: bytes) -> None:
        if self.has(d):
            return
        up = _Upload(self)
        try:
            up.write(data)
            up.finish(d)
        except BaseException:
            up.cancel()
            raise
        self._known.add(d)

    # ---- manifests and tags
    def add_image(self, image: WrittenImage) -> None:
        """An image's config, then its manifest by digest, go up now (its layers are there already):
        an index written later finds its children in the repository. Nothing is tagged before commit."""
        super().add_image(image)
        if image.manifest.media_type not in model.INDEX_TYPES:
            self._push_blob(image.config_digest, self._config_bytes(image.config_digest))
            self._put_manifest(str(image.manifest.digest), self._manifest_bytes(image), image.manifest.media_type)
            self._pushed.add(image.manifest.digest)

    def commit(self) -> None:
        """Tags last: each tag is one PUT of the (already pushed) manifest or index."""
        if len(self.images) != 1:
            raise OutputError(f"{self.label}: {len(self.images)} images for one registry tag")
        img = self.images[0]
        man = self._manifest_bytes(img)
        if img.manifest.digest not in self._pushed:  # an index (--platform all): its children are up
            self._put_manifest(str(img.manifest.digest), man, img.manifest.media_type)
        tags = self._tags()
        for i, tag in enumerate(tags):
            try:
                self._put_manifest(tag, man, img.manifest.media_type)
            except OcisquashError as e:
                written = ", ".join(tags[:i]) or "none"
                raise RegistryError(f"{e}; tags written: {written}; not written: {', '.join(tags[i:])}",
                                    hint=e.hint) from None
        self.client.close()

    def _manifest_bytes(self, img: WrittenImage) -> bytes:
        man = self._small.get(img.manifest.digest)
        if man is None:
            raise OutputError(f"{self.label}: manifest {img.manifest.digest} was never written")
        return man

    def _config_bytes(self, d: Digest) -> bytes:
        data = self._small.get(d)
        if data is None:
            raise OutputError(f"{self.label}: config {d} was never written")
        return data

    def _tags(self) -> list[str]:
        """OUT's tag, and any image tag naming this same repository (``--tag`` values for it)."""
        out = [self.ref.tag or "latest"]
        here = reference.normalize_name(self.ref.name)
        for img in self.images:
            for t in img.tags:
                if ":" not in t and "/" not in t:
                    continue
                name, tag, _ = reference.split(t)
                if tag and reference.normalize_name(name) == here and tag not in out:
                    out.append(tag)
        return out

    def _put_manifest(self, reference_: str, data: bytes, media_type: str) -> None:
        what = f"manifest {reference_}"
        resp = self.client.request("PUT", f"/v2/{self.ref.repo}/manifests/{reference_}", what=what,
                                   headers={"Content-Type": media_type or model.OCI_MANIFEST}, content=data)
        resp.read()
        resp.close()
        if resp.status_code not in (200, 201, 202):
            raise self.client.fail(resp, f"push {what}")

    def abort(self) -> None:
        if self._open_upload is not None:
            self._delete(self._open_upload)
            self._open_upload = None
        self.client.close()


class _Upload:
    """One blob upload session, written to as the bytes are produced."""

    def __init__(self, sink: RegistrySink) -> None:
        self._s = sink
        self._c = sink.client
        self._repo = sink.ref.repo
        # What was written since the last PATCH, as written (no copy into one buffer: an 8 MiB chunk
        # then took 8 MiB twice); the client sends the pieces one after another.
        self._parts: list[bytes] = []
        self._pending = 0
        self._offset = 0  # bytes the registry has
        self._spool: IO[bytes] | None = None
        self._location = self._start()

    def _start(self) -> str:
        resp = self._c.request("POST", f"/v2/{self._repo}/blobs/uploads/", what="start blob upload")
        resp.read()
        resp.close()
        loc = self._c.location(resp, "start blob upload") if resp.status_code == 202 else None
        if loc is None:
            raise self._c.fail(resp, "start blob upload")
        self._s._open_upload = loc
        return loc

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def write(self, data: Any) -> int:
        n = len(data)
        if self._spool is not None:
            self._spool.write(data)
            return n
        self._parts.append(bytes(data))  # a copy only of a buffer the writer may reuse
        self._pending += n
        if self._pending >= CHUNK:
            self._patch()
        return n

    def _patch(self) -> None:
        parts, n = self._parts, self._pending
        self._parts, self._pending = [], 0
        end = self._offset + n
        resp = self._c.request("PATCH", self._location, what="upload blob chunk", content=parts,
                               headers={"Content-Type": "application/octet-stream",
                                        "Content-Range": f"{self._offset}-{end - 1}"})
        resp.read()
        resp.close()
        if resp.status_code == 202:
            self._advance(resp, end)
            return
        if resp.status_code == 416 and self._status() == end:
            return  # a retried PATCH the registry had taken already
        if resp.status_code in _REFUSED_CHUNKS and self._offset == 0:
            self._to_spool(parts)
            return
        raise self._c.fail(resp, "upload blob chunk")

    def _advance(self, resp: httpx.Response, end: int) -> None:
        self._location = self._c.location(resp, "upload blob chunk") or self._location
        self._s._open_upload = self._location
        self._offset = end

    def _status(self) -> int:
        resp = self._c.request("GET", self._location, what="upload status")
        resp.read()
        resp.close()
        rng = resp.headers.get("range", "")
        try:
            got = int(rng.split("-")[-1]) + 1
        except ValueError:
            return -1
        if resp.status_code == 204:
            self._location = self._c.location(resp, "upload status") or self._location
            self._offset = got
        return got

    def _to_spool(self, parts: list[bytes]) -> None:
        """The registry refuses chunked uploads: keep the rest in a temporary file, PUT it whole."""
        self._spool = tempfile.TemporaryFile(prefix="ocisquash-upload-")  # noqa: SIM115 - closed in finish/cancel
        for part in parts:
            self._spool.write(part)

    def finish(self, digest: Digest) -> None:
        if self._spool is not None:
            self._finish_spooled(digest)
            return
        if self._offset == 0 and self._s.has(digest):
            # nothing sent yet (one chunk or less) and the registry has it: no upload at all
            self.cancel()
            return
        parts, n = self._parts, self._pending
        self._parts, self._pending = [], 0
        headers = {"Content-Type": "application/octet-stream"}
        if n:
            headers["Content-Range"] = f"{self._offset}-{self._offset + n - 1}"
        resp = self._c.request("PUT", self._location, what="finish blob upload", content=parts, headers=headers,
                               params={"digest": str(digest)})
        resp.read()
        resp.close()
        # a retried PUT whose first try completed finds no session (404): the blob is there all the same
        if resp.status_code not in (201, 204) and not (resp.status_code == 404 and self._c.has_blob(str(digest))):
            raise self._c.fail(resp, f"blob {digest}: finish upload")
        self._s._open_upload = None

    def _finish_spooled(self, digest: Digest) -> None:
        spool = self._spool
        assert spool is not None
        size = spool.tell()
        self._delete_current()
        self._location = self._start()  # a fresh session: the refused one may be spoiled

        def body() -> Iterator[bytes]:
            spool.seek(0)
            while chunk := spool.read(1 << 20):
                yield chunk

        try:
            resp = self._c.request("PUT", self._location, what="upload blob", content=body,
                                   headers={"Content-Type": "application/octet-stream",
                                            "Content-Length": str(size)},
                                   params={"digest": str(digest)})
            resp.read()
            resp.close()
        finally:
            spool.close()
            self._spool = None
        if resp.status_code not in (201, 204):
            raise self._c.fail(resp, f"blob {digest}: upload")
        self._s._open_upload = None

    def _delete_current(self) -> None:
        self._s._delete(self._location)

    def cancel(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._s._open_upload is not None:
            self._s._delete(self._s._open_upload)
            self._s._open_upload = None
