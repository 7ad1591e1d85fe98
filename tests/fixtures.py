"""Test image builders that do not use ocisquash's code: plain tarfile/json/hashlib plus umoci and skopeo.

- ``LayerBuilder``: layer tars by hand (PAX), including odd entries.
- ``build_oci``: an OCI layout from layer tars (``umoci raw add-layer``, gzip), or zstd/plain via skopeo.
- ``build_docker`` (skopeo's docker-archive), ``to_docker_legacy`` (Docker <= 24 ``docker save``),
  ``to_docker25`` (Docker >= 25 classic store) and ``to_containerd`` (Docker 29 containerd-store save).
- ``trap_image`` / ``trap_umoci_image``: the same five-step trap image built two independent ways.
- ``sample_image``: the tiny demo image shipped as ``testdata/sample.docker.tar``.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from oracle import skopeo, umoci

MTIME = 1700000000  # 2023-11-14T22:13:20Z: fixed timestamps keep built images reproducible
CREATED = "2023-11-14T22:13:20Z"
EMPTY_TAR = b"\0" * 1024  # Go's empty tar: DiffID sha256:5f70bf18...
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class BuiltImage(NamedTuple):
    """A built test image: a layout dir or tarball plus the name inside it (tag, NAME:TAG, or None)."""

    path: Path
    name: str | None

    @property
    def ref(self) -> str:
        """The reference string ``oracle.unpack`` accepts (``PATH:NAME``)."""
        return f"{self.path}:{self.name}" if self.name else str(self.path)


# ------------------------------------------------------------------------------------------ layer tars

def _pax_value(v: bytes | str) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v


class LayerBuilder:
    """Build one layer tar (PAX format) entry by entry; ``getvalue()`` returns its bytes.

    Paths are written as given (so ``./x`` stays ``./x``); directories get a trailing ``/`` as Go writers
    do. xattr values may be bytes (binary-safe) or str. Every entry gets ``mtime`` (default ``MTIME``).
    """

    def __init__(self, *, mtime: int = MTIME) -> None:
        self.mtime = mtime
        self._buf = io.BytesIO()
        self._tar: tarfile.TarFile | None = tarfile.open(  # noqa: SIM115 (closed by getvalue)
            fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
            errors="surrogateescape")

    def _info(self, path: str, type_: bytes, mode: int, uid: int, gid: int, mtime: int | None,
              xattrs: Mapping[str, bytes | str] | None) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(path)
        ti.type, ti.mode, ti.uid, ti.gid = type_, mode, uid, gid
        ti.mtime = self.mtime if mtime is None else mtime
        ti.uname = ti.gname = ""
        if xattrs:
            ti.pax_headers = {f"SCHILY.xattr.{k}": _pax_value(v) for k, v in xattrs.items()}
        return ti

    def add(self, ti: tarfile.TarInfo, data: bytes | None = None) -> LayerBuilder:
        """Add a raw TarInfo (with ``data`` as its content for regular files): for odd entries."""
        assert self._tar is not None, "layer already finished"
        if data is not None:
            ti.size = len(data)
        self._tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        return self

    def file(self, path: str, data: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0,
             mtime: int | None = None, xattrs: Mapping[str, bytes | str] | None = None) -> LayerBuilder:
        data = data.encode() if isinstance(data, str) else data
        return self.add(self._info(path, tarfile.REGTYPE, mode, uid, gid, mtime, xattrs), data)

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int | None = None,
            xattrs: Mapping[str, bytes | str] | None = None) -> LayerBuilder:
        name = path if path.endswith("/") else path + "/"
        return self.add(self._info(name, tarfile.DIRTYPE, mode, uid, gid, mtime, xattrs))

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0,
                mtime: int | None = None) -> LayerBuilder:
        ti = self._info(path, tarfile.SYMTYPE, 0o777, uid, gid, mtime, None)
        ti.linkname = target
        return self.add(ti)

    def hardlink(self, path: str, target: str, mode: int = 0o644, uid: int = 0, gid: int = 0,
                 mtime: int | None = None, xattrs: Mapping[str, bytes | str] | None = None) -> LayerBuilder:
        """A ``1`` entry; ``target`` is a rootfs path. Give it the target's metadata (docs/formats.md §4.5 step 5)."""
        ti = self._info(path, tarfile.LNKTYPE, mode, uid, gid, mtime, xattrs)
        ti.linkname = target
        return self.add(ti)

    def whiteout(self, path: str) -> LayerBuilder:
        """``dir/.wh.NAME``: deletes ``path`` from lower layers."""
        parent, name = posixpath.split(path.rstrip("/"))
        return self.file(posixpath.join(parent, ".wh." + name), b"")

    def opaque(self, dir_: str) -> LayerBuilder:
        """``dir/.wh..wh..opq``: hides every lower-layer child of ``dir_``."""
        return self.file(posixpath.join(dir_.rstrip("/"), ".wh..wh..opq"), b"")

    def fifo(self, path: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> LayerBuilder:
        return self.add(self._info(path, tarfile.FIFOTYPE, mode, uid, gid, None, None))

    def chardev(self, path: str, major: int, minor: int, mode: int = 0o666, uid: int = 0,
                gid: int = 0) -> LayerBuilder:
        ti = self._info(path, tarfile.CHRTYPE, mode, uid, gid, None, None)
        ti.devmajor, ti.devminor = major, minor
        return self.add(ti)

    def global_pax(self, records: Mapping[str, str]) -> LayerBuilder:
        """A PAX global header (``g``) here. Python readers apply it to later members, Go readers don't;
        umoci 0.4.7 refuses layers holding one ("unknown typeflag"), so keep it out of oracle images."""
        body = b""
        for k, v in records.items():
            rec = f" {k}={v}\n".encode()
            n = len(rec) + 1
            while len(str(n)) + len(rec) != n:
                n += 1
            body += str(n).encode() + rec
        ti = tarfile.TarInfo("pax_global_header")
        ti.type, ti.mtime = tarfile.XGLTYPE, self.mtime
        return self.add(ti, body)

    def getvalue(self) -> bytes:
        """Finish the tar (end marker, padding) and return its bytes."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        return self._buf.getvalue()

    def write(self, path: str | os.PathLike[str]) -> Path:
        Path(path).write_bytes(self.getvalue())
        return Path(path)


Layer = bytes | Path | LayerBuilder


def _layer_bytes(layer: Layer) -> bytes:
    if isinstance(layer, LayerBuilder):
        return layer.getvalue()
    return layer.read_bytes() if isinstance(layer, Path) else layer


# ------------------------------------------------------------------------------------------ OCI layouts

def umoci_config_args(config: Mapping[str, Any]) -> list[str]:
    """``umoci config`` flags for a config dict: Env, Cmd, Entrypoint, Labels, WorkingDir, User."""
    args: list[str] = []
    for e in config.get("Env") or []:
        args += ["--config.env", e]
    for c in config.get("Entrypoint") or []:
        args += ["--config.entrypoint", c]
    for c in config.get("Cmd") or []:
        args += ["--config.cmd", c]
    for k, v in (config.get("Labels") or {}).items():
        args += ["--config.label", f"{k}={v}"]
    if config.get("WorkingDir"):
        args += ["--config.workingdir", config["WorkingDir"]]
    if config.get("User"):
        args += ["--config.user", config["User"]]
    return args


def build_oci(layout: str | os.PathLike[str], tag: str, layers: Sequence[Layer],
              config: Mapping[str, Any] | None = None, compression: str = "gzip", *,
              history: Sequence[str] | None = None, created: str = CREATED) -> BuiltImage:
    """Build ``layout:tag`` from layer tars (applied in order) with umoci; ``config`` as umoci_config_args.

    ``compression``: "gzip" (umoci's own), "zstd" (skopeo --dest-compress-format zstd) or "none"
    (gunzipped by hand; a new layout). An existing layout gets a new tag.
    """
    layout = Path(layout)
    if compression != "gzip":
        with tempfile.TemporaryDirectory(prefix="build-oci.", dir=layout.parent) as tmp:
            src = build_oci(Path(tmp) / "gz", tag, layers, config, history=history, created=created)
            if compression == "zstd":
                skopeo("copy", "-q", "--dest-compress-format", "zstd", f"oci:{src.path}:{tag}",
                       f"oci:{layout}:{tag}")
            elif compression == "none":
                _gunzip_layout(src.path, tag, layout)
            else:
                raise ValueError(f"compression {compression!r}: gzip, zstd or none")
        return BuiltImage(layout, tag)
    if not (layout / "oci-layout").exists():
        umoci("init", "--layout", layout)
    img = f"{layout}:{tag}"
    umoci("new", "--image", img)
    with tempfile.TemporaryDirectory(prefix="layers.", dir=layout.parent) as tmp:
        for i, layer in enumerate(layers):
            if isinstance(layer, Path):
                f = layer
            else:
                f = Path(tmp) / f"{i}.tar"
                f.write_bytes(_layer_bytes(layer))
            by = history[i] if history and i < len(history) else f"layer {i + 1}"
            umoci("raw", "add-layer", "--image", img, "--history.created", created,
                  "--history.created_by", by, f)
    cfg_args = umoci_config_args(config or {})
    if cfg_args:
        umoci("config", "--image", img, "--created", created, "--history.created", created,
              "--history.created_by", "config", *cfg_args)
    else:
        umoci("config", "--image", img, "--created", created, "--no-history")
    umoci("gc", "--layout", layout)
    return BuiltImage(layout, tag)


def _put_blob(layout: Path, data: bytes) -> str:
    d = layout / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    (d / _sha(data)).write_bytes(data)
    return "sha256:" + _sha(data)


def _gunzip_layout(src: Path, tag: str, dst: Path) -> None:
    """Copy ``src:tag`` into a new layout ``dst`` with plain ``…layer.v1.tar`` layers (digest == DiffID).

    Done by hand: skopeo 1.9 via docker-archive labels the plain layers ``+gzip``.
    """
    manifest, _ = oci_manifest(src, tag)
    dst.mkdir()
    (dst / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    _put_blob(dst, oci_blob(src, manifest["config"]["digest"]))
    for layer in manifest["layers"]:
        assert layer["mediaType"] == OCI_LAYER_TAR + "+gzip", layer
        plain = gzip.decompress(oci_blob(src, layer["digest"]))
        layer.update(mediaType=OCI_LAYER_TAR, digest=_put_blob(dst, plain), size=len(plain))
    raw = _jbytes(manifest)
    entry = {"mediaType": OCI_MANIFEST, "digest": _put_blob(dst, raw), "size": len(raw),
             "annotations": {REF_NAME: tag}}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    (dst / "index.json").write_bytes(_jbytes(index))


def oci_blob(layout: Path, digest: str) -> bytes:
    alg, hexd = digest.split(":", 1)
    return (layout / "blobs" / alg / hexd).read_bytes()


def oci_manifest(layout: Path, tag: str | None = None) -> tuple[dict, bytes]:
    """The manifest (parsed, raw bytes) of ``layout``'s entry named ``tag`` (or its only entry)."""
    index = json.loads((layout / "index.json").read_bytes())
    entries = [e for e in index["manifests"]
               if tag is None or (e.get("annotations") or {}).get(REF_NAME) == tag]
    assert len(entries) == 1, f"{layout}: {len(entries)} entries for {tag!r}"
    raw = oci_blob(layout, entries[0]["digest"])
    return json.loads(raw), raw


# ------------------------------------------------------------------------------------------ docker tars

def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _jbytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def familiar(ref: str) -> str:
    """``docker.io/library/busybox:latest`` -> ``busybox:latest`` (what Docker writes in RepoTags)."""
    ref = ref.removeprefix("docker.io/")
    return ref.removeprefix("library/") if ref.count("/") == 1 and ref.startswith("library/") else ref


def qualified(ref: str) -> str:
    """``busybox:latest`` -> ``docker.io/library/busybox:latest``."""
    first = ref.split("/", 1)[0]
    if "/" in ref and ("." in first or ":" in first or first == "localhost"):
        return ref
    return "docker.io/" + (ref if "/" in ref else "library/" + ref)


class _TarWriter:
    """Collect members, then write them sorted by name (how Docker tars its temp dir)."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[tarfile.TarInfo, Callable[[], Any] | None]] = {}

    def data(self, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, MTIME
        self.members[name] = (ti, lambda: io.BytesIO(data))

    def stream(self, name: str, size: int, opener: Callable[[], Any]) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = size, 0o644, MTIME
        self.members[name] = (ti, opener)

    def symlink(self, name: str, target: str) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, target, 0o777, MTIME
        self.members[name] = (ti, None)

    def dirs(self) -> None:
        for name in list(self.members):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in self.members:
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
                    self.members[d] = (ti, None)

    def write(self, out: Path, *, dirs_last: bool = False) -> Path:
        names = sorted(self.members)
        if dirs_last:
            names.sort(key=lambda n: self.members[n][0].isdir())
        tmp = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
            for n in names:
                ti, opener = self.members[n]
                if opener is None:
                    t.addfile(ti)
                else:
                    f = opener()
                    t.addfile(ti, f)
                    f.close()
        os.replace(tmp, out)
        return out


def build_docker(oci_dir: str | os.PathLike[str], tag: str, out_tar: str | os.PathLike[str],
                 repo_tag: str, *extra: str) -> BuiltImage:
    """skopeo's docker-archive of ``oci_dir:tag``: ``<diffid>.tar`` layers, ``<v1id>/layer.tar`` symlinks."""
    out = Path(out_tar)
    out.unlink(missing_ok=True)
    skopeo("copy", "-q", *extra, f"oci:{oci_dir}:{tag}", f"docker-archive:{out}:{repo_tag}")
    return BuiltImage(out, repo_tag)


class _DockerArchive(NamedTuple):
    config_bytes: bytes
    config: dict
    diff_ids: list[str]  # hex
    layer_members: list[str]
    repo_tags: list[str]


def _read_archive(t: tarfile.TarFile) -> _DockerArchive:
    items = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert len(items) == 1, "single-image archives only"
    item = items[0]
    cfg = t.extractfile(item["Config"]).read()  # type: ignore[union-attr]
    config = json.loads(cfg)
    return _DockerArchive(cfg, config, [d.split(":", 1)[1] for d in config["rootfs"]["diff_ids"]],
                          list(item["Layers"]), list(item.get("RepoTags") or []))


def _member(t: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    m = t.getmember(name)
    while m.issym():
        m = t.getmember(posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname)))
    return m


def _opener(t: tarfile.TarFile, m: tarfile.TarInfo) -> Callable[[], Any]:
    return lambda: t.extractfile(m)


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + _sha(f"{out[-1]} {d}".encode()))
    return out


