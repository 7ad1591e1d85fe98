"""OCI image layouts (a directory or a tar of one): find the images they hold and load them.

``index.json`` is walked through nested indexes (with a depth cap and cycle guard); attestation
manifests and unknown media types are skipped; a platform whose manifest blob is missing (a
containerd export of one platform) is skipped too, since only a blob we need is an error. Every blob
read is checked against its descriptor's size and digest.

Names of images in ``index.json`` (the rule every reader and writer of ocisquash follows):

- ``io.containerd.image.name``: the full reference, ``docker.io/h2/a:1`` (Docker 25+, containerd).
  ``org.opencontainers.image.ref.name``: the tag alone, ``1`` (what ``skopeo oci:DIR:TAG`` and
  ``umoci --image DIR:TAG`` look up). A bare layout tag (``--tag flat`` into the input layout) is
  written as ref.name only.
- An entry's *name* (``entry_name``) is its full reference when it has one, else its ref.name.
- Writing a name replaces the entries of the same name (``same_name``: references compared
  normalised, so skopeo's verbatim ref.name ``app:1`` is ``docker.io/library/app:1``; a bare tag
  equals only itself) and no others: ``h2/b:1`` never takes ``h2/a:1``'s entry although both have
  ref.name ``1``.
- Reading: an image is listed and copied under its full names (``preferred_names``); ``--image``
  matches full names normalised and ref.name exactly, and a ref.name several images share is
  ambiguous, an error that lists them. skopeo's ``oci:DIR:1`` takes the first such entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ocisquash import limits, model, reference
from ocisquash.archive import Tree
from ocisquash.compression import Codec, codec_of_media_type
from ocisquash.digest import Digest
from ocisquash.errors import DigestMismatch, FormatError, MissingBlob
from ocisquash.image import Image, Layer
from ocisquash.model import Descriptor, ImageConfig, Index, Manifest

ATTESTATION_KEY = "vnd.docker.reference.type"


def blob_path(d: Digest) -> str:
    # Digest.parse already checked the grammar and, for sha256/sha512, the exact hex form.
    if not d.verifiable:
        raise FormatError(f"blob {d}: unsupported digest algorithm; cannot build a verified path")
    return f"blobs/{d.algorithm}/{d.encoded}"


def read_blob(tree: Tree, desc: Descriptor, what: str, max_size: int | None = None) -> bytes:
    """A small blob (JSON), checked against its descriptor before anyone parses it."""
    cap = max_size if max_size is not None else limits.current().max_json
    if desc.size > cap:
        raise limits.exceeded("max_json", f"{tree.label}: {what} {desc.digest} is {desc.size} bytes, over the cap")
    path = blob_path(desc.digest)
    if not tree.exists(path):
        raise MissingBlob(f"{tree.label}: {what} {desc.digest} is missing")
    data = tree.read(path, cap)
    if len(data) != desc.size:
        raise DigestMismatch(f"{tree.label}: {what} {desc.digest} is {len(data)} bytes, "
                             f"its descriptor says {desc.size}")
    got = Digest(desc.digest.algorithm, hashlib.new(desc.digest.algorithm, data).hexdigest())
    if got.encoded != desc.digest.encoded:
        raise DigestMismatch(f"{tree.label}: {what} {desc.digest} does not match its content "
                             f"({desc.digest.algorithm}:{got.encoded})")
    return data


@dataclass
class Entry:
    """One image manifest reachable from index.json, with the names of the top-level entry it is under."""

    names: list[str]
    descriptor: Descriptor
    manifest: Manifest
    platform: model.Platform | None
    top: Descriptor
    annotations: dict[str, str] = field(default_factory=dict)


def is_full_name(name: str) -> bool:
    """Whether ``name`` is a reference (``repo:tag``, ``host/repo``) rather than a bare layout tag."""
    return "/" in name or ":" in name


def entry_name(annotations: dict[str, str]) -> str | None:
    """The name an index.json entry stands for: its full reference when it has one, else its ref.name."""
    full = annotations.get(model.CONTAINERD_NAME)
    if isinstance(full, str) and full:
        return full
    ref = annotations.get(model.REF_NAME)
    return ref if isinstance(ref, str) and ref else None


def same_name(a: str, b: str) -> bool:
    """Whether two entry names name the same image: references compared normalised (``app:1`` is
    ``docker.io/library/app:1``, as skopeo's verbatim ref.name meets our full name), a bare tag only
    equal to itself."""
    if a == b:
        return True
    if is_full_name(a) and is_full_name(b):
        return reference.normalize(a) == reference.normalize(b)
    return False


def names_of(desc: Descriptor) -> list[str]:
    out = []
    full = desc.annotations.get(model.CONTAINERD_NAME)
    if full:
        out.append(full)
    ref = desc.annotations.get(model.REF_NAME)
    if ref and ref not in out:
        out.append(ref)
    return out


def preferred_names(names: list[str]) -> list[str]:
    """An image's names without a bare ref.name that only repeats the tag of one of its full names:
    ``docker.io/h2/a:1`` is the name, its ref.name ``1`` a lookup key (still matched by ``--image``),
    not a second name to list or to copy to an output."""
    tags = {reference.split(n)[1] or "latest" for n in names if is_full_name(n)}
    return [n for n in names if is_full_name(n) or n not in tags]


def read_index_json(tree: Tree) -> Index:
    if tree.exists("oci-layout"):
        f = model.Fields(model.load_json(tree.read("oci-layout", 1 << 16), f"{tree.label}: oci-layout"),
                         f"{tree.label}: oci-layout")
        version = f.req_str("imageLayoutVersion")
        if version != "1.0.0":
            raise FormatError(f"{tree.label}: oci-layout version {version!r} is not supported (1.0.0 is)")
    if not tree.exists("index.json"):
        raise FormatError(f"{tree.label}: not an OCI image layout (no index.json)")
    cap = limits.current().max_json
    return Index.parse(tree.read("index.json", cap), f"{tree.label}: index.json")


def entries(tree: Tree) -> list[Entry]:
    """Every image manifest index.json leads to, in index order."""
    index = read_index_json(tree)
    out: list[Entry] = []
    visits = [0]
    docs: dict[tuple[Digest, str], Index | Manifest | None] = {}
    sizes: dict[Digest, int] = {}
    for desc in index.manifests:
        _walk(tree, desc, desc, out, depth=0, seen=set(), visits=visits, docs=docs, sizes=sizes)
    cap = limits.current().max_images
    if len(out) > cap:
        raise limits.exceeded("max_images", f"{tree.label}: holds {len(out)} images, over the cap of {cap}")
    return out


def _is_attestation(desc: Descriptor) -> bool:
    if desc.annotations.get(ATTESTATION_KEY) == "attestation-manifest":
        return True
    if "io.containerd.manifest.subject" in desc.annotations:
        return True
    p = desc.platform
    return p is not None and p.os == "unknown" and p.architecture == "unknown"


def _walk(tree: Tree, desc: Descriptor, top: Descriptor, out: list[Entry], depth: int, seen: set[Digest],
          visits: list[int], docs: dict[tuple[Digest, str], Index | Manifest | None], sizes: dict[Digest, int]) -> None:
    # Indexes may repeat a child many times at every level: count descriptors walked, or a small
    # file fans out to billions of visits (found by fuzzing).
    visits[0] += 1
    cap = limits.current().max_images
    if visits[0] > cap:
        raise limits.exceeded("max_images", f"{tree.label}: its indexes list more than {cap} manifests in all")
    if _is_attestation(desc):
        return
    kind_hint = desc.media_type
    if kind_hint not in model.INDEX_TYPES and kind_hint not in model.MANIFEST_TYPES:
        if kind_hint in model.SCHEMA1:
            raise FormatError(f"{tree.label}: {desc.digest} is a Docker schema 1 manifest, which is obsolete and "
                              "not supported")
        return  # unknown media types MUST NOT be an error: skip them
    if desc.digest in seen:
        raise FormatError(f"{tree.label}: index {desc.digest} refers back to itself (a cycle)")
    if not tree.exists(blob_path(desc.digest)):
        if desc is not top:
            return  # a platform nobody pulled: fine until someone asks for it
        raise MissingBlob(f"{tree.label}: manifest {desc.digest} named in index.json is missing")
    # Each document is read, verified and parsed once per walk (``docs``), however many descriptors name
    # it: 10,000 index entries naming one 16 MiB manifest would otherwise read 160 GB and hold it all.
    key = (desc.digest, desc.media_type)
    if key not in docs:
        data = read_blob(tree, desc, "manifest")
        where = f"{tree.label}: {desc.digest}"
        obj = model.load_json(data, where)
        kind = model.document_kind(obj, desc.media_type)
        doc: Index | Manifest | None = None
        if kind == "index":
            doc = Index.parse(data, where, media_type=desc.media_type)
        elif kind == "manifest":
            doc = Manifest.parse(data, where, media_type=desc.media_type)
        docs[key] = doc
        sizes[desc.digest] = desc.size
    elif sizes[desc.digest] != desc.size:
        raise DigestMismatch(f"{tree.label}: manifest {desc.digest} is {sizes[desc.digest]} bytes, "
                             f"its descriptor says {desc.size}")
    doc = docs[key]
    if isinstance(doc, Index):
        max_depth = limits.current().max_index_depth
        if depth + 1 > max_depth:
            raise limits.exceeded("max_index_depth", f"{tree.label}: image indexes nested deeper than {max_depth}")
        for child in doc.manifests:
            _walk(tree, child, top, out, depth + 1, seen | {desc.digest}, visits, docs, sizes)
    elif isinstance(doc, Manifest):
        if doc.config.media_type not in model.CONFIG_TYPES:
            return  # an artifact, not an image
        out.append(Entry(names_of(top), desc, doc, desc.platform, top, dict(top.annotations)))


def load(tree: Tree, entry: Entry, *, source: str = "") -> Image:
    """The image behind one entry: its config (verified) and its layers (verified when read)."""
    man = entry.manifest
    cfg_bytes = read_blob(tree, man.config, "config")
    config = ImageConfig.parse(cfg_bytes, f"{tree.label}: config {man.config.digest}")
    if len(man.layers) != len(config.diff_ids):
        raise FormatError(f"{tree.label}: manifest {entry.descriptor.digest} has {len(man.layers)} layers but its "
                          f"config has {len(config.diff_ids)} diff IDs")
    cap = limits.current().max_layers
    if len(man.layers) > cap:
        raise limits.exceeded("max_layers", f"{tree.label}: image has {len(man.layers)} layers, over the cap")
    layers = []
    for i, (ld, diff_id) in enumerate(zip(man.layers, config.diff_ids, strict=True)):
        path = blob_path(ld.digest)
        codec = codec_of_media_type(ld.media_type)
        what = f"{tree.label}: layer {i + 1}/{len(man.layers)} {ld.digest}"
        layers.append(Layer(
            index=i, diff_id=diff_id, size=ld.size, media_type=ld.media_type, digest=ld.digest,
            opener=_opener(tree, path, what), what=what,
            seekable_plain=codec is Codec.NONE and tree.exists(path) and tree.is_seekable_file(path),
            urls=ld.urls, annotations=dict(ld.annotations), codec=codec,
        ))
    img = Image(names=preferred_names(entry.names), config=config, layers=layers, manifest=man,
                manifest_digest=entry.descriptor.digest, manifest_descriptor=entry.descriptor,
                source=source or tree.label, index_annotations=entry.annotations)
    return img


def _opener(tree: Tree, path: str, what: str):  # type: ignore[no-untyped-def]
    def open_blob():  # type: ignore[no-untyped-def]
        if not tree.exists(path):
            raise MissingBlob(f"{what}: blob is missing")
        return tree.open(path)

    return open_blob
