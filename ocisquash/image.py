"""``Image`` and ``Layer``: what a squash, a conversion or a listing needs of one image.

Sources (``formats.ocilayout``, ``formats.dockersave``, ``registry``) build these; sinks consume
them. A layer is read as its stored bytes (``blob()``, size and digest verified while streaming), as
its decompressed tar stream (``uncompressed()``, which also checks the diff ID the config promises
when its end is reached), or, when it is a plain tar in a seekable file, as that file
(``plain_file()``, for a headers-only pass that seeks over contents). Nothing here knows a file format.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, BinaryIO, Protocol

from ocisquash import cores, limits
from ocisquash.compression import Codec, decompressing_reader
from ocisquash.digest import Digest, HashingReader, VerifyingReader
from ocisquash.errors import DigestMismatch, FormatError
from ocisquash.model import Descriptor, ImageConfig, Manifest
from ocisquash.prefetch import Prefetcher
from ocisquash.streams import CountingReader, LayerStream, Reader


class BlobOpener(Protocol):
    def __call__(self) -> IO[bytes]: ...


class Check(enum.Enum):
    """How much ``Layer.uncompressed`` verifies when its stream's end is reached."""

    ALL = "all"
    """The blob digest and the diff ID: the default, and the only choice for bytes that are kept."""
    BLOB = "blob"
    """The blob digest only, for a caller that verified the diff ID of these same bytes already (equal
    digests mean equal bytes); the stream's ``skip_rest()`` then checks the rest of the blob without
    decompressing it."""
    NONE = "none"
    """Nothing, for a headers-only pass whose layer is read again, verified, before anything written
    is published (a squash): each layer is then hashed once."""


@dataclass
class Layer:
    """One layer: its blob (digest may be unknown for a docker tarball member) and its diff ID.

    Read it through three methods: ``blob()`` (the stored bytes), ``uncompressed()`` (the tar stream)
    and, when ``is_plain_file``, ``plain_file()`` (the stored tar itself, seekable). ``opener`` is how
    the source opens the stored bytes; sources set it and may wrap it (to count or to tag reads), but
    readers go through the three methods, which verify.
    """

    index: int
    diff_id: Digest
    size: int
    media_type: str | None  # None where the source does not say (docker tarballs): sniffed when read
    digest: Digest | None
    opener: BlobOpener
    what: str
    is_plain_file: bool = False  # the stored blob is an uncompressed tar in a seekable file
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    codec: Codec | None = None
    origin: object = None
    """Where the source reads the blob from, opaque but to the format that set it (a registry
    repository: a sink on the same registry mounts the blob instead of uploading it)."""

    def blob(self) -> IO[bytes]:
        """The stored bytes, verified against the digest (or, for an unknown digest, just the size) when
        their end is reached."""
        raw = self.opener()
        if self.digest is None:
            return raw
        return VerifyingReader(raw, self.digest, self.size, self.what)  # type: ignore[return-value]

    def uncompressed(self, check: Check = Check.ALL) -> LayerStream:
        """The decompressed tar stream, read, decompressed and hashed on a background thread, verified
        as ``check`` says when its end is reached."""
        if check is Check.NONE:
            reader = DiffIdCheckingReader(self.opener(), self.diff_id, self.what, self.codec, verify=False)
        else:
            # An uncompressed blob whose digest is its diff ID is fully checked by the blob's own
            # digest: hashing the same bytes again for the diff ID would double the cost.
            hash_diff_id = self.digest != self.diff_id and (check is Check.ALL or self.digest is None)
            reader = DiffIdCheckingReader(self.blob(), self.diff_id, self.what, self.codec,
                                          hash_diff_id=hash_diff_id)
        # read ahead on a thread of its own, unless the work here is to stay on one core
        return Prefetcher(reader) if cores.helpers() else reader

    def plain_file(self) -> BinaryIO:
        """The stored tar as a seekable file, for a headers-only pass that seeks over contents; only
        for a layer that ``is_plain_file``. Not verified: its caller reads it again, verified, before
        anything written is published."""
        if not self.is_plain_file:
            raise ValueError(f"{self.what}: not an uncompressed tar in a seekable file")
        return self.opener()  # type: ignore[return-value]

    def copy_blob(self, out: BinaryIO) -> int:
        """Copy the stored bytes into ``out``, checking the blob digest and, decompressed on the fly, the
        diff ID; returns the uncompressed size. One read of the blob serves both."""
        tee = _TeeReader(self.blob(), out)
        reader = DiffIdCheckingReader(tee, self.diff_id, self.what, self.codec)  # type: ignore[arg-type]
        n = 0
        try:
            while data := reader.read(COPY_BLOCK):
                n += len(data)
        finally:
            reader.close()
        return n


COPY_BLOCK = 1 << 20


class _TeeReader(Reader):
    """Reads from ``raw`` and copies every byte read into ``out``: one read of a blob serves two uses."""

    def __init__(self, raw: IO[bytes], out: BinaryIO) -> None:
        self._raw = raw
        self._out = out

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)
        if data:
            self._out.write(data)
        return data

    def verify(self) -> None:
        """Reads (and copies) what is left after the last compressed member, then checks the digest."""
        while self.read(COPY_BLOCK):
            pass
        v = getattr(self._raw, "verify", None)
        if v is not None:
            v()


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