def to_docker_legacy(src_tar: str | os.PathLike[str], out_tar: str | os.PathLike[str]) -> BuiltImage:
    """Docker <= 24 ``docker save`` shape from a single-image docker-archive, layer bytes unchanged.

    ``<confighex>.json``, ``<v1id>/{VERSION,json,layer.tar}`` (real files; a symlink to the first copy when
    a DiffID repeats), ``manifest.json`` with familiar RepoTags, ``repositories``; members sorted by name.
    """
    w = _TarWriter()
    with tarfile.open(src_tar) as t:
        a = _read_archive(t)
        chains = chain_ids(["sha256:" + d for d in a.diff_ids])
        v1ids: list[str] = []
        first_of: dict[str, str] = {}
        for i, (diff, member) in enumerate(zip(a.diff_ids, a.layer_members, strict=True)):
            v1: dict[str, Any] = {"layer_id": chains[i]}
            if v1ids:
                v1["parent"] = "sha256:" + v1ids[-1]
            v1id = _sha(_jbytes(v1))
            js: dict[str, Any] = {"id": v1id, **({"parent": v1ids[-1]} if v1ids else {}),
                                  "created": "1970-01-01T00:00:00Z", "container_config": {"Cmd": None}}
            if i == len(a.diff_ids) - 1:
                js.update({k: a.config[k] for k in ("created", "config", "architecture", "os")
                           if k in a.config})
            v1ids.append(v1id)
            w.data(f"{v1id}/VERSION", b"1.0")
            w.data(f"{v1id}/json", _jbytes(js))
            if diff in first_of:
                w.symlink(f"{v1id}/layer.tar", f"../{first_of[diff]}/layer.tar")
            else:
                first_of[diff] = v1id
                m = _member(t, member)
                w.stream(f"{v1id}/layer.tar", m.size, _opener(t, m))
        cfg_hex = _sha(a.config_bytes)
        w.data(f"{cfg_hex}.json", a.config_bytes)
        tags = [familiar(r) for r in a.repo_tags]
        w.data("manifest.json", _jbytes([{"Config": f"{cfg_hex}.json", "RepoTags": tags,
                                          "Layers": [f"{v}/layer.tar" for v in v1ids]}]))
        repos: dict[str, dict[str, str]] = {}
        for r in tags:
            name, tag = r.rsplit(":", 1)
            repos.setdefault(name, {})[tag] = v1ids[-1]
        if repos:
            w.data("repositories", _jbytes(repos))
        w.dirs()
        w.write(Path(out_tar))
    return BuiltImage(Path(out_tar), tags[0] if tags else None)


