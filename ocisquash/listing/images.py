"""``images``: one summary per image, shared and unique sizes, and docker's filters and rows.

Filters follow moby (``daemon/images/images.go``, ``daemon/containerd/image_list.go``): different keys
AND; several ``reference`` globs OR; several ``label`` filters AND (moby's ``MatchKVList``); several
``before`` take the earliest image and several ``since`` the latest; ``before``/``since`` exclude equal
creation times; ``dangling=true`` shows only untagged heads, ``dangling=false`` hides untagged images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocisquash import reference
from ocisquash.digest import Digest
from ocisquash.errors import UsageError
from ocisquash.goformat import go_time_string, human_size, parse_time_ns, since_text
from ocisquash.image import Candidate, Image
from ocisquash.listing.sizes import NONE, LayerSize, image_sizes, size_text
from ocisquash.model import Platform

FILTER_KEYS = ("before", "dangling", "label", "platform", "reference", "since")


@dataclass(slots=True)
class ImageSummary:
    """One image of an input, as ``images`` lists it (JSON documents only, unless sizes are exact)."""

    names: list[str]
    image_id: Digest
    manifest_digest: Digest | None
    created: str | None
    created_ns: int | None
    labels: dict[str, str]
    platform: str | None
    layers: list[LayerSize]
    shared_size: int | None = None
    unique_size: int | None = None
    docker_shared: int | None = None
    """``shared_size`` on docker's basis (``docker_size``), when that is known."""
    children: int = 0
    """Other images of the input built on this one (its chain IDs are a strict prefix of theirs)."""

    @property
    def size(self) -> int:
        return sum(ly.size for ly in self.layers)

    @property
    def size_exact(self) -> bool:
        return all(ly.exact for ly in self.layers)

    @property
    def docker_size(self) -> int | None:
        """What ``docker images`` shows as SIZE (the layers' ``dockersize`` figures), when every one is known."""
        sizes = [ly.docker for ly in self.layers]
        return None if None in sizes else sum(s for s in sizes if s is not None)

    @property
    def chain_ids(self) -> list[Digest]:
        return [ly.chain_id for ly in self.layers]

    def tags(self) -> list[tuple[str, str]]:
        """``(repository, tag)`` pairs to show; a bare layout tag beside a full name with that tag is dropped."""
        pairs: list[tuple[str, str]] = []
        for n in self.names:
            pair = reference.repo_and_tag(n)
            if pair not in pairs:
                pairs.append(pair)
        full_tags = {t for r, t in pairs if r != NONE}
        return [(r, t) for r, t in pairs if r != NONE or t not in full_tags]


def summarize_image(image: Image, platform: str | None = None, *, exact: bool = False) -> ImageSummary:
    cfg = image.config
    layers = image_sizes(image, exact)
    return ImageSummary(
        names=list(image.names), image_id=image.id, manifest_digest=image.manifest_digest, created=cfg.created,
        created_ns=parse_time_ns(cfg.created), labels=dict(cfg.labels), platform=platform, layers=layers,
    )


def distinct(candidates: Sequence[Candidate]) -> list[tuple[Candidate, list[str]]]:
    """One entry per image (a layout lists an image once per tag): each candidate with all its names."""
    seen: dict[object, tuple[Candidate, list[str]]] = {}
    for c in candidates:
        key = (c.manifest_digest or c.image_id or id(c), c.platform)
        if key in seen:
            names = seen[key][1]
            names.extend(n for n in c.names if n not in names)
        else:
            seen[key] = (c, list(c.names))
    return list(seen.values())


def summarize(candidates: Sequence[Candidate], *, exact: bool = False,
              on_image: Callable[[], None] | None = None) -> list[ImageSummary]:
    """Every image of an input, with ``children`` counted and shared/unique sizes computed."""
    out = []
    for c, names in distinct(candidates):
        s = summarize_image(c.load(), c.platform, exact=exact)
        s.names = names
        out.append(s)
        if on_image is not None:
            on_image()
    count_children(out)
    shared_sizes(out)
    return out


