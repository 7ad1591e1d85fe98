"""The plan: every layer's headers applied, and the merged layer as the difference of two trees.

``plan()`` reads the headers of every layer (kept parent layers too) and applies them to an in-memory
tree the way ``umoci unpack`` does, so it knows the final tree and, when squashing onto kept layers,
the tree those layers give. The merged layer is the structural difference of the two trees: every path
whose state differs, every directory above such a path, plus an explicit ``.wh.NAME`` for the topmost
path of each parent subtree that is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ocisquash.merge.records import (
    IMPLICIT,
    WHITEOUT_META,
    HiddenFile,
    LayerInput,
    LayerStats,
    MergeLimits,
    Meta,
    SpoolIndex,
    clamp_meta,
    gc_paused,
)
from ocisquash.merge.tarread import Hdr
from ocisquash.merge.tarwrite import header_size
from ocisquash.merge.tree import Applier, Dir, Ino, copy_tree
from ocisquash.merge.workers import read_layers


@dataclass(slots=True)
class DirEntry:
    """A directory the merged layer writes, with its final metadata (``path`` "" is the root)."""

    path: str
    meta: Meta
    changed: bool
    """False: its own metadata is the parent's; written only when an entry below it is."""


@dataclass(slots=True)
class Whiteout:
    """A ``.wh.NAME`` entry: a parent path that is gone (``path`` is the whiteout's own name)."""

    path: str


@dataclass(slots=True)
class Special:
    """A symlink, device or FIFO written as ``name``, then hardlinked as ``links``."""

    name: str
    ino: Ino
    links: list[str]


@dataclass(slots=True)
class ParentLink:
    """A hardlink ``name`` to ``target``, a file the kept layers hold unchanged."""

    name: str
    target: str
    meta: Meta


@dataclass
class Layout:
    """What the merged layer holds, in the order it is written: ``head`` (each directory right
    before its subtree, its whiteouts after it), ``specials``, ``parent_links``, then ``bodies`` by
    layer and data offset in that layer (see ``layerwrite``)."""

    head: list[DirEntry | Whiteout] = field(default_factory=list)
    specials: list[Special] = field(default_factory=list)
    parent_links: list[ParentLink] = field(default_factory=list)
    bodies: dict[int, list[Ino]] = field(default_factory=dict)
    """Per layer, the regular files to copy from it: each written as ``origin`` with ``size`` bytes
    of contents, then hardlinked as ``links`` (an inode of the tree, not a record of its own: memory
    per path); the writer takes them by data offset (``ordinal``)."""
    entries: int = 0
    whiteouts: int = 0
    content_bytes: int = 0
    padded: int = 0
    """Contents with their padding to 512-byte blocks."""
    final_paths: int = 0
    """Paths in the final tree (root excluded)."""
    whiteout_meta: Meta = WHITEOUT_META
    clamped: int = 0
    """Entries whose times ``clamp_times`` set back."""

    def clamp_times(self, t: int) -> None:
        """``--rewrite-timestamp``: every time later than ``t`` set to ``t`` (``clamp_meta``), in the
        records both the writer and a dry run's sizing read, so the two agree.

        Clamped: what the squashed layers made (new files, links, whiteouts, and directories whose own
        metadata changed). Left alone: entries that only repeat a kept object, a directory written as
        the ancestor of a change with the kept layers' metadata and a hardlink to a kept file. Those
        stand for files of the kept layers, which the option never changes (a loader that applies a
        link header's times would change the kept file's); being the kept layers', they are the same
        in every build.
        """
        memo: dict[Meta, Meta | None] = {}

        def clamp(meta: Meta) -> Meta | None:
            if meta not in memo:
                memo[meta] = clamp_meta(meta, t)
            return memo[meta]

        whiteout = clamp(self.whiteout_meta)
        for e in self.head:
            if type(e) is DirEntry:
                if e.changed and (new := clamp(e.meta)) is not None:
                    e.meta = new
                    self.clamped += 1
            elif whiteout is not None:
                self.clamped += 1
        if whiteout is not None:
            self.whiteout_meta = whiteout
        for sp in self.specials:
            self.clamped += self._clamp_ino(sp.ino, 1 + len(sp.links), clamp)
        for bodies in self.bodies.values():
            for b in bodies:
                self.clamped += self._clamp_ino(b, 1 + len(b.links), clamp)

    @staticmethod
    def _clamp_ino(ino: Ino, names: int, clamp: Callable[[Meta], Meta | None]) -> int:
        """Clamp an inode the layer writes under ``names`` names (each header carries its metadata)."""
        assert ino.meta is not None
        new = clamp(ino.meta)
        if new is None:
            return 0
        ino.meta = new
        return names

    def unpacked_bytes(self) -> int:
        """What the merged layer's files hold once unpacked: each regular file's size once per inode (its
        hardlinks add nothing) and each symlink's target length; directories, whiteouts, devices and
        links to kept files hold nothing. The layer holds each path once, so nothing here is replaced
        (docker counts a layer's size this way: ``ocisquash.dockersize``)."""
        targets = sum(len(sp.ino.target.encode("utf-8", "surrogateescape"))
                      for sp in self.specials if sp.ino.kind == "2")
        return self.content_bytes + targets

    def fixed_entries(self) -> Iterator[Entry]:
        """The headers written before the bodies, in order: ``head``, ``specials`` (each followed by its
        hardlinks), ``parent_links``. The writer writes these and a dry run sizes them."""
        for e in self.head:
            if type(e) is DirEntry:
                yield e.path or "./", "5", e.meta, 0, "", None
            else:
                yield e.path, "0", self.whiteout_meta, 0, "", None
        for sp in self.specials:
            meta = sp.ino.meta
            assert meta is not None
            yield sp.name, sp.ino.kind, meta, 0, sp.ino.target, sp.ino.dev
            for link in sp.links:
                yield link, "1", meta, 0, sp.name, None
        for pl in self.parent_links:
            yield pl.name, "1", pl.meta, 0, pl.target, None


