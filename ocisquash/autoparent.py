"""``--parent auto``: find the base image without being told.

Two rules, tried in order; the pure logic (``by_annotation``, ``by_shared_layers``) works on diff IDs
and names only, and ``find`` gathers those from the open inputs:

1. ``annotation``: the manifest's ``org.opencontainers.image.base.digest`` / ``base.name`` (podman and
   buildah write them) name the base; it is looked up among the images of IN, of ``--parent auto:FILE``,
   and, for a ``docker://`` IN, in the same registry. Its layers must be the image's bottom ones: a base
   whose layers are not a prefix is an error, never a guess. A named base not found falls to rule 2.
2. ``shared layers``: of the other images at hand, the one whose whole chain of layers (its top chain
   ID) is the longest prefix of the image's. An image with exactly the image's layers is no parent (it
   would leave nothing to squash) and is passed over, as is the image itself; two different images
   with the same longest chain are an error listing them.

Images at hand for another os/architecture than the image's are never its base (``--platform all``:
each platform finds its own among a multi-platform base's images).

Neither finds one: an error with the hint to name the parent (``--parent REF`` or ``--from-layer N``).

``squashed_annotations`` says which of those annotations a squash's output may keep: they are true of
it only when it keeps exactly the layers of the base they name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ocisquash import reference
from ocisquash.apitypes import Cut
from ocisquash.digest import Digest, chain_ids
from ocisquash.errors import FormatError, NotFound, OcisquashError
from ocisquash.image import Image
from ocisquash.samefile import same_file
from ocisquash.sources import Source

BASE_DIGEST = "org.opencontainers.image.base.digest"
BASE_NAME = "org.opencontainers.image.base.name"

Rule = Literal["annotation", "shared layers"]


@dataclass(frozen=True)
class Known:
    """An image that may be the base: how it is named in messages, its IDs and its diff IDs."""

    label: str
    names: tuple[str, ...]
    manifest_digest: Digest | None
    image_id: Digest
    diff_ids: tuple[Digest, ...]


@dataclass(frozen=True)
class Found:
    """The base found: which rule found it, the image, and how many of the image's layers it keeps."""

    rule: Rule
    base: Known

    @property
    def keep(self) -> int:
        return len(self.base.diff_ids)


def base_annotations(annotations: dict[str, str]) -> tuple[str | None, Digest | None]:
    """``(base.name, base.digest)`` from a manifest's annotations; empty or malformed values are None."""
    name = annotations.get(BASE_NAME, "").strip() or None
    digest = None
    raw = annotations.get(BASE_DIGEST, "").strip()
    if raw:
        try:
            digest = Digest.parse(raw)
        except OcisquashError:
            digest = None
    return name, digest


def squashed_annotations(annotations: Mapping[str, str], keep: int, base: Known | None) -> dict[str, str]:
    """The input manifest's ``annotations`` for a squash that keeps its bottom ``keep`` layers, ``base``
    being the parent image it kept them for (``--parent``, or found by ``--parent auto``; None when the
    cut was no image: scratch, ``--from-layer``). The base annotations stay only when ``base`` is the image
    they name and the kept layers are all of its layers, no fewer and no more; otherwise they would name a
    base whose layers the output does not have (``--parent auto`` would then refuse it as no prefix)."""
    out = dict(annotations)
    if not _still_names_base(out, keep, base):
        out.pop(BASE_DIGEST, None)
        out.pop(BASE_NAME, None)
    return out


def _still_names_base(annotations: Mapping[str, str], keep: int, base: Known | None) -> bool:
    name, digest = base_annotations(dict(annotations))
    if base is None or keep == 0 or keep != len(base.diff_ids) or (name is None and digest is None):
        return False
    if digest is not None and base.manifest_digest is not None:
        return digest == base.manifest_digest
    # no manifest digest to compare (a docker save base has none): the name must name it
    return name is not None and reference.matches(name, list(base.names))


def by_annotation(image_ids: Sequence[Digest], base: Known) -> Found:
    """The base an annotation named, checked: its layers must be the image's bottom ones."""
    if tuple(image_ids[: len(base.diff_ids)]) != base.diff_ids:
        raise FormatError(f"the base image the annotations name ({base.label}, {len(base.diff_ids)} layers) is not "
                          "the bottom of this image: its layers are not a prefix of the image's",
                          hint="name the parent with --parent REF, or the cut with --from-layer N")
    return Found("annotation", base)


def by_shared_layers(image_ids: Sequence[Digest], image_id: Digest, others: Sequence[Known]) -> Found | None:
    """The image of ``others`` whose whole stack is the longest proper prefix of the image's, or None."""
    chain = chain_ids(list(image_ids))
    position = {c: i + 1 for i, c in enumerate(chain)}
    best: dict[Digest, Known] = {}
    length = 0
    for k in others:
        if not k.diff_ids or k.image_id == image_id:
            continue
        n = position.get(chain_ids(list(k.diff_ids))[-1], 0)
        # n == len(chain): the same layers, no parent (nothing would be left to squash)
        if n == 0 or n != len(k.diff_ids) or n == len(chain) or n < length:
            continue
        if n > length:
            best, length = {}, n
        best.setdefault(k.image_id, k)
    if not best:
        return None
    if len(best) > 1:
        raise FormatError(f"{len(best)} images share the image's bottom {length} layers; which is the parent?",
                          hint="name it with --parent REF: " + "; ".join(k.label for k in best.values()))
    return Found("shared layers", next(iter(best.values())))


