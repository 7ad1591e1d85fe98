"""Reference model: apply layer tars to a plain dict filesystem, the way umoci 0.4.7 does.

Deliberately naive and independent of ``ocisquash.merge``: a flat ``{path: object}`` dict, Python's own
``tarfile`` to read, linear scans for subtrees. Rules (docs/formats.md §4.4 and §4.5, checked against umoci):
- names cleaned lexically, escaping names rejected, root entries and AUFS metadata ignored;
- an entry's parent directories are resolved through symlinks as the tree is *now*;
- whiteouts/opaques remove what the current layer has not itself written (its entries and their
  ancestors are "upper" paths; umoci walks into upper directories and removes the rest);
- dir over dir takes the new attributes and keeps children; anything else replaces;
- hardlinks name an existing inode; the link header's own attributes are ignored;
- missing parents are created as 0755 root-owned dirs.

``snapshot()`` returns ``{path: (type, content, mode, uid, gid, link target, xattrs, rdev, group,
mtime)}``; ``group`` is the smallest path sharing the inode (hardlink grouping), ``mtime`` a Decimal
for non-directories (directory mtimes are not compared, as tools differ).
"""

from __future__ import annotations

import copy
import io
import posixpath
import tarfile
from dataclasses import dataclass, field
from decimal import Decimal


class RefError(Exception):
    pass


class RefUnsafe(RefError):
    pass


@dataclass
class Inode:
    type: str
    content: bytes = b""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    target: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()
    rdev: tuple[int, int] | None = None
    mtime: Decimal = Decimal(0)


