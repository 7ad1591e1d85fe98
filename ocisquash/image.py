"""``Image`` and ``Layer``: what a squash, a conversion or a listing needs of one image.

Sources (``layout``, ``dockerarchive``) build these; sinks consume them. A layer opens as a raw blob
stream (size and digest verified while streaming) or as its decompressed tar stream, which also checks
the diff ID the config promises when its end is reached. Nothing here knows a file format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Protocol

from ocisquash import limits
from ocisquash.compression import Codec, decompressing_reader
from ocisquash.digest import Digest, HashingReader, VerifyingReader
from ocisquash.errors import DigestMismatch, FormatError
from ocisquash.model import Descriptor, ImageConfig, Manifest
from ocisquash.prefetch import Prefetcher
from ocisquash.streams import CountingReader, Reader


class BlobOpener(Protocol):
    def __call__(self) -> IO[bytes]: ...


@dataclass
class Layer:
    """One layer: its blob (digest may be unknown for a docker tarball member) and its diff ID."""

    index: int
    diff_id: Digest
    size: int
    media_type: str | None  # None where the source does not say (docker tarballs): sniffed when read
    digest: Digest | None
    opener: BlobOpener
    what: str
    seekable_plain: bool = False  # the raw blob is an uncompressed tar in a seekable file
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    codec: Codec | None = None

    def open_blob(self) -> IO[bytes]:
        """The raw blob, verified against its digest (or, for an unknown digest, just its size)."""
        raw = self.opener()
        if self.digest is None:
            return raw
        return VerifyingReader(raw, self.digest, self.size, self.what)  # type: ignore[return-value]

    def open(self, *, prefetch: bool = True, check_diff_id: bool = True) -> BinaryIO:
        """The decompressed tar stream; at EOF the blob digest and the diff ID are both checked.

        With ``prefetch`` the blob is read, decompressed and hashed on a background thread. With
        ``check_diff_id=False`` only the blob digest is checked, for a caller that verified the diff ID
        of these same bytes already (equal digests mean equal bytes); the stream then also offers
        ``skip_rest()``, which checks the rest of the blob without decompressing it.
        """
        # An uncompressed blob whose digest is its diff ID is fully checked by the blob's own
        # digest: hashing the same bytes again for the diff ID would double the cost.
        hash_diff_id = self.digest != self.diff_id and (check_diff_id or self.digest is None)
        reader = DiffIdCheckingReader(self.open_blob(), self.diff_id, self.what, self.codec,
                                      hash_diff_id=hash_diff_id)
        return Prefetcher(reader) if prefetch else reader  # type: ignore[return-value]

    def open_scan(self, *, verify: bool = True) -> BinaryIO:
        """A stream for a headers-only pass: the seekable raw file when it is a plain tar, else the
        decompressed stream, verified unless ``verify`` is False — for callers that read and verify the
        same layer again before anything they write is published (a squash), so it is hashed once."""
        if self.seekable_plain:
            return self.opener()  # type: ignore[return-value]
        if verify:
            return self.open()
        reader = DiffIdCheckingReader(self.opener(), self.diff_id, self.what, self.codec, verify=False)
        return Prefetcher(reader)  # type: ignore[return-value]


class DiffIdCheckingReader(Reader):
    """Decompresses a blob and checks, at EOF, that the decompressed bytes hash to the diff ID.

    The decompressed size is capped (``max_layer_bytes``), and so is its ratio to the compressed bytes
    read (``max_ratio``, once past ``limits.RATIO_FLOOR`` bytes, so small layers of zeros pass).
    """

    def __init__(self, blob: IO[bytes], diff_id: Digest, what: str, codec: Codec | None, *,
                 verify: bool = True, hash_diff_id: bool = True) -> None:
        self._blob = blob
        self._compressed = CountingReader(blob)
        self._hash_diff_id = verify and hash_diff_id
        # The diff ID is hashed on a thread of its own, beside decompression on the reading thread.
        self._hashing = HashingReader(decompressing_reader(self._compressed, what, codec),  # type: ignore[arg-type]
                                      enabled=self._hash_diff_id, threaded=True)
        self._verify = verify
        self._diff_id = diff_id
        self._what = what
        self._done = False
        self._check_from = min(limits.current().max_layer_bytes, limits.RATIO_FLOOR)

    def read(self, n: int = -1) -> bytes:
        data = self._hashing.read(n)
        if data and self._hashing.count > self._check_from:
            limits.check_expansion(self._what, self._hashing.count, self._compressed.count)
        if not data and n != 0 and not self._done:
            self._finish()
        return data

    def _finish(self) -> None:
        self._done = True
        if not self._verify:
            return
        verify = getattr(self._blob, "verify", None)
        if verify is not None:
            verify()  # drains anything after the last compressed member, then checks the blob digest
        if not self._hash_diff_id:
            return  # the blob digest just checked is the diff ID
        got = self._hashing.digest()
        if got != self._diff_id:
            raise DigestMismatch(f"{self._what}: uncompressed content hashes to {got}, but the config's diff ID is "
                                 f"{self._diff_id}")

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def skip_rest(self) -> None:
        """Check the rest of the blob without decompressing it, when the blob digest is all that is
        left to check; otherwise read (and check) the rest as usual."""
        verify = getattr(self._blob, "verify", None)
        if self._done or not self._verify or self._hash_diff_id or verify is None:
            self.drain()
            return
        self._done = True
        verify()

    def close(self) -> None:
        self._hashing.close()  # stops the hashing thread
        self._blob.close()


@dataclass
class Image:
    """One image of a source: names, manifest (when the source has one), config, and layers."""

    names: list[str]
    config: ImageConfig
    layers: list[Layer]
    manifest: Manifest | None = None
    manifest_digest: Digest | None = None
    manifest_descriptor: Descriptor | None = None
    source: str = ""
    index_annotations: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> Digest:
        """The image ID as the classic Docker store shows it: the digest of the config bytes."""
        return self.config.digest

    @property
    def label(self) -> str:
        return self.names[0] if self.names else f"{self.id.short()}"

    def check_consistent(self) -> None:
        n = len(self.config.diff_ids)
        if len(self.layers) != n:
            raise FormatError(f"{self.source}: image {self.label} lists {len(self.layers)} layers but its config has "
                              f"{n} diff IDs")


@dataclass
class Candidate:
    """An image a source can load, before its config and layers are read (for choosing and listing)."""

    names: list[str]
    image_id: Digest | None
    manifest_digest: Digest | None
    load: Callable[[], Image]
    platform: str | None = None
