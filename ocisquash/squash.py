"""Building the squashed image: where to cut, the new config and history, and the report.

The merge of layer contents lives in ``merge``; this module decides which layers are kept (a parent
image's, or those below ``--from-layer``), writes the kept layers byte for byte and the merged one,
and rewrites the config the way ``docker build --squash`` did: ``rootfs.diff_ids`` = kept + new, the
squashed range's history entries marked ``empty_layer``, one entry added saying what happened.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, BinaryIO, cast

from ocisquash import (
    autoparent,
    compression,
    formatlist,
    merge,
    model,
    outnames,
    registry,
    spool,
    squashindex,
    transfer,
)
from ocisquash.apitypes import Cut, OutputFormat, parse_timestamp
from ocisquash.digest import Digest
from ocisquash.errors import FormatError, UsageError, printable
from ocisquash.formats.commit import Sink, WrittenImage
from ocisquash.image import Candidate, Check, Image, Layer
from ocisquash.samefile import refuse_overlap
from ocisquash.sources import Source, host_platform, open_source
from ocisquash.streams import LayerStream


@dataclass
class SquashOptions:
    image: str | None = None
    platform: str | None = None
    cut: Cut = field(default_factory=Cut.scratch)
    tags: list[str] = field(default_factory=list)
    fmt: OutputFormat | None = None  # None: from the output's path
    compression: compression.Codec = compression.Codec.GZIP
    level: int | None = None  # None: the codec's default
    message: str | None = None
    timestamp: dt.datetime | None = None  # None: SOURCE_DATE_EPOCH, else now
    rewrite_timestamp: bool = False  # the new layer's times later than the timestamp set to it
    dry_run: bool = False


@dataclass
class Report:
    """What a squash did (or, dry run, would do): layers and sizes before and after, hidden files dropped,
    and the digests written; ``to_json()`` is the CLI's ``--json``."""

    image: str
    output: str | None
    squashed: bool
    layers_before: int
    layers_after: int
    kept_layers: int
    bytes_before_uncompressed: int
    bytes_after_uncompressed: int | None
    bytes_before_compressed: int | None
    """The stored layers' size, None when some were stored uncompressed (a ``docker save`` tarball):
    their stored size is no compressed size to compare with the output's."""
    bytes_after_compressed: int | None
    files_dropped: int
    bytes_dropped: int
    seconds: float
    tags: list[str] = field(default_factory=list)
    tags_kept_from_input: bool = False
    """No ``--tag``: the output carries the input's names (``docker load`` moves them onto it)."""
    saving: float | None = None
    """The fraction of the size the squash saves, like for like: compressed sizes when both are known,
    else uncompressed ones (``saving_basis`` says which)."""
    saving_basis: str | None = None
    compressed_note: str | None = None
    """Why a compressed size is missing, when one is."""
    platforms: list[dict[str, Any]] | None = None  # --platform all: each platform's own report
    manifest: str | None = None
    config: str | None = None
    diff_id: str | None = None
    note: str | None = None
    dry_run: bool = False
    mtimes_clamped: int | None = None
    """``--rewrite-timestamp``: entries of the new layer whose times were set back to the timestamp."""
    parent_rule: str | None = None
    """``--parent auto``: the rule that found the base, ``annotation`` or ``shared layers``."""
    parent_image: str | None = None
    """``--parent auto``: the base found (``kept_layers`` says how many of its layers are kept)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def compare(self, before_stored_compressed: bool | None, after_stored_compressed: bool | None) -> None:
        """Set ``saving``, its basis and ``compressed_note``. ``*_stored_compressed``: whether every
        layer of that side is stored compressed (None: some are, some are not)."""
        notes = []
        if before_stored_compressed is not True:
            self.bytes_before_compressed = None
            notes.append(f"{'some ' if before_stored_compressed is None else ''}input layers were stored uncompressed")
        # a dry run has no compressed size after (nothing is compressed), unless nothing is squashed
        if after_stored_compressed is not True and (not self.dry_run or self.bytes_after_compressed is not None):
            self.bytes_after_compressed = None
            notes.append(f"{'some ' if after_stored_compressed is None else ''}output layers are stored uncompressed")
        self.compressed_note = "; ".join(notes) or None
        before, after, basis = self.bytes_before_compressed, self.bytes_after_compressed, "compressed"
        if before is None or after is None:
            before, after, basis = self.bytes_before_uncompressed, self.bytes_after_uncompressed, "uncompressed"
        if after is not None and before:
            self.saving, self.saving_basis = round(1 - after / before, 4), basis


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def rfc3339(t: dt.datetime) -> str:
    t = t.astimezone(dt.UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_cut(image: Image, from_layer: int | str | None, parent_ids: list[Digest] | None) -> int:
    """How many bottom layers to keep: above the parent's (``parent_ids``), or below ``from_layer`` (a
    position, 1 the bottom and -1 the top, or a layer's digest or diff ID)."""
    n = len(image.layers)
    if parent_ids is not None:
        if from_layer is not None:
            raise UsageError("give --parent or --from-layer, not both")
        if list(image.config.diff_ids[: len(parent_ids)]) != parent_ids:
            raise FormatError(f"the parent's {len(parent_ids)} layers are not the bottom layers of {image.label}: "
                              "its diff IDs are not a prefix of the image's",
                              hint="pick the image this one was built FROM, or use --from-layer")
        return len(parent_ids)
    if from_layer is None:
        return 0
    if isinstance(from_layer, int):
        pos = from_layer
        if pos == 0 or pos > n or pos < -n:
            raise UsageError(f"--from-layer {pos}: the image has {n} layers (use 1..{n}, or -1..-{n} from the top)")
        return pos - 1 if pos > 0 else n + pos
    text = from_layer.strip()
    for i, layer in enumerate(image.layers):
        for d in (layer.digest, layer.diff_id):
            if d is not None and (str(d) == text or (len(text) >= 12 and d.encoded.startswith(text.split(":")[-1]))):
                return i
    raise UsageError(f"--from-layer {text!r}: no layer of {image.label} has that digest or diff ID",
                     hint="use a position: 1 is the bottom layer, -3 squashes the last 3 layers")