@dataclass
class DirAttrs:
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Model:
    # path -> DirAttrs (directory) or int (inode number)
    paths: dict[str, DirAttrs | int] = field(default_factory=dict)
    inodes: dict[int, Inode] = field(default_factory=dict)
    upper: set[str] = field(default_factory=set)
    next_ino: int = 1

    # ---------------------------------------------------------------- helpers
    def clean(self, name: str) -> str:
        stripped = name.lstrip("/")
        if not stripped:
            return ""
        norm = posixpath.normpath(stripped)
        if norm == ".." or norm.startswith("../"):
            raise RefUnsafe(name)
        return "" if norm == "." else norm

    def is_symlink(self, p: str) -> bool:
        v = self.paths.get(p)
        return isinstance(v, int) and self.inodes[v].type == "sym"

    def secure_join(self, unsafe: str) -> str:
        """Resolve every component through symlinks, clamping at the root (securejoin)."""
        done: list[str] = []
        todo = [c for c in unsafe.split("/")]
        hops = 0
        while todo:
            c = todo.pop(0)
            if c in ("", "."):
                continue
            if c == "..":
                if done:
                    done.pop()
                continue
            cand = "/".join([*done, c])
            if self.is_symlink(cand):
                hops += 1
                if hops > 255:
                    raise RefError("symlink loop")
                v = self.paths[cand]
                assert isinstance(v, int)
                target = self.inodes[v].target
                if target.startswith("/"):
                    done = []
                todo = target.split("/") + todo
                continue
            done.append(c)
        return "/".join(done)

    def children(self, p: str) -> list[str]:
        return [k for k in self.paths if posixpath.dirname(k) == p]

    def remove_tree(self, p: str) -> None:
        for k in [k for k in self.paths if k == p or k.startswith(p + "/")]:
            del self.paths[k]

    def whiteout_walk(self, p: str) -> None:
        if p not in self.upper:
            self.remove_tree(p)
            return
        if isinstance(self.paths[p], DirAttrs):
            for c in self.children(p):
                self.whiteout_walk(c)

    # ---------------------------------------------------------------- applying
    def begin_layer(self) -> None:
        self.upper = set()

    def apply(self, ti: tarfile.TarInfo, content: bytes) -> None:
        name = self.clean(ti.name)
        if name == "":
            return
        first = name.split("/")[0]
        if first in (".wh..wh.plnk", ".wh..wh.aufs", ".wh..wh.orph"):
            return
        dirpart, base = posixpath.split(name)
        if base.startswith(".wh."):
            parent = self.secure_join(dirpart)
            if parent != "" and not isinstance(self.paths.get(parent), DirAttrs):
                return
            if base == ".wh..wh..opq":
                for c in self.children(parent):
                    self.whiteout_walk(c)
                return
            victim = base[len(".wh."):]
            if victim in ("", ".", ".."):
                raise RefUnsafe(name)
            target = f"{parent}/{victim}" if parent else victim
            if target in self.paths:
                self.whiteout_walk(target)
            return
        parent = self.secure_join(dirpart)
        # mkdir -p the parent
        acc = ""
        for c in parent.split("/") if parent else []:
            acc = f"{acc}/{c}" if acc else c
            v = self.paths.get(acc)
            if v is None:
                self.paths[acc] = DirAttrs()
            elif not isinstance(v, DirAttrs):
                raise RefError(f"parent of {name} is not a directory")
        path = f"{parent}/{base}" if parent else base
        xattrs = tuple(
            sorted(
                (k[len("SCHILY.xattr."):], v.encode("utf-8", "surrogateescape"))
                for k, v in ti.pax_headers.items()
                if k.startswith("SCHILY.xattr.")
            )
        )
        existing = self.paths.get(path)
        if ti.type == tarfile.DIRTYPE and isinstance(existing, DirAttrs):
            self.paths[path] = DirAttrs(ti.mode & 0o7777, ti.uid, ti.gid, xattrs)
        else:
            if existing is not None:
                self.remove_tree(path)
            if ti.type == tarfile.DIRTYPE:
                self.paths[path] = DirAttrs(ti.mode & 0o7777, ti.uid, ti.gid, xattrs)
            elif ti.type == tarfile.LNKTYPE:
                ln = self.clean(ti.linkname)
                if ln == "":
                    raise RefError("hardlink to root")
                ldir, lbase = posixpath.split(ln)
                lparent = self.secure_join(ldir)
                lpath = f"{lparent}/{lbase}" if lparent else lbase
                v = self.paths.get(lpath)
                if v is None or isinstance(v, DirAttrs):
                    raise RefError(f"hardlink {name} -> {ti.linkname}: no such file")
                self.paths[path] = v
            else:
                kind = {
                    tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.CONTTYPE: "reg",
                    tarfile.SYMTYPE: "sym", tarfile.CHRTYPE: "chr", tarfile.BLKTYPE: "blk",
                    tarfile.FIFOTYPE: "fifo",
                }.get(ti.type)
                if kind is None:
                    raise RefError(f"unsupported type {ti.type!r}")
                mt = ti.pax_headers.get("mtime")
                ino = Inode(
                    kind,
                    content if kind == "reg" else b"",
                    ti.mode & 0o7777,
                    ti.uid,
                    ti.gid,
                    ti.linkname if kind == "sym" else "",
                    xattrs,
                    (ti.devmajor, ti.devminor) if kind in ("chr", "blk") else None,
                    Decimal(mt) if mt is not None else Decimal(int(ti.mtime)),
                )
                self.inodes[self.next_ino] = ino
                self.paths[path] = self.next_ino
                self.next_ino += 1
        # the path and its ancestors are now "upper" for this layer
        p = path
        while p:
            self.upper.add(p)
            p = posixpath.dirname(p)

    def apply_tar(self, data: bytes) -> None:
        self.begin_layer()
        try:
            tf = tarfile.open(  # noqa: SIM115 (closed below; errors on open are ours to map)
                fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape"
            )
        except tarfile.TarError as e:
            raise RefError(str(e)) from e
        with tf:
            for ti in tf:
                content = b""
                if ti.isreg():
                    fh = tf.extractfile(ti)
                    assert fh is not None
                    content = fh.read()
                self.apply(ti, content)

    def copy(self) -> Model:
        return copy.deepcopy(self)

    # ---------------------------------------------------------------- result
    def snapshot(self) -> dict[str, tuple[object, ...]]:
        groups: dict[int, str] = {}
        for p in sorted(self.paths):
            v = self.paths[p]
            if isinstance(v, int):
                groups.setdefault(v, p)
        out: dict[str, tuple[object, ...]] = {}
        for p, v in self.paths.items():
            if isinstance(v, DirAttrs):
                out[p] = ("dir", b"", v.mode, v.uid, v.gid, "", v.xattrs, None, None, None)
            else:
                i = self.inodes[v]
                mode = None if i.type == "sym" else i.mode
                out[p] = (i.type, i.content, mode, i.uid, i.gid, i.target, i.xattrs, i.rdev, groups[v], i.mtime)
        return out


def apply_layers(tars: list[bytes]) -> dict[str, tuple[object, ...]]:
    m = Model()
    for t in tars:
        m.apply_tar(t)
    return m.snapshot()


def missing_ancestors(merged: bytes) -> list[str]:
    """Entries of a merged layer whose ancestor directories are not written before them.

    Issue 10: an overlay loader (docker's overlay2, containerd) creates a directory a layer does not
    name with mode 0755, owner root and the load time, so a squashed layer must carry every ancestor
    of what it writes (files, directories, links, whiteouts), parents first. The root is left out:
    it has an entry only when a layer gave it one.
    """
    seen: set[str] = set()
    bad: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(merged), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for ti in tf:
            name = posixpath.normpath(ti.name.lstrip("/"))
            if name == ".":
                continue
            parent = posixpath.dirname(name)
            while parent:
                if parent not in seen:
                    bad.append(ti.name)
                    break
                parent = posixpath.dirname(parent)
            if ti.isdir():
                seen.add(name)
    return bad