def to_docker25(src_tar: str | os.PathLike[str], out_tar: str | os.PathLike[str]) -> BuiltImage:
    """Docker >= 25 (classic store) ``docker save`` shape from a single-image docker-archive.

    An OCI layout (uncompressed layers: digest == DiffID, config, OCI manifest, unreferenced v1 JSON
    blobs, ``index.json`` with both name annotations) plus ``manifest.json`` (``blobs/sha256/<hex>``
    paths, every layer in ``LayerSources``) and ``repositories``; members sorted by name.
    """
    w = _TarWriter()
    with tarfile.open(src_tar) as t:
        a = _read_archive(t)
        layer_descs = []
        for diff, member in zip(a.diff_ids, a.layer_members, strict=True):
            m = _member(t, member)
            w.stream(f"blobs/sha256/{diff}", m.size, _opener(t, m))
            layer_descs.append({"mediaType": OCI_LAYER_TAR, "digest": "sha256:" + diff, "size": m.size})
        for i, c in enumerate(chain_ids(["sha256:" + d for d in a.diff_ids])):  # legacy v1 JSON, unreferenced
            v1 = _jbytes({"id": _sha(c.encode()), "layer_id": c, "index": i})
            w.data(f"blobs/sha256/{_sha(v1)}", v1)
        cfg_hex = _sha(a.config_bytes)
        w.data(f"blobs/sha256/{cfg_hex}", a.config_bytes)
        manifest = _jbytes({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + cfg_hex,
                                       "size": len(a.config_bytes)}, "layers": layer_descs})
        w.data(f"blobs/sha256/{_sha(manifest)}", manifest)
        tags = [familiar(r) for r in a.repo_tags]
        desc = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + _sha(manifest), "size": len(manifest)}
        entries = [{**desc, "annotations": {CONTAINERD_NAME: qualified(r), REF_NAME: r.rsplit(":", 1)[1]}}
                   for r in tags] or [desc]
        w.data("index.json", _jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}))
        w.data("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        w.data("manifest.json", _jbytes([{
            "Config": f"blobs/sha256/{cfg_hex}", "RepoTags": tags,
            "Layers": [f"blobs/sha256/{d}" for d in a.diff_ids],
            "LayerSources": {"sha256:" + d["digest"].split(":")[1]: d for d in layer_descs}}]) + b"\n")
        repos: dict[str, dict[str, str]] = {}
        for r in tags:
            name, tag = r.rsplit(":", 1)
            repos.setdefault(name, {})[tag] = a.diff_ids[-1]
        if repos:
            w.data("repositories", _jbytes(repos))
        w.dirs()
        w.write(Path(out_tar))
    return BuiltImage(Path(out_tar), tags[0] if tags else None)