def squashed_config(image: Image, keep: int, new_diff_id: Digest, created: dt.datetime, comment: str,
                    rewrite_timestamp: bool = False) -> bytes:
    """The config of the squashed image: everything kept, but diff IDs, history and creation time.
    ``rewrite_timestamp``: the history entries after the last kept layer's (the squashed layers' and
    the steps between them: buildah marks all but a build's last step empty) created later than
    ``created`` get ``created``, as their files' times do (two builds differ there too)."""
    obj: dict[str, Any] = copy.deepcopy(image.config.obj)
    when = rfc3339(created)
    rootfs = dict(obj["rootfs"])
    rootfs["diff_ids"] = [str(d) for d in image.config.diff_ids[:keep]] + [str(new_diff_id)]
    obj["rootfs"] = rootfs
    obj["created"] = when
    history = obj.get("history")
    if isinstance(history, list) and history:
        out = []
        seen = 0
        for h in history:
            h = dict(h) if isinstance(h, dict) else h
            above = seen >= keep  # an empty entry after the last kept layer's: a build step above the cut
            if isinstance(h, dict) and h.get("empty_layer") is not True:
                seen += 1
                above = seen > keep
                if above:
                    h["empty_layer"] = True
            if rewrite_timestamp and above and isinstance(h, dict) and _later_than(h.get("created"), created):
                h["created"] = when
            out.append(h)
        out.append({"created": when, "created_by": "ocisquash squash", "comment": comment})
        obj["history"] = out
    return model.canonical_json(obj)


def _later_than(text: object, t: dt.datetime) -> bool:
    """Whether a history entry's ``created`` is an RFC 3339 time after ``t`` (not one: left alone)."""
    try:
        when = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        return when.tzinfo is not None and when > t
    except ValueError:
        return False


