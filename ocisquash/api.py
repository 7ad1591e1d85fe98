"""The public library API: open an input, choose an image, squash or convert it, list and validate.

Everything here is re-exported by ``ocisquash`` (``import ocisquash; ocisquash.open(...)``). The work is
done by ``squash.squash``, ``convert.convert``, ``listing`` and ``validate``; this module turns typed
options (enums, ``datetime``, ``int``, a ``Cut``) into what those take. The command line goes through
this module too, parsing its strings with ``Compression.parse``, ``Cut.parse``, ``parse_filters`` and
``squash.parse_timestamp``, so the library and the CLI cannot disagree.
A wrong option raises ``UsageError`` before anything is read; every other failure is an
``OcisquashError`` subclass, as on the command line.

An ``Image`` is a handle: squashing or converting it opens its input again by path and chooses the
image with the same reference and platform the caller gave, exactly as ``ocisquash IN OUT --image REF``
would. So an ``Image`` opened from standard input (``open("-")``) can be listed but not squashed; the
one-shot functions ``squash_image`` and ``convert_image`` read ``-`` once, as the CLI does. (They are not called
``squash`` and ``convert``: those names are the package's modules.)

The heavy modules (codecs, merge, sinks: ~60 ms to import) load inside the functions, for start-up time:
importing this module costs only ``enum``, ``dataclasses`` and ``datetime``.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ocisquash.errors import UsageError

if TYPE_CHECKING:
    from ocisquash import image as _image
    from ocisquash import sources as _sources
    from ocisquash.listing import Analysis, Filters, HistoryRow, ImageSummary
    from ocisquash.listing import Row as ImageRow
    from ocisquash.squash import Report as SquashReport
    from ocisquash.validate import Validation

PathLike = str | os.PathLike[str]
"""A filesystem path, as ``str`` or ``pathlib.Path``."""


class Compression(enum.Enum):
    """How the layers ocisquash writes are compressed (the squashed layer, or every layer on convert)."""

    GZIP = "gzip"
    """gzip through ISA-L: gzip's levels 0-9 (0 stores), default 6; what every tool reads."""
    ZSTD = "zstd"
    """zstd: levels 1-19, default 3; needs Docker 23+ or containerd 1.5+ to load."""
    NONE = "none"
    """Uncompressed tar (level 0 only)."""

    @classmethod
    def parse(cls, text: str) -> Compression:
        """The compression named ``text`` (``gzip``, ``zstd`` or ``none``, as ``--compression`` spells it);
        ``UsageError`` for any other name."""
        from ocisquash import compression

        return cls(compression.parse_codec(text).value)

    def check_level(self, level: int | None) -> int | None:
        """``level`` (or None, the default) if it is within this compression's range, else ``UsageError``
        in the command line's words (``--level 10 is out of range for gzip: 0 to 9``)."""
        if level is None:
            return None
        from ocisquash import compression

        return compression.check_level(compression.Codec(self.value), level)


class OutputFormat(enum.Enum):
    """What an output (or an input, as ``Source.format``) is."""

    DOCKER = "docker"
    """A ``docker save`` tarball in the Docker 25+ shape (also a valid OCI layout tar)."""
    OCI = "oci"
    """An OCI image layout in a tar."""
    OCI_DIR = "oci-dir"
    """An OCI image layout directory."""


ALL_PLATFORMS = "all"
"""``platform=ALL_PLATFORMS`` (``--platform all``) squashes every platform of a multi-platform image."""


