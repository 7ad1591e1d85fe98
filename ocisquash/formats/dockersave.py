"""``docker save`` tarballs, read and written: the legacy form, the Docker 25+ form and the containerd-store form.

The source of truth is ``manifest.json`` with each config's ``diff_ids`` (what ``docker load`` reads).
Where the tarball also holds an OCI layout (Docker 25+, containerd), its manifests give the manifest
digest and layer media types of the matching image. Layer members may be plain or compressed
whatever their name; they are sniffed, and checked against their diff IDs when read.

Writing: ocisquash writes the Docker 25+ shape, an OCI layout tar (``ocitar.TarSink``) plus the
``manifest.json`` built here (``docker_manifest_json``), which ``docker load`` reads.
"""

from __future__ import annotations

import re
from typing import Any

from ocisquash import limits, model, reference
from ocisquash.archive import TarTree
from ocisquash.compression import Codec, sniff_bytes
from ocisquash.digest import Digest
from ocisquash.errors import DigestMismatch, FormatError
from ocisquash.formats import ocilayout
from ocisquash.formats.commit import WrittenImage
from ocisquash.image import Candidate, Image, Layer

_BLOB_PATH = re.compile(r"blobs/sha256/([a-f0-9]{64})\Z")


def is_docker_archive(tree: TarTree) -> bool:
    return tree.exists("manifest.json")


def candidates(tree: TarTree) -> list[Candidate]:
    where = f"{tree.label}: manifest.json"
    cap = limits.current().max_json
    items = model.load_json(tree.read("manifest.json", cap), where)
    if not isinstance(items, list):
        raise FormatError(f"{where}: must be a JSON list of images, not {model._kind(items)}")
    if len(items) > limits.current().max_images:
        raise limits.exceeded("max_images", f"{where}: {len(items)} images")
    by_config = _layout_manifests(tree)
    out = []
    # Many items may name one config: read and hash each member once (a fan-out of 10,000 items naming
    # one 16 MiB config would otherwise hash 160 GB).
    config_digests: dict[str, Digest] = {}
    for i, item in enumerate(items):
        f = model.Fields(item, where, f"[{i}]")
        config_path = f.req_str("Config")
        layer_paths = f.str_list("Layers")
        if "Layers" not in item or item["Layers"] is None:
            raise FormatError(f"{where}: [{i}] has no Layers")
        tags = f.str_list("RepoTags")
        # The image ID is the digest of the config bytes: a small JSON read, checked again on load.
        cfg_digest = config_digests.get(config_path) or Digest.of(tree.read(config_path, cap))
        config_digests[config_path] = cfg_digest
        claimed = claimed_digest(config_path)
        if claimed is not None and claimed != cfg_digest:
            raise DigestMismatch(f"{tree.label}: {config_path} hashes to {cfg_digest}, not the digest its name claims")
        entry = by_config.get(cfg_digest) if cfg_digest else None
        out.append(Candidate(
            names=list(tags), image_id=cfg_digest,
            manifest_digest=entry.descriptor.digest if entry else None,
            load=_loader(tree, i, config_path, layer_paths, tags, entry),
        ))
    return out


def claimed_digest(path: str) -> Digest | None:
    """The digest a member name claims (``blobs/sha256/<hex>``), to be verified when read."""
    m = _BLOB_PATH.match(path.removeprefix("./"))
    return Digest("sha256", m.group(1)) if m else None


def _layout_manifests(tree: TarTree) -> dict[Digest, ocilayout.Entry]:
    if not (tree.exists("index.json") and tree.exists("oci-layout")):
        return {}
    try:
        return {e.manifest.config.digest: e for e in ocilayout.entries(tree)}
    except FormatError:
        # docker load's classic path ignores index.json entirely; a broken one must not stop us from
        # reading what manifest.json describes, which is verified on its own.
        return {}


def _loader(tree: TarTree, i: int, config_path: str, layer_paths: list[str], tags: list[str],
            entry: ocilayout.Entry | None) -> Any:
    def load() -> Image:
        where = f"{tree.label}: {config_path}"
        cfg_bytes = tree.read(config_path, limits.current().max_json)
        claimed = claimed_digest(config_path)
        if claimed is not None and Digest.of(cfg_bytes) != claimed:
            raise DigestMismatch(f"{where}: content hashes to {Digest.of(cfg_bytes)}, not the digest its name claims")
        config = model.ImageConfig.parse(cfg_bytes, where)
        if len(layer_paths) != len(config.diff_ids):
            raise FormatError(f"{tree.label}: manifest.json image {i} lists {len(layer_paths)} layers but its config "
                              f"has {len(config.diff_ids)} diff IDs")
        if len(layer_paths) > limits.current().max_layers:
            raise limits.exceeded("max_layers", f"{tree.label}: image {i} has {len(layer_paths)} layers")
        media = [d.media_type for d in entry.manifest.layers] if entry else []
        layers = []
        for j, (path, diff_id) in enumerate(zip(layer_paths, config.diff_ids, strict=True)):
            what = f"{tree.label}: layer {j + 1}/{len(layer_paths)} {path}"
            size = tree.size(path)
            with tree.open(path) as f:
                head = f.read(512)
            codec = sniff_bytes(head)
            digest = claimed_digest(path)
            if digest is None and codec is Codec.NONE:
                digest = diff_id  # an uncompressed layer's digest is its diff ID; verified when read
                what += " (uncompressed: checked against the config's diff ID)"
            layers.append(Layer(
                index=j, diff_id=diff_id, size=size,
                media_type=media[j] if j < len(media) else None,
                digest=digest, opener=_opener(tree, path), what=what,
                is_plain_file=codec is Codec.NONE, codec=codec,
            ))
        names = list(tags)
        man: model.Manifest | None
        mdigest: Digest | None
        mdesc: model.Descriptor | None
        if entry is not None:
            man, mdigest, mdesc = entry.manifest, entry.descriptor.digest, entry.descriptor
            if [ld.digest for ld in man.layers] != [ly.digest for ly in layers] and any(
                    ly.digest is not None for ly in layers):
                man, mdigest, mdesc = None, None, None  # index.json disagrees: trust manifest.json only
        else:
            man, mdigest, mdesc = None, None, None
        return Image(names=names, config=config, layers=layers, manifest=man, manifest_digest=mdigest,
                     manifest_descriptor=mdesc, source=tree.label)

    return load


def _opener(tree: TarTree, path: str) -> Any:
    return lambda: tree.open(path)



def docker_manifest_json(images: list[WrittenImage]) -> bytes:
    items = []
    for img in images:
        tags = [reference.familiar(t) for t in img.tags if "/" in t or ":" in t]
        items.append({
            "Config": f"blobs/sha256/{img.config_digest.encoded}",
            "RepoTags": tags,
            "Layers": [f"blobs/sha256/{d.encoded}" for d in img.layer_digests],
        })
    return model.canonical_json(items) + b"\n"
