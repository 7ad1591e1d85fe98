"""Open whatever the user names (a layout directory, a tarball of any kind, or ``-``) and choose an image.

``open_source`` decides what a path is and lists the images it holds as candidates (reading only JSON);
``Source.choose`` picks one by ``name:tag``, by digest, by image ID prefix, or as the only one, and by
``--platform`` inside a multi-platform index, with errors that list the choices.
"""

from __future__ import annotations

import os
import platform as platform_mod
import re
from dataclasses import dataclass, field

from ocisquash import formatlist, reference, spool
from ocisquash.archive import DirTree, Tree, open_tar_input
from ocisquash.errors import Ambiguous, FormatError, MultiPlatform, NotFound
from ocisquash.formats.base import Format
from ocisquash.image import Candidate, Image
from ocisquash.model import Platform

_HEX = re.compile(r"(?:sha256:)?([a-f0-9]{4,64})\Z")


@dataclass
class Source:
    """An opened input: its format (``formats.base.Format``), the tree it is read from, and its images."""

    path: str
    format: Format
    tree: Tree
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.tree.label

    @property
    def kind(self) -> str:
        """The format's name (``docker``, ``oci``, ``oci-dir``, ``registry``)."""
        return self.format.name

    def close(self) -> None:
        self.tree.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def matching(self, ref: str | None) -> list[Candidate]:
        """Every candidate ``ref`` names (all of them for None), one per image and platform, each with
        its platform known as ``--platform`` judges it: its index entry's, else its config's. Index entries
        of different platforms that share a manifest are each kept: each is a platform to write."""
        named = [c for c in self.candidates if ref is None or _matches(ref, c)]
        return [_with_platform(c) for c in _dedupe(named, by_platform=True)]

    def choose(self, ref: str | None = None, platform: str | None = None) -> Image:
        return self.choose_candidate(ref, platform).load()

    def choose_default(self, ref: str | None = None, platform: str | None = None) -> tuple[Image, str | None]:
        """``choose``, except that a multi-platform image asked for without a platform is taken for the
        default platform (``host_platform()``), as docker and podman do; the second value is then a note
        saying which was used. When the default is not among its platforms, the error stays."""
        if platform is not None:
            return self.choose(ref, platform), None
        try:
            return self.choose(ref, None), None
        except MultiPlatform as e:
            host = host_platform()
            try:
                img = self.choose(ref, host)
            except (Ambiguous, NotFound):
                raise e from None
            return img, (f"{ref or 'the image'} is multi-platform: using {host} (the default platform); "
                         "choose another with --platform")

    def choose_candidate(self, ref: str | None = None, platform: str | None = None) -> Candidate:
        cands = self.candidates
        if not cands:
            raise NotFound(f"{self.label}: holds no images")
        if ref is not None:
            cands = [c for c in cands if _matches(ref, c)]
            if not cands:
                raise NotFound(f"{self.label}: no image matches {ref!r}",
                               hint="images here: " + _describe(self.candidates))
        if platform is not None:
            return _by_platform(self.label, ref, cands, platform)
        distinct = _dedupe(cands)
        if len(distinct) == 1:
            return distinct[0]
        if len({c.platform for c in distinct}) > 1 and _same_top(distinct):
            raise MultiPlatform(f"{self.label}: {ref or 'the image'} is multi-platform; choose one with --platform",
                            hint="platforms: " + ", ".join(c.platform or "?" for c in distinct))
        what = f"{ref!r} matches {len(distinct)} images" if ref else f"holds {len(distinct)} images; say which"
        raise Ambiguous(f"{self.label}: {what}", hint="use --image with one of: " + _describe(distinct))


_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64/v8", "arm64": "arm64/v8", "armv7l": "arm/v7",
         "armv6l": "arm/v6", "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}


def host_platform() -> str:
    """The platform docker and podman pick by default: ``DOCKER_DEFAULT_PLATFORM``, else this machine's."""
    env = os.environ.get("DOCKER_DEFAULT_PLATFORM", "").strip()
    if env:
        return env
    machine = platform_mod.machine().lower()
    return f"{platform_mod.system().lower()}/{_ARCH.get(machine, machine)}"