def to_containerd(oci_dir: str | os.PathLike[str], tag: str, out_tar: str | os.PathLike[str],
                  repo_tag: str) -> BuiltImage:
    """Docker 29 containerd-store ``docker save`` shape from an OCI layout with gzip layers (blobs unchanged).

    ``index.json`` -> a nested index with: this image as a Docker schema2 manifest (gzip layers), a
    linux/arm64 manifest whose blob (and everything below it) is missing, and a buildkit attestation
    manifest (unknown/unknown). ``manifest.json`` names the host manifest; directory members come last.
    """
    layout = Path(oci_dir)
    manifest, _ = oci_manifest(layout, tag)
    cfg_bytes = oci_blob(layout, manifest["config"]["digest"])
    cfg = json.loads(cfg_bytes)
    w = _TarWriter()
    w.data(f"blobs/sha256/{_sha(cfg_bytes)}", cfg_bytes)
    layers = []
    for layer in manifest["layers"]:
        assert layer["mediaType"].endswith("+gzip"), "to_containerd wants gzip layers"
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        w.stream(f"blobs/sha256/{blob.name}", blob.stat().st_size, functools.partial(blob.open, "rb"))
        layers.append({"mediaType": DOCKER_LAYER_GZIP, "digest": layer["digest"], "size": layer["size"]})
    host = _jbytes({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "digest": "sha256:" + _sha(cfg_bytes),
                               "size": len(cfg_bytes)}, "layers": layers})
    w.data(f"blobs/sha256/{_sha(host)}", host)
    arm = _jbytes({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,  # not written: "platform not pulled"
                   "config": {"mediaType": DOCKER_CONFIG, "digest": "sha256:" + _sha(b"arm64 config"),
                              "size": 12},
                   "layers": [{"mediaType": DOCKER_LAYER_GZIP, "digest": "sha256:" + _sha(b"arm64 layer"),
                               "size": 11}]})
    statement = _jbytes({"_type": "https://in-toto.io/Statement/v0.1",
                         "predicateType": "https://spdx.dev/Document", "subject": [], "predicate": {}})
    att_cfg = _jbytes({"architecture": "unknown", "os": "unknown", "config": {},
                       "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _sha(statement)]}})
    att = _jbytes({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + _sha(att_cfg),
                              "size": len(att_cfg)},
                   "layers": [{"mediaType": "application/vnd.in-toto+json",
                               "digest": "sha256:" + _sha(statement),
                               "size": len(statement),
                               "annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]})
    for b in (statement, att_cfg, att):
        w.data(f"blobs/sha256/{_sha(b)}", b)
    nested = _jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": "sha256:" + _sha(host), "size": len(host),
         "platform": {"architecture": cfg.get("architecture", "amd64"), "os": cfg.get("os", "linux")}},
        {"mediaType": DOCKER_MANIFEST, "digest": "sha256:" + _sha(arm), "size": len(arm),
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + _sha(att), "size": len(att),
         "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.digest": "sha256:" + _sha(host),
                         "vnd.docker.reference.type": "attestation-manifest"}}]})
    w.data(f"blobs/sha256/{_sha(nested)}", nested)
    w.data("index.json", _jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": "sha256:" + _sha(nested), "size": len(nested),
         "annotations": {CONTAINERD_NAME: qualified(repo_tag), REF_NAME: repo_tag.rsplit(":", 1)[1]}}]}))
    w.data("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    item = {"Config": f"blobs/sha256/{_sha(cfg_bytes)}", "RepoTags": [familiar(repo_tag)],
            "Layers": [f"blobs/sha256/{x['digest'][7:]}" for x in layers]}
    w.data("manifest.json", _jbytes([item]) + b"\n")
    w.dirs()
    w.write(Path(out_tar), dirs_last=True)
    return BuiltImage(Path(out_tar), familiar(repo_tag))


