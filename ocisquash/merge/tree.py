"""The in-memory tree and the header applier, with umoci's semantics (the oracle, docs/formats.md §4.5).

Compact slotted records: memory grows with paths, not bytes.
"""

from __future__ import annotations

import heapq

from ocisquash import limits as limits_mod
from ocisquash.errors import FormatError, UnsafePath
from ocisquash.merge.records import IMPLICIT, LARGEST_HIDDEN, HiddenFile, LayerStats, MergeLimits, Meta
from ocisquash.merge.tarread import REGULAR, Hdr, components


class Dir:
    __slots__ = ("children", "meta")

    def __init__(self, meta: Meta | None) -> None:
        self.children: dict[str, Dir | Ino] = {}
        self.meta = meta  # None: created implicitly as a missing parent


class Ino:
    """A non-directory inode; several names may share it (hardlinks)."""

    __slots__ = ("dev", "kind", "layer", "links", "meta", "nlink", "ordinal", "origin", "size", "target")

    def __init__(
        self, kind: str, layer: int, ordinal: int, origin: str, size: int,
        meta: Meta | None, target: str, dev: tuple[int, int] | None,
    ) -> None:
        self.kind = kind  # "0" regular, "2" symlink, "3" char, "4" block, "6" fifo
        self.layer = layer
        self.ordinal = ordinal  # offset of the creating entry's data in its layer: where pass 2 copies from
        self.origin = origin  # real path it was created at (the plan sets the name it is written as)
        self.size = size
        self.meta = meta  # link headers to this inode carry it
        self.target = target  # symlink target
        self.dev = dev
        self.nlink = 0
        self.links: tuple[str, ...] = ()  # set by the plan: the hardlinks the merged layer writes to it


Node = Dir | Ino
AUFS = frozenset((".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"))
OPAQUE = ".wh..wh..opq"


