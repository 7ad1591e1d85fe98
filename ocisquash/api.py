"""The public library API: open an input, choose an image, squash or convert it, list and validate.

Everything here is re-exported by ``ocisquash`` (``import ocisquash; ocisquash.open(...)``). The work is
done by ``squash.squash``, ``convert.convert``, ``listing`` and ``validate``; this module is their facade:
``Source`` and ``Image``, and the one-shot functions. The typed options (``Compression``, ``OutputFormat``,
``Cut``, ``RegistryAccess``, ``ConvertReport``) are ``ocisquash.apitypes``'s, re-exported here, and each
argument is checked by ``ocisquash.apicheck``; the squash and the conversion take the typed values as
they are. The command line goes through this module too, parsing its strings with ``Compression.parse``,
``Cut.parse``, ``parse_filters`` and ``apitypes.parse_timestamp``, so the library and the CLI cannot
disagree. A wrong option raises ``UsageError`` before anything is read; every other failure is an
``OcisquashError`` subclass, as on the command line.

An ``Image`` holds its image open: squashing or writing it reads the image the caller inspected, from
the input as it was opened (a compressed tarball is not decompressed again, a registry tag not resolved
again), while its ``Source`` is open. The one-shot functions ``squash_image`` and ``convert_image`` open
and choose as the CLI does. (They are not called ``squash`` and ``convert``: those names are the
package's modules.)

The heavy modules (codecs, merge, sinks: ~60 ms to import) load inside the functions, for start-up time:
importing this module costs only ``enum``, ``dataclasses`` and ``datetime``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ocisquash import apicheck as check
from ocisquash.apitypes import (
    ALL_PLATFORMS,
    Compression,
    ConvertReport,
    Cut,
    OutputFormat,
    ParentImage,
    PathLike,
    RegistryAccess,
)
from ocisquash.digest import Digest
from ocisquash.errors import UsageError

if TYPE_CHECKING:
    from ocisquash import image as _image
    from ocisquash import sources as _sources
    from ocisquash.listing.analyze import Analysis
    from ocisquash.listing.history import HistoryRow
    from ocisquash.listing.images import Filters, ImageSummary
    from ocisquash.listing.images import Row as ImageRow
    from ocisquash.squash import Report as SquashReport
    from ocisquash.validate import Validation

__all__ = ["ALL_PLATFORMS", "Compression", "ConvertReport", "Cut", "Image", "OutputFormat", "PathLike",
           "RegistryAccess", "Source", "convert_image", "list_images", "open", "parse_filters", "registry_access",
           "safety_limits", "squash_image", "validate_input"]


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
        from ocisquash.listing import images as listing_images

        inner = self._open()
        if on_phase is not None:
            on_phase("reading images", len(inner.candidates))
        return listing_images.summarize(inner.candidates, exact=exact, on_image=on_image)

    def rows(self, summaries: Sequence[ImageSummary], filters: Filters | None = None, *, all_images: bool = False,
             image: str | None = None) -> list[ImageRow]:
        """The rows ``ocisquash images`` prints for ``summaries`` (from ``images()``): one per name
        (``<none>`` for an untagged image), newest first, kept by ``filters`` (``parse_filters``); images
        that others are built on only with ``all_images``; only the image ``image`` (else ``ref``) names, if
        given."""
        from ocisquash.listing import images as listing_images

        if filters is not None and not isinstance(filters, listing_images.Filters):
            raise UsageError(f"filters={filters!r}: build them with ocisquash.api.parse_filters([...])")
        inner = self._open()

        def resolve(ref: str) -> Any:  # before=REF, since=REF: the image ID REF names
            return inner.choose_candidate(ref).image_id

        rows = listing_images.select(list(summaries), filters or listing_images.Filters(), all_images=all_images,
                                     resolve=resolve)
        image = self._chosen(check.ref(image))
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
            check.platform(platform)
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
        image = self._chosen(check.ref(image))
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


class Image(ParentImage):
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
        from ocisquash.listing import history as listing_history

        return listing_history.history(self._inner, exact=exact)

    def analyze(self, *, top: int = 10, on_phase: Callable[[str, int | None], None] | None = None,
                on_layer: Callable[[int], None] | None = None) -> Analysis:
        """What each layer adds and how much of it later layers hide, with dive's efficiency figures, as
        ``ocisquash analyze`` shows them; ``top`` duplicated paths and hidden files are listed. Reads the
        layer headers once: ``on_phase("reading layer headers", layers)`` once, then
        ``on_layer(i)`` after each layer."""
        from ocisquash.listing import analyze as listing_analyze
        from ocisquash.squash import layer_inputs

        if on_phase is not None:
            on_phase("reading layer headers", len(self._inner.layers))
        return listing_analyze.analyze(self._inner, layer_inputs(self._inner), top=top, on_layer=on_layer)

    def squash(self, output: PathLike | None, *, cut: Cut | None = None, tags: Sequence[str] = (),
               format: OutputFormat | None = None, compression: Compression = Compression.GZIP,
               level: int | None = None, message: str | None = None, timestamp: dt.datetime | None = None,
               rewrite_timestamp: bool = False, on_phase: Callable[[str, int | None], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> SquashReport:
        """Squash this image, as it was read when it was chosen; see ``ocisquash.squash_image`` for every
        option."""
        return _squash(self.source.path, output, self._ref, self._platform, cut, tags, format, compression, level,
                       message, timestamp, rewrite_timestamp, on_phase, on_progress, self._opened())

    def write(self, output: PathLike, *, format: OutputFormat | None = None, tags: Sequence[str] = (),
              compression: Compression | None = None, level: int | None = None) -> ConvertReport:
        """Write this image unchanged (or with its layers recompressed) to ``output``, as it was read when
        it was chosen; see ``ocisquash.convert_image``."""
        return _convert(self.source.path, output, self._ref, self._platform, format, tags, compression, level,
                        None, None, None, self._opened())

    def _opened(self) -> tuple[_sources.Source, _image.Image, str | None]:
        """The open input, this image and the note on how it was chosen: what a squash or a write reads
        instead of opening the input again."""
        src = self.source._open()
        self._inner.check_consistent()
        return src, self._inner, self.note

    def _parent_location(self) -> tuple[str, str]:
        # Its digest names exactly this image (a platform's own manifest, in a multi-platform index).
        return self.source.path, self.manifest_digest or self.id

    def _parent_held(self) -> tuple[str, tuple[str, ...], Digest | None, Digest, tuple[Digest, ...]]:
        i = self._inner
        return i.label, tuple(i.names), i.manifest_digest, i.id, tuple(i.config.diff_ids)

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
    p, ref = check.input_ref(path, "path")
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
    - ``cut``: ``Cut.scratch()`` (the default), ``Cut.onto(parent)``, ``Cut.auto()`` (the base found by
      itself; the report's ``parent_rule`` and ``parent_image`` say how and which), ``Cut.from_layer(n)`` or
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
    src, image = check.input_ref(input, "input", check.ref(image))
    return _squash(src, output, image, platform, cut, tags, format, compression, level, message, timestamp,
                   rewrite_timestamp, on_phase, on_progress)


def _squash(src: str, output: object, image: str | None, platform: object, cut: object, tags: object,
            format: object, compression: object, level: object, message: object, timestamp: object,
            rewrite_timestamp: object, on_phase: Callable[[str, int | None], None] | None,
            on_progress: Callable[[int], None] | None,
            opened: tuple[_sources.Source, _image.Image, str | None] | None = None) -> SquashReport:
    """``squash_image`` once its input is known: each option checked, in the command line's order."""
    from ocisquash import squash as squash_lib

    typed_cut = check.cut(cut)
    plat, names, fmt = check.platform(platform), check.tags(tags), check.output_format(format)
    codec = check.compression(compression)
    opts = squash_lib.SquashOptions(
        image=image, platform=plat, tags=names, fmt=fmt, compression=codec.codec,
        level=check.level(codec, level), message=check.message(message), timestamp=check.timestamp(timestamp),
        cut=typed_cut,
    )
    if not isinstance(rewrite_timestamp, bool):
        raise UsageError(f"rewrite_timestamp={rewrite_timestamp!r}: True or False")
    opts.rewrite_timestamp = rewrite_timestamp
    dest = None if output is None else check.path(output, "output")
    opts.dry_run = dest is None
    return squash_lib.squash(src, dest, opts, on_phase=on_phase, on_progress=on_progress, opened=opened)


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
    src, image = check.input_ref(input, "input", check.ref(image))
    return _convert(src, output, image, platform, format, tags, compression, level, on_step, on_phase, on_bytes)


