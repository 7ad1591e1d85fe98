"""``validate``: recompute every digest, size, diff ID and chain ID of an input, and report every mismatch.

A conformance check, not a reader: where the readers (``formats.ocilayout``, ``formats.dockersave``) stop at the first
problem with one clear error, this reads every blob an input names, hashes each once (a blob several
images share is read once), decompresses every layer to EOF and walks its tar headers, and collects all
it finds as ``Finding``s. A layer is hashed and decompressed in the same read, and a config parsed from
the bytes hashed, so a registry's blobs are each downloaded once. A blob that does not hash to its own
name is reported even when nothing refers to it. Nothing is written and nothing raises for a bad input:
``Validation.ok`` says whether it passed.

The input's format walks itself (``Format.walk``; the built-in walks are ``formats.walk``) and calls the
checks here (``formats.base.Checker``): each blob hashed and sized, each layer's diff ID and tar, each
image's diff IDs and chain ID. A docker tarball is checked through ``manifest.json``, and through its
OCI layout too when it has one (Docker 25+, containerd), since ``docker load`` and OCI tools each read
one of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, cast

from ocisquash import model, tarheader
from ocisquash.archive import Tree
from ocisquash.compression import Codec, decompressing_reader
from ocisquash.digest import Digest, HashingReader, chain_ids
from ocisquash.errors import OcisquashError
from ocisquash.formats.base import MAX_DOCUMENT, LayerRef
from ocisquash.sources import Source
from ocisquash.streams import Reader


@dataclass
class Finding:
    """One mismatch: the member or image it is about, and what is wrong."""

    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


@dataclass
class Validation:
    """Every mismatch found (not just the first), and what was checked."""

    label: str
    images: list[dict[str, Any]] = field(default_factory=list)
    blobs_checked: int = 0
    bytes_read: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"input": self.label, "ok": self.ok, "images": self.images, "blobs_checked": self.blobs_checked,
                "bytes_read": self.bytes_read, "findings": [f.to_json() for f in self.findings]}


class _Validator:
    """One run over one input's tree; each member is read (and hashed, or decompressed) at most once."""

    def __init__(self, tree: Tree, label: str, on_bytes: Callable[[int], None] | None,
                 only: Digest | None = None) -> None:
        self.tree = tree
        self.only = only
        """Check only the image with this config digest (its config, manifest and layers)."""
        self.v = Validation(label)
        self.on_bytes = on_bytes
        self._raw: dict[str, tuple[int, str] | None] = {}
        self._unpacked: dict[str, Digest | None] = {}
        self._unpacked_len: dict[str, int] = {}
        self._deferred: dict[str, list[tuple[str, str]]] = {}  # a layer read once: diff_id's findings
        self._last: tuple[str, bytes] | None = None  # the last small member raw read, and its bytes

    def bad(self, where: str, message: str) -> None:
        self.v.findings.append(Finding(where, message))

    def _count(self, n: int) -> None:
        self.v.bytes_read += n
        if self.on_bytes is not None:
            self.on_bytes(n)

    def raw(self, path: str) -> tuple[int, str] | None:
        """``(size, sha256 hex)`` of a member, read once; None (and a finding) when unreadable."""
        if path in self._raw:
            return self._raw[path]
        res: tuple[int, str] | None = None
        try:
            stored = _Stored(self.tree.open(path), self._count, keep=KEEP)
            try:
                stored.drain()
            finally:
                stored.close()
            res = (stored.count, stored.hash.hexdigest())
            self.v.blobs_checked += 1
            if stored.kept is not None:
                self._last = (path, bytes(stored.kept))
        except OcisquashError as e:
            self.bad(path, str(e))
        self._raw[path] = res
        return res

    def _document(self, path: str) -> bytes:
        """A JSON member's bytes (at most ``MAX_DOCUMENT`` + 1): those ``raw`` just read, when it read this
        one and it was small (a registry's config is then downloaded once), else read."""
        if self._last is not None and self._last[0] == path:
            return self._last[1]
        return self.tree.read(path, MAX_DOCUMENT)

    def diff_id(self, path: str, codec: Codec | None) -> Digest | None:
        """The sha256 of a layer's decompressed stream (every byte to EOF); None (and a finding) on error."""
        if path in self._unpacked:
            for where, message in self._deferred.pop(path, []):
                self.bad(where, message)
            return self._unpacked[path]
        res: Digest | None = None
        f = None
        try:
            f = self.tree.open(path)
            res = self._unpack(f, path, codec, self.bad)
        except OcisquashError as e:
            self.bad(path, f"cannot decompress: {e}")
        finally:
            if f is not None:
                f.close()
        self._unpacked[path] = res
        return res

    def _unpack(self, f: IO[bytes], path: str, codec: Codec | None, bad: Callable[[str, str], None]) -> Digest | None:
        """The diff ID of the layer ``f`` reads, its tar walked; each problem told to ``bad``."""
        try:
            r = HashingReader(decompressing_reader(f, path, codec))
            watched = _Watched(r)
            try:
                # the layer must be a whole tar, not only hash right: a member whose (PAX) size runs past
                # the end is a truncated layer that every unpacker refuses
                for _ in tarheader.headers(watched, path, stream=True):  # type: ignore[arg-type]
                    pass
            except OcisquashError as e:
                if watched.failed:
                    raise  # the stream itself failed (corrupt, a bomb): reported below as such
                bad(path, f"not a valid layer tar: {e}")
            r.drain()
            self._unpacked_len[path] = r.count
            return r.digest()
        except (OcisquashError, OSError, EOFError, ValueError) as e:
            bad(path, f"cannot decompress: {e}")
        return None

    def read_layer(self, path: str, codec: Codec | None) -> None:
        """Hash a layer's stored bytes and decompress it in one read, for ``blob`` and ``diff_id`` to
        answer from: a registry's layer is downloaded once, not twice. Its decompression findings wait
        for ``diff_id``, so they come in the order a read of each would give. When reading the stored
        bytes fails, nothing is kept: ``raw`` and ``diff_id`` read again and report it."""
        if path in self._raw or path in self._unpacked or not self.tree.exists(path):
            return
        try:
            f = self.tree.open(path)
        except OcisquashError:
            return
        stored = _Stored(f, self._count)
        deferred: list[tuple[str, str]] = []
        try:
            res = self._unpack(cast(IO[bytes], stored), path, codec, lambda where, msg: deferred.append((where, msg)))
            stored.drain()
        except (OcisquashError, OSError):
            stored.failed = True
        finally:
            f.close()
        if stored.failed:
            self.v.bytes_read -= stored.count  # counted again when read again
            self._unpacked_len.pop(path, None)
            return
        self._raw[path] = (stored.count, stored.hash.hexdigest())
        self.v.blobs_checked += 1
        self._unpacked[path] = res
        self._deferred[path] = deferred

    def blob(self, path: str, digest: Digest | None, size: int | None, what: str) -> bool:
        if not self.tree.exists(path):
            self.bad(path, f"{what} is missing")
            return False
        got = self.raw(path)
        if got is None:
            return False
        ok = True
        if size is not None and got[0] != size:
            self.bad(path, f"{what} is {got[0]} bytes; its descriptor says {size}")
            ok = False
        if digest is not None and digest.algorithm == "sha256" and got[1] != digest.encoded:
            self.bad(path, f"{what} hashes to sha256:{got[1]}, not {digest}")
            ok = False
        return ok

    def config_digest(self, path: str) -> Digest | None:
        """The digest of a config's bytes, or None when it cannot be read (then it is checked as usual)."""
        try:
            return Digest.of(self._document(path))
        except OcisquashError:
            return None

    def config(self, path: str, where: str) -> model.ImageConfig | None:
        try:
            return model.ImageConfig.parse(self._document(path), where)
        except OcisquashError as e:
            self.bad(where, str(e))
            return None

    def image(self, name: str, cfg: model.ImageConfig | None, layers: list[LayerRef],
              recorded: list[str | None] | None = None) -> None:
        info: dict[str, Any] = {"name": name, "layers": len(layers)}
        self.v.images.append(info)
        if cfg is None:
            return
        info["id"] = str(cfg.digest)
        diff_ids = list(cfg.diff_ids)
        if len(diff_ids) != len(layers):
            self.bad(name, f"{len(layers)} layers but the config lists {len(diff_ids)} diff IDs")
        nonempty = sum(1 for h in cfg.history if not h.empty_layer)
        if cfg.history and nonempty > len(diff_ids):
            self.bad(name, f"config history has {nonempty} non-empty entries for {len(diff_ids)} layers "
                           "(docker load refuses this)")
        got_ids: list[Digest] = []
        for i, (path, digest, size, codec) in enumerate(layers):
            what = f"layer {i + 1}/{len(layers)}"
            if not self.tree.exists(path) and digest is not None:
                self.bad(path, f"{name}: {what} {digest} is missing")
                continue
            self.read_layer(path, codec)
            self.blob(path, digest, size, f"{name}: {what}")
            got = self.diff_id(path, codec)
            if got is None:
                continue
            got_ids.append(got)
            claim = recorded[i] if recorded and i < len(recorded) else None
            if claim is not None and claim != str(self._unpacked_len.get(path)):
                self.bad(path, f"{name}: {what} is {self._unpacked_len.get(path)} bytes uncompressed, but its "
                               f"{model.UNCOMPRESSED_SIZE} annotation says {claim}")
            if i < len(diff_ids) and got != diff_ids[i]:
                self.bad(path, f"{name}: {what} uncompressed hashes to {got}, but the config's diff ID is "
                               f"{diff_ids[i]}")
        info["diff_ids"] = [str(d) for d in diff_ids]
        info["chain_ids"] = [str(c) for c in chain_ids(diff_ids)]
        if len(got_ids) == len(diff_ids) and got_ids != diff_ids:
            info["computed_chain_ids"] = [str(c) for c in chain_ids(got_ids)]
            self.bad(name, f"chain ID is {chain_ids(got_ids)[-1]} from the layers' contents, "
                           f"not {chain_ids(diff_ids)[-1]} as the config's diff IDs give")


