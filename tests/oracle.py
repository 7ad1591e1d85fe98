"""The correctness oracle: unpack images with real tools (umoci, skopeo) and compare the root filesystems.

Nothing here uses ocisquash's code. ``unpack`` turns an image reference into an unpacked rootfs with
``umoci unpack`` (via ``skopeo copy`` first when umoci 0.4.7 can't read the input directly);
``snapshot`` records everything that counts about each path (type, content hash, mode bits, owner,
symlink target, device numbers, xattrs of every namespace, mtime, hardlink grouping); ``compare`` lists
the differences in readable form. Directory mtimes are never compared (docs/formats.md §4.5 step 8).

Reference forms accepted by ``unpack``/``skopeo_ref``:
  DIR or DIR:TAG                      an OCI image layout directory (TAG = its ref.name annotation)
  FILE or FILE:NAME:TAG or FILE:@N    a tarball: a docker-archive when it holds manifest.json, else an
                                      OCI layout tar (then FILE:TAG)
  oci:DIR[:TAG]  oci-archive:FILE[:TAG]  docker-archive:FILE[:REF]   explicit skopeo transports
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REF_NAME = "org.opencontainers.image.ref.name"
TRANSPORTS = ("oci:", "oci-archive:", "docker-archive:")
UMOCI_LAYER_TYPES = {"application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"}
KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
         stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


class ToolError(RuntimeError):
    """A tool (umoci, skopeo) failed; the message holds its command line and stderr."""


def run_tool(*args: str | os.PathLike[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command; raise ToolError with its stderr (and stdout) when it exits non-zero."""
    argv = [os.fspath(a) for a in args]
    if shutil.which(argv[0]) is None:
        raise ToolError(f"{argv[0]}: not installed")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace")
    if p.returncode != 0:
        msg = f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr.strip()}\n{p.stdout.strip()}"
        raise ToolError(msg.rstrip())
    return p