def count_children(images: list[ImageSummary]) -> None:
    """Each image's ``children``: the other images whose chain IDs start with all of its own, and more.

    A chain ID names the whole stack of layers below it, so an image's chain starts with another's exactly
    when it holds that image's top chain ID below its own top: one pass counts, for each chain ID, the
    images that hold it under another layer. (Comparing every pair of images took 119 s on 20,000.)"""
    under: dict[Digest, int] = {}  # chain ID -> images that hold it below their top layer
    layered = 0  # images with a layer: every one of them is built on an image of no layers
    for img in images:
        chain = img.chain_ids
        layered += bool(chain)
        for c in chain[:-1]:
            under[c] = under.get(c, 0) + 1
    for img in images:
        chain = img.chain_ids
        img.children = under.get(chain[-1], 0) if chain else layered


def shared_sizes(images: Iterable[ImageSummary]) -> None:
    """``docker system df -v``: a layer (by chain ID) used by more than one image is shared."""
    imgs = list(images)
    refs: dict[Digest, int] = {}
    for img in imgs:
        for c in set(img.chain_ids):
            refs[c] = refs.get(c, 0) + 1
    for img in imgs:
        seen: set[Digest] = set()
        shared = docker = 0
        for ly in img.layers:
            if refs[ly.chain_id] > 1 and ly.chain_id not in seen:
                shared += ly.size
                docker += ly.docker or 0
            seen.add(ly.chain_id)
        img.shared_size = shared
        img.unique_size = img.size - shared
        img.docker_shared = docker if img.docker_size is not None else None


# ------------------------------------------------------------------------------------------ filters


def go_glob(pattern: str) -> re.Pattern[str]:
    """Go's ``path.Match`` as a regex: ``*`` and ``?`` never match ``/``; ``[^...]`` negates; ``\\`` escapes."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i >= n:
                raise UsageError(f"reference filter {pattern!r}: syntax error in pattern (trailing backslash)")
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1: i + 2] in ("^", "]") else i + 1)
            if j < 0:
                raise UsageError(f"reference filter {pattern!r}: syntax error in pattern (unclosed '[')")
            body = pattern[i + 1: j]
            neg = body.startswith("^")
            if neg:
                body = body[1:]
            if not body:
                raise UsageError(f"reference filter {pattern!r}: syntax error in pattern (empty class)")
            cls = body.replace("\\", "\\\\").replace("]", "\\]")
            out.append(f"[{'^' if neg else ''}{cls}]")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass
class Filters:
    """Parsed ``-f KEY=VALUE`` options, grouped by key."""

    values: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: Sequence[str] | None) -> Filters:
        f = cls()
        for item in items or []:
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep:
                raise UsageError(f"bad filter {item!r}: expected KEY=VALUE",
                                 hint="keys: " + ", ".join(FILTER_KEYS))
            if key not in FILTER_KEYS:
                raise UsageError(f"invalid filter {key!r}", hint="keys: " + ", ".join(FILTER_KEYS))
            f.values.setdefault(key, []).append(value)
        dangling = f.values.get("dangling")
        if dangling is not None and "true" not in dangling and "false" not in dangling:
            raise UsageError(f"invalid filter 'dangling={dangling[0]}'", hint="use dangling=true or dangling=false")
        for pat in f.values.get("reference", []):
            go_glob(pat)  # syntax errors now, not halfway through
        for plat in f.values.get("platform", []):
            try:
                Platform.from_text(plat)
            except UsageError as e:
                raise UsageError(f"invalid filter 'platform={plat}': expected os/arch or os/arch/variant",
                                 hint="e.g. -f platform=linux/arm64") from e
        return f

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str) -> list[str]:
        return self.values.get(key, [])


# docker's --format fields and the column names its ``table`` templates print (docker/cli formatter).
IMAGE_HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT", "Size": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
    "Containers": "CONTAINERS", "VirtualSize": "SIZE", "Platform": "PLATFORM",
}


@dataclass
class Row:
    """One line of ``images``: an image under one of its names (or ``<none>``)."""

    repository: str
    tag: str
    image: ImageSummary

    def fields(self, now: float, *, trunc: bool = True) -> dict[str, str]:
        """docker's ``images --format`` fields (``IMAGE_HEADERS``), as text; ``Platform`` is ours."""
        img = self.image
        docker = img.docker_size
        # docker's basis when the layers' headers were read; else our figure, marked with *
        size = human_size(docker) if docker is not None else size_text(img.size, False)
        shared, unique = (img.shared_size, img.unique_size) if docker is None or img.docker_shared is None \
            else (img.docker_shared, docker - img.docker_shared)
        exact = docker is not None
        return {
            "Containers": "N/A",  # no daemon, no containers
            "CreatedAt": go_time_string(img.created_ns),
            "CreatedSince": since_text(img.created_ns, now),
            "Digest": str(img.manifest_digest) if img.manifest_digest else NONE,
            "ID": img.image_id.short() if trunc else str(img.image_id),
            "Platform": img.platform or "",
            "Repository": self.repository,
            "SharedSize": size_text(shared, exact) if shared is not None else "N/A",
            "Size": size,
            "Tag": self.tag,
            "UniqueSize": size_text(unique, exact) if unique is not None else "N/A",
            "VirtualSize": size,
        }

    def to_json(self, now: float) -> dict[str, Any]:
        img = self.image
        return {
            "repository": self.repository, "tag": self.tag, "id": str(img.image_id),
            "short_id": img.image_id.short(), "digest": str(img.manifest_digest) if img.manifest_digest else None,
            "created": img.created, "created_since": since_text(img.created_ns, now), "size": img.size,
            "size_exact": img.size_exact, "docker_size": img.docker_size, "shared_size": img.shared_size,
            "unique_size": img.unique_size,
            "layers": len(img.layers), "labels": img.labels, "platform": img.platform,
        }


