"""Seeing inside images: summaries and docker's ``images`` filters, shared/unique sizes, history rows,
``analyze`` figures and ``validate`` findings. Pure logic: nothing here prints.

Sizes. Docker shows the unpacked size of a layer; we never unpack. A layer's *size* here is the byte
length of its uncompressed tar when the layer is stored uncompressed (its blob size), and its stored
(compressed) blob size otherwise, unless ``exact=True`` asks to decompress compressed layers and count
their tar bytes. ``ImageSummary.size_exact`` says which one a figure is.

Filters follow moby (``daemon/images/images.go``, ``daemon/containerd/image_list.go``): different keys
AND; several ``reference`` globs OR; several ``label`` filters AND (moby's ``MatchKVList``); several
``before`` take the earliest image and several ``since`` the latest; ``before``/``since`` exclude equal
creation times; ``dangling=true`` shows only untagged heads, ``dangling=false`` hides untagged images.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ocisquash import reference
from ocisquash.compression import Codec
from ocisquash.digest import Digest, chain_ids
from ocisquash.errors import UsageError
from ocisquash.image import Candidate, Image, Layer

FILTER_KEYS = ("before", "dangling", "label", "reference", "since")
NONE = "<none>"
MISSING = "<missing>"

# ------------------------------------------------------------------------------------------ time


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:?\d{2})?\Z")


def parse_time_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (Docker writes nanoseconds), or None."""
    if not text:
        return None
    m = _RFC3339.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    except ValueError:
        return None
    offset = 0
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    secs = int(dt.timestamp()) - offset
    if secs <= -62135596800:  # Go's zero time (0001-01-01): "no creation time"
        return None
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``, as ``docker images`` prints it (without " ago")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since_text(created_ns: int | None, now: float) -> str:
    """"3 weeks ago", or "N/A" when the image has no creation time."""
    if created_ns is None:
        return "N/A"
    return human_duration(now - created_ns / 1e9) + " ago"


def human_size(n: int) -> str:
    """go-units ``HumanSizeWithPrecision(n, 3)``: decimal units, three significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    f = float(n)
    i = 0
    while f >= 1000 and i < len(units) - 1:
        f /= 1000
        i += 1
    text = f"{f:.3g}"
    if "e" in text and i < len(units) - 1:  # 999.9 kB rounds to 1e+03: say 1 MB instead
        return f"{f / 1000:.3g}{units[i + 1]}"
    return f"{text}{units[i]}"


# ------------------------------------------------------------------------------------------ summaries


@dataclass
class LayerSize:
    diff_id: Digest
    chain_id: Digest
    stored: int
    """The blob's byte length as stored."""
    size: int
    """The figure we count: uncompressed tar bytes when known, else ``stored``."""
    exact: bool
    """Whether ``size`` is the uncompressed tar length."""


@dataclass
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
    children: int = 0
    """Other images of the input built on this one (its chain IDs are a strict prefix of theirs)."""

    @property
    def size(self) -> int:
        return sum(ly.size for ly in self.layers)

    @property
    def size_exact(self) -> bool:
        return all(ly.exact for ly in self.layers)

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


def layer_size(layer: Layer, chain_id: Digest, exact: bool) -> LayerSize:
    """A layer's size (see the module docstring); with ``exact`` a compressed layer is decompressed."""
    plain = layer.codec is Codec.NONE
    if plain or not exact:
        return LayerSize(layer.diff_id, chain_id, layer.size, layer.size, plain)
    n = 0
    f = layer.open()  # decompresses, and checks digest and diff ID at EOF
    try:
        while chunk := f.read(1 << 20):
            n += len(chunk)
    finally:
        f.close()
    return LayerSize(layer.diff_id, chain_id, layer.size, n, True)


def summarize_image(image: Image, platform: str | None = None, *, exact: bool = False) -> ImageSummary:
    cfg = image.config
    chains = chain_ids(list(cfg.diff_ids))
    layers = [layer_size(ly, c, exact) for ly, c in zip(image.layers, chains, strict=True)]
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
    for img in images:
        chain = img.chain_ids
        img.children = sum(1 for other in images
                           if len(other.chain_ids) > len(chain) and other.chain_ids[: len(chain)] == chain)