def find(image: Image, pools: Sequence[Callable[[], list[Known]]],
         base_in_registry: Callable[[str | None, Digest | None], Known | None] | None = None) -> Found:
    """Apply the rules to ``image``: ``pools`` list the images at hand (IN's, FILE's), each read on
    demand; ``base_in_registry`` looks an annotated base up in IN's registry."""
    ids = list(image.config.diff_ids)
    annotations = dict(image.index_annotations)
    if image.manifest is not None:
        annotations.update(image.manifest.annotations)
    name, digest = base_annotations(annotations)
    known: list[Known] = []
    for pool in pools:
        known.extend(pool())
    named = None
    if name or digest:
        named = _named([k for k in known if k.image_id != image.id], name, digest)
        if named is None and base_in_registry is not None:
            named = base_in_registry(name, digest)
        if named is not None:
            return by_annotation(ids, named)
    found = by_shared_layers(ids, image.id, known)
    if found is not None:
        return found
    named_as = "@".join(str(x) for x in (name, digest) if x)
    said = f" (its annotations name {named_as} as its base, which is not at hand)" if named_as else ""
    raise NotFound(f"{image.label}: no parent image found{said}",
                   hint="give the file that holds it (--parent auto:FILE), or name the parent with --parent REF "
                        "or the cut with --from-layer N")


def _named(known: Sequence[Known], name: str | None, digest: Digest | None) -> Known | None:
    """The image of ``known`` (the image itself already left out) the annotations name: by digest, else name."""
    if digest is not None:
        for k in known:
            if k.manifest_digest == digest:
                return k
    if name:
        for k in known:
            if reference.matches(name, list(k.names)):
                return k
    return None


def known(image: Image, manifest_digest: Digest | None, label: str) -> Known:
    """What the rules need of an opened image."""
    return Known(label, tuple(image.names), manifest_digest, image.id, tuple(image.config.diff_ids))


def find_in(image: Image, src: Source, src_path: str, extra_path: str | None, platform: str | None) -> Found:
    """``find`` over the inputs at hand: IN's other images (``src``, already open: IN may be a pipe),
    those of ``extra_path`` (``--parent auto:FILE``), and IN's registry for a ``docker://`` IN."""
    from ocisquash.registry.ref import is_registry_ref
    from ocisquash.registry.ref import parse as parse_ref
    from ocisquash.sources import open_source

    def of(s: Source) -> list[Known]:
        out = []
        for c in s.matching(None):
            if c.image_id is not None and c.image_id == image.id:
                continue  # the image: no parent
            img = c.load()
            if not _other_platform(c.platform or str(img.config.platform), platform):
                out.append(known(img, c.manifest_digest, ", ".join(c.names) or str(c.image_id or c.manifest_digest)))
        return out

    def from_file() -> list[Known]:
        # FILE may be IN itself (auto:- with IN -, or the same file): IN's images are in the pool already,
        # and a pipe cannot be read twice
        if extra_path is None or extra_path == src_path or same_file(extra_path, src_path):
            return []
        with open_source(extra_path) as s:
            return of(s)

    def in_registry(name: str | None, digest: Digest | None) -> Known | None:
        where = parse_ref(src_path)
        try:
            ref = parse_ref("docker://" + name) if name else where
        except OcisquashError:
            return None  # base.name is no reference this registry could hold
        if ref.host != where.host:
            return None  # another registry: not contacted unasked
        digest = digest or ref.digest
        at = f"docker://{ref.name}" + (f"@{digest}" if digest is not None else f":{ref.tag or 'latest'}")
        try:
            with open_source(at) as s:
                # a multi-platform base is taken for the image's platform, or the default one
                return known(s.choose_default(None, platform)[0], digest, at)
        except NotFound:
            return None

    return find(image, [lambda: of(src), from_file],
                in_registry if is_registry_ref(src_path) else None)


def _other_platform(have: str, want: str | None) -> bool:
    """Whether an image for ``have`` is for another os/architecture than ``want``: never the base of an
    image for ``want`` (the other platforms of a multi-platform base are passed over). Unknown: not."""
    if want is None:
        return False
    a, b = have.split("/")[:2], want.split("/")[:2]
    return len(a) == len(b) == 2 and all(a) and all(b) and a != b


def named(cut: Cut, src: Source, src_path: str, platform: str | None) -> Known | None:
    """The ``--parent`` image (``Cut.onto``), for ``platform`` (each platform of ``--platform all`` has its
    own): its diff IDs, its image ID (what ``docker build --squash`` names it by), its manifest digest and
    names (what base annotations name it by). None for another kind of cut.

    A parent in IN itself is chosen from the already open ``src``: IN may be a pipe, read only once."""
    from ocisquash.sources import open_source

    if cut.kind != "parent":
        return None
    if cut.parent_image is not None:  # Cut.onto(image): the image already open, whatever its input
        return Known(*cut.parent_image._parent_held())
    path, name = cut.parent_path or src_path, cut.parent_ref
    if path == src_path or same_file(path, src_path):
        parent = src.choose(name, platform)
    else:
        with open_source(path) as ps:
            parent = ps.choose(name, platform)
    return known(parent, parent.manifest_digest, parent.label)


def found_for_platform(image: Image, src: Source, src_path: str, cut: Cut, platform: str | None) -> Found:
    """``--parent auto`` for one platform of ``--platform all``: a base not found names the platform."""
    try:
        return find_in(image, src, src_path, cut.parent_path, platform)
    except OcisquashError as e:
        raise type(e)(f"--platform {platform}: {e}", hint=e.hint) from None
