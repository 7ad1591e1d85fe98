"""``analyze``: what each layer adds and how much later layers hide, dive's efficiency, and dive's CI rules."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ocisquash.digest import Digest
from ocisquash.errors import UsageError
from ocisquash.goformat import human_size
from ocisquash.image import Image

if TYPE_CHECKING:
    from ocisquash.merge import LayerInput


@dataclass
class LayerReport:
    index: int
    """0-based position, bottom first (tables and JSON show ``index + 1``)."""
    digest: str | None
    stored: int
    entries: int
    files_added: int
    bytes_added: int
    hidden_files: int
    hidden_bytes: int
    tar_bytes: int
    """Length of the layer's uncompressed tar stream."""
    created_by: str = ""
    """The history entry that made the layer (empty when the config's history does not say)."""

    def bar(self, width: int = 20) -> str:
        """A plain-text bar: ``#`` for bytes still visible in the final tree, ``.`` for bytes later hidden."""
        if self.bytes_added <= 0:
            return " " * width
        hidden = round(width * self.hidden_bytes / self.bytes_added)
        return "#" * (width - hidden) + "." * hidden

    def to_json(self) -> dict[str, Any]:
        return {"layer": self.index + 1, "digest": self.digest, "created_by": self.created_by,
                "stored_size": self.stored, "tar_size": self.tar_bytes, "entries": self.entries,
                "files_added": self.files_added, "bytes_added": self.bytes_added,
                "hidden_files": self.hidden_files, "hidden_bytes": self.hidden_bytes}


@dataclass(frozen=True)
class Inefficiency:
    """A path found in more than one layer (dive's "inefficiency"): every copy, and what keeping one leaves."""

    path: str
    count: int
    total_bytes: int
    """Bytes of every copy (a whiteout counts what it deletes)."""
    wasted_bytes: int
    """``total_bytes`` less the smallest copy: what remains if one copy is kept (dive #684's fix)."""


@dataclass
class Efficiency:
    """dive's image efficiency, with each duplicated path's wasted bytes counted once (see ``DiveCount``).

    These are dive's figures, shown beside ocisquash's own waste (``Analysis.wasted_bytes``: what a squash
    drops) where they differ: dive counts each path's copies, so a path deleted while a hardlink keeps its
    file, or overwritten by a smaller file, is waste to dive but not to a squash."""

    score: float
    wasted_bytes: int
    """dive's: each duplicated path's copies but the smallest."""
    user_bytes: int
    """File bytes of every layer above the first (dive's "user" layers)."""
    inefficiencies: list[Inefficiency]
    """Paths in more than one layer, the most wasted bytes first."""

    @property
    def user_wasted_percent(self) -> float:
        """dive's wasted bytes over the user layers' bytes (a fraction: 0.1 is 10%), as dive's CI rule reads
        it. Above 1 when copies in the first layer count (a base file deleted above it): they are waste, but
        not among the user layers' bytes."""
        return self.wasted_bytes / self.user_bytes if self.user_bytes else 0.0