def shared_sizes(images: Iterable[ImageSummary]) -> None:
    """``docker system df -v``: a layer (by chain ID) used by more than one image is shared."""
    imgs = list(images)
    refs: dict[Digest, int] = {}
    for img in imgs:
        for c in set(img.chain_ids):
            refs[c] = refs.get(c, 0) + 1
    for img in imgs:
        seen: set[Digest] = set()
        shared = 0
        for ly in img.layers:
            if refs[ly.chain_id] > 1 and ly.chain_id not in seen:
                shared += ly.size
            seen.add(ly.chain_id)
        img.shared_size = shared
        img.unique_size = img.size - shared


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
        return f

    def has(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str) -> list[str]:
        return self.values.get(key, [])


@dataclass
class Row:
    """One line of ``images``: an image under one of its names (or ``<none>``)."""

    repository: str
    tag: str
    image: ImageSummary

    def to_json(self, now: float) -> dict[str, Any]:
        img = self.image
        return {
            "repository": self.repository, "tag": self.tag, "id": str(img.image_id),
            "short_id": img.image_id.short(), "digest": str(img.manifest_digest) if img.manifest_digest else None,
            "created": img.created, "created_since": since_text(img.created_ns, now), "size": img.size,
            "size_exact": img.size_exact, "shared_size": img.shared_size, "unique_size": img.unique_size,
            "layers": len(img.layers), "labels": img.labels, "platform": img.platform,
        }


def _match_labels(wanted: list[str], labels: dict[str, str]) -> bool:
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


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


# ------------------------------------------------------------------------------------------ history


@dataclass
class HistoryRow:
    id: str
    created: str | None
    created_ns: int | None
    created_by: str
    size: int
    size_exact: bool
    comment: str
    empty_layer: bool
    layer_index: int | None

    def to_json(self, now: float) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "created_since": since_text(self.created_ns, now),
                "created_by": self.created_by, "size": self.size, "size_exact": self.size_exact,
                "comment": self.comment, "empty_layer": self.empty_layer, "layer": self.layer_index}


def history(image: Image, *, exact: bool = False) -> list[HistoryRow]:
    """``docker history``: one row per history entry (empty ones at size 0), newest first.

    Non-empty entries take the image's layers in order; layers no entry describes get a row of their own.
    The top row carries the image ID, the others ``<missing>`` (as for any pulled or loaded image).
    """
    chains = chain_ids(list(image.config.diff_ids))
    sizes = [layer_size(ly, c, exact) for ly, c in zip(image.layers, chains, strict=True)]
    rows: list[HistoryRow] = []
    li = 0
    for h in image.config.history:
        index: int | None = None
        size, ex = 0, True
        if not h.empty_layer and li < len(sizes):
            index, size, ex = li, sizes[li].size, sizes[li].exact
            li += 1
        rows.append(HistoryRow(MISSING, h.created, parse_time_ns(h.created), h.created_by or "", size, ex,
                               h.comment or "", h.empty_layer, index))
    for i in range(li, len(sizes)):
        rows.append(HistoryRow(MISSING, None, None, "", sizes[i].size, sizes[i].exact, "", False, i))
    rows.reverse()
    if rows:
        rows[0].id = str(image.id)
    return rows


def ellipsis(text: str, width: int) -> str:
    """Docker's ``Ellipsis``: cut to ``width`` characters, the last one an ellipsis."""
    text = text.replace("\t", " ")
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


# ------------------------------------------------------------------------------------------ analyze


@dataclass
class LayerReport:
    index: int
    digest: str | None
    stored: int
    entries: int
    files_added: int
    bytes_added: int
    hidden_files: int
    hidden_bytes: int
    tar_bytes: int
    """Length of the layer's uncompressed tar stream."""

    def bar(self, width: int = 20) -> str:
        """A plain-text bar: ``#`` for bytes still visible in the final tree, ``.`` for bytes later hidden."""
        if self.bytes_added <= 0:
            return " " * width
        hidden = round(width * self.hidden_bytes / self.bytes_added)
        return "#" * (width - hidden) + "." * hidden

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "digest": self.digest, "stored_size": self.stored, "entries": self.entries,
                "files_added": self.files_added, "bytes_added": self.bytes_added,
                "hidden_files": self.hidden_files, "hidden_bytes": self.hidden_bytes, "tar_size": self.tar_bytes}