def layer_inputs(image: Image, *, verify_scan: bool = True) -> list[merge.LayerInput]:
    """The merge's view of the layers. ``verify_scan=False`` when every layer is read again, verified,
    before the output is published (kept layers are copied, squashed ones merged): the header pass
    then skips hashing, so each layer is hashed once."""
    return [_layer_input(ly, verify_scan) for ly in image.layers]


def _layer_input(ly: Layer, verify_scan: bool) -> merge.LayerInput:
    scan_check = Check.ALL if verify_scan else Check.NONE
    scan = ly.plain_file if ly.is_plain_file else _as_file(partial(ly.uncompressed, scan_check))
    if verify_scan or ly.is_plain_file or ly.digest is None:
        return merge.LayerInput(label=ly.what, open=_as_file(ly.uncompressed), open_scan=scan, work=ly.size,
                                plain=ly.is_plain_file)
    # A compressed layer: pass 1 decompresses it anyway, so it checks the diff ID there (on a worker);
    # pass 2 then checks only the blob digest, which proves it reads the same bytes, and stops
    # decompressing after the last content it needs (the stream's ``skip_rest``).
    return merge.LayerInput(label=ly.what, open=_as_file(partial(ly.uncompressed, Check.BLOB)),
                            open_scan=_as_file(ly.uncompressed), work=ly.size, open_once=_as_file(ly.uncompressed))


def _as_file(open_stream: Callable[[], LayerStream]) -> Callable[[], BinaryIO]:
    # The merge reads its inputs through read, readinto, seekable and close, which a LayerStream has;
    # it declares them BinaryIO because it imports nothing of ocisquash but errors and limits.
    return cast("Callable[[], BinaryIO]", open_stream)


def squash(src_path: str, dest: str | None, opts: SquashOptions,
           on_phase: Callable[[str, int | None], None] | None = None,
           on_progress: Callable[[int], None] | None = None, *,
           opened: tuple[Source, Image, str | None] | None = None) -> Report:
    """Squash an image of ``src_path`` into ``dest`` (None: a dry run) as ``opts`` say. ``opened``: the
    input already open, the image chosen in it and the note on that choice (``ocisquash.Image.squash``),
    squashed as it is, without opening the input or choosing again."""
    t0 = time.monotonic()
    codec = opts.compression
    level = compression.check_level(codec, opts.level)
    created = opts.timestamp if opts.timestamp is not None else parse_timestamp(None)
    if opts.rewrite_timestamp and opts.timestamp is None and not os.environ.get("SOURCE_DATE_EPOCH"):
        raise UsageError("--rewrite-timestamp needs a time to clamp to",
                         hint="give --timestamp T or set SOURCE_DATE_EPOCH")
    for flag, values in (("--message", [opts.message or ""]), ("--tag", opts.tags)):
        for v in values:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # undecodable bytes of argv arrive as lone surrogates
                raise UsageError(f"{flag} {printable(v)!r}: not valid UTF-8 text") from None
    every = opts.platform is not None and opts.platform.strip().lower() == ALL_PLATFORMS
    read = [("IN", src_path)]
    if opts.cut.kind in ("parent", "auto"):
        read.append(("--parent", opts.cut.parent_path or src_path))
    registry.check_credentials([path for _, path in read], None if opts.dry_run else dest)
    if not opts.dry_run:
        refuse_overlap(dest, read)
    with nullcontext(opened[0]) if opened else open_source(src_path, spool.beside(dest)) as src:
        if every:
            return _squash_every_platform(src, src_path, dest, opts, codec, level, created, t0, on_phase,
                                          on_progress)
        image, platform_note = opened[1:] if opened else src.choose_default(opts.image, opts.platform)
        # a multi-platform image taken for the default platform has its parent taken for the same one
        parent_platform = opts.platform or (host_platform() if platform_note else None)
        parent = autoparent.named(opts.cut, src, src_path, parent_platform)
        found = None
        if opts.cut.kind == "auto":
            found = autoparent.find_in(image, src, src_path, opts.cut.parent_path, parent_platform)
            parent = found.base
        out_fmt = formatlist.output_format(dest, opts.fmt) if dest is not None else None
        # OUT is IN's own layout directory: the squashed image goes beside the original
        same_layout = out_fmt is not None and out_fmt.holds_many and dest is not None and os.path.isdir(dest) and \
            os.path.isdir(src_path) and os.path.samefile(dest, src_path)
        tags, kept_names = outnames.names_for(out_fmt, dest, image.names, opts.tags, same_layout=same_layout)
        if opts.dry_run or dest is None or out_fmt is None:
            report, _ = _squash_one(image, None, parent, opts, codec, level, created, tags, on_phase, on_progress)
            report.output, report.tags_kept_from_input = dest, kept_names
            report.seconds = round(time.monotonic() - t0, 3)
            return _with_note(_found(report, found), platform_note)
        out = out_fmt.open_sink(dest)
        try:
            report, written = _squash_one(image, out, parent, opts, codec, level, created, tags, on_phase,
                                          on_progress)
            out.commit()
        except BaseException:
            out.abort()
            raise
    report.output, report.tags_kept_from_input = dest, kept_names
    report.manifest = str(written.manifest.digest)
    report.config = str(written.config_digest)
    report.seconds = round(time.monotonic() - t0, 3)
    return _with_note(_found(report, found), platform_note)