# ------------------------------------------------------------------------------------------ trap image
# Five steps, written twice: as hand-made layer tars (Docker/overlay-style diffs: opaque dirs, type
# swaps without whiteouts, links to lower layers) and as Python os calls on a `umoci unpack`ed rootfs
# followed by `umoci repack` (mtree diffs). Both must unpack to the same rootfs.

D100 = "d" * 100
N150 = "n" * 150
N255 = "x" * 251 + ".txt"  # NAME_MAX; its whiteout name (.wh. + 255) is longer than NAME_MAX
LONG_TARGET = f"{D100}/{D100}/{D100}/{N150}"  # 453 chars
DEEP = f"app/names/{LONG_TARGET}"  # 463-char path
UTF8 = "héllo wörld 日本語 🐳.txt"
NFC, NFD = "caf\u00e9", "cafe\u0301"  # two distinct files that look alike
ODD_NAMES = {"with space.txt": "space", "it's \"quoted\".txt": "q", "back\\slash.txt": "b", UTF8: "u",
             NFC: "nfc", NFD: "nfd", N150: "n150", N255: "n255", "-leading-dash": "dash"}
CAP = base64.b64decode("AQAAAgAgAAAAAAAAAAAAAAAAAAA=")  # security.capability: cap_net_bind_service+ep
USER_XATTRS: dict[str, bytes] = {"user.mime_type": b"text/plain", "user.comment": "héllo wörld".encode(),
                                 "user.binary": b"\x00\xff\x10", "trusted.ocisquash": b"t\x00rusted"}
ZEROS = 256 * 1024
PERMS = (("setuid", 0o4755), ("setgid", 0o2755), ("readonly", 0o444), ("noperm", 0o000), ("exec", 0o755))
TRAP_CONFIG_L4 = {"Env": ["APP_MODE=test"], "Labels": {"org.example.step": "4"}}
TRAP_CONFIG = {"Cmd": ["/bin/tool"], "WorkingDir": "/app", "Env": ["PATH=/bin"],
               "Labels": {"org.example.image": "trap"}}
TRAP_STEPS = ["L1 create: base files, hardlinks, modes, owners, xattrs, names",
              "L2 modify: edits, whiteouts, opaque dir",
              "L3 replace: type swaps, hardlink traps, re-added paths",
              "L4 empty: no filesystem change", "L5 late: deep edits, long whiteouts, duplicates"]