@dataclass
class Analysis:
    image: str
    image_id: Digest
    layers: list[LayerReport]
    largest_hidden: list[tuple[str, int, int]]
    """``(path, size, layer index)`` of the largest hidden regular files, biggest first."""
    wasted_files: int
    wasted_bytes: int
    """What a squash to one layer would drop: every hidden copy of every file, each counted once."""

    @property
    def bytes_added(self) -> int:
        return sum(ly.bytes_added for ly in self.layers)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "id": str(self.image_id), "layers": [ly.to_json() for ly in self.layers],
                "largest_hidden": [{"path": p, "size": s, "layer": i} for p, s, i in self.largest_hidden],
                "bytes_added": self.bytes_added, "wasted_files": self.wasted_files,
                "wasted_bytes": self.wasted_bytes, "final_bytes": self.bytes_added - self.wasted_bytes}


def analyze(image: Image, *, top: int = 10, on_layer: Callable[[int], None] | None = None) -> Analysis:
    """Per-layer figures from the merge engine's plan (headers only; contents are skipped, not read)."""
    from ocisquash import merge
    from ocisquash.squash import layer_inputs

    def wrap(i: int, inp: merge.LayerInput) -> merge.LayerInput:
        def opened(fn: Callable[[], Any]) -> Callable[[], Any]:
            def call() -> Any:
                if on_layer is not None:
                    on_layer(i)
                return fn()
            return call
        return merge.LayerInput(inp.label, opened(inp.open), opened(inp.open_scan))

    inputs = [wrap(i, x) for i, x in enumerate(layer_inputs(image))]
    plan = merge.plan(inputs, keep=0)  # remembers the merge.LARGEST_HIDDEN largest hidden files
    layers = [LayerReport(s.index, str(ly.digest) if ly.digest else None, ly.size, s.entries, s.files_added,
                          s.bytes_added, s.hidden_files, s.hidden_bytes, s.tar_bytes)
              for s, ly in zip(plan.layers, image.layers, strict=True)]
    hidden = [(h.path, h.size, h.layer) for h in plan.largest_hidden[:top]]
    return Analysis(image.label, image.id, layers, hidden, plan.dropped_files, plan.dropped_bytes)


# ------------------------------------------------------------------------------------------ validate


@dataclass
class Finding:
    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


@dataclass
class Validation:
    """Every mismatch found (not just the first), and what was checked."""

    label: str
    images: list[dict[str, Any]] = field(default_factory=list)
    blobs_checked: int = 0
    bytes_read: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"input": self.label, "ok": self.ok, "images": self.images, "blobs_checked": self.blobs_checked,
                "bytes_read": self.bytes_read, "findings": [f.to_json() for f in self.findings]}