END_BLOCKS = 1024
"""What ends the merged layer: two zero blocks, no padding to a 10240-byte record (like Go)."""

Entry = tuple[str, str, Meta, int, str, tuple[int, int] | None]
"""One header the merged layer writes: name, tar type flag, metadata, size, link target, device."""


def body_links(ino: Ino) -> Iterator[Entry]:
    """The hardlinks written after a regular file's body (``ino.origin``)."""
    meta = ino.meta
    assert meta is not None
    for link in ino.links:
        yield link, "1", meta, 0, ino.origin, None


@dataclass
class MergePlan:
    """The applied headers: statistics for ``analyze``/``--dry-run`` and the recipe the writer follows."""

    keep: int
    layers: list[LayerStats]
    largest_hidden: list[HiddenFile]
    """Largest hidden regular files of all layers, biggest first (``path`` is the name it was added as)."""
    dropped_files: int
    """Hidden regular files of the squashed layers: they do not reach the merged layer."""
    dropped_bytes: int
    layout: Layout = field(repr=False)
    limits: MergeLimits = field(repr=False)
    read_once: tuple[int, ...] = field(repr=False, default=())
    """Layers ``stream`` has read in full already: they are read again only for bodies it did not keep."""
    spooled: dict[int, SpoolIndex] = field(repr=False, default_factory=dict)
    """Per layer, the bodies ``stream`` kept (data offset in the layer -> offset in its spool)."""

    @property
    def out_entries(self) -> int:
        """Entries the merged layer will hold (whiteouts included)."""
        return self.layout.entries

    def pass2_layers(self) -> list[int]:
        """The layers the writer visits, in order: those with bodies to copy, and squashed ones not
        read in full yet (to verify them)."""
        n = len(self.layers)
        return sorted(set(self.layout.bodies).union(i for i in range(self.keep, n) if i not in self.read_once))

    def reread(self, i: int) -> bool:
        """Whether the writer reads layer ``i`` (else every body it needs from there is spooled)."""
        if i not in self.read_once:
            return True
        spooled = self.spooled.get(i)
        bodies = self.layout.bodies.get(i, [])
        return bool(bodies) and (spooled is None or any(spooled.get(b.ordinal) is None for b in bodies))

    def bytes_to_copy(self) -> int:
        """Uncompressed bytes the writer reads from layers (what its ``progress`` callback counts up to)."""
        return sum(self.layers[i].tar_bytes for i in self.pass2_layers() if self.reread(i))

    def out_tar_bytes(self) -> int:
        """Size of the merged tar, exact: each header sized by the writer's own rule (PAX records
        included), contents with their padding, and the end-of-archive blocks."""
        layout = self.layout
        total = END_BLOCKS + layout.padded
        for args in layout.fixed_entries():
            total += header_size(*args)
        for bodies in layout.bodies.values():
            for b in bodies:
                meta = b.meta
                assert meta is not None
                total += header_size(b.origin, "0", meta, b.size)
                if b.links:
                    for args in body_links(b):
                        total += header_size(*args)
        return total

    def totals(self) -> dict[str, int]:
        """Figures for reports: tar bytes before/after (after estimated), squashed input bytes, drops."""
        kept = sum(s.tar_bytes for s in self.layers[: self.keep])
        return {
            "bytes_before": sum(s.tar_bytes for s in self.layers),
            "bytes_after": kept + self.out_tar_bytes(),
            "bytes_squashed": sum(s.tar_bytes for s in self.layers[self.keep :]),
            "files_dropped": self.dropped_files,
            "bytes_dropped": self.dropped_bytes,
        }


