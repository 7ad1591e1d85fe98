"""``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`` references, normalised the way docker does.

A first component with a dot or a port, or ``localhost``, is a registry host; otherwise the
reference is on Docker Hub (``docker.io``, served at ``registry-1.docker.io``) and a one-component
repository gets the ``library/`` prefix. No tag and no digest means ``latest``. A reference carrying
``USER:PASSWORD@`` is refused without being echoed: credentials go in options, never in a name that
messages show (``redact`` hides them in any text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocisquash.digest import Digest
from ocisquash.errors import UsageError

PREFIX = "docker://"
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_HOST_RE = re.compile(r"(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?\Z")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}\Z")
# docker://USER[:PASSWORD]@HOST/…: an "@" in the first component with a "/" after it, or with what
# follows it not a digest (``repo@sha256:…`` on Docker Hub has no "/")
_USERINFO_RE = re.compile(r"docker://(?=[^/\s]*@)(?:[^/\s@]*@)+(?=[^/\s]*/|(?![a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}\b))")
CREDENTIALS_HINT = "give credentials with --creds, --src-creds (IN, --parent) or --dest-creds (OUT), or --authfile"


def is_registry_ref(text: str) -> bool:
    """Whether an IN or OUT argument names a registry image (``docker://…``)."""
    return text.startswith(PREFIX)


@dataclass(frozen=True)
class RegistryRef:
    """A parsed reference: ``host`` as the user names it (``docker.io`` for Docker Hub)."""

    host: str
    repo: str
    tag: str | None
    digest: Digest | None

    @property
    def api_host(self) -> str:
        """Where the API is served: Docker Hub's name is not its API host."""
        return DOCKER_HUB_API if self.host == DOCKER_HUB else self.host

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when given, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repo}"

    def with_tag(self) -> str:
        """``host/repo:tag`` (the tag ``latest`` when none was given), as an image name."""
        return f"{self.name}:{self.tag or 'latest'}"

    def __str__(self) -> str:
        s = PREFIX + self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest is not None:
            s += "@" + str(self.digest)
        return s


def redact(text: str) -> str:
    """``text`` with the user information of any ``docker://USER:PASSWORD@HOST/…`` in it replaced by ``…``."""
    return _USERINFO_RE.sub("docker://…@", text) if PREFIX in text else text


def parse(text: str) -> RegistryRef:
    """Parse ``docker://…``; a malformed one is a usage error naming what is wrong."""
    if not is_registry_ref(text):
        raise UsageError(f"{redact(text)!r} is not a docker:// reference")
    shown = redact(text)
    if shown != text:
        raise UsageError(f"{shown!r}: a reference carries no credentials (USER:PASSWORD@ before the host)",
                         hint=CREDENTIALS_HINT)
    rest = text[len(PREFIX):]
    if rest.startswith("/"):
        raise UsageError(f"{text!r}: write docker://HOST/REPO:TAG, without a third slash")
    digest = None
    if "@" in rest:
        rest, _, dtext = rest.partition("@")
        try:
            digest = Digest.parse(dtext, where=text)
        except Exception:
            raise UsageError(f"{text!r}: {dtext!r} is not a valid digest") from None
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, path = first, remainder
    else:
        host, path = DOCKER_HUB, rest
    tag = None
    if ":" in path:
        path, _, tag = path.rpartition(":")
        if not _TAG_RE.match(tag):
            raise UsageError(f"{text!r}: {tag!r} is not a valid tag")
    if host == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not _HOST_RE.match(host):
        raise UsageError(f"{text!r}: {host!r} is not a valid registry host")
    if not path or not _REPO_RE.match(path):
        raise UsageError(f"{text!r}: {path!r} is not a valid repository name (lowercase, [a-z0-9._-] and /)")
    return RegistryRef(host, path, tag, digest)
