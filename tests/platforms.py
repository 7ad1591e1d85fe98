"""Multi-platform images made from single-platform ones in an OCI layout, for the ``--platform all`` tests.

``build_oci`` (umoci) makes one image per tag; ``make_index`` turns some of them into the platforms of one
image index (each config says its platform, each manifest may carry annotations) and removes their own
tags, so the layout holds the index and nothing else for those images; ``tag_platforms`` names each
platform's manifest of an index again, for tools (umoci) that unpack one manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"


def put(layout: Path, data: bytes) -> dict[str, Any]:
    d = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / d).write_bytes(data)
    return {"digest": f"sha256:{d}", "size": len(data)}


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _index(layout: Path) -> dict[str, Any]:
    return json.loads((layout / "index.json").read_text())  # type: ignore[no-any-return]


def make_index(layout: Path, tag: str, platforms: dict[str, str],
               annotations: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Index ``tag``: per platform (``linux/arm64/v8``) the image tagged ``platforms[p]``, its config's
    os/architecture/variant set to ``p``'s and its manifest given ``annotations[p]``. Returns each
    platform's manifest digest."""
    index = _index(layout)
    by_tag = {(m.get("annotations") or {}).get(REF_NAME): m for m in index["manifests"]}
    entries, digests = [], {}
    for plat, src in platforms.items():
        os_, arch, *variant = plat.split("/")
        man = json.loads(blob(layout, by_tag[src]["digest"]))
        cfg = json.loads(blob(layout, man["config"]["digest"]))
        cfg.update(os=os_, architecture=arch)
        if variant:
            cfg["variant"] = variant[0]
        man["config"] = {**man["config"], **put(layout, json.dumps(cfg).encode())}
        if annotations and plat in annotations:
            man["annotations"] = annotations[plat]
        desc = put(layout, json.dumps(man).encode())
        digests[plat] = desc["digest"]
        entries.append({"mediaType": OCI_MANIFEST, **desc,
                        "platform": {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}})
    idx = put(layout, json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode())
    gone = set(platforms.values())
    index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) not in gone]
    index["manifests"].append({"mediaType": OCI_INDEX, **idx, "annotations": {REF_NAME: tag}})
    (layout / "index.json").write_text(json.dumps(index))
    return digests


def platform_manifests(layout: Path, tag: str) -> dict[str, dict[str, Any]]:
    """The manifests of index ``tag``, by their entries' ``os/arch`` (variant dropped)."""
    entry = next(m for m in _index(layout)["manifests"] if (m.get("annotations") or {}).get(REF_NAME) == tag)
    out = {}
    for m in json.loads(blob(layout, entry["digest"]))["manifests"]:
        out[f"{m['platform']['os']}/{m['platform']['architecture']}"] = {
            **json.loads(blob(layout, m["digest"])), "digest": m["digest"]}
    return out


def tag_platforms(layout: Path, tag: str) -> dict[str, str]:
    """Tag each platform's manifest of index ``tag`` as ``tag-ARCH``; returns ``{os/arch: that tag}``."""
    index = _index(layout)
    tags = {}
    for plat, man in platform_manifests(layout, tag).items():
        name = f"{tag}-{plat.split('/')[1]}"
        raw = blob(layout, man["digest"])
        index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": man["digest"], "size": len(raw),
                                   "annotations": {REF_NAME: name}})
        tags[plat] = name
    (layout / "index.json").write_text(json.dumps(index))
    return tags
