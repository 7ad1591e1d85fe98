"""Image references: normalising ``name:tag`` the way Docker does, and matching user input to images."""

from __future__ import annotations

import re

_TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*\Z")


def split(ref: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of a reference; tag and digest may be None."""
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
    return ref, tag, digest


def normalize_name(name: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox``; ``acme/app`` -> ``docker.io/acme/app``."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def familiar_name(name: str) -> str:
    """The short form Docker shows: ``docker.io/library/busybox`` -> ``busybox``."""
    if name.startswith("docker.io/library/"):
        return name[len("docker.io/library/"):]
    if name.startswith("docker.io/"):
        return name[len("docker.io/"):]
    return name


def normalize(ref: str) -> str:
    """A full ``registry/path:tag`` (tag defaults to ``latest``)."""
    name, tag, _ = split(ref)
    return f"{normalize_name(name)}:{tag or 'latest'}"


def familiar(ref: str) -> str:
    name, tag, _ = split(ref)
    return f"{familiar_name(normalize_name(name))}:{tag or 'latest'}"


NAME_TOTAL_LENGTH_MAX = 255  # docker's limit on a repository name, domain included (distribution/reference)


def name_too_long(ref: str) -> bool:
    """Whether the repository part of ``ref``, normalised (``docker.io/library/...``), is over 255 characters."""
    return len(normalize_name(split(ref)[0])) > NAME_TOTAL_LENGTH_MAX


def is_valid_tagged(ref: str) -> bool:
    """Whether ``ref`` is a ``name:tag`` that ``docker load`` accepts in ``RepoTags``."""
    name, tag, digest = split(ref)
    return digest is None and tag is not None and bool(_TAG_RE.match(tag)) and bool(_NAME_RE.match(name))


def repo_and_tag(name: str) -> tuple[str, str]:
    """For display: ``(repository, tag)`` in familiar form; a bare tag (a layout ref.name) has no repository."""
    n, tag, _ = split(name)
    if tag is None and "/" not in n and ":" not in name:
        return "<none>", n
    return familiar_name(normalize_name(n)), tag or "latest"


def matches(user: str, names: list[str]) -> bool:
    """Whether a user's ``name[:tag]`` names one of an image's names (full refs, familiar refs or bare tags)."""
    for have in names:
        if user == have:
            return True
        _, htag, _ = split(have)
        if "/" not in have and htag is None and ":" not in have:
            continue  # a bare layout tag matches only by exact text (above)
        try:
            if normalize(user) == normalize(have):
                return True
        except ValueError:
            continue
    return False