def _found(report: Report, found: autoparent.Found | None) -> Report:
    if found is not None:
        report.parent_rule, report.parent_image = found.rule, found.base.label
    return report


def _with_note(report: Report, note: str | None) -> Report:
    if note:
        report.note = f"{note}; {report.note}" if report.note else note
    return report


ALL_PLATFORMS = "all"


def _squash_every_platform(src: Source, src_path: str, dest: str | None, opts: SquashOptions,
                           codec: compression.Codec, level: int | None, created: dt.datetime, t0: float,
                           on_phase: Callable[[str, int | None], None] | None,
                           on_progress: Callable[[int], None] | None) -> Report:
    """``--platform all`` (``squashindex``): each platform squashed with its own ``--parent`` (``--parent
    auto``: each finds its own base); one report, each platform's within it."""

    def prepare(c: Candidate) -> squashindex.Job[Report]:
        image = c.load()
        parent = autoparent.named(opts.cut, src, src_path, c.platform)
        auto = opts.cut.kind == "auto"
        found = autoparent.found_for_platform(image, src, src_path, opts.cut, c.platform) if auto else None
        if found is not None:
            parent = found.base

        def run(out: Sink | None, progress: bool) -> tuple[Report, WrittenImage | None]:
            return _squash_one(image, out, parent, opts, codec, level, created, [], on_phase if progress else None,
                               on_progress if progress else None)

        def finish(report: Report) -> Report:
            # a copy: index entries naming one manifest share one run (and its report)
            report = _found(copy.copy(report), found)
            report.image = f"{image.label} [{c.platform or '?'}]"
            return report

        # Index entries of several platforms may share one manifest: it is squashed once (per parent) and
        # each entry gets the result, so every platform of the input is one of the output.
        key = (c.manifest_digest or id(c), parent.diff_ids if parent is not None else None)
        return squashindex.Job(image, key, run, finish)

    # A registry input is read one platform at a time: its client and connections are shared.
    res = squashindex.squash_all(src, dest, opts.fmt, opts.image, opts.tags, opts.dry_run, prepare,
                                 concurrent=not registry.is_registry_ref(src_path),
                                 staging=spool.beside(dest) if dest is not None else None)
    reports = res.reports
    total = Report(
        image=f"{res.names[0] if res.names else src.label} ({len(reports)} platforms)", output=dest,
        squashed=any(r.squashed for r in reports),
        layers_before=sum(r.layers_before for r in reports), layers_after=sum(r.layers_after for r in reports),
        kept_layers=sum(r.kept_layers for r in reports),
        bytes_before_uncompressed=sum(r.bytes_before_uncompressed for r in reports),
        bytes_after_uncompressed=_sum_or_none([r.bytes_after_uncompressed for r in reports]),
        bytes_before_compressed=_sum_or_none([r.bytes_before_compressed for r in reports]),
        bytes_after_compressed=_sum_or_none([r.bytes_after_compressed for r in reports]),
        files_dropped=sum(r.files_dropped for r in reports), bytes_dropped=sum(r.bytes_dropped for r in reports),
        seconds=round(time.monotonic() - t0, 3), tags=res.tags, dry_run=opts.dry_run,
        manifest=str(res.index.digest) if res.index is not None else None,
        platforms=[r.to_json() for r in reports], tags_kept_from_input=res.tags_kept_from_input,
        mtimes_clamped=_sum_or_none([r.mtimes_clamped for r in reports]),
    )
    total.compare(all_or_none([r.bytes_before_compressed is not None for r in reports]),
                  None if opts.dry_run else all_or_none([r.bytes_after_compressed is not None for r in reports]))
    total.note = res.note
    rules = {r.parent_rule for r in reports}
    if opts.cut.kind == "auto" and len(rules) == 1:
        # one rule found every platform's base: said once, with the bases (each platform's report has its own)
        total.parent_rule = rules.pop()
        total.parent_image = ", ".join(dict.fromkeys(str(r.parent_image) for r in reports))
    return total