Observer = Callable[[int, list[tuple[Hdr, int]]], None]


def plan(layers: Sequence[LayerInput], keep: int = 0, *, limits: MergeLimits | None = None,
         observe: Observer | None = None, clamp_mtime: int | None = None) -> MergePlan:
    """Pass 1: read every layer's headers, apply them in memory and decide what the merged layer holds.

    ``keep`` layers at the bottom stay as they are (0: squash to scratch); ``keep == len(layers)``
    gives an empty merged layer. ``observe(i, headers)`` sees each layer's headers (with their data
    offsets), bottom up, before they are applied: ``analyze`` counts dive's figures from them instead
    of reading every layer a second time. ``clamp_mtime``: the merged layer's times later than it are
    set to it (``Layout.clamp_times``, ``--rewrite-timestamp``); the kept layers are never changed.
    """
    with gc_paused():
        return _plan(layers, keep, limits, observe, clamp_mtime)


def _plan(layers: Sequence[LayerInput], keep: int, limits: MergeLimits | None, observe: Observer | None,
          clamp_mtime: int | None) -> MergePlan:
    lim = limits or MergeLimits.current()
    if not 0 <= keep <= len(layers):
        raise ValueError(f"keep={keep} outside 0..{len(layers)}")
    stats = [LayerStats(i, layer.label, i < keep) for i, layer in enumerate(layers)]
    ap = Applier(lim, stats)
    parent: Dir | None = Dir(IMPLICIT) if keep == 0 else None
    for i, (entries, consumed) in enumerate(read_layers(layers, lim)):
        if i == keep and parent is None:
            parent = copy_tree(ap.root)
        if observe is not None:
            observe(i, entries)
        ap.apply_layer(i, layers[i].label, entries, consumed)
    return finish_plan(ap, parent, keep, lim, clamp_mtime=clamp_mtime)


def finish_plan(
    ap: Applier, parent: Dir | None, keep: int, lim: MergeLimits,
    read: tuple[int, ...] = (), spooled: dict[int, SpoolIndex] | None = None, clamp_mtime: int | None = None,
) -> MergePlan:
    """The plan once every layer is applied (``parent``: the kept layers' tree, None: the final
    tree is it); ``read`` and ``spooled`` are ``stream``'s; ``clamp_mtime``: ``Layout.clamp_times``'s time."""
    if parent is None:
        parent = copy_tree(ap.root)
    stats = ap.stats
    layout = diff(ap.root, parent)
    if clamp_mtime is not None:
        layout.clamp_times(clamp_mtime)
    return MergePlan(
        keep=keep, layers=stats, largest_hidden=sorted(ap.heap, reverse=True),
        dropped_files=sum(s.hidden_files for s in stats[keep:]),
        dropped_bytes=sum(s.hidden_bytes for s in stats[keep:]),
        layout=layout, limits=lim, read_once=read, spooled=spooled if spooled is not None else {},
    )


