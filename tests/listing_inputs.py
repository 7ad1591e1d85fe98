"""Hand-built multi-image inputs for the listing tests (plain json/tarfile/hashlib, no ocisquash code)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def jb(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class Img:
    names: list[str]
    created: str | None
    layers: list[bytes]
    labels: dict[str, str] = field(default_factory=dict)
    gzip: bool = False
    history: list[dict[str, Any]] | None = None
    # filled in by the writers
    config: bytes = b""
    blobs: list[bytes] = field(default_factory=list)

    @property
    def id(self) -> str:
        return sha(self.config)

    def build(self) -> None:
        cfg: dict[str, Any] = {
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in self.layers]},
            "config": {"Labels": self.labels or None},
        }
        if self.created is not None:
            cfg["created"] = self.created
        if self.history is not None:
            cfg["history"] = self.history
        self.config = jb(cfg)
        self.blobs = [gzip.compress(x, mtime=0) if self.gzip else x for x in self.layers]


def write_oci(root: Path, imgs: list[Img]) -> Path:
    """An OCI layout dir; names ``repo:tag`` go in io.containerd.image.name + ref.name (as Docker 25+)."""
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(b: bytes) -> str:
        d = sha(b)
        (root / "blobs" / "sha256" / d[7:]).write_bytes(b)
        return d

    manifests = []
    for img in imgs:
        img.build()
        lt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if img.gzip else "")
        man = jb({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(img.config),
                             "size": len(img.config)},
                  "layers": [{"mediaType": lt, "digest": put(b), "size": len(b)} for b in img.blobs]})
        desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(man), "size": len(man)}
        if not img.names:
            manifests.append(desc)
        for n in img.names:
            ann = {"io.containerd.image.name": n, "org.opencontainers.image.ref.name": n.rsplit(":", 1)[1]}
            manifests.append({**desc, "annotations": ann})
    (root / "index.json").write_bytes(jb({"schemaVersion": 2, "manifests": manifests}))
    return root


def write_docker(path: Path, imgs: list[Img]) -> Path:
    """A legacy ``docker save`` tar: ``manifest.json``, ``<id>.json`` configs, ``<n>/layer.tar`` members."""
    members: dict[str, bytes] = {}
    items = []
    for i, img in enumerate(imgs):
        img.build()
        cfg_name = img.id[7:] + ".json"
        members[cfg_name] = img.config
        paths = []
        for j, b in enumerate(img.blobs):
            p = f"{i}-{j}/layer.tar"
            members[p] = b
            paths.append(p)
        items.append({"Config": cfg_name, "RepoTags": img.names or None, "Layers": paths})
    members["manifest.json"] = json.dumps(items).encode() + b"\n"
    return write_members(path, members)


def write_members(path: Path, members: dict[str, bytes]) -> Path:
    """A plain tar at ``path`` of ``{name: data}`` regular files, in order (tarfile's defaults otherwise)."""
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return path
