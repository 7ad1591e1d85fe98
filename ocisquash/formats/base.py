"""The format interface: what an image format does for the rest of ocisquash.

Shaped like go-containerregistry's and containers/image's transports: a format recognises what is
its own (a reference such as ``docker://``, or an opened directory or tar), lists the images it holds
as ``Candidate``s, opens an output of its kind as a ``Sink``, says what it can hold (an index, several
images), walks itself for ``validate``, and names its outputs. Each method has a default that
declines, so a format implements only what it can do. The formats are listed, in the order they are
asked, in ``ocisquash.formatlist``; nothing else names them. Reusing a blob a sink already has
(containers/image's ``TryReusingBlob``) is ``Sink.adopt_layer``, which declines by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ocisquash import model
from ocisquash.archive import Tree
from ocisquash.compression import Codec
from ocisquash.digest import Digest
from ocisquash.errors import OutputError
from ocisquash.formats.commit import Sink
from ocisquash.image import Candidate

LayerRef = tuple[str, Digest | None, int | None, Codec | None]
"""A layer as an image names it, for ``validate``: ``(member path, digest, size, codec)``; None where the
format does not say (a docker tarball's layers have no descriptor: their codec is sniffed, their digest
claimed by the name)."""


MAX_DOCUMENT = 64 << 20
"""Bytes of one JSON document (index, manifest, config) read for checking, whatever ``--limit`` says."""


class Checker(Protocol):
    """What ``validate`` offers a format's walk: checks that note every mismatch and go on."""

    @property
    def only(self) -> Digest | None:
        """Check only the image with this config digest (its config, manifest and layers)."""

    def bad(self, where: str, message: str) -> None:
        """Note a mismatch."""

    def raw(self, path: str) -> tuple[int, str] | None:
        """``(size, sha256 hex)`` of a member, read once; None (and a finding) when unreadable."""

    def config_digest(self, path: str) -> Digest | None:
        """The digest of a config's bytes, or None when it cannot be read."""

    def blob(self, path: str, digest: Digest | None, size: int | None, what: str) -> bool: ...

    def config(self, path: str, where: str) -> model.ImageConfig | None: ...

    def image(self, name: str, cfg: model.ImageConfig | None, layers: list[LayerRef],
              recorded: list[str | None] | None = None) -> None: ...


@dataclass
class Opened:
    """An input a format opened from a reference: the tree its blobs are read from, and its images."""

    tree: Tree
    candidates: list[Candidate]


class Format:
    """One image format. Subclasses set ``name`` and override what they can do."""

    name: str = ""
    """The ``--format`` name the library takes (``docker``, ``oci``, ``oci-dir``), and what a source is."""
    title: str = ""
    """How a message names an output of this format (``a docker save tarball``)."""
    holds_index: bool = False
    """Whether an output can hold an image index (``--platform all``)."""
    holds_many: bool = False
    """Whether an existing output keeps the images it holds and takes a new one beside them (a layout
    directory: squashing into IN's own layout adds the squashed image beside the original)."""
    index_stand_in: str | None = None
    """The format written instead when an index is to be held and this one was only guessed from the path."""

    def claims_reference(self, text: str) -> bool:
        """Whether ``text`` is a reference of this format that is no path (``docker://...``)."""
        return False

    def open_reference(self, text: str) -> Opened:
        raise NotImplementedError

    def claims(self, tree: Tree) -> bool:
        """Whether an opened directory or tar is of this format (it may raise a clearer refusal)."""
        return False

    def candidates(self, tree: Tree) -> list[Candidate]:
        """The images a tree this format claimed holds, reading only JSON."""
        raise NotImplementedError

    def claims_output(self, path: str) -> bool:
        """Whether an output path without ``--format`` is of this format."""
        return False

    def open_sink(self, path: str) -> Sink:
        raise OutputError(f"{path}: ocisquash cannot write {self.title or self.name}")

    def output_tags(self, dest: str, tags: list[str]) -> list[str] | None:
        """The names an output at ``dest`` gets, when the format decides them (else None: ``--tag``'s,
        or the input's)."""
        return None

    def walk(self, tree: Tree, checker: Checker) -> None:
        """Check every digest, size and diff ID of a tree this format claimed (``validate``)."""
        raise NotImplementedError

    def stored_names(self, tree: Tree) -> set[str]:
        """The members ``walk`` reads, for ``validate``'s progress bar."""
        return set(tree.names())

    def attestations(self, tree: Tree, names: list[str]) -> int:
        """How many attestation manifests the index of the image named ``names`` lists."""
        return 0
