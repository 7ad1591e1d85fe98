"""The API's typed values: what a squash or a conversion is told, and what a conversion reports.

``Compression``, ``OutputFormat``, ``Cut``, ``RegistryAccess`` and ``ConvertReport`` are public (re-exported
by ``ocisquash.api`` and ``ocisquash``); the squash and the conversion take them as they are, so a string is
parsed once: by the command line (``Compression.parse``, ``Cut.parse``, ``parse_timestamp``) or by the
API's string conveniences, never again below. Importing this module costs ``enum``, ``dataclasses`` and
``datetime`` only: the codecs load inside the functions that need them.
"""

from __future__ import annotations

import abc
import datetime as dt
import enum
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ocisquash import codecs
from ocisquash.digest import Digest
from ocisquash.errors import UsageError

PathLike = str | os.PathLike[str]
"""A filesystem path, as ``str`` or ``pathlib.Path``."""


class Compression(enum.Enum):
    """How the layers ocisquash writes are compressed (the squashed layer, or every layer on convert): a
    codec of the table ``ocisquash.codecs`` that ocisquash writes. A codec registered there from outside
    is a member too, by its name: ``Compression("lz4")``."""

    GZIP = "gzip"
    """gzip through ISA-L: gzip's levels 0-9 (0 stores), default 6; what every tool reads."""
    ZSTD = "zstd"
    """zstd: levels 1-19, default 3; needs Docker 23+ or containerd 1.5+ to load."""
    NONE = "none"
    """Uncompressed tar (level 0 only)."""

    @classmethod
    def _missing_(cls, value: object) -> Compression | None:
        # a registered codec beyond the three above: a member made once per codec, as enum.Flag makes its
        # combinations (not kept in the enum's own map, so a codec taken out of the table is no member)
        codec = codecs.CODECS.get(value) if isinstance(value, str) else None
        if codec is None or not codec.writes:
            return None
        if codec not in _REGISTERED:
            member = object.__new__(cls)
            member._name_, member._value_ = codec.name.upper(), codec.name
            _REGISTERED[codec] = member
        return _REGISTERED[codec]

    @classmethod
    def parse(cls, text: str) -> Compression:
        """The compression named ``text`` (``gzip``, ``zstd`` or ``none``, as ``--compression`` spells it);
        ``UsageError`` for any other name."""
        return cls(codecs.parse(text).name)

    @property
    def codec(self) -> codecs.Codec:
        """Its entry in the codec table."""
        return codecs.CODECS[self.value]

    def check_level(self, level: int | None) -> int | None:
        """``level`` (or None, the default) if it is within this compression's range, else ``UsageError``
        in the command line's words (``--level 10 is out of range for gzip: 0 to 9``)."""
        return None if level is None else codecs.check_level(self.codec, level)


_REGISTERED: dict[codecs.Codec, Compression] = {}


class OutputFormat(enum.StrEnum):
    """What an output (or an input, as ``Source.format``) is. Each member is also its name as a string
    (``OutputFormat.DOCKER == "docker"``), the word ``--format`` takes."""

    DOCKER = "docker"
    """A ``docker save`` tarball in the Docker 25+ shape (also a valid OCI layout tar)."""
    OCI = "oci"
    """An OCI image layout in a tar."""
    OCI_DIR = "oci-dir"
    """An OCI image layout directory."""


ALL_PLATFORMS = "all"
"""``platform=ALL_PLATFORMS`` (``--platform all``) squashes every platform of a multi-platform image."""


class ParentImage(abc.ABC):
    """An opened image ``Cut.onto`` can name as a parent (``ocisquash.Image`` is one)."""

    @abc.abstractmethod
    def _parent_location(self) -> tuple[str, str]:
        """``(path, reference)``: the input it was opened from, and a reference naming exactly it there."""

    @abc.abstractmethod
    def _parent_held(self) -> tuple[str, tuple[str, ...], Digest | None, Digest, tuple[Digest, ...]]:
        """What a squash onto it reads, from the image already open: its label, names, manifest digest,
        image ID and diff IDs (so the input is not opened, nor a tag resolved, again)."""