def all_or_none(flags: list[bool]) -> bool | None:
    """True when every flag is, False when none is, None when some are."""
    return True if all(flags) else False if not any(flags) else None


def stored_compressed(ly: Layer) -> bool:
    """Whether a layer's stored bytes are compressed (its codec, else its media type, else whether its
    digest differs from its diff ID)."""
    codec = ly.codec
    if codec is None and ly.media_type is not None:
        codec = compression.codec_of_media_type(ly.media_type)
    if codec is None:
        return ly.digest is not None and ly.digest != ly.diff_id and not ly.is_plain_file
    return codec is not compression.Codec.NONE


def _sum_or_none(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def _squash_one(image: Image, out: Sink | None, parent: autoparent.Known | None,
                opts: SquashOptions, codec: compression.Codec, level: int | None, created: dt.datetime,
                tags: list[str], on_phase: Callable[[str, int | None], None] | None,
                on_progress: Callable[[int], None] | None) -> tuple[Report, WrittenImage]:
    """Squash one image into ``out`` (None: a dry run, only the report); the caller commits."""
    image.check_consistent()
    parent_ids = list(parent.diff_ids) if parent is not None else None
    keep = resolve_cut(image, opts.cut.layer, parent_ids)
    n = len(image.layers)
    before_c = sum(ly.size for ly in image.layers)
    inputs = layer_inputs(image, verify_scan=out is None)
    # One layer above the cut is still squashed, as moby's SquashImage(id, parent) does: it
    # writes that layer again (the daemon's diff of it against the parent) in a new image whose
    # history follows the squash convention. Only no layer at all leaves nothing to do.
    nothing = n == keep
    clamp = (created - _EPOCH) // dt.timedelta(seconds=1) if opts.rewrite_timestamp else None

    def new_report(plan: merge.MergePlan) -> Report:
        stats = plan.totals()
        report = Report(
            image=image.label, output=None, squashed=not nothing, layers_before=n,
            layers_after=n if nothing else keep + 1, kept_layers=keep,
            bytes_before_uncompressed=stats["bytes_before"], bytes_after_uncompressed=None,
            bytes_before_compressed=before_c, bytes_after_compressed=None,
            files_dropped=stats["files_dropped"], bytes_dropped=stats["bytes_dropped"],
            seconds=0.0, tags=tags, dry_run=opts.dry_run,
            mtimes_clamped=None if clamp is None else plan.layout.clamped,
        )
        if nothing:
            report.note = "nothing to squash: no layers above the cut; written unchanged"
            report.bytes_after_uncompressed = report.bytes_before_uncompressed
            report.bytes_after_compressed = before_c
            report.files_dropped = report.bytes_dropped = 0
        elif out is None:
            report.bytes_after_uncompressed = stats["bytes_after"]
        return report

    packed = [stored_compressed(ly) for ly in image.layers]
    before_packed, kept_packed = all_or_none(packed), packed[:keep]
    if out is None or nothing:
        if on_phase:
            on_phase("reading layers", None)
        report = new_report(merge.plan(inputs, keep, clamp_mtime=clamp))
        report.compare(before_packed, before_packed if nothing else None)
        if out is None:
            return report, None  # type: ignore[return-value]
        written = transfer.write_image(out, image, transfer.plan_convert(image, None, None), tags=tags)
        return report, written
    plans: list[merge.MergePlan] = []

    squashed = image.layers[keep:]
    # Progress counts uncompressed bytes: a total is known only when the layers are plain.
    plain = sum(ly.size for ly in squashed) if all(ly.is_plain_file for ly in squashed) else None

    def planned(plan: merge.MergePlan) -> None:
        plans.append(plan)
        left = plan.bytes_to_copy()
        if on_phase and left:
            on_phase("copying", left)

    def produce(w: BinaryIO) -> None:
        # Each squashed layer read once.
        if on_phase:
            on_phase("squashing", plain)
        merge.stream(inputs, keep, w, progress=on_progress, on_plan=planned, clamp_mtime=clamp)

    new_layers = [transfer.OutLayer("copy", ly) for ly in image.layers[:keep]]
    # docker's figure for the new layer rides along (model.DOCKER_SIZE): listings show it without reading it
    new_layers.append(transfer.OutLayer("generate", codec=codec, level=level, produce=produce, annotate=lambda: {
        model.DOCKER_SIZE: str(plans[-1].layout.unpacked_bytes())}))
    results: list[transfer.LayerResult] = []
    written = _write_squashed(out, image, keep, new_layers, tags, created, opts, parent, results)
    report = new_report(plans[-1])
    report.bytes_after_compressed = sum(r.descriptor.size for r in results)
    # a kept layer a registry already had (or mounted) was not copied: its size is the scan's count
    kept_unc = sum(r.uncompressed_size if r.uncompressed_size is not None else plans[-1].layers[i].tar_bytes
                   for i, r in enumerate(results[:-1]))
    report.bytes_after_uncompressed = kept_unc + (results[-1].uncompressed_size or 0)
    report.diff_id = str(results[-1].diff_id)
    report.compare(before_packed, all_or_none([*kept_packed, codec is not compression.Codec.NONE]))
    return report, written


def _write_squashed(out: Sink, image: Image, keep: int, layers: list[transfer.OutLayer],
                    tags: list[str], created: dt.datetime, opts: SquashOptions,
                    parent: autoparent.Known | None, results: list[transfer.LayerResult]) -> WrittenImage:
    docker_family = bool(image.manifest and image.manifest.is_docker and out.docker)
    for ol in layers:
        results.append(transfer.write_layer(out, ol, docker_family))
    new_diff = results[-1].diff_id
    # --rewrite-timestamp: two builds of one source differ in their image IDs, so the comment names none
    what = "" if opts.rewrite_timestamp else f" {image.id}"
    if opts.message:
        comment = opts.message
    elif keep == 0:
        comment = f"create new from{what}" if what else "create new"
    elif parent is not None:
        comment = f"merge{what} to {parent.image_id}"
    else:
        comment = f"merge{what} to layer {keep} ({image.config.diff_ids[keep - 1]})"
    cfg = squashed_config(image, keep, new_diff, created, comment, opts.rewrite_timestamp)
    annotations = autoparent.squashed_annotations(image.manifest.annotations if image.manifest else {}, keep, parent)
    return transfer.finish_image(out, image, results, cfg, tags, docker_family, annotations=annotations)
