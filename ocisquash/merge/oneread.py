"""The merge a squash runs: each squashed layer read once, top down, its bodies spooled."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from ocisquash.merge.layerwrite import Spool, Writer, write_layer
from ocisquash.merge.plan import MergePlan, finish_plan
from ocisquash.merge.records import IMPLICIT, LayerInput, LayerStats, MergeLimits, WriteStats, gc_paused
from ocisquash.merge.tarread import Hdr, Source, clean_name, components, read_layer
from ocisquash.merge.tree import AUFS, OPAQUE, Applier, Dir, copy_tree
from ocisquash.merge.workers import read_layers


class Hits:
    """What the layers above a layer name, to guess which of its files they leave alone.

    A path is hit when a layer above has an entry or a whiteout at it, or at an ancestor as a
    non-directory, a whiteout or an opaque directory. Names are taken as spelled (cleaned, not
    resolved through symlinks): a wrong guess is caught once the plan is complete.
    """

    def __init__(self) -> None:
        self.exact: set[str] = set()
        self.below: set[str] = set()  # every path strictly under one of these is hit
        self.linked: set[str] = set()  # hardlink targets named above: a hit body may live on there
        self.all = False

    def add(self, headers: Iterator[Hdr]) -> None:
        exact, below = self.exact, self.below
        for h in headers:
            comps = components(h.name)
            if not comps or comps[0] in AUFS:
                continue
            base = comps[-1]
            if base.startswith(".wh."):
                parent = "/".join(comps[:-1])
                if base == OPAQUE:
                    if not parent:
                        self.all = True
                    below.add(parent)
                else:
                    gone = f"{parent}/{base[4:]}" if parent else base[4:]
                    exact.add(gone)
                    below.add(gone)
                continue
            path = "/".join(comps)
            exact.add(path)
            if h.type != "5":
                below.add(path)
            if h.type == "1":
                target = clean_name(h.linkname)
                if target:
                    self.linked.add(target)

    def hit(self, path: str) -> bool:
        if path in self.linked:
            return False
        if self.all or path in self.exact:
            return True
        below = self.below
        i = path.rfind("/")
        while i > 0:
            path = path[:i]
            if path in below:
                return True
            i = path.rfind("/")
        return False


def stream(
    layers: Sequence[LayerInput],
    keep: int,
    out: BinaryIO,
    *,
    limits: MergeLimits | None = None,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[MergePlan], None] | None = None,
    spool_dir: str | None = None,
    clamp_mtime: int | None = None,
) -> tuple[MergePlan, WriteStats]:
    """``plan`` and ``write`` in one, reading each squashed layer once (a gzip layer is inflated once).

    The kept layers' headers are read first. The squashed layers are then read top down, each in
    full and verified: its headers are kept, and each regular file's contents go to a temporary file
    (``Spool``, in ``spool_dir`` or TMPDIR) unless a layer above names its path (``Hits``: those
    are certainly hidden). Then every header is applied bottom up, as ``plan`` does (``on_plan`` sees
    the plan), and the merged layer is written in the one order ``write`` uses, contents copied from
    the temporary file. A body the guess left out but the plan wants (a hardlink's target whiteout
    above, a name reached through a symlink) is copied by a second read of its layer alone;
    ``WriteStats.refetched`` counts those bodies. ``clamp_mtime`` is ``plan``'s.

    Memory: the headers of the squashed layers are held until they are applied.
    """
    with gc_paused():
        return _stream(layers, keep, out, limits, progress, on_plan, spool_dir, clamp_mtime)


def _stream(
    layers: Sequence[LayerInput], keep: int, out: BinaryIO, limits: MergeLimits | None,
    progress: Callable[[int], None] | None, on_plan: Callable[[MergePlan], None] | None, spool_dir: str | None,
    clamp_mtime: int | None,
) -> tuple[MergePlan, WriteStats]:
    lim = limits or MergeLimits.current()
    n = len(layers)
    if not 0 <= keep <= n:
        raise ValueError(f"keep={keep} outside 0..{n}")
    wstats = WriteStats()
    ap = Applier(lim, [LayerStats(i, layer.label, i < keep) for i, layer in enumerate(layers)])
    for i, (entries, consumed) in enumerate(read_layers(layers[:keep], lim)):
        ap.apply_layer(i, layers[i].label, entries, consumed)
    parent = copy_tree(ap.root) if keep else Dir(IMPLICIT)
    spool = Spool(spool_dir)
    try:
        read = _read_all_once(layers, keep, spool, lim, progress, ap)
        for k in range(1, len(read)):  # the bottom one is applied as it was read
            entries, consumed = read[k]
            ap.apply_layer(keep + k, layers[keep + k].label, entries, consumed)
            read[k] = ([], consumed)  # headers applied: let them go
        once = tuple(i for i in range(keep, n) if not layers[i].plain)
        p = finish_plan(ap, parent, keep, lim, once, spool.where, clamp_mtime)
        spool.seal()
        if on_plan is not None:
            on_plan(p)
        write_layer(p, layers, Writer(out, wstats), progress, spool)
    finally:
        spool.close()
    return p, wstats


_Once = list[tuple[list[tuple[Hdr, int]], int]]  # per squashed layer, bottom up: headers, length


def _read_all_once(
    layers: Sequence[LayerInput], keep: int, spool: Spool, lim: MergeLimits,
    progress: Callable[[int], None] | None, ap: Applier,
) -> _Once:
    """Read the squashed layers top down, each once, each guessing from those above;
    a plain layer's headers alone (its contents stay where they are).

    The bottom one, read last, is applied to ``ap`` (which holds the kept layers) as it is read:
    its headers are never held (with one big layer, as in the bench's 1,000,000-path image, they
    would be most of the memory)."""
    hits = Hits()
    read: _Once = []
    for i in range(len(layers) - 1, keep - 1, -1):
        apply = ap if i == keep else None
        if apply is not None:
            # whether the layer has whiteouts (which need what it wrote before them) is not known
            # until it is read: record it
            apply.begin_layer(i, layers[i].label, True)
        if layers[i].plain:  # headers only; its contents are copied from it at the end
            entries, consumed = read_layer(layers[i], lim, apply)
        else:  # read in full (verified), its bodies spooled unless a layer above hides them
            entries, consumed = read_layer(layers[i], lim, apply, _Spooler(i, hits, spool), progress)
        if i > keep:  # the bottom layer's names guess for no layer below (1M paths: 140 MB saved)
            hits.add(h for h, _ in entries)
        read.append((entries, consumed))
    read.reverse()
    return read


class _Spooler:
    """The bodies of one layer that ``hits`` leaves alone, to ``spool`` as the layer is read."""

    def __init__(self, index: int, hits: Hits, spool: Spool) -> None:
        self.index = index
        self.hits = hits
        self.spool = spool

    def body(self, h: Hdr, offset: int, src: Source) -> bool:
        path = clean_name(h.name)
        # Whiteouts and AUFS metadata are not files; a file with ".wh." elsewhere in its path is
        # merely left to a second read, should the plan want it.
        if path and ".wh." not in path and not self.hits.hit(path):
            self.spool.add(self.index, offset, src, h.size)
            return True
        return False