class DiveCount:
    """dive's efficiency, counted layer by layer from each layer's members, bottom up (``add_layer``).

    As dive defines it: in each layer, every leaf of the layer's tree (a file, link, or a directory with no
    entries below it in that layer) is a "copy" of its path, sized as the file; a whiteout (or an opaque
    directory) is a copy of each path it deletes in the layers below, sized as that path was. A path with
    copies in several layers wastes the sum of its copies less the smallest one (dive sums every copy, so
    one kept copy is counted as waste too: its issue #684). The score is the sum of each path's smallest
    copy over the sum of all copies; 1.0 when nothing is duplicated.

    The members come from the merge plan's read of the headers (``merge.plan(observe=...)``): a second
    read of every layer for these figures alone took as long as the plan (2.9x inflating the layers,
    against 1.3x for one read, on the bench image).
    """

    def __init__(self) -> None:
        self.visible: dict[str, int] = {}  # path -> size in the layers applied so far
        self.copies: dict[str, tuple[int, int, int]] = {}  # path -> (count, total, smallest)
        self.user_bytes = 0
        self.layers = 0

    def add_layer(self, members: Iterable[tuple[str, int, bool]]) -> None:
        """The next layer's ``(name, size, is regular file)`` members, in their order in the layer."""
        # names cleaned as the merge plan cleans them (compiled; loaded here, as the merge is: start-up time)
        from ocisquash.merge.tarread import clean_name

        visible, copies = self.visible, self.copies
        entries: dict[str, int] = {}
        whiteouts: list[str] = []
        opaque: list[str] = []
        for name, size, regular in members:
            path = clean_name(name) or ""  # None, a name above the root: the plan refused it already
            head, _, base = path.rpartition("/")
            if base == ".wh..wh..opq":
                opaque.append(head)
            elif base.startswith(".wh."):
                whiteouts.append(f"{head}/{base[4:]}" if head else base[4:])
            elif path:
                entries[path] = size if regular else 0
        parents: set[str] = set()  # every directory above an entry of this layer: not a leaf here
        for p in entries:
            i = p.rfind("/")
            while i > 0:
                q = p[:i]
                if q in parents:  # and so are all above it
                    break
                parents.add(q)
                i = p.rfind("/", 0, i)
        layer_copies: list[tuple[str, int]] = []
        # What each whiteout and opaque marker deletes, found by bisecting the sorted visible paths: a scan of
        # every visible path per marker took 28 s on 60,000 entries with a few hundred whiteouts.
        keys = sorted(visible) if whiteouts or opaque else []
        gone_by_w = [_at_or_under(keys, visible, w) for w in whiteouts]
        gone_by_d = [keys if not d else _at_or_under(keys, {}, d) for d in opaque]
        # A whiteout is a copy of each path it deletes, sized as that path was (dive puts a deleted directory's
        # whole size on the directory's own path, which no earlier layer has as a leaf: never counted as waste).
        for w, gone in zip(whiteouts, gone_by_w, strict=True):
            layer_copies += [(k, visible[k]) for k in gone] or [(w, 0)]
        for gone in gone_by_d:
            layer_copies += [(k, visible[k]) for k in gone]
        layer_copies += [(p, size) for p, size in entries.items() if p not in parents]
        for p, size in layer_copies:
            n, total, low = copies.get(p, (0, 0, size))
            copies[p] = (n + 1, total + size, min(low, size))
        for gone in (*gone_by_w, *gone_by_d):  # a whiteout's path and all below it; what lies below an opaque dir
            for k in gone:
                visible.pop(k, None)
        visible.update(entries)
        if self.layers > 0:
            self.user_bytes += sum(entries.values())
        self.layers += 1

    def result(self) -> Efficiency:
        copies = self.copies
        total = sum(t for _, t, _ in copies.values())
        smallest = sum(low for _, _, low in copies.values())
        ineff = [Inefficiency(p, n, t, t - low) for p, (n, t, low) in copies.items() if n > 1]
        ineff.sort(key=lambda x: (-x.wasted_bytes, -x.total_bytes, x.path))
        return Efficiency(smallest / total if total else 1.0, sum(x.wasted_bytes for x in ineff), self.user_bytes,
                          ineff)


def _at_or_under(keys: list[str], visible: dict[str, int], path: str) -> list[str]:
    """``path`` (when in ``visible``) and the paths below it, from ``keys``, the sorted visible paths: those
    start with ``path/``, so they sort between ``path/`` and ``path0`` ('0' follows '/')."""
    lo, hi = bisect.bisect_left(keys, path + "/"), bisect.bisect_left(keys, path + "0")
    return ([path] if path in visible else []) + keys[lo:hi]


@dataclass
class Analysis:
    image: str
    image_id: Digest
    layers: list[LayerReport]
    largest_hidden: list[tuple[str, int, int]]
    """``(path, size, layer index)`` of the largest hidden regular files, biggest first."""
    dropped_files: int
    dropped_bytes: int
    """What a squash to one layer would drop: every hidden copy of every file, each counted once. This is
    ocisquash's one definition of waste (``wasted_bytes``), the squash report's "dropped" figure."""
    efficiency: Efficiency
    top: int = 10

    @property
    def bytes_added(self) -> int:
        return sum(ly.bytes_added for ly in self.layers)

    @property
    def wasted_bytes(self) -> int:
        """The bytes a squash removes (hidden files), as the squash report counts them."""
        return self.dropped_bytes

    def to_json(self) -> dict[str, Any]:
        eff = self.efficiency
        return {"image": self.image, "id": str(self.image_id), "layers": [ly.to_json() for ly in self.layers],
                "wasted_bytes": self.wasted_bytes, "wasted_files": self.dropped_files,
                "efficiency": eff.score, "dive_wasted_bytes": eff.wasted_bytes, "user_bytes": eff.user_bytes,
                "user_wasted_percent": eff.user_wasted_percent,
                "inefficiencies": [{"path": x.path, "count": x.count, "total_bytes": x.total_bytes,
                                    "dive_wasted_bytes": x.wasted_bytes} for x in eff.inefficiencies[:self.top]],
                "largest_hidden": [{"path": p, "size": s, "layer": i + 1} for p, s, i in self.largest_hidden],
                "bytes_added": self.bytes_added, "dropped_files": self.dropped_files,
                "dropped_bytes": self.dropped_bytes, "final_bytes": self.bytes_added - self.dropped_bytes}