def trap_layers() -> list[Layer]:
    """The five hand-made trap layers (see the module's trap section and trap_image)."""
    l1 = LayerBuilder()
    l1.dir("./")  # a root entry, ./-prefixed
    l1.dir("bin").file("bin/tool", "#!/bin/sh\necho tool\n", 0o755).symlink("bin/sh", "tool")
    l1.dir("etc").file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    l1.file("etc/group", "root:x:0:\napp:x:1000:\n")
    l1.dir("tmp", 0o1777).dir("root", 0o700).dir("home").dir("home/app", uid=1000, gid=1000)
    l1.dir("usr").dir("usr/lib").file("usr/lib/base.so", "base\n")
    l1.symlink("lib", "usr/lib").symlink("lib64", "/usr/lib")  # relative and absolute symlinked parents
    l1.dir("dev").chardev("dev/null", 1, 3)
    l1.dir("app")
    for n in ("config.txt", "chmod-me", "chown-me", "xattr-later", "delete-me.txt"):
        l1.file(f"app/{n}", {"config.txt": "config v1\n", "delete-me.txt": "bye\n"}.get(n, n + "\n"))
    l1.dir("app/dir-to-delete").file("app/dir-to-delete/a", "a\n").dir("app/dir-to-delete/sub")
    l1.file("app/dir-to-delete/sub/c", "c\n")
    l1.dir("app/opaque").dir("app/opaque/keep").file("app/opaque/old1", "old1\n")
    l1.file("app/opaque/old2", "old2\n")
    l1.file("app/opaque/keep/old", "old\n")
    l1.file("app/file-to-dir", "file\n").dir("app/dir-to-file").file("app/dir-to-file/x", "x\n")
    l1.file("app/dir-to-file/y", "y\n").symlink("app/symlink-to-file", "config.txt")
    l1.file("app/file-to-symlink", "file\n").dir("app/realdir").file("app/realdir/r", "r\n")
    l1.symlink("app/symlink-to-dir", "realdir").dir("app/dir-to-symlink").file("app/dir-to-symlink/d", "d\n")
    l1.dir("hl").file("hl/g1-a", "g1-old\n").hardlink("hl/g1-b", "hl/g1-a")
    l1.file("hl/g2-a", "g2-old\n").hardlink("hl/g2-b", "hl/g2-a")
    l1.file("hl/g3-a", "g3\n").hardlink("hl/g3-b", "hl/g3-a").hardlink("hl/g3-c", "hl/g3-a")
    l1.file("hl/t4", "t4-v1\n").dir("hl/d1").file("hl/d1/body", "body\n")
    l1.hardlink("hl/z-outside-link", "hl/d1/body")
    l1.dir("app/perm")
    for n, m in PERMS:
        l1.file(f"app/perm/{n}", n + "\n", m)
    l1.dir("app/perm/sticky-dir", 0o1777).dir("app/perm/private-dir", 0o700)
    l1.dir("app/own").file("app/own/app", "app\n", uid=1000, gid=1000)
    l1.dir("app/own/appdir", uid=1000, gid=1000).file("app/own/odd", "odd\n", uid=123456, gid=654321)
    l1.file("app/own/nobody", "nobody\n", uid=65534, gid=65534)
    l1.dir("app/xattr", xattrs={"user.dir": b"yes"}).file("app/xattr/user", "text\n", xattrs=USER_XATTRS)
    l1.file("app/xattr/cap-binary", b"\x7fELF fake binary\n", 0o755, xattrs={"security.capability": CAP})
    l1.dir("app/names")
    for n, body in ODD_NAMES.items():
        l1.file(f"app/names/{n}", body + "\n")
    for i in range(1, 4):
        l1.dir("app/names/" + "/".join([D100] * i))
    l1.file(DEEP, "deep-v1\n").symlink("app/names/long-symlink", LONG_TARGET)
    l1.hardlink("app/names/hardlink-to-deep", DEEP)  # a 463-char linkname
    l1.file("app/empty-file").dir("app/empty-dir").fifo("app/fifo").file("app/zeros", bytes(ZEROS))

    l2 = LayerBuilder()
    l2.dir("./app").file("./app/config.txt", "config v2 (modified)\n")  # ./-prefixed names
    l2.file("app/chmod-me", "chmod-me\n", 0o600).file("app/chown-me", "chown-me\n", uid=1000, gid=1000)
    l2.file("app/xattr-later", "xattr-later\n", xattrs={"user.added": b"yes"})
    l2.whiteout("app/delete-me.txt").whiteout("app/dir-to-delete")
    # opaque dir, the marker written *after* this layer's own children: it still hides only lower ones
    l2.dir("app/opaque").dir("app/opaque/keep").file("app/opaque/new", "new\n")
    l2.file("app/opaque/keep/new", "new\n")
    l2.file("app/opaque/gone-in-l3", "gone\n").opaque("app/opaque")
    l2.dir("hl").file("hl/t4", "t4-v2\n").file("app/added-in-l2", "l2\n")

    l3 = LayerBuilder()
    l3.dir("app").dir("app/file-to-dir").file("app/file-to-dir/inner", "inner\n")  # no whiteouts: step 4
    l3.file("app/dir-to-file", "now-a-file\n").file("app/symlink-to-file", "now-a-file\n")
    l3.symlink("app/file-to-symlink", "config.txt").dir("app/symlink-to-dir")
    l3.file("app/symlink-to-dir/inner", "inner\n")
    l3.symlink("app/dir-to-symlink", "realdir")
    l3.dir("hl").file("hl/g1-a", "g1-new\n").file("hl/g2-b", "g2-new\n")  # g1-b, g2-a keep the old bytes
    l3.hardlink("hl/t4-link", "hl/t4")  # a link to a lower layer's (modified) file
    l3.whiteout("hl/d1")  # z-outside-link must survive as a plain file
    l3.file("app/delete-me.txt", "back-again\n").whiteout("app/opaque/gone-in-l3")
    l3.dir("app/dir-to-delete").file("app/dir-to-delete/again", "again\n")
    l3.file("lib/x", "x via lib\n").file("lib64/y", "y via /usr/lib\n")  # land in usr/lib through symlinks

    l5 = LayerBuilder()
    l5.dir("app/names", uid=1000, gid=1000)  # chown of a dir only
    l5.file(DEEP, "deep-v2\n")  # replaced: hardlink-to-deep keeps deep-v1
    l5.whiteout(f"app/names/{UTF8}").whiteout(f"app/names/{N255}")
    l5.dir("app/realdir", 0o700)  # chmod of a dir only
    l5.file("app/zeros", bytes(ZEROS) + b"tail\n")
    l5.file("app/dup", "first\n").file("app/dup", "second\n")  # duplicate entry: the last one wins
    return [l1, l2, l3, EMPTY_TAR, l5]