def _match_labels(wanted: list[str], labels: dict[str, str]) -> bool:
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def _match_platform(wanted: list[str], platform: str | None) -> bool:
    """Several ``platform`` filters: any may match (as several ``reference`` globs)."""
    if platform is None:
        return False
    have = Platform.from_text(platform) if platform.count("/") in (1, 2) else None
    return have is not None and any(have.matches(Platform.from_text(w)) for w in wanted)


def _ref_matches(patterns: list[re.Pattern[str]], repo: str, tag: str) -> bool:
    """moby's ``reference.FamiliarMatch``: the glob against ``name:tag``, then against the name alone."""
    texts = [tag] if repo == NONE else [f"{repo}:{tag}", repo]
    return any(p.match(t) for p in patterns for t in texts)


def _resolve_time(ref: str, images: list[ImageSummary], resolve: Callable[[str], Digest] | None) -> int | None:
    if resolve is None:
        raise UsageError(f"cannot resolve {ref!r} here")
    image_id = resolve(ref)
    for img in images:
        if img.image_id == image_id:
            return img.created_ns
    return None


def select(images: list[ImageSummary], filters: Filters, *, all_images: bool = False,
           resolve: Callable[[str], Digest] | None = None) -> list[Row]:
    """The rows ``images`` shows, newest first. ``resolve`` maps a ``before``/``since`` REF to an image ID."""
    before: int | None = None
    since: int | None = None
    for ref in filters.get("before"):
        t = _resolve_time(ref, images, resolve)
        if t is not None and (before is None or t < before):
            before = t
    for ref in filters.get("since"):
        t = _resolve_time(ref, images, resolve)
        if t is not None and (since is None or t > since):
            since = t
    dangling = filters.get("dangling")
    dangling_only = "true" in dangling
    patterns = [go_glob(p) for p in filters.get("reference")]
    rows: list[Row] = []
    for img in images:
        created = img.created_ns if img.created_ns is not None else -(1 << 62)
        if before is not None and created >= before:
            continue
        if since is not None and created <= since:
            continue
        if filters.has("label") and not _match_labels(filters.get("label"), img.labels):
            continue
        if filters.has("platform") and not _match_platform(filters.get("platform"), img.platform):
            continue
        tags = img.tags()
        if dangling_only and (tags or img.children):
            continue  # moby lists only heads (images without children) that have no tag
        if patterns:
            tags = [(r, t) for r, t in tags if _ref_matches(patterns, r, t)]
            if not tags:
                continue
        if not tags:
            if filters.has("dangling") and not dangling_only:
                continue
            if not all_images and not dangling_only and img.children:
                continue  # an intermediate image: only with -a
            tags = [(NONE, NONE)]
        rows.extend(Row(r, t, img) for r, t in tags)
    rows.sort(key=lambda r: (-(r.image.created_ns if r.image.created_ns is not None else -(1 << 62)),
                             r.repository, r.tag))
    return rows