@dataclass(frozen=True)
class Cut:
    """Where a squash starts: every layer onto scratch, onto a parent image, or from a layer up.

    Build one with ``Cut.scratch()``, ``Cut.onto(parent)`` or ``Cut.from_layer(n)``; the layers below
    the cut are kept byte for byte and everything above becomes one layer.
    """

    kind: Literal["scratch", "parent", "layer"] = "scratch"
    parent_ref: str | None = None
    parent_path: str | None = None
    layer: int | str | None = None
    spec: str | None = None
    """The parent or layer as the command line spells it (``Cut.parse``), handed to the squash unchanged."""

    def __post_init__(self) -> None:
        given = (self.parent_ref, self.parent_path, self.layer, self.spec)
        if self.kind == "scratch":
            ok = given == (None, None, None, None)
        elif self.kind == "parent":
            ok = self.layer is None and (self.spec is None) == (self.parent_ref is not None or
                                                                 self.parent_path is not None)
        elif self.kind == "layer":
            ok = self.parent_ref is None and self.parent_path is None and (self.layer is None) != (self.spec is None)
        else:
            raise UsageError(f"Cut kind {self.kind!r}: use Cut.scratch(), Cut.onto(...) or Cut.from_layer(...)")
        if not ok:
            raise UsageError(f"a {self.kind} Cut with the fields of another kind: build it with Cut.scratch(), "
                             "Cut.onto(...) or Cut.from_layer(...)")

    @classmethod
    def scratch(cls) -> Cut:
        """Squash every layer into one (the default)."""
        return cls("scratch")

    @classmethod
    def onto(cls, parent: Image | str | None = None, *, path: PathLike | None = None) -> Cut:
        """Keep a parent image's layers, as ``docker build --squash`` did; its diff IDs must be the
        image's bottom ones. ``parent`` is an ``Image`` (from any ``Source``), or a reference (name:tag,
        digest, image ID prefix) in the input being squashed, or in the input at ``path``."""
        if isinstance(parent, Image):
            if path is not None:
                raise UsageError("Cut.onto(image, path=...): an Image knows its own path; give one or the other")
            # Its digest names exactly this image (a platform's own manifest, in a multi-platform index).
            return cls("parent", parent_ref=parent.manifest_digest or parent.id, parent_path=parent.source.path)
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise UsageError(f"Cut.onto({parent!r}): the parent is an Image or a non-empty reference string")
        if parent is None and path is None:
            raise UsageError("Cut.onto() needs a parent: an Image, a reference, or path=")
        return cls("parent", parent_ref=parent, parent_path=None if path is None else _path(path, "path"))

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
        input, ``FILE`` or ``FILE:REF`` for another input, where a path that exists wins, or a
        ``docker://`` reference), or ``from_layer`` as ``--from-layer`` takes it (``N``, ``-N`` or a
        digest); neither is ``Cut.scratch()``. The text is checked against the image when it squashes,
        with the errors naming the option."""
        if parent is not None and from_layer is not None:
            raise UsageError("give --parent or --from-layer, not both")
        for v in (parent, from_layer):
            if v is not None and not isinstance(v, str):
                raise UsageError(f"Cut.parse({v!r}): the command line's text, a str")
        if parent is not None:
            return cls("parent", spec=parent)
        if from_layer is not None:
            return cls("layer", spec=from_layer)
        return cls.scratch()


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


class Source:
    """An opened input (OCI layout directory or tar, or ``docker save`` tarball) and the images it holds.

    Use it as a context manager, or ``close()`` it: a compressed tarball is spooled to a temporary file
    that ``close()`` removes.
    """

    def __init__(self, path: str, inner: _sources.Source, ref: str | None = None, named_by: str | None = None) -> None:
        self.path = path
        """The path it was opened from (of a reference such as ``oci:DIR:REF``, its path), or a ``docker://``
        reference."""
        self.ref = ref
        """The image its reference named (``REF`` of ``oci:DIR:REF`` or ``FILE:REF``), or None: what
        ``image()``, ``rows()`` and ``validate()`` choose when not told."""
        self._named_by = named_by or path
        self._inner: _sources.Source | None = inner

    @property
    def format(self) -> OutputFormat:
        """What the input is, in the terms of ``OutputFormat``."""
        return OutputFormat(self._open().kind)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._inner is None

    def images(self, *, exact: bool = False, on_phase: Callable[[str, int | None], None] | None = None,
               on_image: Callable[[], None] | None = None) -> list[ImageSummary]:
        """One summary per image (as ``ocisquash images`` lists them), reading JSON documents only unless
        ``exact``, which decompresses compressed layers to give exact uncompressed sizes. Progress:
        ``on_phase("reading images", number of images)`` once, then ``on_image()`` after each."""
        from ocisquash import listing

        inner = self._open()
        if on_phase is not None:
            on_phase("reading images", len(inner.candidates))
        return listing.summarize(inner.candidates, exact=exact, on_image=on_image)

    def rows(self, summaries: Sequence[ImageSummary], filters: Filters | None = None, *, all_images: bool = False,
             image: str | None = None) -> list[ImageRow]:
        """The rows ``ocisquash images`` prints for ``summaries`` (from ``images()``): one per name
        (``<none>`` for an untagged image), newest first, kept by ``filters`` (``parse_filters``); images
        that others are built on only with ``all_images``; only the image ``image`` (else ``ref``) names, if
        given."""
        from ocisquash import listing

        if filters is not None and not isinstance(filters, listing.Filters):
            raise UsageError(f"filters={filters!r}: build them with ocisquash.api.parse_filters([...])")
        inner = self._open()

        def resolve(ref: str) -> Any:  # before=REF, since=REF: the image ID REF names
            return inner.choose_candidate(ref).image_id

        rows = listing.select(list(summaries), filters or listing.Filters(), all_images=all_images, resolve=resolve)
        image = self._chosen(_check_ref(image))
        if image is not None:
            chosen = inner.choose_candidate(image).image_id
            rows = [r for r in rows if r.image.image_id == chosen]
        return rows

    def image(self, ref: str | None = None, *, platform: str | None = None,
              default_platform: bool = False) -> Image:
        """Choose an image: by ``name:tag``, manifest digest, or image ID prefix, or when ``ref`` is None
        the one the Source's reference named (``Source.ref``), else the only one; ``platform``
        (``os/arch[/variant]``) inside a multi-platform index. Raises ``NotFound`` or ``Ambiguous`` (whose
        hint lists the choices). With ``default_platform``, a multi-platform image asked for without
        ``platform`` is taken for this machine's platform, as docker does, and ``Image.note`` says so."""
        if ref is not None and (not isinstance(ref, str) or not ref):
            raise UsageError(f"image reference {ref!r}: a non-empty string (name:tag, digest or image ID)")
        ref = self._chosen(ref)
        if platform is not None:
            _check_platform(platform)
        note = None
        if default_platform:
            inner, note = self._open().choose_default(ref, platform)
        else:
            inner = self._open().choose(ref, platform)
        return Image(self, inner, ref, platform, note)

    def validate(self, *, image: str | None = None, on_phase: Callable[[str, int | None], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> Validation:
        """Recompute every digest, size, diff ID and chain ID of every image (or of the one ``image``, else
        ``ref``, names); the result lists every mismatch (``ok`` is False if there is any) instead of raising on
        the first. Progress: ``on_phase("validating", total bytes)`` once, then ``on_bytes(n)`` as blobs
        are hashed."""
        from ocisquash import validate as validate_lib

        inner = self._open()
        image = self._chosen(_check_ref(image))
        only = inner.choose_candidate(image).image_id if image is not None else None
        if on_phase is not None:
            on_phase("validating", validate_lib.total_bytes(inner))
        return validate_lib.validate(inner, on_bytes=on_bytes, only=only)

    def close(self) -> None:
        """Release the input (and remove a spooled temporary copy). Idempotent."""
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ocisquash.Source {self.path!r}{' closed' if self.closed else ''}>"

    def _open(self) -> _sources.Source:
        if self._inner is None:
            raise UsageError(f"{self.path}: the Source is closed")
        return self._inner

    def _chosen(self, image: str | None) -> str | None:
        from ocisquash import transports

        return transports.pick_image(self._named_by, self.ref, image)


class Image:
    """One image of a ``Source``, as ``Source.image()`` chose it: its names, IDs and config, and the
    operations on it (``squash``, ``write``). Valid while its ``Source`` is open."""

    def __init__(self, source: Source, inner: _image.Image, ref: str | None, platform: str | None,
                 note: str | None = None) -> None:
        self.source = source
        """The ``Source`` it was chosen from."""
        self.note = note
        """Why this image was chosen (taken for the default platform: ``Source.image(default_platform=True)``),
        or None."""
        self._inner = inner
        self._ref = ref
        self._platform = platform

    @property
    def names(self) -> list[str]:
        """Its names (full references such as ``docker.io/library/app:1``, or bare layout tags)."""
        return list(self._inner.names)

    @property
    def id(self) -> str:
        """The image ID: the config's digest, ``sha256:...``."""
        return str(self._inner.id)

    @property
    def manifest_digest(self) -> str | None:
        """The manifest's digest, or None in a ``docker save`` tarball that holds no manifest blob."""
        d = self._inner.manifest_digest
        return None if d is None else str(d)

    @property
    def diff_ids(self) -> list[str]:
        """The uncompressed digests of its layers, bottom first (``rootfs.diff_ids``)."""
        return [str(d) for d in self._inner.config.diff_ids]

    @property
    def config(self) -> dict[str, Any]:
        """A copy of the image config (the JSON object)."""
        import copy

        return copy.deepcopy(self._inner.config.obj)

    def history(self, *, exact: bool = False) -> list[HistoryRow]:
        """Its history as ``ocisquash history`` (and ``docker history``) lists it: one row per entry,
        newest first; ``exact`` decompresses compressed layers for exact uncompressed sizes. Unlike
        ``squash`` and ``write``, it works on an image whose layers and diff IDs disagree."""
        from ocisquash import listing

        return listing.history(self._inner, exact=exact)

    def analyze(self, *, top: int = 10, on_phase: Callable[[str, int | None], None] | None = None,
                on_layer: Callable[[int], None] | None = None) -> Analysis:
        """What each layer adds and how much of it later layers hide, with dive's efficiency figures, as
        ``ocisquash analyze`` shows them; ``top`` duplicated paths and hidden files are listed. Reads the
        layer headers once: ``on_phase("reading layer headers", layers)`` once, then
        ``on_layer(i)`` after each layer."""
        from ocisquash import listing
        from ocisquash.squash import layer_inputs

        if on_phase is not None:
            on_phase("reading layer headers", len(self._inner.layers))
        return listing.analyze(self._inner, layer_inputs(self._inner), top=top, on_layer=on_layer)

    def squash(self, output: PathLike | None, *, cut: Cut | None = None, tags: Sequence[str] = (),
               format: OutputFormat | None = None, compression: Compression = Compression.GZIP,
               level: int | None = None, message: str | None = None, timestamp: dt.datetime | None = None,
               rewrite_timestamp: bool = False, on_phase: Callable[[str, int | None], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> SquashReport:
        """Squash this image; see ``ocisquash.squash_image`` for every option."""
        self._reopenable()
        return squash_image(self.source.path, output, image=self._ref, platform=self._platform, cut=cut, tags=tags,
                            format=format, compression=compression, level=level, message=message,
                            timestamp=timestamp, rewrite_timestamp=rewrite_timestamp, on_phase=on_phase,
                            on_progress=on_progress)

    def write(self, output: PathLike, *, format: OutputFormat | None = None, tags: Sequence[str] = (),
              compression: Compression | None = None, level: int | None = None) -> ConvertReport:
        """Write this image unchanged (or with its layers recompressed) to ``output``; see
        ``ocisquash.convert_image``."""
        self._reopenable()
        return convert_image(self.source.path, output, image=self._ref, platform=self._platform, format=format,
                             tags=tags, compression=compression, level=level)

    def _reopenable(self) -> None:
        self.source._open()
        self._inner.check_consistent()
        if self.source.path == "-":
            raise UsageError("an Image from standard input cannot be squashed or written: that reads its input "
                             "again, and standard input has gone",
                             hint="ocisquash.squash_image('-', ...) and convert_image('-', ...) read it once")

    def __repr__(self) -> str:
        return f"<ocisquash.Image {self._inner.label} {self.id[:19]}>"


def open(path: PathLike) -> Source:  # ocisquash.open, as tarfile.open: shadows the builtin in this module only
    """Open an input: an OCI layout directory, an OCI layout tar, or a ``docker save`` tarball (plain or
    compressed whole), or ``-``: standard input, for listing and validating (an ``Image`` from it cannot
    be squashed: see the module's docstring). Reads only the JSON documents. Raises ``FormatError``
    when it is none of these.

    A ``str`` may also be a reference, as the command line takes them (skopeo's): ``oci:DIR[:REF]``,
    ``oci-archive:FILE[:REF]``, ``docker-archive:FILE[:REF]``, ``FILE:REF`` where FILE exists, or
    ``docker://HOST/REPO[:TAG|@DIGEST]`` (a registry); REF names the image (``Source.ref``). A path that
    exists is always a path, and an ``os.PathLike`` is never a reference. A malformed reference or one
    of skopeo's other transports raises ``UsageError``."""
    p, ref = _input(path, "path")
    from ocisquash import sources

    return Source(p, sources.open_source(p), ref, named_by=path if isinstance(path, str) else None)


def squash_image(input: PathLike, output: PathLike | None, *, image: str | None = None,
                 platform: str | None = None, cut: Cut | None = None, tags: Sequence[str] = (),
                 format: OutputFormat | None = None, compression: Compression = Compression.GZIP,
                 level: int | None = None, message: str | None = None, timestamp: dt.datetime | None = None,
                 rewrite_timestamp: bool = False, on_phase: Callable[[str, int | None], None] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> SquashReport:
    """Squash an image of ``input`` into one layer above ``cut`` and write it to ``output``.

    - ``input``: a path, or ``-`` for standard input, or a reference as ``open`` takes them
      (``oci:DIR:REF``, ``docker://HOST/REPO:TAG``, ...); ``image``/``platform`` choose as ``Source.image``;
      ``platform=ALL_PLATFORMS`` squashes every platform of a multi-platform image into an image index
      (the report's ``platforms`` lists each).
    - ``output``: a path (``-`` for standard output), or None to compute the report and write nothing.
      The input's own layout directory adds the squashed image beside the original.
    - ``cut``: ``Cut.scratch()`` (the default), ``Cut.onto(parent)``, ``Cut.from_layer(n)`` or
      ``Cut.parse(...)`` (the command line's spelling).
    - ``tags``: names for the result (``name:tag``); by default the input image's names.
    - ``format``: by default from the output's path (a directory or a name without ``.tar`` is an OCI
      layout directory, ``.tar`` a docker tarball).
    - ``compression``/``level``: of the new layer.
    - ``message``: the new history entry's comment; ``timestamp``: the image's ``created`` (an aware
      ``datetime``; by default ``SOURCE_DATE_EPOCH`` or now). The same input, options and timestamp give
      byte-identical output.
    - ``rewrite_timestamp``: every entry of the new layer whose times are later than ``timestamp`` (or
      ``SOURCE_DATE_EPOCH``; one of them is required) gets that time, so two builds of the same source
      squash to the same bytes; the report's ``mtimes_clamped`` counts them. Kept layers are never changed.
    - ``on_phase(description, total)``/``on_progress(n)``: progress callbacks; each phase starts with
      ``on_phase`` (``total`` None when unknown), then ``on_progress`` adds the work done.

    With ``output=None`` (a dry run) nothing is written and the report's ``dry_run`` is True.
    Returns the report (sizes before and after, files dropped, digests of what was written). The output
    appears complete or not at all; the input is never changed.
    """
    from ocisquash import squash as squash_lib

    src, image = _input(input, "input", _check_ref(image))
    cut = _check_cut(cut)
    opts = squash_lib.SquashOptions(
        image=image, platform=_check_platform(platform), tags=_check_tags(tags),
        fmt=_check_format(format), compression=_check_compression(compression).value,
        level=_check_level(compression, level), message=_check_message(message),
        timestamp=_check_timestamp(timestamp),
    )
    if not isinstance(rewrite_timestamp, bool):
        raise UsageError(f"rewrite_timestamp={rewrite_timestamp!r}: True or False")
    opts.rewrite_timestamp = rewrite_timestamp
    if cut.kind == "parent":
        opts.parent = cut.spec if cut.spec is not None else _parent_spec(cut, src)
    elif cut.kind == "layer" and cut.spec is not None:
        opts.from_layer = cut.spec
    elif cut.kind == "layer":
        layer = str(cut.layer).strip()
        # squash reads an all-digit string as a position: a hex prefix that happens to be all digits
        # ("123456789012") is spelt with its algorithm so that it stays a digest.
        opts.from_layer = "sha256:" + layer if isinstance(cut.layer, str) and layer.isdigit() else layer
    dest = None if output is None else _path(output, "output")
    opts.dry_run = dest is None
    return squash_lib.squash(src, dest, opts, on_phase=on_phase, on_progress=on_progress)


def convert_image(input: PathLike, output: PathLike, *, image: str | None = None, platform: str | None = None,
                  format: OutputFormat | None = None, tags: Sequence[str] = (),
                  compression: Compression | None = None, level: int | None = None,
                  on_step: Callable[[str], None] | None = None,
                  on_phase: Callable[[str, int | None], None] | None = None,
                  on_bytes: Callable[[int], None] | None = None) -> ConvertReport:
    """Copy an image of ``input`` (a path, ``-`` or a reference, as in ``squash_image``) to ``output`` in
    another format, verifying every blob; ``compression`` recompresses every layer (None keeps each as it
    is). Options as in ``squash_image``. Progress: ``on_phase(description, total)`` once, then
    ``on_bytes(n)`` as the layer blobs are read (``total`` is their size, or None without ``on_bytes``),
    and ``on_step(description)`` as each blob is written."""
    from ocisquash import convert as convert_lib

    src, image = _input(input, "input", _check_ref(image))
    dest = _path(output, "output")
    codec = None if compression is None else _check_compression(compression)
    result = convert_lib.convert(
        src, dest, image=image, platform=_check_platform(platform), tags=_check_tags(tags),
        fmt=_check_format(format), compression=None if codec is None else codec.value,
        level=None if codec is None else _check_level(codec, level),
        on_step=on_step, on_start=on_phase, on_bytes=on_bytes,
    )
    return ConvertReport(image=result["image"], output=result["output"], format=OutputFormat(result["format"]),
                         tags=list(result["tags"]), manifest=result["manifest"], config=result["config"],
                         layers=list(result["layers"]), note=result["note"])


def parse_filters(filters: Sequence[str]) -> Filters:
    """Docker's image filters, ``KEY=VALUE`` each (``dangling=true|false``, ``label=KEY[=VALUE]``,
    ``before=REF``, ``since=REF``, ``reference=GLOB``), checked and grouped for ``Source.rows``; a bad
    one raises ``UsageError`` before any input is read."""
    from ocisquash import listing

    if isinstance(filters, str) or not isinstance(filters, Sequence):
        raise UsageError(f"filters={filters!r}: a list of KEY=VALUE strings")
    return listing.Filters.parse(filters)


@contextmanager
def safety_limits(caps: Mapping[str, int]) -> Iterator[None]:
    """Raise (or lower) safety caps for the ``with`` block, as the command line's ``--limit`` does:
    ``caps`` maps a cap's name (``max_json``, ``max_layers``, ...: the ``OCISQUASH_*`` variables' names
    in lower case) to a positive int. The caps in force before come back when the block ends, by an
    error too. ``UsageError`` for an unknown name or a value that is not a positive int. (Not called
    ``limits``: that name is the package's module.)"""
    import dataclasses as dcs

    from ocisquash import limits as limits_lib

    names = [f.name for f in dcs.fields(limits_lib.Limits)]
    if not isinstance(caps, Mapping):
        raise UsageError(f"safety_limits({caps!r}): a mapping of cap names to ints")
    for name, value in caps.items():
        if name not in names:
            raise UsageError(f"safety_limits: no cap named {name!r}", hint="the caps: " + ", ".join(names))
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limits_lib.MAX_VALUE:
            raise UsageError(f"safety_limits: {name}={value!r}: a positive int (at most {limits_lib.MAX_VALUE})")
    with limits_lib.scoped(dict(caps)):
        yield


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


@contextmanager
def registry_access(access: RegistryAccess) -> Iterator[None]:
    """Use ``access`` for every registry read and write inside the ``with`` block; what was in force
    before comes back when it ends."""
    if not isinstance(access, RegistryAccess):
        raise UsageError(f"registry_access({access!r}): give a RegistryAccess")
    from ocisquash import registry

    saved = registry.current()
    if not 0 < access.timeout < float("inf"):
        raise UsageError(f"registry timeout {access.timeout!r}: give a number of seconds above 0")
    registry.configure(registry.RegistryOptions(registry.AuthOptions(access.creds, access.authfile, access.src_creds,
                                                                     access.dest_creds),
                                                access.cert_dir, access.tls_verify, access.timeout))
    try:
        yield
    finally:
        registry.configure(saved)


def list_images(path: PathLike, *, exact: bool = False) -> list[ImageSummary]:
    """The images ``path`` holds, one summary each (see ``Source.images``); of a reference that names an
    image (``oci:DIR:REF``), that one only."""
    with open(path) as src:
        summaries = src.images(exact=exact)
        if src.ref is None:
            return summaries
        chosen = src._open().choose_candidate(src.ref).image_id
        return [s for s in summaries if s.image_id == chosen]


def validate_input(path: PathLike) -> Validation:
    """Check every digest, size, diff ID and chain ID in ``path`` (see ``Source.validate``)."""
    with open(path) as src:
        return src.validate()


# ---------------------------------------------------------------------------------- typed options -> strings


def _path(p: object, what: str) -> str:
    if isinstance(p, str | os.PathLike):
        s = os.fspath(p)
        if isinstance(s, str) and s:
            return s
    raise UsageError(f"{what} {p!r}: expected a path (str or os.PathLike)")


def _input(p: object, what: str, image: str | None = None) -> tuple[str, str | None]:
    """An input as ``(path, image)``: a ``str`` may be a reference (``ocisquash.transports``) whose REF
    chooses the image, as ``image`` does; an ``os.PathLike`` is a path."""
    s = _path(p, what)
    if not isinstance(p, str):
        return s, image
    from ocisquash import transports

    return transports.input_ref(s, image)


def _check_cut(cut: object) -> Cut:
    if cut is None:
        return Cut.scratch()
    if not isinstance(cut, Cut):
        raise UsageError(f"cut={cut!r}: use Cut.scratch(), Cut.onto(...) or Cut.from_layer(...)")
    return cut


def _parent_spec(cut: Cut, src: str) -> str:
    """``SquashOptions.parent``: ``FILE:REF`` or ``FILE``. A parent in the input itself is spelt with the
    input's path too, so a reference that happens to be a file name in the current directory is still
    a reference."""
    where = cut.parent_path if cut.parent_path is not None else src
    if where == "-":
        raise UsageError("Cut.onto(ref) with standard input: the parent would need a second read of it",
                         hint="give the parent's file: Cut.onto(ref, path=...)")
    return where if cut.parent_ref is None else f"{where}:{cut.parent_ref}"


def _check_ref(ref: object) -> str | None:
    if ref is None or (isinstance(ref, str) and ref):
        return ref
    raise UsageError(f"image={ref!r}: a non-empty reference string (name:tag, digest or image ID)")


def _check_platform(platform: object) -> str | None:
    if platform is None:
        return None
    if not isinstance(platform, str):
        raise UsageError(f"platform={platform!r}: expected 'os/arch' or 'os/arch/variant', e.g. 'linux/arm64'")
    if platform.strip().lower() == ALL_PLATFORMS:
        return platform
    from ocisquash.model import Platform

    Platform.from_text(platform)  # the one check and message, the command line's
    return platform


def _check_tags(tags: object) -> list[str]:
    # A str is a Sequence[str] too: "app:1" would become six one-letter tags.
    if isinstance(tags, str) or not isinstance(tags, Sequence | set | frozenset):
        raise UsageError(f"tags={tags!r}: a list of name:tag strings")
    out = list(tags)
    for t in out:
        if not isinstance(t, str) or not t:
            raise UsageError(f"tag {t!r}: a non-empty name:tag string")
    return out


def _check_format(fmt: object) -> str | None:
    if fmt is None:
        return None
    if not isinstance(fmt, OutputFormat):
        raise UsageError(f"format={fmt!r}: use OutputFormat.DOCKER, OutputFormat.OCI or OutputFormat.OCI_DIR")
    return fmt.value


def _check_compression(c: object) -> Compression:
    if not isinstance(c, Compression):
        raise UsageError(f"compression={c!r}: use Compression.GZIP, Compression.ZSTD or Compression.NONE")
    return c


def _check_level(c: Compression, level: object) -> int | None:
    if level is None:
        return None
    if isinstance(level, bool) or not isinstance(level, int):
        raise UsageError(f"level={level!r}: an int")
    from ocisquash import compression

    lo, hi = compression.LEVEL_RANGE[compression.Codec(c.value)]
    if not lo <= level <= hi:
        raise UsageError(f"level={level} is out of range for {c.value}: {lo} to {hi}")
    return level


def _check_message(message: object) -> str | None:
    if message is None or isinstance(message, str):
        return message
    raise UsageError(f"message={message!r}: a string")


def _check_timestamp(t: object) -> str | None:
    if t is None:
        return None
    if not isinstance(t, dt.datetime):
        raise UsageError(f"timestamp={t!r}: a datetime.datetime with a time zone")
    if t.tzinfo is None or t.utcoffset() is None:
        raise UsageError(f"timestamp={t!r}: a naive datetime is ambiguous; give it a time zone, e.g. "
                         "datetime(..., tzinfo=timezone.utc)")
    return t.isoformat()