def _w(p: Path, data: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    if p.is_symlink() or p.exists():
        p.unlink()
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chown(p, uid, gid)
    os.chmod(p, mode)


def _d(p: Path, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
    p.mkdir(exist_ok=True)
    os.chown(p, uid, gid)
    os.chmod(p, mode)


def _xattrs(p: Path, xattrs: Mapping[str, bytes]) -> None:
    for k, v in xattrs.items():
        os.setxattr(p, k, v, follow_symlinks=False)


def _trap_step1(r: Path) -> None:
    _d(r)
    for d in ("bin", "etc", "home", "usr", "usr/lib", "dev", "app", "hl", "hl/d1"):
        _d(r / d)
    _d(r / "tmp", 0o1777)
    _d(r / "root", 0o700)
    _d(r / "home/app", uid=1000, gid=1000)
    _w(r / "bin/tool", "#!/bin/sh\necho tool\n", 0o755)
    os.symlink("tool", r / "bin/sh")
    _w(r / "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    _w(r / "etc/group", "root:x:0:\napp:x:1000:\n")
    _w(r / "usr/lib/base.so", "base\n")
    os.symlink("usr/lib", r / "lib")
    os.symlink("/usr/lib", r / "lib64")
    os.mknod(r / "dev/null", 0o020666, os.makedev(1, 3))
    os.chmod(r / "dev/null", 0o666)
    for n in ("config.txt", "chmod-me", "chown-me", "xattr-later", "delete-me.txt"):
        _w(r / "app" / n, {"config.txt": "config v1\n", "delete-me.txt": "bye\n"}.get(n, n + "\n"))
    for d in ("dir-to-delete", "dir-to-delete/sub", "opaque", "opaque/keep", "dir-to-file", "realdir",
              "dir-to-symlink", "perm", "own", "xattr", "names", "empty-dir"):
        _d(r / "app" / d)
    for f, body in (("dir-to-delete/a", "a\n"), ("dir-to-delete/sub/c", "c\n"), ("opaque/old1", "old1\n"),
                    ("opaque/old2", "old2\n"), ("opaque/keep/old", "old\n"), ("file-to-dir", "file\n"),
                    ("dir-to-file/x", "x\n"), ("dir-to-file/y", "y\n"), ("file-to-symlink", "file\n"),
                    ("realdir/r", "r\n"), ("dir-to-symlink/d", "d\n"), ("empty-file", "")):
        _w(r / "app" / f, body)
    os.symlink("config.txt", r / "app/symlink-to-file")
    os.symlink("realdir", r / "app/symlink-to-dir")
    for body_name, links, body in (("g1-a", ["g1-b"], "g1-old\n"), ("g2-a", ["g2-b"], "g2-old\n"),
                                   ("g3-a", ["g3-b", "g3-c"], "g3\n"), ("t4", [], "t4-v1\n")):
        _w(r / "hl" / body_name, body)
        for link in links:
            os.link(r / "hl" / body_name, r / "hl" / link)
    _w(r / "hl/d1/body", "body\n")
    os.link(r / "hl/d1/body", r / "hl/z-outside-link")
    for n, m in PERMS:
        _w(r / "app/perm" / n, n + "\n", m)
    _d(r / "app/perm/sticky-dir", 0o1777)
    _d(r / "app/perm/private-dir", 0o700)
    _w(r / "app/own/app", "app\n", uid=1000, gid=1000)
    _d(r / "app/own/appdir", uid=1000, gid=1000)
    _w(r / "app/own/odd", "odd\n", uid=123456, gid=654321)
    _w(r / "app/own/nobody", "nobody\n", uid=65534, gid=65534)
    _xattrs(r / "app/xattr", {"user.dir": b"yes"})
    _w(r / "app/xattr/user", "text\n")
    _xattrs(r / "app/xattr/user", USER_XATTRS)
    _w(r / "app/xattr/cap-binary", b"\x7fELF fake binary\n", 0o755)
    _xattrs(r / "app/xattr/cap-binary", {"security.capability": CAP})
    for n, body in ODD_NAMES.items():
        _w(r / "app/names" / n, body + "\n")
    for i in range(1, 4):
        _d(r / "app/names" / "/".join([D100] * i))
    _w(r / DEEP, "deep-v1\n")
    os.symlink(LONG_TARGET, r / "app/names/long-symlink")
    os.link(r / DEEP, r / "app/names/hardlink-to-deep")
    os.mkfifo(r / "app/fifo", 0o644)
    os.chmod(r / "app/fifo", 0o644)
    _w(r / "app/zeros", bytes(ZEROS))


def _trap_step2(r: Path) -> None:
    _w(r / "app/config.txt", "config v2 (modified)\n")
    os.chmod(r / "app/chmod-me", 0o600)
    os.chown(r / "app/chown-me", 1000, 1000)
    _xattrs(r / "app/xattr-later", {"user.added": b"yes"})
    (r / "app/delete-me.txt").unlink()
    shutil.rmtree(r / "app/dir-to-delete")
    shutil.rmtree(r / "app/opaque")
    _d(r / "app/opaque")
    _d(r / "app/opaque/keep")
    _w(r / "app/opaque/new", "new\n")
    _w(r / "app/opaque/keep/new", "new\n")
    _w(r / "app/opaque/gone-in-l3", "gone\n")
    _w(r / "hl/t4", "t4-v2\n")
    _w(r / "app/added-in-l2", "l2\n")


def _trap_step3(r: Path) -> None:
    (r / "app/file-to-dir").unlink()
    _d(r / "app/file-to-dir")
    _w(r / "app/file-to-dir/inner", "inner\n")
    shutil.rmtree(r / "app/dir-to-file")
    _w(r / "app/dir-to-file", "now-a-file\n")
    _w(r / "app/symlink-to-file", "now-a-file\n")
    (r / "app/file-to-symlink").unlink()
    os.symlink("config.txt", r / "app/file-to-symlink")
    (r / "app/symlink-to-dir").unlink()
    _d(r / "app/symlink-to-dir")
    _w(r / "app/symlink-to-dir/inner", "inner\n")
    shutil.rmtree(r / "app/dir-to-symlink")
    os.symlink("realdir", r / "app/dir-to-symlink")
    _w(r / "hl/g1-a", "g1-new\n")  # _w unlinks first: a new inode
    _w(r / "hl/g2-b", "g2-new\n")
    os.link(r / "hl/t4", r / "hl/t4-link")
    shutil.rmtree(r / "hl/d1")
    _w(r / "app/delete-me.txt", "back-again\n")
    (r / "app/opaque/gone-in-l3").unlink()
    _d(r / "app/dir-to-delete")
    _w(r / "app/dir-to-delete/again", "again\n")
    _w(r / "usr/lib/x", "x via lib\n")  # never write through lib64 -> /usr/lib on the host
    _w(r / "usr/lib/y", "y via /usr/lib\n")


def _trap_step4(r: Path) -> None:
    pass


def _trap_step5(r: Path) -> None:
    os.chown(r / "app/names", 1000, 1000)
    _w(r / DEEP, "deep-v2\n")
    (r / "app/names" / UTF8).unlink()
    (r / "app/names" / N255).unlink()
    os.chmod(r / "app/realdir", 0o700)
    with open(r / "app/zeros", "ab") as f:
        f.write(b"tail\n")
    _w(r / "app/dup", "second\n")


TRAP_STEP_FUNCS = [_trap_step1, _trap_step2, _trap_step3, _trap_step4, _trap_step5]


def trap_image(tmp_path: str | os.PathLike[str], tag: str = "latest",
               compression: str = "gzip") -> BuiltImage:
    """The trap image from hand-made layers: ``tmp_path/trap.oci:tag`` (5 layers, L4 an empty tar).

    Config after L4 gets Env/Labels, then Cmd/WorkingDir/Env/Labels (``umoci config`` history entries
    with ``empty_layer``). Also tags ``l2`` (the first two layers, shared blobs).
    """
    layout = Path(tmp_path) / ("trap.oci" if compression == "gzip" else f"trap-{compression}.oci")
    layers = trap_layers()
    if compression != "gzip":
        return build_oci(layout, tag, layers, TRAP_CONFIG, compression, history=TRAP_STEPS)
    build_oci(layout, "l2", layers[:2], history=TRAP_STEPS)
    img = build_oci(layout, tag, layers[:4], TRAP_CONFIG_L4, history=TRAP_STEPS)
    f = Path(tmp_path) / "trap-l5.tar"
    f.write_bytes(_layer_bytes(layers[4]))
    umoci("raw", "add-layer", "--image", f"{layout}:{tag}", "--history.created", CREATED,
          "--history.created_by", TRAP_STEPS[4], f)
    f.unlink()
    umoci("config", "--image", f"{layout}:{tag}", "--created", CREATED, "--history.created", CREATED,
          "--history.created_by", "config", *umoci_config_args(TRAP_CONFIG))
    umoci("gc", "--layout", layout)
    return img


def trap_umoci_image(tmp_path: str | os.PathLike[str], tag: str = "latest") -> BuiltImage:
    """The same trap steps through ``umoci unpack`` + Python os calls + ``umoci repack``.

    ``tmp_path/trap-umoci.oci:tag``: mtree diffs (a ``.`` root entry per layer, a whiteout per removed
    child instead of opaque dirs, hardlink partners re-emitted, no blob for the empty step).
    """
    layout = Path(tmp_path) / "trap-umoci.oci"
    bundle = Path(tmp_path) / "trap-umoci.bundle"
    img = f"{layout}:{tag}"
    umoci("init", "--layout", layout)
    umoci("new", "--image", img)
    for i, step in enumerate(TRAP_STEP_FUNCS):
        umoci("unpack", "--image", img, bundle)
        step(bundle / "rootfs")
        umoci("repack", "--image", img, "--history.created", CREATED,
              "--history.created_by", TRAP_STEPS[i], bundle)
        shutil.rmtree(bundle)
        if i == 1:
            umoci("tag", "--image", img, "l2")
        if i == 3:
            umoci("config", "--image", img, "--history.created", CREATED, *umoci_config_args(TRAP_CONFIG_L4))
    umoci("config", "--image", img, "--created", CREATED, "--history.created", CREATED,
          *umoci_config_args(TRAP_CONFIG))
    umoci("gc", "--layout", layout)
    return BuiltImage(layout, tag)


# ------------------------------------------------------------------------------------------ sample image

SAMPLE_REPO_TAG = "ocisquash/sample:latest"
SAMPLE_CONFIG = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=hello"], "Cmd": ["/app/hello.sh"],
                 "WorkingDir": "/app", "Labels": {"org.opencontainers.image.title": "ocisquash sample"}}


def sample_layers() -> list[Layer]:
    """Three small layers: a base, an app (with a secret it later deletes), and an edit + cleanup."""
    base = LayerBuilder()
    for d in ("bin", "etc", "tmp", "usr", "usr/share", "usr/share/doc", "app"):
        base.dir(d, 0o1777 if d == "tmp" else 0o755)
    base.file("etc/os-release", 'NAME="ocisquash sample"\nID=sample\nVERSION_ID=1\n')
    base.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n")
    base.file("etc/group", "root:x:0:\napp:x:1000:\n")
    base.file("usr/share/doc/README", "Documentation that a later layer deletes.\n" * 40)
    base.file("usr/share/doc/LICENSE", "Apache-2.0\n")
    app = LayerBuilder(mtime=MTIME + 60)
    app.dir("app", uid=1000, gid=1000)
    app.file("app/hello.sh", '#!/bin/sh\necho "$GREETING from the ocisquash sample"\n', 0o755, 1000, 1000)
    app.file("app/config.ini", "[app]\nmode = debug\n", 0o640, 1000, 1000)
    app.file("app/build-secret.txt", "token=not-a-real-secret\n", 0o600, 1000, 1000)
    app.file("app/data.bin", bytes(range(256)) * 64, 0o644, 1000, 1000)
    app.hardlink("app/data-link.bin", "app/data.bin", 0o644, 1000, 1000)
    app.symlink("bin/hello", "/app/hello.sh")
    fix = LayerBuilder(mtime=MTIME + 120)
    fix.dir("app", uid=1000, gid=1000)
    fix.file("app/config.ini", "[app]\nmode = production\n", 0o640, 1000, 1000)
    fix.whiteout("app/build-secret.txt")
    fix.whiteout("usr/share/doc")
    return [base, app, fix]


def sample_image(out_tar: str | os.PathLike[str], repo_tag: str = SAMPLE_REPO_TAG) -> BuiltImage:
    """The README demo image as skopeo's docker-archive at ``out_tar`` (3 layers, a few KB, reproducible)."""
    out = Path(out_tar)
    with tempfile.TemporaryDirectory(prefix="sample.", dir=out.parent) as tmp:
        oci = build_oci(Path(tmp) / "sample.oci", "latest", sample_layers(), SAMPLE_CONFIG,
                        history=["base files", "COPY app /app", "RUN edit config && rm secret docs"])
        return build_docker(oci.path, oci.name or "latest", out, repo_tag)