def _by_platform(label: str, ref: str | None, cands: list[Candidate], platform: str) -> Candidate:
    """The one candidate for ``--platform``: an image is for the platform its index entry names or,
    without one (a docker tarball, a single-platform layout), the one its config names. No match and
    several matches are both errors: taking some other image, or the first of several, would squash
    an image the user did not ask for."""
    asked = Platform.from_text(platform)
    want = _normal(asked) if asked.variant is not None else asked
    known = [_with_platform(c) for c in cands]
    plat = [c for c in known if c.platform is not None and _normal(_parse(c.platform)).matches(want)]
    if not plat:
        what = f"{ref!r} has" if ref else "there is"
        raise NotFound(f"{label}: {what} no image for platform {platform}",
                       hint="platforms here: " + ", ".join(sorted({c.platform or "?" for c in known})))
    distinct = _dedupe(plat)
    if len(distinct) == 1:
        return distinct[0]
    what = f"{ref!r} matches" if ref else "holds"
    raise Ambiguous(f"{label}: {what} {len(distinct)} images for platform {platform}; say which",
                    hint="use --image with one of: " + _describe(distinct))


def _with_platform(c: Candidate) -> Candidate:
    """``c`` with its platform known: read from its config when no index entry gave one (the image
    loaded for it is kept, so choosing it does not read the config again)."""
    if c.platform is not None:
        return c
    img = c.load()
    return Candidate(list(c.names), c.image_id, c.manifest_digest, lambda: img, str(img.config.platform))


def _parse(text: str) -> Platform:
    # Candidate platforms come from input files: no UsageError about --platform for their shape.
    parts = text.split("/")
    return Platform(parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else None)


def _normal(p: Platform) -> Platform:
    # arm64 without a variant is v8, as containerd's platform matcher normalises it; a --platform
    # without a variant still matches every variant (Platform.matches).
    if p.architecture == "arm64" and p.variant is None:
        return Platform(p.os, p.architecture, "v8", p.os_version)
    return p


def _same_top(cands: list[Candidate]) -> bool:
    return len({tuple(c.names) for c in cands}) == 1


def _dedupe(cands: list[Candidate], *, by_platform: bool = False) -> list[Candidate]:
    seen: dict[object, Candidate] = {}
    for c in cands:
        key: object = c.manifest_digest or c.image_id or id(c)
        if by_platform:
            key = (key, c.platform)
        if key in seen:
            seen[key].names.extend(n for n in c.names if n not in seen[key].names)
        else:
            seen[key] = Candidate(list(c.names), c.image_id, c.manifest_digest, c.load, c.platform)
    return list(seen.values())


def _describe(cands: list[Candidate]) -> str:
    parts = []
    for c in cands[:12]:
        label = ", ".join(c.names) if c.names else "<untagged>"
        ident = c.image_id.short() if c.image_id else (c.manifest_digest.short() if c.manifest_digest else "")
        plat = f" [{c.platform}]" if c.platform else ""
        parts.append(f"{label} ({ident}){plat}")
    more = f" and {len(cands) - 12} more" if len(cands) > 12 else ""
    return "; ".join(parts) + more


def _matches(ref: str, c: Candidate) -> bool:
    if reference.matches(ref, c.names):
        return True
    m = _HEX.match(ref)
    if m:
        hexpart = m.group(1)
        full = len(hexpart) == 64
        for d in (c.manifest_digest, c.image_id):
            if d is None:
                continue
            if (full and d.encoded == hexpart) or (not full and d.encoded.startswith(hexpart)):
                return True
    return False


def open_source(path: str, spool_dir: str | None = None) -> Source:
    """Open an input; raises a clear error when it is none of the formats ocisquash reads.

    A reference (``docker://``) goes to the format whose it is; a path is opened as a directory or as
    a tar indexed once, and goes to the first format that claims it (``formatlist``). An input that can
    be read only once (``-``, a FIFO) is opened once and spooled to a temporary file in ``spool_dir``
    (``$TMPDIR`` when None), removed when the source is closed.
    """
    fmt = formatlist.reference_format(path)
    if fmt is not None:
        opened = fmt.open_reference(path)
        return Source(path, fmt, opened.tree, opened.candidates)
    if path != "-" and not os.path.lexists(path):
        raise FormatError(f"{path}: no such file or directory")
    tree: Tree
    is_dir = False
    if spool.read_once(path):
        tree = spool.spool(path, spool_dir)
    elif os.path.isdir(path):
        tree, is_dir = DirTree(path), True
    else:
        tree = open_tar_input(path)
    try:
        fmt = formatlist.recognise(tree, is_dir)
        return Source(path, fmt, tree, fmt.candidates(tree))
    except BaseException:
        tree.close()
        raise
