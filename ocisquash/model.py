"""Typed records for image documents, parsed strictly, and canonical JSON out.

Every document keeps the exact bytes it was parsed from (``raw``): what passes through unchanged is
written back byte for byte, so digests and image IDs do not move. New documents are serialised once,
deterministically, by ``canonical_json``. Parse errors name the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocisquash import limits
from ocisquash.codecs import DOCKER_LAYER as DOCKER_LAYER
from ocisquash.codecs import OCI_LAYER as OCI_LAYER
from ocisquash.digest import Digest
from ocisquash.errors import FormatError
from ocisquash.jsondoc import INT64_MAX
from ocisquash.jsondoc import canonical_json as canonical_json
from ocisquash.jsondoc import load_json as load_json

# Media types (docs/formats.md §1.3); a compressed layer's are its codec's (``codecs.Codec.media_type``).
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
REF_NAME = "org.opencontainers.image.ref.name"
UNCOMPRESSED_SIZE = "io.ocisquash.layer.uncompressed-size"
DOCKER_SIZE = "io.ocisquash.layer.docker-size"
"""On a layer ocisquash wrote: its size as docker counts it (``dockersize``), so listings show docker's
figure without reading the layer."""
"""On a layer ocisquash compresses: the byte length of its uncompressed tar (what listings show as SIZE)."""
CONTAINERD_NAME = "io.containerd.image.name"

# ---------------------------------------------------------------- field access


class Fields:
    """Typed access to one JSON object, with errors that name the file and the field path."""

    def __init__(self, obj: Any, where: str, path: str = "") -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{where}: {path or 'document'} must be a JSON object, not {_kind(obj)}")
        self.obj: dict[str, Any] = obj
        self.where = where
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, types: type | tuple[type, ...], required: bool) -> Any:
        v = self.obj.get(key)
        if v is None:
            if required:
                raise FormatError(f"{self.where}: missing required field {self._name(key)!r}")
            return None
        if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            raise FormatError(f"{self.where}: field {self._name(key)!r} must be {_tname(types)}, not a boolean")
        if not isinstance(v, types):
            raise FormatError(f"{self.where}: field {self._name(key)!r} must be {_tname(types)}, not {_kind(v)}")
        return v

    def opt_str(self, key: str, required: bool = False) -> str | None:
        return self._get(key, str, required)  # type: ignore[no-any-return]

    def req_str(self, key: str) -> str:
        return self._get(key, str, True)  # type: ignore[no-any-return]

    def opt_int(self, key: str, required: bool = False) -> int | None:
        v = self._get(key, int, required)
        if v is not None and not -INT64_MAX - 1 <= v <= INT64_MAX:
            raise FormatError(f"{self.where}: field {self._name(key)!r} is out of range (a signed 64-bit integer)")
        return v  # type: ignore[no-any-return]

    def flag(self, key: str) -> bool:
        return bool(self._get(key, bool, False))

    def sub(self, key: str) -> Fields:
        return Fields(self._get(key, dict, True), self.where, self._name(key))

    def items(self, key: str, required: bool = False) -> list[Any]:
        v = self._get(key, list, required)
        return v if v is not None else []

    def str_map(self, key: str) -> dict[str, str]:
        v = self._get(key, dict, False) or {}
        for k, val in v.items():
            if not isinstance(val, str):
                raise FormatError(f"{self.where}: {self._name(key)}[{k!r}] must be a string, not {_kind(val)}")
        return v

    def str_list(self, key: str) -> list[str]:
        v = self.items(key)
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise FormatError(f"{self.where}: {self._name(key)}[{i}] must be a string, not {_kind(item)}")
        return v

    def digest(self, key: str) -> Digest:
        return Digest.parse(self.req_str(key), where=f"{self.where}: field {self._name(key)!r}")


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(v), type(v).__name__)


def _tname(t: type | tuple[type, ...]) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join({dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}
                       .get(x, x.__name__) for x in ts)


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, f: Fields) -> Platform:
        return cls(os=f.req_str("os"), architecture=f.req_str("architecture"), variant=f.opt_str("variant"),
                   os_version=f.opt_str("os.version"))

    @classmethod
    def from_text(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            from ocisquash.errors import UsageError

            raise UsageError(f"--platform {text!r}: expected os/arch or os/arch/variant, e.g. linux/arm64/v8")
        return cls(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None)

    def matches(self, want: Platform) -> bool:
        if (self.os, self.architecture) != (want.os, want.architecture):
            return False
        return want.variant is None or self.variant == want.variant

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)  # slots: a listing of 20,000 images holds 110,000
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, f: Fields, *, media_type_default: str | None = None) -> Descriptor:
        mt = f.opt_str("mediaType") or media_type_default
        if mt is None:
            raise FormatError(f"{f.where}: missing required field {f._name('mediaType')!r}")
        size = f.opt_int("size", required=True)
        assert size is not None
        if size < 0:
            raise FormatError(f"{f.where}: field {f._name('size')!r} must not be negative")
        plat = f.obj.get("platform")
        return cls(
            media_type=mt,
            digest=f.digest("digest"),
            size=size,
            annotations=f.str_map("annotations"),
            platform=Platform.parse(Fields(plat, f.where, f._name("platform"))) if plat is not None else None,
            urls=tuple(f.str_list("urls")),
        )

    @classmethod
    def from_obj(cls, obj: Any, where: str, path: str, index: int | None = None) -> Descriptor:
        """``parse`` of the descriptor ``obj`` at ``path`` (``path[index]`` with an index), by a fast path
        for the usual shape (a media type, a digest, a size and at most string annotations): 20,000 images
        hold 100,000 descriptors. Anything else, and every error, takes ``parse`` and its messages."""
        if type(obj) is dict:
            mt, size, text, ann = obj.get("mediaType"), obj.get("size"), obj.get("digest"), obj.get("annotations")
            if (type(mt) is str and mt and type(size) is int and 0 <= size <= INT64_MAX and type(text) is str
                    and obj.get("platform") is None and obj.get("urls") is None
                    and (ann is None or (type(ann) is dict and all(type(v) is str for v in ann.values())))):
                try:
                    digest = Digest.parse(text)
                except FormatError:
                    pass  # said again by parse, naming the field
                else:
                    return cls(mt, digest, size, {} if ann is None else ann)
        return cls.parse(Fields(obj, where, path if index is None else f"{path}[{index}]"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


def _check_schema(f: Fields) -> None:
    mt = f.opt_str("mediaType")
    if mt in SCHEMA1 or f.obj.get("schemaVersion") == 1:
        raise FormatError(f"{f.where}: Docker schema 1 manifests are obsolete and not supported",
                          hint="convert it with a current registry client first")
    sv = f.opt_int("schemaVersion", required=True)
    if sv != 2:
        raise FormatError(f"{f.where}: schemaVersion is {sv}, expected 2")


def document_kind(obj: Any, descriptor_type: str | None) -> str:
    """'index' or 'manifest' (or the unknown media type): by mediaType, else descriptor, else shape."""
    mt = obj.get("mediaType") if isinstance(obj, dict) else None
    mt = mt or descriptor_type
    if mt in INDEX_TYPES:
        return "index"
    if mt in MANIFEST_TYPES:
        return "manifest"
    if mt in SCHEMA1:
        return "manifest"
    if isinstance(obj, dict) and not mt:
        if "manifests" in obj:
            return "index"
        if "config" in obj and "layers" in obj:
            return "manifest"
    return str(mt)


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict[str, str]
    raw: bytes

    @classmethod
    def parse(cls, data: bytes, where: str, *, media_type: str | None = None, parsed: Any = None) -> Index:
        """``parsed``: ``load_json(data)`` when the caller has it already."""
        f = Fields(load_json(data, where) if parsed is None else parsed, where)
        _check_schema(f)
        items = f.items("manifests", required=True)
        mans = tuple(Descriptor.from_obj(m, where, "manifests", i) for i, m in enumerate(items))
        return cls(f.opt_str("mediaType") or media_type or OCI_INDEX, mans, f.str_map("annotations"), data)


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str]
    raw: bytes

    @classmethod
    def parse(cls, data: bytes, where: str, *, media_type: str | None = None, parsed: Any = None) -> Manifest:
        """``parsed``: ``load_json(data)`` when the caller has it already."""
        f = Fields(load_json(data, where) if parsed is None else parsed, where)
        _check_schema(f)
        mt = f.opt_str("mediaType") or media_type or OCI_MANIFEST
        if mt in SCHEMA1:
            raise FormatError(f"{where}: Docker schema 1 manifests are obsolete and not supported")
        items = f.items("layers", required=True)
        layers = tuple(Descriptor.from_obj(x, where, "layers", i) for i, x in enumerate(items))
        config = f.obj.get("config")
        return cls(mt, Descriptor.from_obj(config, where, "config") if type(config) is dict else
                   Descriptor.parse(f.sub("config")), layers, f.str_map("annotations"), data)

    @property
    def is_docker(self) -> bool:
        return self.media_type == DOCKER_MANIFEST


@dataclass(frozen=True)
class History:
    created: str | None
    created_by: str | None
    author: str | None
    comment: str | None
    empty_layer: bool
    raw: dict[str, Any]

    @classmethod
    def parse(cls, f: Fields) -> History:
        return cls(f.opt_str("created"), f.opt_str("created_by"), f.opt_str("author"), f.opt_str("comment"),
                   f.flag("empty_layer"), f.obj)

    @classmethod
    def from_obj(cls, obj: Any, where: str, index: int) -> History:
        """``parse`` of ``history[index]``, by a fast path where every field read has its type (or is null);
        anything else, and every error, takes ``parse`` and its messages."""
        if type(obj) is dict:
            g = obj.get
            created, by, author, comment, empty = (g("created"), g("created_by"), g("author"), g("comment"),
                                                   g("empty_layer"))
            if all(v is None or type(v) is str for v in (created, by, author, comment)) and \
                    (empty is None or type(empty) is bool):
                return cls(created, by, author, comment, bool(empty), obj)
        return cls.parse(Fields(obj, where, f"history[{index}]"))


@dataclass(frozen=True)
class ImageConfig:
    """An image config: the fields ocisquash reads, typed, and the whole object kept for pass-through."""

    architecture: str
    os: str
    variant: str | None
    created: str | None
    diff_ids: tuple[Digest, ...]
    history: tuple[History, ...]
    labels: dict[str, str]
    raw: bytes
    obj: dict[str, Any] = field(compare=False, default_factory=dict)

    @classmethod
    def parse(cls, data: bytes, where: str) -> ImageConfig:
        obj = load_json(data, where)
        fast = cls._fast(obj, data, where)
        return fast if fast is not None else cls._parse(obj, data, where)

    @classmethod
    def _fast(cls, obj: Any, data: bytes, where: str) -> ImageConfig | None:
        """``_parse`` for a config whose every field read has its type and is within the caps (a listing of
        20,000 images parses 20,000); None for anything else, which ``_parse`` then refuses by name."""
        if type(obj) is not dict:
            return None
        g = obj.get
        rootfs, arch, os_, variant, created = g("rootfs"), g("architecture"), g("os"), g("variant"), g("created")
        if (type(rootfs) is not dict or rootfs.get("type") != "layers" or type(arch) is not str
                or type(os_) is not str or not (variant is None or type(variant) is str)
                or not (created is None or type(created) is str)):
            return None
        raw_ids, raw_hist, run = rootfs.get("diff_ids"), g("history"), g("config")
        raw_hist = [] if raw_hist is None else raw_hist  # not `or []`: an empty object is an error, not no history
        if run is not None and type(run) is not dict:
            return None
        labels = run.get("Labels") if run is not None else None
        labels = {} if labels is None else labels  # not `or {}`: an empty list is an error, not no labels
        lim = limits.current()
        if (type(raw_ids) is not list or type(raw_hist) is not list or len(raw_ids) > lim.max_layers
                or len(raw_hist) > lim.max_history or type(labels) is not dict
                or not all(type(v) is str for v in labels.values())):
            return None
        try:
            ids = tuple(map(Digest.parse, raw_ids))
        except FormatError:
            return None
        hist = tuple(History.from_obj(h, where, i) for i, h in enumerate(raw_hist))
        return cls(arch, os_, variant, created, ids, hist, labels, data, obj)

    @classmethod
    def _parse(cls, obj: Any, data: bytes, where: str) -> ImageConfig:
        f = Fields(obj, where)
        rootfs = f.sub("rootfs")
        rtype = rootfs.req_str("type")
        if rtype != "layers":
            raise FormatError(f"{where}: rootfs.type is {rtype!r}; only 'layers' is defined")
        lim = limits.current()
        raw_ids = rootfs.items("diff_ids", required=True)
        if len(raw_ids) > lim.max_layers:
            raise limits.exceeded("max_layers", f"{where}: the image has {len(raw_ids)} layers (diff IDs), over the "
                                                f"cap of {lim.max_layers}")
        try:
            ids = tuple(map(Digest.parse, raw_ids))
        except FormatError:  # said again, naming the entry (a name built for every entry cost more than the parse)
            ids = tuple(Digest.parse(d, where=f"{where}: rootfs.diff_ids[{i}]") for i, d in enumerate(raw_ids))
        raw_hist = f.items("history")
        # Each entry becomes an object here and a table row later: a million entries take gigabytes.
        if len(raw_hist) > lim.max_history:
            raise limits.exceeded("max_history", f"{where}: {len(raw_hist)} history entries, over the cap of "
                                                 f"{lim.max_history}")
        hist = tuple(History.from_obj(h, where, i) for i, h in enumerate(raw_hist))
        run = f.obj.get("config")
        labels = Fields(run, where, "config").str_map("Labels") if run is not None else {}
        return cls(
            architecture=f.req_str("architecture"),
            os=f.req_str("os"),
            variant=f.opt_str("variant"),
            created=f.opt_str("created"),
            diff_ids=ids,
            history=hist,
            labels=labels,
            raw=data,
            obj=f.obj,
        )

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant)

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)
