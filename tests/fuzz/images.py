"""Small valid images built in pure Python (no umoci, no ocisquash code): seeds for fuzzing and hostile tests.

Everything is deterministic: ``members_*`` return the files of an image as ``{name: bytes}`` in
order, ``tar_of`` packs such a dict (or a list of raw ``TarInfo``/bytes pairs) into an outer tarball,
and ``write_dir`` lays it out as a directory. Mutating tests change a member and repack.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import zstandard

MTIME = 1_700_000_000
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REF_NAME = "org.opencontainers.image.ref.name"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def jbytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def layer_tar(files: Mapping[str, bytes], *, dirs: Iterable[str] = (), fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A layer: ``dirs`` then ``files`` (regular, 0644, fixed mtime)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, MTIME
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def default_layers() -> list[bytes]:
    return [
        layer_tar({"etc/hostname": b"box\n", "bin/sh": b"#!fake shell\n" * 4}, dirs=["etc", "bin"]),
        layer_tar({"etc/hostname": b"other\n", "app/run": b"run\n"}, dirs=["app"]),
        layer_tar({"app/data": b"x" * 3000}),
    ]


def compress(data: bytes, codec: str) -> bytes:
    if codec == "gzip":
        return gzip.compress(data, mtime=0)
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    assert codec == "none", codec
    return data


def config_for(layers: list[bytes], **extra: Any) -> bytes:
    obj: dict[str, Any] = {
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": f"step {i}"} for i in range(len(layers))],
    }
    obj.update(extra)
    return jbytes(obj)


def members_oci(layers: list[bytes] | None = None, codec: str = "gzip", tag: str = "latest") -> dict[str, bytes]:
    """An OCI image layout: ``oci-layout``, ``index.json`` and ``blobs/sha256/*``."""
    layers = default_layers() if layers is None else layers
    out: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    media = OCI_LAYER + ("" if codec == "none" else "+" + codec)
    descs = []
    for raw in layers:
        blob = compress(raw, codec)
        out[f"blobs/sha256/{sha(blob)[7:]}"] = blob
        descs.append({"mediaType": media, "digest": sha(blob), "size": len(blob)})
    cfg = config_for(layers)
    out[f"blobs/sha256/{sha(cfg)[7:]}"] = cfg
    man = jbytes({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                  "config": {"mediaType": OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)}, "layers": descs})
    out[f"blobs/sha256/{sha(man)[7:]}"] = man
    out["index.json"] = jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha(man), "size": len(man), "annotations": {REF_NAME: tag}}]})
    return out


def members_docker(layers: list[bytes] | None = None, codec: str = "none",
                   repo_tag: str = "fuzz/app:latest") -> dict[str, bytes]:
    """A ``docker save`` tarball in the Docker 25+ shape without index.json: manifest.json + blobs."""
    layers = default_layers() if layers is None else layers
    out: dict[str, bytes] = {}
    paths = []
    for raw in layers:
        blob = compress(raw, codec)
        p = f"blobs/sha256/{sha(blob)[7:]}"
        out[p] = blob
        paths.append(p)
    cfg = config_for(layers)
    cfg_path = f"blobs/sha256/{sha(cfg)[7:]}"
    out[cfg_path] = cfg
    out["manifest.json"] = jbytes([{"Config": cfg_path, "RepoTags": [repo_tag], "Layers": paths}])
    return out


def tar_of(members: Mapping[str, bytes] | Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """An outer tarball (GNU format) of ``{name: data}``, or of raw ``(TarInfo, data)`` pairs, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        items = members.items() if isinstance(members, Mapping) else members
        for a, b in items:
            if isinstance(a, tarfile.TarInfo):
                ti, data = a, b
            else:
                ti, data = tarfile.TarInfo(a), b
                ti.mode, ti.mtime = 0o644, MTIME
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_dir(members: Mapping[str, bytes], root: str | os.PathLike[str]) -> Path:
    root = Path(root)
    for name, data in members.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def raw_header(name: str, size_field: bytes | None = None, size: int = 0, type_: bytes = b"0") -> bytes:
    """A ustar header block built by hand, for shapes no tar writer makes; ``size_field`` (12 bytes)
    overrides the octal size; the checksum is always right."""
    b = bytearray(512)
    b[0:len(name)] = name.encode()
    b[100:108] = b"0000644\x00"
    b[108:116] = b"0000000\x00"
    b[116:124] = b"0000000\x00"
    b[124:136] = size_field if size_field is not None else b"%011o\x00" % size
    b[136:148] = b"%011o\x00" % MTIME
    b[156:157] = type_
    b[257:265] = b"ustar\x0000"
    b[148:156] = b" " * 8
    b[148:156] = b"%06o\x00 " % sum(b)
    return bytes(b)


def pax_record(key: str, value: bytes) -> bytes:
    """``"<len> key=value\\n"``, where the length counts its own digits."""
    body = key.encode() + b"=" + value + b"\n"
    n = len(body) + 2
    while len(rec := b"%d " % n + body) != n:
        n = len(rec)
    return rec


def pad(data: bytes) -> bytes:
    """``data`` padded to whole 512-byte tar blocks."""
    return data + bytes(-len(data) % 512)