def _convert(src: str, output: object, image: str | None, platform: object, format: object, tags: object,
             compression: object, level: object, on_step: Callable[[str], None] | None,
             on_phase: Callable[[str, int | None], None] | None, on_bytes: Callable[[int], None] | None,
             opened: tuple[_sources.Source, _image.Image, str | None] | None = None) -> ConvertReport:
    """``convert_image`` once its input is known: each option checked, in the command line's order."""
    from ocisquash import convert as convert_lib

    dest = check.path(output, "output")
    given = None if compression is None else check.compression(compression)
    result = convert_lib.convert(
        src, dest, image=image, platform=check.platform(platform), tags=check.tags(tags),
        fmt=check.output_format(format), compression=None if given is None else given.codec,
        level=None if given is None else check.level(given, level),
        on_step=on_step, on_start=on_phase, on_bytes=on_bytes, opened=opened,
    )
    return ConvertReport(image=result["image"], output=result["output"], format=OutputFormat(result["format"]),
                         tags=list(result["tags"]), manifest=result["manifest"], config=result["config"],
                         layers=list(result["layers"]), note=result["note"])


def parse_filters(filters: Sequence[str]) -> Filters:
    """Docker's image filters, ``KEY=VALUE`` each (``dangling=true|false``, ``label=KEY[=VALUE]``,
    ``before=REF``, ``since=REF``, ``reference=GLOB``), checked and grouped for ``Source.rows``; a bad
    one raises ``UsageError`` before any input is read."""
    from ocisquash.listing import images as listing_images

    if isinstance(filters, str) or not isinstance(filters, Sequence):
        raise UsageError(f"filters={filters!r}: a list of KEY=VALUE strings")
    return listing_images.Filters.parse(filters)


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