def umoci(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run ``umoci ARGS``; raises ToolError with umoci's stderr on failure."""
    return run_tool("umoci", *args)


def skopeo(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo --insecure-policy ARGS`` (no policy.json needed); raises ToolError on failure."""
    return run_tool("skopeo", "--insecure-policy", *args)


def skopeo_copy(src: str | os.PathLike[str], dst: str, *extra: str) -> None:
    """``skopeo copy`` from any accepted reference form to a skopeo destination reference."""
    skopeo("copy", "-q", *extra, skopeo_ref(src), dst)


def skopeo_inspect(ref: str | os.PathLike[str], *, raw: bool = False, config: bool = False) -> dict:
    """``skopeo inspect`` (or ``--raw`` manifest, or ``--config``) of a reference, parsed as JSON."""
    flags = [f for f, on in (("--raw", raw), ("--config", config)) if on]
    return json.loads(skopeo("inspect", *flags, skopeo_ref(ref)).stdout)


# ------------------------------------------------------------------------------------------ references

@dataclass(frozen=True)
class Ref:
    """A resolved reference: skopeo transport, path, and optional name (tag, NAME:TAG or @N)."""

    transport: str  # "oci", "oci-archive" or "docker-archive"
    path: Path
    name: str | None = None

    def skopeo(self) -> str:
        return f"{self.transport}:{self.path}" + (f":{self.name}" if self.name else "")


def _tar_kind(path: Path) -> str:
    with tarfile.open(path) as t:
        names = {n.removeprefix("./") for n in t.getnames()}
    if "manifest.json" in names:
        return "docker-archive"
    if "oci-layout" in names:
        return "oci-archive"
    raise ValueError(f"{path}: neither a docker-archive (no manifest.json) nor an OCI layout tar")


def resolve(ref: str | os.PathLike[str], name: str | None = None) -> Ref:
    """Turn any accepted reference form (see module doc) into a Ref."""
    s = os.fspath(ref)
    for tr in TRANSPORTS:
        if s.startswith(tr):
            rest = s[len(tr):]
            p, n = _split_existing(rest)
            return Ref(tr[:-1], p, name or n)
    p, n = _split_existing(s)
    n = name or n
    if p.is_dir():
        if not (p / "oci-layout").is_file():
            raise ValueError(f"{p}: a directory without oci-layout")
        return Ref("oci", p, n)
    return Ref(_tar_kind(p), p, n)


def _split_existing(s: str) -> tuple[Path, str | None]:
    """Split 'PATH[:NAME]' where PATH exists; NAME may itself hold colons (NAME:TAG)."""
    if os.path.exists(s):
        return Path(s), None
    i = s.find(":")
    while i != -1:
        if os.path.exists(s[:i]):
            return Path(s[:i]), s[i + 1:] or None
        i = s.find(":", i + 1)
    raise FileNotFoundError(f"{s}: no such image path")


def skopeo_ref(ref: str | os.PathLike[str] | Ref, name: str | None = None) -> str:
    """The skopeo transport reference for any accepted form."""
    return (ref if isinstance(ref, Ref) else resolve(ref, name)).skopeo()


def _umoci_direct_tag(r: Ref) -> str | None:
    """The tag umoci can unpack directly from this OCI dir, or None when skopeo must convert first."""
    if r.transport != "oci":
        return None
    index = json.loads((r.path / "index.json").read_bytes())
    entries = index.get("manifests") or []
    if r.name is None:
        if len(entries) != 1:
            raise ValueError(f"{r.path} holds {len(entries)} index entries: say which, as DIR:TAG")
        picked = entries
    else:
        picked = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) == r.name]
        if not picked:
            raise ValueError(f"{r.path}: no index entry named {r.name!r}")
    entry = picked[0]
    tag = (entry.get("annotations") or {}).get(REF_NAME)
    if not tag or entry.get("mediaType") != "application/vnd.oci.image.manifest.v1+json":
        return None
    alg, hexd = entry["digest"].split(":", 1)
    manifest = json.loads((r.path / "blobs" / alg / hexd).read_bytes())
    if all(layer.get("mediaType") in UMOCI_LAYER_TYPES for layer in manifest.get("layers") or []):
        return tag
    return None


def unpack(ref: str | os.PathLike[str] | Ref, dest: str | os.PathLike[str], name: str | None = None) -> Path:
    """Unpack an image's final rootfs into the bundle dir ``dest`` (must not exist); return the rootfs path.

    OCI layouts with gzip/plain layers and a tag go straight to ``umoci unpack``; everything else
    (docker-archive, OCI tars, zstd layers, untagged or nested entries) is first copied with
    ``skopeo copy`` into a temporary OCI layout with gzip layers.
    """
    r = ref if isinstance(ref, Ref) else resolve(ref, name)
    bundle = Path(dest)
    tag = _umoci_direct_tag(r)
    if tag is not None:
        umoci("unpack", "--image", f"{r.path}:{tag}", bundle)
        return bundle / "rootfs"
    with tempfile.TemporaryDirectory(prefix="oracle-layout.", dir=bundle.parent) as tmp:
        layout = Path(tmp) / "layout"
        skopeo("copy", "-q", "--dest-compress-format", "gzip", "--dest-compress-level", "1",
               r.skopeo(), f"oci:{layout}:img")
        umoci("unpack", "--image", f"{layout}:img", bundle)
    return bundle / "rootfs"


# ------------------------------------------------------------------------------------------ snapshots

@dataclass(frozen=True)
class Entry:
    """Everything that counts about one path of an unpacked rootfs."""

    type: str
    mode: int  # permission bits incl. setuid/setgid/sticky (stat.S_IMODE)
    uid: int
    gid: int
    size: int | None = None  # regular files
    sha256: str | None = None  # regular files
    target: str | None = None  # symlinks
    rdev: tuple[int, int] | None = None  # char/block devices
    xattrs: tuple[tuple[str, bytes], ...] = ()
    mtime_ns: int = 0
    hardlinks: tuple[str, ...] | None = field(default=None)  # all names of the inode, when more than one

    def content(self) -> str | None:
        return None if self.sha256 is None else f"{self.size} bytes sha256:{self.sha256[:16]}"


Snapshot = dict[str, Entry]


def _sha256(path: str) -> tuple[int, str]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return n, h.hexdigest()


def snapshot(rootfs: str | os.PathLike[str]) -> Snapshot:
    """Record every path under ``rootfs`` (keys are relative paths, '.' for the root itself)."""
    root = os.fspath(rootfs)
    out: dict[str, dict] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        st = os.lstat(path)
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "other")
        e: dict = {"type": kind, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                   "mtime_ns": st.st_mtime_ns}
        if kind == "file":
            e["size"], e["sha256"] = _sha256(path)
        elif kind == "symlink":
            e["target"] = os.readlink(path)
        elif kind in ("chardev", "blockdev"):
            e["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
        names = sorted(os.listxattr(path, follow_symlinks=False))
        e["xattrs"] = tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
        if kind != "dir" and st.st_nlink > 1:
            inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        out[rel or "."] = e
        if kind == "dir":
            stack.extend(os.path.join(rel, n) if rel else n for n in os.listdir(path))
    for group in inodes.values():
        if len(group) > 1:
            g = tuple(sorted(group))
            for p in g:
                out[p]["hardlinks"] = g
    return {p: Entry(**e) for p, e in out.items()}


def show(p: str) -> str:
    """A path for messages: escaped, and shortened in the middle when long."""
    r = repr(p)[1:-1]
    return r if len(r) <= 120 else r[:58] + "..." + r[-58:]


def _fmt(kind: str, v: object) -> str:
    if kind == "mode" and isinstance(v, int):
        return f"{v:04o}"
    return repr(v)


def compare(a: Snapshot, b: Snapshot, *, mtime: bool = False, dir_mtimes: bool = False,
            mtime_key: Callable[[int], int] | None = None, mtime_skip: frozenset[str] = frozenset(),
            show_mtime: Callable[[int], str] = str, xattr_filter: Callable[[str], bool] | None = None) -> list[str]:
    """Differences between two snapshots, one readable line each; empty when they are equal.

    Directory mtimes are compared only with ``dir_mtimes``, other mtimes only with ``mtime=True``;
    ``mtime_key`` maps an mtime before comparing (to the second, say), ``mtime_skip`` names paths whose
    mtime is not compared, ``show_mtime`` writes one for a message, ``xattr_filter`` keeps the xattrs
    that count. The real-client oracle (``realclients.compare_trees``) uses the options.
    """
    diffs: list[str] = []
    for p in sorted(set(a) | set(b)):
        ea, eb = a.get(p), b.get(p)
        if ea is None or eb is None:
            side, e = ("B", eb) if ea is None else ("A", ea)
            assert e is not None
            diffs.append(f"only-in-{side} {show(p)} ({e.type})")
            continue
        if ea.type != eb.type:
            diffs.append(f"type      {show(p)}: {ea.type} != {eb.type}")
            continue
        if ea.content() != eb.content():
            diffs.append(f"content   {show(p)}: {ea.content()} != {eb.content()}")
        for k in ("target", "rdev", "mode", "uid", "gid"):
            va, vb = getattr(ea, k), getattr(eb, k)
            if va != vb:
                diffs.append(f"{k:<9} {show(p)}: {_fmt(k, va)} != {_fmt(k, vb)}")
        xa, xb = ea.xattrs, eb.xattrs
        if xattr_filter is not None:
            xa, xb = tuple(x for x in xa if xattr_filter(x[0])), tuple(x for x in xb if xattr_filter(x[0]))
        if xa != xb:
            diffs.append(f"xattrs    {show(p)}: {_fmt('xattrs', xa)} != {_fmt('xattrs', xb)}")
        ha, hb = ea.hardlinks or (p,), eb.hardlinks or (p,)
        if ha != hb:
            diffs.append(f"hardlink  {show(p)}: linked with {[show(x) for x in ha if x != p]} "
                         f"!= {[show(x) for x in hb if x != p]}")
        if (mtime and ea.type != "dir") or (dir_mtimes and ea.type == "dir"):
            ma, mb = ea.mtime_ns, eb.mtime_ns
            if mtime_key is not None:
                ma, mb = mtime_key(ma), mtime_key(mb)
            if p not in mtime_skip and ma != mb:
                diffs.append(f"mtime     {show(p)} ({ea.type}): {show_mtime(ea.mtime_ns)} != "
                             f"{show_mtime(eb.mtime_ns)}")
    return diffs


# ------------------------------------------------------------------------------------------ for tests

_counter = itertools.count(1)  # next() on it is atomic under the GIL: safe from snapshots()' threads


def _fresh(tmp_path: Path, stem: str) -> Path:
    return Path(tmp_path) / f"{stem}-{os.getpid()}-{next(_counter)}"


def unpack_snapshot(ref: str | os.PathLike[str] | Ref, tmp_path: Path, name: str | None = None) -> Snapshot:
    """Unpack into a fresh bundle under ``tmp_path`` and snapshot its rootfs."""
    return snapshot(unpack(ref, _fresh(tmp_path, "bundle"), name))


def snapshots(refs: Sequence[str | os.PathLike[str] | Ref], tmp_path: Path) -> list[Snapshot]:
    """Unpack and snapshot several images concurrently (the work is in subprocesses)."""
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(refs)))) as pool:
        return list(pool.map(lambda r: unpack_snapshot(r, tmp_path), refs))


def assert_same_rootfs(ref_a: str | os.PathLike[str] | Ref, ref_b: str | os.PathLike[str] | Ref,
                       tmp_path: Path, *, mtime: bool = False, max_lines: int = 60) -> Snapshot:
    """Fail (AssertionError listing the differences) unless both images unpack to the same rootfs.

    Returns A's snapshot for further checks.
    """
    sa, sb = snapshots([ref_a, ref_b], tmp_path)
    diffs = compare(sa, sb, mtime=mtime)
    if diffs:
        more = f"\n... {len(diffs) - max_lines} more" if len(diffs) > max_lines else ""
        raise AssertionError(f"rootfs differ: A={skopeo_ref(ref_a)} B={skopeo_ref(ref_b)}\n"
                             + "\n".join(diffs[:max_lines]) + more)
    return sa