class Applier:
    def __init__(self, limits: MergeLimits, stats: list[LayerStats]) -> None:
        self.root = Dir(IMPLICIT)
        self.limits = limits
        self.stats = stats
        self.heap: list[HiddenFile] = []
        self.label = ""
        self.layer = 0
        self.upper: set[str] = set()
        self.track = True
        self.applied = 0  # entries applied over all layers (max_paths)

    # ---- helpers
    def _resolve(self, comps: list[str]) -> tuple[list[str], Node | None]:
        """Resolve a parent path through symlinks in the tree as it is now (securejoin semantics).

        Returns the real components and the node there (None when it does not exist, or lies below
        something that is not a directory).
        """
        cur = self.root
        for c in comps:  # fast path: every component is an existing directory
            node = cur.children.get(c)
            if type(node) is not Dir:
                break
            cur = node
        else:
            return list(comps), cur
        root = self.root
        names: list[str] = []
        nodes: list[Node | None] = []
        todo = comps[::-1]
        hops = 0
        while todo:
            c = todo.pop()
            if c == "" or c == ".":
                continue
            if c == "..":
                if names:
                    names.pop()
                    nodes.pop()
                continue
            here = nodes[-1] if nodes else root
            node = here.children.get(c) if type(here) is Dir else None
            if type(node) is Ino and node.kind == "2":
                hops += 1
                if hops > self.limits.max_symlink_hops:
                    raise FormatError(
                        f"layer {self.label}: too many levels of symlinks resolving {'/'.join(comps)!r}"
                    )
                target = node.target
                if target.startswith("/"):
                    names.clear()
                    nodes.clear()
                todo.extend(reversed(target.split("/")))
                continue
            names.append(c)
            nodes.append(node)
        return names, (nodes[-1] if nodes else root)

    def _mkdirs(self, names: list[str], shown: str) -> Dir:
        cur = self.root
        for n in names:
            child = cur.children.get(n)
            if child is None:
                child = Dir(None)
                cur.children[n] = child
            elif type(child) is not Dir:
                raise FormatError(
                    f"layer {self.label}: {shown!r}: a parent ({'/'.join(names)!r}) is not a directory"
                )
            cur = child
        return cur

    def _drop(self, node: Node) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            if type(n) is Dir:
                stack.extend(n.children.values())
            else:
                assert type(n) is Ino
                n.nlink -= 1
                if n.nlink == 0 and n.kind == "0":
                    st = self.stats[n.layer]
                    st.hidden_files += 1
                    st.hidden_bytes += n.size
                    item = HiddenFile(n.size, n.origin, n.layer)
                    if len(self.heap) < LARGEST_HIDDEN:
                        heapq.heappush(self.heap, item)
                    elif self.heap and item > self.heap[0]:
                        heapq.heapreplace(self.heap, item)

    def _whiteout(self, parent: Dir, ppath: str, name: str | None) -> None:
        # umoci walks the target and removes every path this layer has not written (upper paths are
        # the layer's own entries and their ancestors): a whiteout never hides its own layer's entries.
        upper = self.upper
        todo = [(parent, ppath, c) for c in parent.children] if name is None else [(parent, ppath, name)]
        while todo:
            d, dpath, c = todo.pop()
            path = f"{dpath}/{c}" if dpath else c
            node = d.children[c]
            if path not in upper:
                del d.children[c]
                self._drop(node)
            elif type(node) is Dir:
                todo.extend((node, path, cc) for cc in node.children)

    def _mark_upper(self, path: str) -> None:
        upper = self.upper
        p = path
        while p not in upper:
            upper.add(p)
            i = p.rfind("/")
            if i < 0:
                break
            p = p[:i]

    # ---- one layer
    def apply_layer(self, index: int, label: str, entries: list[tuple[Hdr, int]], consumed: int) -> None:
        """Apply one layer's entries (header, offset of its data), as ``read_layer`` gives them.

        Empties ``entries`` as it goes: each header is let go once applied, so the headers not yet
        applied and the tree they become are not both held in full (memory per path).
        """
        # Only a whiteout looks at what its own layer wrote: a layer with none needs no record of it.
        self.begin_layer(index, label, any(".wh." in h.name for h, _ in entries))
        count = len(entries)
        entries.reverse()
        pop = entries.pop
        st = self.stats[index]
        while entries:
            h, offset = pop()
            self._entry(h, offset, st)
        self.end_layer(count, consumed)

    def begin_layer(self, index: int, label: str, track: bool) -> None:
        """Start applying layer ``index`` entry by entry (``entry``); ``track``: record what it writes,
        which its whiteouts need (True when not known)."""
        self.layer = index
        self.label = label
        self.upper = set()
        self.track = track

    def entry(self, h: Hdr, offset: int) -> None:
        """Apply one entry of the layer begun (``offset``: where its data starts in the layer)."""
        self._entry(h, offset, self.stats[self.layer])

    def end_layer(self, entries: int, consumed: int) -> None:
        st = self.stats[self.layer]
        st.entries = entries
        st.tar_bytes = consumed
        self.upper = set()

    def _entry(self, h: Hdr, ordinal: int, st: LayerStats) -> None:
        self.applied += 1
        if self.applied > self.limits.max_paths:
            raise limits_mod.exceeded("max_paths", f"layer {self.label}: more than {self.limits.max_paths} entries "
                                                   "in the layers merged")
        comps = components(h.name)
        if comps is None:
            raise UnsafePath(f"layer {self.label}: member {h.name!r} escapes the root")
        if h.type in REGULAR:
            st.files_added += 1
            st.bytes_added += h.size
        if not comps:
            # The root itself: containerd and moby skip it, but umoci (the oracle) gives the rootfs a
            # directory entry's mode, owner and times (checked with `umoci raw add-layer`), so keep them.
            if h.type == "5":
                self.root.meta = h.meta
            return
        if comps[0] in AUFS:
            return  # AUFS metadata, not content
        base = comps[-1]
        if base.startswith(".wh."):
            names, pnode = self._resolve(comps[:-1])
            if base == OPAQUE:
                if type(pnode) is Dir:
                    self._whiteout(pnode, "/".join(names), None)
                return
            target = base[4:]
            if target in ("", ".", ".."):
                raise UnsafePath(f"layer {self.label}: whiteout {h.name!r} names no file in its directory")
            if type(pnode) is Dir and target in pnode.children:
                self._whiteout(pnode, "/".join(names), target)
            return
        names, pnode = self._resolve(comps[:-1])
        if type(pnode) is not Dir:
            pnode = self._mkdirs(names, h.name)
        names.append(base)
        path = "/".join(names)
        if path == h.name:
            path = h.name  # one string for both: the header's outlives it in Ino.origin
        children = pnode.children
        existing = children.get(base)
        t = h.type
        if t == "5":
            if type(existing) is Dir:
                existing.meta = h.meta  # dir over dir: new attributes, children kept
            else:
                if existing is not None:
                    self._drop(existing)
                children[base] = Dir(h.meta)
        else:
            if existing is not None:
                del children[base]
                self._drop(existing)
            if t == "1":
                # umoci 0.4.7 ignores a link header's mode, owner, mtime and xattrs: the new name
                # shares the target inode's metadata (checked with `umoci raw add-layer`). The target
                # is looked up after the old name is gone, as umoci does.
                ino = self._link_target(h)
            elif t in REGULAR:
                ino = Ino("0", self.layer, ordinal, path, h.size, h.meta, "", None)
            elif t == "2":
                ino = Ino("2", self.layer, ordinal, path, 0, h.meta, h.linkname, None)
            else:
                ino = Ino(t, self.layer, ordinal, path, 0, h.meta, "", h.dev if t != "6" else None)
            ino.nlink += 1
            children[base] = ino
        if self.track:
            self._mark_upper(path)

    def _link_target(self, h: Hdr) -> Ino:
        comps = components(h.linkname)
        if comps is None:
            raise UnsafePath(f"layer {self.label}: hardlink {h.name!r} -> {h.linkname!r} escapes the root")
        node: Node | None = None
        if comps:
            _, pnode = self._resolve(comps[:-1])
            if type(pnode) is Dir:
                node = pnode.children.get(comps[-1])
        if node is None:
            raise FormatError(
                f"layer {self.label}: hardlink {h.name!r} points to {h.linkname!r}, which is in no layer "
                "at that point"
            )
        if type(node) is Dir:
            raise FormatError(f"layer {self.label}: hardlink {h.name!r} points to a directory ({h.linkname!r})")
        assert type(node) is Ino
        return node


def copy_tree(root: Dir) -> Dir:
    """Copy the directory structure (inodes are shared: they never change once created)."""
    new = Dir(root.meta)
    stack = [(root, new)]
    while stack:
        src, dst = stack.pop()
        ch = dst.children
        for k, v in src.children.items():
            if type(v) is Dir:
                d = Dir(v.meta)
                ch[k] = d
                stack.append((v, d))
            else:
                ch[k] = v
    return new