def layer_history(image: Image) -> list[str]:
    """Each layer's ``created_by``, bottom first: the non-empty history entries in order (docker's rule)."""
    made = [h.created_by or "" for h in image.config.history if not h.empty_layer]
    return [made[i] if i < len(made) else "" for i in range(len(image.layers))]


def analyze(image: Image, inputs: Sequence[LayerInput], *, top: int = 10,
            on_layer: Callable[[int], None] | None = None) -> Analysis:
    """Per-layer figures from the merge engine's plan (headers only; contents are skipped, not read), and
    dive's efficiency from the same read of the headers. ``inputs`` are the merge's view of the image's
    layers, as a squash builds them (``squash.layer_inputs(image)``): passed in, since a listing sits
    below the squash and must not reach up into it. ``on_layer(i)`` is called once layer ``i`` is read."""
    # The merge engine loads here, not at the top: ``images`` and ``history`` import this module too and
    # need none of it (start-up time).
    from ocisquash import merge
    from ocisquash.merge.tarread import REGULAR, Hdr

    dive = DiveCount()

    def observe(i: int, headers: list[tuple[Hdr, int]]) -> None:
        dive.add_layer((h.name, h.size, h.type in REGULAR) for h, _ in headers)
        if on_layer is not None:
            on_layer(i)

    # the plan remembers the merge.LARGEST_HIDDEN largest hidden files
    plan = merge.plan(inputs, keep=0, observe=observe)
    made_by = layer_history(image)
    layers = [LayerReport(s.index, str(ly.digest) if ly.digest else None, ly.size, s.entries, s.files_added,
                          s.bytes_added, s.hidden_files, s.hidden_bytes, s.tar_bytes, made_by[s.index])
              for s, ly in zip(plan.layers, image.layers, strict=True)]
    hidden = [(h.path, h.size, h.layer) for h in plan.largest_hidden[:top]]
    return Analysis(image.label, image.id, layers, hidden, plan.dropped_files, plan.dropped_bytes, dive.result(), top)


# ------------------------------------------------------------------------------------------ CI rules


def parse_size(text: str) -> int:
    """A size as dive's CI rules take it: ``20MB`` (decimal), ``20MiB`` (binary), or plain bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if not m:
        raise UsageError(f"bad size {text!r}", hint="e.g. 20MB, 512KiB, 1000000")
    number, unit, binary = m.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(unit.upper() or " "))


@dataclass(frozen=True)
class CiRules:
    """dive's three CI rules; None disables a rule."""

    lowest_efficiency: float | None = 0.9
    highest_wasted_bytes: int | None = None
    highest_user_wasted_percent: float | None = 0.1

    def broken(self, res: Analysis) -> list[str]:
        """One line per broken rule, naming the rule, the figure and the limit. Wasted bytes are what a
        squash drops (ocisquash's one definition); efficiency and user wasted percent are dive's."""
        out = []
        eff, wasted = res.efficiency, res.wasted_bytes
        if self.lowest_efficiency is not None and eff.score < self.lowest_efficiency:
            out.append(f"lowest-efficiency: dive's image efficiency {eff.score:.4f} is below "
                       f"{self.lowest_efficiency:g}")
        if self.highest_wasted_bytes is not None and wasted > self.highest_wasted_bytes:
            out.append(f"highest-wasted-bytes: {human_size(wasted)} ({wasted} bytes) wasted (what a squash drops), "
                       f"more than {human_size(self.highest_wasted_bytes)}")
        pct = eff.user_wasted_percent
        if self.highest_user_wasted_percent is not None and pct > self.highest_user_wasted_percent:
            out.append(f"highest-user-wasted-percent: dive's user wasted {pct:.4f} of the user layers' bytes, more "
                       f"than {self.highest_user_wasted_percent:g}")
        return out