class _Validator:
    def __init__(self, tree: Any, label: str, on_bytes: Callable[[int], None] | None) -> None:
        self.tree = tree
        self.v = Validation(label)
        self.on_bytes = on_bytes
        self._raw: dict[str, tuple[int, str] | None] = {}
        self._unpacked: dict[str, Digest | None] = {}

    def bad(self, where: str, message: str) -> None:
        self.v.findings.append(Finding(where, message))

    def _count(self, n: int) -> None:
        self.v.bytes_read += n
        if self.on_bytes is not None:
            self.on_bytes(n)

    def raw(self, path: str) -> tuple[int, str] | None:
        """``(size, sha256 hex)`` of a member, read once; None (and a finding) when unreadable."""
        if path in self._raw:
            return self._raw[path]
        import hashlib

        from ocisquash.errors import OcisquashError
        res: tuple[int, str] | None = None
        try:
            h = hashlib.sha256()
            n = 0
            f = self.tree.open(path)
            try:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    n += len(chunk)
                    self._count(len(chunk))
            finally:
                f.close()
            res = (n, h.hexdigest())
            self.v.blobs_checked += 1
        except OcisquashError as e:
            self.bad(path, str(e))
        self._raw[path] = res
        return res

    def diff_id(self, path: str, codec: Codec | None) -> Digest | None:
        """The sha256 of a layer's decompressed stream (every byte to EOF); None (and a finding) on error."""
        if path in self._unpacked:
            return self._unpacked[path]
        from ocisquash import tarheader
        from ocisquash.compression import decompressing_reader
        from ocisquash.digest import HashingReader
        from ocisquash.errors import OcisquashError
        res: Digest | None = None
        f = None
        try:
            f = self.tree.open(path)
            r = HashingReader(decompressing_reader(f, path, codec))
            watched = _Watched(r)
            try:
                # the layer must be a whole tar, not only hash right: a member whose (PAX) size runs past
                # the end is a truncated layer that every unpacker refuses
                for _ in tarheader.headers(watched, path, stream=True):  # type: ignore[arg-type]
                    pass
            except OcisquashError as e:
                if watched.failed:
                    raise  # the stream itself failed (corrupt, a bomb): reported below as such
                self.bad(path, f"not a valid layer tar: {e}")
            r.drain()
            res = r.digest()
        except OcisquashError as e:
            self.bad(path, f"cannot decompress: {e}")
        except (OSError, EOFError, ValueError) as e:
            self.bad(path, f"cannot decompress: {e}")
        finally:
            if f is not None:
                f.close()
        self._unpacked[path] = res
        return res

    def blob(self, path: str, digest: Digest | None, size: int | None, what: str) -> bool:
        if not self.tree.exists(path):
            self.bad(path, f"{what} is missing")
            return False
        got = self.raw(path)
        if got is None:
            return False
        ok = True
        if size is not None and got[0] != size:
            self.bad(path, f"{what} is {got[0]} bytes; its descriptor says {size}")
            ok = False
        if digest is not None and digest.algorithm == "sha256" and got[1] != digest.encoded:
            self.bad(path, f"{what} hashes to sha256:{got[1]}, not {digest}")
            ok = False
        return ok

    def config(self, path: str, where: str) -> Any:
        from ocisquash.errors import OcisquashError
        from ocisquash.model import ImageConfig
        try:
            return ImageConfig.parse(self.tree.read(path, 64 << 20), where)
        except OcisquashError as e:
            self.bad(where, str(e))
            return None

    def image(self, name: str, cfg: Any, layers: list[tuple[str, Digest | None, int | None, Codec | None]]) -> None:
        info: dict[str, Any] = {"name": name, "layers": len(layers)}
        self.v.images.append(info)
        if cfg is None:
            return
        info["id"] = str(cfg.digest)
        diff_ids = list(cfg.diff_ids)
        if len(diff_ids) != len(layers):
            self.bad(name, f"{len(layers)} layers but the config lists {len(diff_ids)} diff IDs")
        nonempty = sum(1 for h in cfg.history if not h.empty_layer)
        if cfg.history and nonempty > len(diff_ids):
            self.bad(name, f"config history has {nonempty} non-empty entries for {len(diff_ids)} layers "
                           "(docker load refuses this)")
        got_ids: list[Digest] = []
        for i, (path, digest, size, codec) in enumerate(layers):
            what = f"layer {i + 1}/{len(layers)}"
            if not self.tree.exists(path) and digest is not None:
                self.bad(path, f"{name}: {what} {digest} is missing")
                continue
            self.blob(path, digest, size, f"{name}: {what}")
            got = self.diff_id(path, codec)
            if got is None:
                continue
            got_ids.append(got)
            if i < len(diff_ids) and got != diff_ids[i]:
                self.bad(path, f"{name}: {what} uncompressed hashes to {got}, but the config's diff ID is "
                               f"{diff_ids[i]}")
        info["diff_ids"] = [str(d) for d in diff_ids]
        info["chain_ids"] = [str(c) for c in chain_ids(diff_ids)]
        if len(got_ids) == len(diff_ids) and got_ids != diff_ids:
            info["computed_chain_ids"] = [str(c) for c in chain_ids(got_ids)]
            self.bad(name, f"chain ID is {chain_ids(got_ids)[-1]} from the layers' contents, "
                           f"not {chain_ids(diff_ids)[-1]} as the config's diff IDs give")

    # ---- OCI layout
    def layout(self) -> None:
        from ocisquash import model
        from ocisquash.errors import OcisquashError
        from ocisquash.layout import blob_path, names_of
        try:
            index = model.Index.parse(self.tree.read("index.json", 64 << 20), "index.json")
        except OcisquashError as e:
            self.bad("index.json", str(e))
            return

        def walk(desc: model.Descriptor, top: model.Descriptor, depth: int) -> None:
            if desc.media_type not in model.INDEX_TYPES + model.MANIFEST_TYPES or depth > 8:
                return
            try:
                path = blob_path(desc.digest)
            except OcisquashError as e:
                self.bad("index.json", str(e))
                return
            if not self.tree.exists(path):
                if desc is top:
                    self.bad(path, f"manifest {desc.digest} named in index.json is missing")
                return  # a platform nobody pulled
            if not self.blob(path, desc.digest, desc.size, f"manifest {desc.digest}"):
                return
            try:
                data = self.tree.read(path, 64 << 20)
                obj = model.load_json(data, path)
                if model.document_kind(obj, desc.media_type) == "index":
                    for child in model.Index.parse(data, path, media_type=desc.media_type).manifests:
                        walk(child, top, depth + 1)
                    return
                man = model.Manifest.parse(data, path, media_type=desc.media_type)
            except OcisquashError as e:
                self.bad(path, str(e))
                return
            if man.config.media_type not in model.CONFIG_TYPES:
                return
            name = ", ".join(names_of(top)) or str(desc.digest)
            if desc.platform is not None:
                name += f" [{desc.platform}]"
            cpath = blob_path(man.config.digest)
            cfg = None
            if self.blob(cpath, man.config.digest, man.config.size, f"{name}: config"):
                cfg = self.config(cpath, f"{name}: config {man.config.digest}")
            from ocisquash.compression import codec_of_media_type
            self.image(name, cfg, [(blob_path(ld.digest), ld.digest, ld.size, codec_of_media_type(ld.media_type))
                                   for ld in man.layers])

        for d in index.manifests:
            walk(d, d, 0)
        for path in sorted(self.tree.names()):  # every blob must hash to its own name, referenced or not
            parts = path.split("/")
            if len(parts) == 3 and parts[:2] == ["blobs", "sha256"]:
                got = self.raw(path)
                if got is not None and got[1] != parts[2]:
                    self.bad(path, f"blob content hashes to sha256:{got[1]}, not its name")

    # ---- docker save
    def docker(self) -> None:
        from ocisquash import model
        from ocisquash.dockerarchive import _claimed
        from ocisquash.errors import OcisquashError
        try:
            items = model.load_json(self.tree.read("manifest.json", 64 << 20), "manifest.json")
            if not isinstance(items, list):
                raise OcisquashError("manifest.json: must be a JSON list")
        except OcisquashError as e:
            self.bad("manifest.json", str(e))
            return
        for i, item in enumerate(items):
            try:
                f = model.Fields(item, "manifest.json", f"[{i}]")
                cpath = f.req_str("Config")
                lpaths = f.str_list("Layers")
                tags = f.str_list("RepoTags")
            except OcisquashError as e:
                self.bad("manifest.json", str(e))
                continue
            name = ", ".join(tags) or f"manifest.json[{i}]"
            cfg = None
            if self.blob(cpath, _claimed(cpath), None, f"{name}: config"):
                cfg = self.config(cpath, f"{name}: {cpath}")
            self.image(name, cfg, [(p, _claimed(p), None, None) for p in lpaths])


class _Watched:
    """A buffered reader (a tar walk reads 512-byte headers) that remembers whether a read of the stream
    underneath failed."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self.failed = False

    def read(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            try:
                self._buf, self._pos = bytes(self._raw.read(1 << 20)), 0
            except BaseException:
                self.failed = True
                raise
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out


def validate(source: Any, on_bytes: Callable[[int], None] | None = None) -> Validation:
    """Recompute every digest, size, diff ID and chain ID of every image of an opened ``Source``."""
    val = _Validator(source.tree, source.label, on_bytes)
    if source.kind == "docker":
        val.docker()
        if source.tree.exists("index.json"):
            val.layout()  # Docker 25+ and containerd tars hold an OCI layout too: check it as well
    else:
        val.layout()
    return val.v


def total_bytes(source: Any) -> int:
    """Bytes ``validate`` will read at most once each (for a progress bar)."""
    total = 0
    for n in source.tree.names():
        try:
            total += source.tree.size(n)
        except Exception:
            continue
    return total
