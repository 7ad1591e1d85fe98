"""``--platform all``: every platform of one image squashed, and an index of the results written.

``squash`` decides how one image is squashed and reports it; this module chooses the platforms, has
each prepared (``Prepare``: its image loaded, its parent found) and squashed (``Job.run``), and writes
the index with the input's platforms and descriptor annotations, in a format that can hold one
(``sink.index_format``). Attestation manifests are dropped: they describe the unsquashed images (their
layers, their provenance), which the output no longer holds, so re-pointing them at the squashed images
would attest to something that was never built.

The platforms are independent: they are squashed at once, one thread each up to the cores there are
(the codecs and sha256 release the GIL), into the one sink as ``formats.staging`` allows, which keeps
the output's bytes those of one platform after another. The first platform (in the index's order) that
fails fails the run, and the sink aborts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar

from ocisquash import cores, formatlist, model, outnames, sink
from ocisquash.errors import FormatError, UsageError
from ocisquash.formats.commit import Sink, WrittenImage
from ocisquash.formats.staging import Cancellable, Staged
from ocisquash.image import Candidate, Image
from ocisquash.sources import Source

R = TypeVar("R")


@dataclass
class Job(Generic[R]):
    """One platform, prepared: its image loaded and its parent found, nothing written yet."""

    image: Image
    key: Hashable
    """Platforms whose jobs have one key (index entries naming one manifest, squashed onto one parent)
    are squashed once, and each gets the result."""
    run: Callable[[Sink | None, bool], tuple[R, WrittenImage | None]]
    """Squash into the sink (None: a dry run), reporting progress when told to; the report, what was written."""
    finish: Callable[[R], R]
    """This platform's report from the (maybe shared) run's: a copy, named for the platform."""


Prepare = Callable[[Candidate], Job[R]]


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
               dry_run: bool, prepare: Prepare[R], *, concurrent: bool = True,
               staging: str | None = None) -> Squashed[R]:
    """Squash every platform of the chosen image (``prepare`` each, then run the jobs, at once when
    ``concurrent``, staging blobs in ``staging`` when the sink needs it) and, unless a dry run, write
    an index of the results to ``dest`` and commit it."""
    cands = platforms_of(src, image)
    names = list(cands[0].names)
    write = dest is not None and not dry_run
    out_fmt = sink.index_format(dest, fmt) if dest is not None and write else None
    naming = out_fmt or (formatlist.output_format(dest, fmt) if dest is not None else None)
    out_tags, kept = outnames.names_for(naming, dest, names, tags)
    # Every platform is prepared before anything is written: a parent not found fails the run at once.
    jobs = [prepare(c) for c in cands]
    out = out_fmt.open_sink(dest) if out_fmt is not None and dest is not None else None
    done = Squashed[R]([], names, out_tags, kept)
    children: list[model.Descriptor] = []
    try:
        first = {j.key: j for j in reversed(jobs)}  # index entries naming one manifest: squashed once
        unique = [j for j in jobs if first[j.key] is j]
        workers = min(len(unique), cores.available()) if concurrent else 1
        results = dict(zip((j.key for j in unique), run_jobs(unique, out, workers, staging), strict=True))
        for job in jobs:
            report, written = results[job.key]
            done.reports.append(job.finish(report))
            if out is None or written is None:
                continue
            src_desc = job.image.manifest_descriptor
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


def run_jobs(jobs: list[Job[R]], out: Sink | None, workers: int,
             staging: str | None) -> list[tuple[R, WrittenImage | None]]:
    """Run ``jobs`` into ``out``: one after another (one worker, or a sink that cannot take images at
    once), else on ``workers`` threads, the first job reporting progress. The output is the same bytes
    either way, and so is the error: a failed job cancels the jobs after it (they could not be the
    first to fail) while those before it run on (one of them may fail too, and its error is the run's)."""
    if workers <= 1 or (out is not None and out.concurrency == "none"):
        return [job.run(out, True) for job in jobs]
    cancels = [threading.Event() for _ in jobs]
    sinks: list[Sink | None] = [None if out is None else Staged(out, staging, c) if out.concurrency == "staged"
                                else Cancellable(out, c) for c in cancels]
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ocisquash-platform") as pool:
            # each platform one core's worth while another runs (``cores``): the platforms fill the cores
            futures = [pool.submit(_sharing, job.run, s, i == 0)
                       for i, (job, s) in enumerate(zip(jobs, sinks, strict=True))]
            try:
                for f in as_completed(futures):
                    if f.exception() is not None:
                        for c in cancels[futures.index(f) + 1:]:
                            c.set()
            except BaseException:
                for c in cancels:
                    c.set()  # interrupted: the running jobs stop at their next write
                raise
        # the first failure in order is never a Cancelled one: only a failure before a job cancels it
        error = next((e for f in futures if (e := f.exception()) is not None), None)
        if error is not None:
            raise error
        results = [f.result() for f in futures]
        for s in sinks:
            if isinstance(s, Staged):
                s.replay()  # in the jobs' order: the bytes one job after another writes
        return results
    finally:
        for s in sinks:
            if isinstance(s, Staged):
                s.abort()


def _sharing(run: Callable[[Sink | None, bool], tuple[R, WrittenImage | None]], sink: Sink | None,
             first: bool) -> tuple[R, WrittenImage | None]:
    with cores.sharing():
        return run(sink, first)