KEEP = 1 << 20
"""Bytes of a member ``raw`` keeps for the check that reads it next (a config: a few KiB to a few 100 KiB)."""


class _Stored(Reader):
    """A layer's stored bytes as read: their sha256 and count, each read told to ``on_bytes``, and whether
    a read failed."""

    def __init__(self, raw: IO[bytes], on_bytes: Callable[[int], None], keep: int = 0) -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        self.hash = hashlib.sha256()
        self.count = 0
        self.failed = False
        self._keep = keep
        self.kept: bytearray | None = bytearray() if keep else None
        """The bytes read, while they are at most ``keep``."""

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._raw.read(n)
        except BaseException:
            self.failed = True
            raise
        self.hash.update(data)
        self.count += len(data)
        if self.kept is not None and self.count <= self._keep:
            self.kept += data
        else:
            self.kept = None
        self._on_bytes(len(data))
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class _Watched:
    """A buffered reader (a tar walk reads 512-byte headers) that remembers whether a read of the stream
    underneath failed."""

    def __init__(self, raw: HashingReader) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self.failed = False

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            try:
                self._buf, self._pos = bytes(self._raw.read(1 << 20)), 0
            except BaseException:
                self.failed = True
                raise
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out


def validate(source: Source, on_bytes: Callable[[int], None] | None = None, only: Digest | None = None) -> Validation:
    """Recompute every digest, size, diff ID and chain ID of every image of an opened ``Source``, and check
    every blob of a layout against its name; or, with ``only``, just the image whose config digest it is.
    The source's format walks itself (``Format.walk``) with this module's checks."""
    val = _Validator(source.tree, source.label, on_bytes, only)
    source.format.walk(source.tree, val)
    return val.v


def total_bytes(source: Source) -> int:
    """Bytes ``validate`` will read (hash) once each, for a progress bar: the members the format's walk
    reads (``Format.stored_names``)."""
    total = 0
    for n in source.format.stored_names(source.tree):
        try:
            total += source.tree.size(n)
        except Exception:
            continue
    return total
