"""The walks ``validate`` makes of the built-in formats, with the checks it offers (``base.Checker``).

A conformance walk, not a reader: where ``ocilayout.entries`` and ``dockersave.candidates`` stop at the
first problem with one clear error, these note each problem (``Checker.bad``) and go on to the next
image. What they need of a format (blob paths, an entry's names, the digest a member name claims) is
the format module's own. The OCI layout walk checks every blob against its name too, referenced or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ocisquash import model
from ocisquash.archive import Tree
from ocisquash.compression import codec_of_media_type
from ocisquash.digest import Digest
from ocisquash.errors import OcisquashError
from ocisquash.formats.base import MAX_DOCUMENT, Checker
from ocisquash.formats.dockersave import claimed_digest
from ocisquash.formats.layoutnames import names_of
from ocisquash.formats.ocilayout import blob_path

MAX_DEPTH = 8
"""Nested indexes followed from index.json; deeper ones (a cycle, too) are not walked further."""


def layout(tree: Tree, c: Checker) -> None:
    """Walk an OCI layout: ``index.json``, every manifest and image it leads to, and every blob against its
    name (unless one image is asked for)."""
    try:
        index = model.Index.parse(tree.read("index.json", MAX_DOCUMENT), "index.json")
    except OcisquashError as e:
        c.bad("index.json", str(e))
        return
    documents(tree, c, index.manifests, blob_path)
    if c.only is not None:
        return  # one image asked for: its blobs were checked above; the others are not its business
    for path in sorted(tree.names()):  # every blob must hash to its own name, referenced or not
        parts = path.split("/")
        if len(parts) == 3 and parts[:2] == ["blobs", "sha256"]:
            got = c.raw(path)
            if got is not None and got[1] != parts[2]:
                c.bad(path, f"blob content hashes to sha256:{got[1]}, not its name")


def documents(tree: Tree, c: Checker, tops: Sequence[model.Descriptor], member: Callable[[Digest], str]) -> None:
    """Walk every manifest and image the descriptors ``tops`` lead to (a layout's index.json entries, a
    registry reference's manifest), reading each blob from ``tree`` under its name ``member(digest)``."""

    def walk(desc: model.Descriptor, top: model.Descriptor, depth: int) -> None:
        if desc.media_type not in model.INDEX_TYPES + model.MANIFEST_TYPES or depth > MAX_DEPTH:
            return
        try:
            path = member(desc.digest)
        except OcisquashError as e:
            c.bad("index.json", str(e))
            return
        if not tree.exists(path):
            if desc is top:
                c.bad(path, f"manifest {desc.digest} named in index.json is missing")
            return  # a platform nobody pulled
        if not c.blob(path, desc.digest, desc.size, f"manifest {desc.digest}"):
            return
        try:
            data = tree.read(path, MAX_DOCUMENT)
            obj = model.load_json(data, path)
            if model.document_kind(obj, desc.media_type) == "index":
                for child in model.Index.parse(data, path, media_type=desc.media_type).manifests:
                    walk(child, top, depth + 1)
                return
            man = model.Manifest.parse(data, path, media_type=desc.media_type)
        except OcisquashError as e:
            c.bad(path, str(e))
            return
        if man.config.media_type not in model.CONFIG_TYPES:
            return
        if c.only is not None and man.config.digest != c.only:
            return
        name = ", ".join(names_of(top)) or str(desc.digest)
        if desc.platform is not None:
            name += f" [{desc.platform}]"
        cpath = member(man.config.digest)
        cfg = None
        if c.blob(cpath, man.config.digest, man.config.size, f"{name}: config"):
            cfg = c.config(cpath, f"{name}: config {man.config.digest}")
        c.image(name, cfg, [(member(ld.digest), ld.digest, ld.size, codec_of_media_type(ld.media_type))
                               for ld in man.layers],
                   [ld.annotations.get(model.UNCOMPRESSED_SIZE) for ld in man.layers])

    for d in tops:
        walk(d, d, 0)



def docker(tree: Tree, c: Checker) -> None:
    """Walk a ``docker save`` tarball through ``manifest.json``: each config and the layers it names."""
    try:
        items = model.load_json(tree.read("manifest.json", MAX_DOCUMENT), "manifest.json")
        if not isinstance(items, list):
            raise OcisquashError("manifest.json: must be a JSON list")
    except OcisquashError as e:
        c.bad("manifest.json", str(e))
        return
    for i, item in enumerate(items):
        try:
            f = model.Fields(item, "manifest.json", f"[{i}]")
            cpath = f.req_str("Config")
            lpaths = f.str_list("Layers")
            tags = f.str_list("RepoTags")
        except OcisquashError as e:
            c.bad("manifest.json", str(e))
            continue
        name = ", ".join(tags) or f"manifest.json[{i}]"
        if c.only is not None and c.config_digest(cpath) not in (None, c.only):
            continue
        cfg = None
        if c.blob(cpath, claimed_digest(cpath), None, f"{name}: config"):
            cfg = c.config(cpath, f"{name}: {cpath}")
        c.image(name, cfg, [(p, claimed_digest(p), None, None) for p in lpaths])