@dataclass(frozen=True)
class Cut:
    """Where a squash starts: every layer onto scratch, onto a parent image (named, or found by
    ``Cut.auto()``), or from a layer up.

    Build one with ``Cut.scratch()``, ``Cut.onto(parent)``, ``Cut.auto()``, ``Cut.from_layer(n)`` or
    ``Cut.parse(...)``;
    the layers below the cut are kept byte for byte and everything above becomes one layer.
    """

    kind: Literal["scratch", "parent", "auto", "layer"] = "scratch"
    parent_ref: str | None = None
    """The parent's reference; None: the only image of ``parent_path``."""
    parent_path: str | None = None
    """The input that holds the parent (a path or a ``docker://`` reference); None: the input squashed.
    For ``auto``, another input to look for the base in, besides the input squashed."""
    layer: int | str | None = None
    """The lowest squashed layer: a position (1 is the bottom, -1 the top) or a digest or diff ID."""
    spec: str | None = None
    """The parent or layer as the command line spelt it, for a cut made by ``Cut.parse``."""
    parent_image: ParentImage | None = field(default=None, compare=False, repr=False)
    """The opened image ``Cut.onto(image)`` named: the squash reads its layers' IDs from it (``parent_ref``
    and ``parent_path`` still say where it came from, for messages)."""

    def __post_init__(self) -> None:
        parent = (self.parent_ref, self.parent_path) != (None, None)
        if self.kind == "scratch":
            ok = not parent and self.layer is None and self.spec is None
        elif self.kind == "parent":
            ok = parent and self.layer is None
        elif self.kind == "auto":
            ok = self.parent_ref is None and self.layer is None
        elif self.kind == "layer":
            ok = not parent and self.layer is not None
        else:
            raise UsageError(f"Cut kind {self.kind!r}: use Cut.scratch(), Cut.onto(...), Cut.auto() or "
                             "Cut.from_layer(...)")
        if not ok:
            raise UsageError(f"a {self.kind} Cut with the fields of another kind: build it with Cut.scratch(), "
                             "Cut.onto(...) or Cut.from_layer(...)")

    @classmethod
    def scratch(cls) -> Cut:
        """Squash every layer into one (the default)."""
        return cls("scratch")

    @classmethod
    def onto(cls, parent: ParentImage | str | None = None, *, path: PathLike | None = None) -> Cut:
        """Keep a parent image's layers, as ``docker build --squash`` did; its diff IDs must be the
        image's bottom ones. ``parent`` is an ``Image`` (from any ``Source``), or a reference (name:tag,
        digest, image ID prefix) in the input being squashed, or in the input at ``path``."""
        if isinstance(parent, ParentImage):
            if path is not None:
                raise UsageError("Cut.onto(image, path=...): an Image knows its own path; give one or the other")
            where, ref = parent._parent_location()
            return cls("parent", parent_ref=ref, parent_path=where, parent_image=parent)
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise UsageError(f"Cut.onto({parent!r}): the parent is an Image or a non-empty reference string")
        if parent is None and path is None:
            raise UsageError("Cut.onto() needs a parent: an Image, a reference, or path=")
        if path is not None and not (isinstance(path, str | os.PathLike) and os.fspath(path)):
            raise UsageError(f"path {path!r}: expected a path (str or os.PathLike)")
        return cls("parent", parent_ref=parent, parent_path=None if path is None else os.fspath(path))

    @classmethod
    def auto(cls, path: PathLike | None = None) -> Cut:
        """Keep the base image's layers, found without being told (``--parent auto``): the image named
        by the manifest's ``org.opencontainers.image.base.*`` annotations, else the other image at hand
        whose layers are the longest prefix of the image's. Looked for in the input squashed (and its
        registry, for a ``docker://`` input) and in the input at ``path`` when given."""
        if path is not None and not (isinstance(path, str | os.PathLike) and os.fspath(path)):
            raise UsageError(f"path {path!r}: expected a path (str or os.PathLike)")
        return cls("auto", parent_path=None if path is None else os.fspath(path))

    @classmethod
    def from_layer(cls, layer: int | str) -> Cut:
        """Keep the layers below ``layer``: a position (1 is the bottom, -3 squashes the top three) or a
        layer digest or diff ID (``sha256:...``, or at least 12 hex digits of one)."""
        if isinstance(layer, bool) or not isinstance(layer, int | str):
            raise UsageError(f"Cut.from_layer({layer!r}): give a position (int) or a layer digest (str)")
        if isinstance(layer, int) and layer == 0:
            raise UsageError("Cut.from_layer(0): positions start at 1 (the bottom layer); -1 is the top one")
        if isinstance(layer, str) and (not layer.strip() or (layer.strip().lstrip("-").isdigit() and len(layer) < 12)):
            raise UsageError(f"Cut.from_layer({layer!r}): a digest string, or an int for a position")
        return cls("layer", layer=layer)

    @classmethod
    def parse(cls, parent: str | None = None, from_layer: str | None = None) -> Cut:
        """The cut as the command line spells it: ``parent`` as ``--parent`` takes it (``REF`` in the
        input, ``FILE`` or ``FILE:REF`` for another input, where a path that exists wins, a
        ``docker://`` reference, or ``auto`` / ``auto:FILE`` for ``Cut.auto()``), or ``from_layer`` as
        ``--from-layer`` takes it (``N``, ``-N`` or a
        digest); neither is ``Cut.scratch()``. The image is checked when it squashes, with the errors
        naming the option."""
        if parent is not None and from_layer is not None:
            raise UsageError("give --parent or --from-layer, not both")
        for v in (parent, from_layer):
            if v is not None and not isinstance(v, str):
                raise UsageError(f"Cut.parse({v!r}): the command line's text, a str")
        if parent is not None and (parent == AUTO or parent.startswith(AUTO + ":")):
            return cls("auto", parent_path=parent[len(AUTO) + 1:] or None, spec=parent)
        if parent is not None:
            where, ref = _parent_location(parent)
            return cls("parent", parent_ref=ref, parent_path=where, spec=parent)
        if from_layer is not None:
            text = from_layer.strip()
            return cls("layer", layer=int(text) if text.lstrip("-").isdigit() else text, spec=from_layer)
        return cls.scratch()