def diff(final: Dir, parent: Dir) -> Layout:
    """Compare the final tree with the parent tree and lay out the merged layer.

    Deleted parent paths get explicit ``.wh.NAME`` entries (topmost path only), never opaque markers,
    even for a directory deleted and then recreated: the diff is structural, so every parent child
    that survives unchanged needs no entry at all, while an opaque marker would force re-writing each
    of them (docs/formats.md §4.4: writers should prefer explicit whiteouts).

    Takes ``final`` apart as it goes (each directory's children are let go once visited), so the
    tree and the layout are not both held in full (memory per path).
    """
    out = Layout()
    head = out.head
    names_new: dict[Ino, list[str]] = {}  # names to write, per inode with several names
    names_same: dict[Ino, list[str]] = {}  # names the parent tree holds for the same inode
    final_paths = 0
    # Depth-first pre-order with sorted children: each directory right before its subtree, so
    # parents come before children; its whiteouts follow it.
    # The root is written when its attributes changed, and also when a layer set them explicitly over a
    # parent that never did, even to the implicit values: an unpacker applies a "./" entry's mtime,
    # but leaves a root no entry names at the time it created it.
    root_set = final.meta is not IMPLICIT and parent.meta is IMPLICIT
    stack: list[tuple[str, Dir, Dir | None, bool]] = [("", final, parent, final.meta != parent.meta or root_set)]
    unchanged = 0  # directories whose own metadata is the parent's: written only as ancestors
    while stack:
        path, fd, pd, changed = stack.pop()
        if changed or path:
            # a directory made as a missing parent is written with the attributes it was made with
            head.append(DirEntry(path, fd.meta if fd.meta is not None else IMPLICIT, changed))
            unchanged += not changed
        children = fd.children
        fd.children = {}
        if pd is not None:
            gone = sorted(n for n in pd.children if n not in children)
            out.whiteouts += len(gone)
            head.extend(Whiteout(f"{path}/.wh.{n}" if path else f".wh.{n}") for n in gone)
        pch = pd.children if pd is not None else None
        subdirs: list[tuple[str, Dir, Dir | None, bool]] = []
        for name in sorted(children):
            node = children[name]
            full = f"{path}/{name}" if path else name
            final_paths += 1
            pn = pch.get(name) if pch is not None else None
            if type(node) is Dir:
                pdir = pn if type(pn) is Dir else None
                subdirs.append((full, node, pdir, pdir is None or pdir.meta != node.meta))
            else:
                assert type(node) is Ino
                if full == node.origin:
                    full = node.origin  # one string for the tree's record and the layout's
                if pn is node:
                    names_same.setdefault(node, []).append(full)
                elif node.nlink == 1:
                    _add(out, node, full, ())  # its one name in the final tree, and a new one
                else:
                    names_new.setdefault(node, []).append(full)
        del children
        stack.extend(reversed(subdirs))
    out.final_paths = final_paths
    for ino, new in names_new.items():
        new.sort()
        same = names_same.get(ino)
        if same:
            # The parent tree still holds this inode under an unchanged name: link to it.
            assert ino.meta is not None
            target = min(same)
            out.parent_links.extend(ParentLink(n, target, ino.meta) for n in new)
            out.entries += len(new)
            continue
        body = ino.origin if ino.origin in new else new[0]
        _add(out, ino, body, tuple(n for n in new if n != body))
    if unchanged:
        # Every ancestor of a written entry is written too, with its final metadata: an overlay
        # unpacker (docker's overlay2, containerd) gives a directory the layer does not name mode
        # 0755, owner root and the time of the load, hiding the parent's (issue 10).
        need = ancestors(out)
        out.head = head = [e for e in head if isinstance(e, Whiteout) or e.changed or e.path in need]
    out.entries += len(head)
    out.specials.sort(key=lambda s: s.name)
    out.parent_links.sort(key=lambda pl: (pl.name, pl.target))
    return out


def _add(out: Layout, ino: Ino, body: str, links: tuple[str, ...]) -> None:
    """Lay out a new inode: written as ``body``, then hardlinked as ``links``."""
    assert ino.meta is not None
    out.entries += 1 + len(links)
    if ino.kind == "0":
        bodies = out.bodies.get(ino.layer)
        if bodies is None:
            bodies = out.bodies[ino.layer] = []
        # The final tree is let go: its inode carries what the writer needs (the plan owns it now).
        ino.origin = body
        ino.links = links
        bodies.append(ino)
        out.content_bytes += ino.size
        out.padded += (ino.size + 511) & ~511
    else:
        out.specials.append(Special(body, ino, list(links)))


def ancestors(out: Layout) -> set[str]:
    """The directories above every entry the merged layer writes (the root excluded)."""
    need: set[str] = set()

    def up(path: str) -> None:
        i = path.rfind("/")
        while i > 0:
            path = path[:i]
            if path in need:
                return
            need.add(path)
            i = path.rfind("/")

    for e in out.head:
        if isinstance(e, Whiteout) or e.changed:
            up(e.path)
    for bodies in out.bodies.values():
        for b in bodies:
            up(b.origin)
            for name in b.links:
                up(name)
    for sp in out.specials:
        up(sp.name)
        for name in sp.links:
            up(name)
    for pl in out.parent_links:
        up(pl.name)
    return need
