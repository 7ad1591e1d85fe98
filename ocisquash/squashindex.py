"""``--platform all``: every platform of one image squashed, and an index of the results written.

``squash`` decides how one image is squashed and reports it; this module chooses the platforms, has
each squashed (``SquashPlatform``), and writes the index with the input's platforms and descriptor
annotations, in a format that can hold one (``sink.index_format``). Attestation manifests are dropped:
they describe the unsquashed images (their layers, their provenance), which the output no longer
holds, so re-pointing them at the squashed images would attest to something that was never built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ocisquash import formatlist, model, outnames, sink
from ocisquash.errors import FormatError, UsageError
from ocisquash.formats.commit import Sink, WrittenImage
from ocisquash.image import Candidate, Image
from ocisquash.sources import Source

R = TypeVar("R")

SquashPlatform = Callable[[Candidate, Sink | None], tuple[R, Image, WrittenImage | None]]
"""Squash one platform's image into the sink (None: a dry run); its report, the image, what was written."""


@dataclass
class Squashed(Generic[R]):
    """What ``squash_all`` did: each platform's report, the index written, the output's names."""

    reports: list[R]
    names: list[str]
    tags: list[str]
    tags_kept_from_input: bool
    index: model.Descriptor | None = None
    attestations_dropped: int = 0

    @property
    def note(self) -> str | None:
        """What the report says of the attestation manifests dropped, if any were."""
        n = self.attestations_dropped
        return (f"dropped {n} attestation manifest{'s' if n > 1 else ''}: they describe the unsquashed images, "
                "which the output does not hold") if n else None


def platforms_of(src: Source, image: str | None) -> list[Candidate]:
    """Every platform of the one image ``image`` names (all of the source when None), each naming one."""
    cands = src.matching(image)
    if not cands:
        raise UsageError(f"{src.label}: no image matches {image!r}")
    groups = {tuple(c.names) for c in cands}
    if len(groups) > 1:
        raise UsageError(f"{src.label}: --platform all needs one image; it holds {len(groups)}",
                         hint="choose one with --image")
    for c in cands:
        # --platform's rule: each image is for one platform (its index entry's, else its config's), and
        # each platform's --parent is chosen for it; without one there is no parent to choose or index
        # entry to write.
        if c.platform is None or len([p for p in c.platform.split("/") if p]) < 2:
            what = c.names[0] if c.names else str(c.manifest_digest or c.image_id)
            raise FormatError(f"{src.label}: {what} names no platform (neither its index entry nor its config "
                              "gives os and architecture)", hint="squash it without --platform all")
    return cands


def squash_all(src: Source, dest: str | None, fmt: str | None, image: str | None, tags: list[str],
               dry_run: bool, squash_one: SquashPlatform[R]) -> Squashed[R]:
    """Squash every platform of the chosen image with ``squash_one`` and, unless a dry run, write an
    index of the results to ``dest`` and commit it."""
    cands = platforms_of(src, image)
    names = list(cands[0].names)
    write = dest is not None and not dry_run
    out_fmt = sink.index_format(dest, fmt) if dest is not None and write else None
    naming = out_fmt or (formatlist.output_format(dest, fmt) if dest is not None else None)
    out_tags, kept = outnames.names_for(naming, dest, names, tags)
    out = out_fmt.open_sink(dest) if out_fmt is not None and dest is not None else None
    done = Squashed[R]([], names, out_tags, kept)
    children: list[model.Descriptor] = []
    try:
        for c in cands:
            report, img, written = squash_one(c, out)
            done.reports.append(report)
            if out is None or written is None:
                continue
            src_desc = img.manifest_descriptor
            ann = {k: v for k, v in (src_desc.annotations if src_desc else {}).items()
                   if k not in (model.REF_NAME, model.CONTAINERD_NAME)}
            plat = (src_desc.platform if src_desc is not None and src_desc.platform is not None
                    else written.platform)
            children.append(model.Descriptor(written.manifest.media_type, written.manifest.digest,
                                             written.manifest.size, ann, plat))
        if out is not None:
            docker = all(d.media_type == model.DOCKER_MANIFEST for d in children)
            mt = model.DOCKER_LIST if docker else model.OCI_INDEX
            data = model.canonical_json({"schemaVersion": 2, "mediaType": mt,
                                         "manifests": [d.to_json() for d in children]})
            d, size = out.put_bytes(data)
            done.index = model.Descriptor(mt, d, size)
            # The index stands for the platforms' images: it alone is named in the output.
            out.images[:] = [WrittenImage(manifest=done.index, config_digest=d, layer_digests=[], tags=out_tags)]
            out.commit()
    except BaseException:
        if out is not None:
            out.abort()
        raise
    done.attestations_dropped = src.format.attestations(src.tree, names)
    return done