AUTO = "auto"
"""``--parent auto`` (``auto:FILE``): the word wins over an image or file named ``auto`` (say ``./auto``)."""


def _parent_location(text: str) -> tuple[str | None, str | None]:
    """Where ``--parent`` points, ``(path, reference)``: a ``docker://`` reference is a registry image,
    FILE or FILE:REF a parent in another input (a path that exists wins over a reference), anything else
    an image of the input squashed (path None)."""
    from ocisquash.registry.ref import is_registry_ref

    if is_registry_ref(text) or os.path.exists(text):
        return text, None
    head, sep, tail = text.rpartition(":")
    while sep:
        if os.path.exists(head):
            return head, tail
        head, sep, tail2 = head.rpartition(":")
        tail = tail2 + ":" + tail
    return None, text


def parse_timestamp(text: str | None) -> dt.datetime:
    """``--timestamp`` (RFC 3339 or seconds since the epoch), else ``SOURCE_DATE_EPOCH``, else now."""
    raw = text if text is not None else os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return dt.datetime.now(dt.UTC)
    try:
        if raw.lstrip("-").isdigit():
            return dt.datetime.fromtimestamp(int(raw), dt.UTC)
        t = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        t = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
        # 0001-01-01T00:00:00+01:00 is before year 1 in UTC: datetime cannot hold it, so find out here
        t.astimezone(dt.UTC)
        return t
    except (ValueError, OverflowError, OSError):
        src = "--timestamp" if text is not None else "SOURCE_DATE_EPOCH"
        raise UsageError(f"{src}={raw!r}: expected seconds since the epoch or an RFC 3339 time") from None


@dataclass(frozen=True)
class ConvertReport:
    """What ``convert_image`` (or ``Image.write``) wrote: the image, where, in which format, and its digests."""

    image: str
    output: str
    format: OutputFormat
    tags: list[str]
    manifest: str
    config: str
    layers: list[str]
    note: str | None = None
    """Why the image was chosen as it was (a multi-platform image taken for the default platform), or None."""

    def to_json(self) -> dict[str, Any]:
        """The report as the command line's ``convert --json`` prints it (``format`` by its value)."""
        return {"image": self.image, "output": self.output, "format": self.format.value, "tags": list(self.tags),
                "manifest": self.manifest, "config": self.config, "layers": list(self.layers), "note": self.note}


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach a registry named by a ``docker://HOST/REPO:TAG`` input or output: credentials and
    TLS, meant as skopeo's ``--creds``, ``--src-creds``, ``--dest-creds``, ``--authfile``, ``--cert-dir``
    and ``--tls-verify``. Credentials go to their registry's own origin only."""

    creds: str | None = field(default=None, repr=False)
    """``USER:PASSWORD`` for a run whose registries are one host (else a ``UsageError``: use
    ``src_creds``/``dest_creds``); else ``authfile``, ``$REGISTRY_AUTH_FILE``, the containers and docker
    files, looked up per host."""
    authfile: str | None = None
    """A containers-auth.json or docker config.json to read credentials from."""
    cert_dir: str | None = None
    """CA certificates (``*.crt``) and a client certificate (``*.cert`` + ``*.key``), as containers-certs.d."""
    tls_verify: bool = True
    """Verify TLS certificates; False also allows plain HTTP."""
    src_creds: str | None = field(default=None, repr=False)
    """``USER:PASSWORD`` for the registry of the input and the ``parent`` only (wins over ``creds``)."""
    dest_creds: str | None = field(default=None, repr=False)
    """``USER:PASSWORD`` for the registry of the output only (wins over ``creds``)."""
    timeout: float = 60.0
    """Seconds one request may take to connect, answer and send a small body; a blob's body must move at
    least 1 KiB/s over each such window (``--registry-timeout``)."""
