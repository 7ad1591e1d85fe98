"""The file formats ocisquash reads and writes, as ``Format`` objects: an OCI layout directory, an OCI
layout tar, a ``docker save`` tarball.

Each object is a thin face over its format's module (``ocilayout``, ``dockersave``, ``ocitar``):
recognising a tree, listing its images, opening its sink, walking it for ``validate``. The registry's
own is ``ocisquash.registry.format``; ``ocisquash.formatlist`` lists them all.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from functools import partial

from ocisquash import model
from ocisquash.archive import DirTree, TarTree, Tree
from ocisquash.errors import FormatError, OcisquashError, OutputError
from ocisquash.formats import dockersave, layoutnames, ocilayout, walk
from ocisquash.formats.base import MAX_DOCUMENT, Checker, Format
from ocisquash.formats.commit import Sink
from ocisquash.formats.ocitar import OUTER_CODECS, TarSink
from ocisquash.image import Candidate, Image

TAR_NAMES = (".tar", *OUTER_CODECS)
"""Output names that are a tarball (``.tar.gz``/``.tar.zst``: the whole tarball compressed)."""


def layout_candidates(tree: Tree) -> list[Candidate]:
    """The images of a layout (a directory or a tar)."""
    plain: dict[str, bool] = {}  # shared by the loads: the images share their layers
    return entry_candidates(ocilayout.entries(tree), lambda e: ocilayout.load(tree, e, plain=plain))


def entry_candidates(entries: list[ocilayout.Entry], load: Callable[[ocilayout.Entry], Image]) -> list[Candidate]:
    """A candidate for each image manifest an index walk found (``ocilayout.walk_index``), loaded by ``load``."""
    return [Candidate(names=list(e.names), image_id=e.manifest.config.digest, manifest_digest=e.descriptor.digest,
                      load=partial(load, e), platform=str(e.platform) if e.platform else None) for e in entries]


def layout_blobs(tree: Tree) -> set[str]:
    return {n for n in tree.names() if n.startswith("blobs/sha256/") and n.count("/") == 2}


def layout_attestations(tree: Tree, names: list[str]) -> int:
    """How many attestation manifests the index of the image named ``names`` lists in a layout."""
    try:
        tops = ocilayout.read_index_json(tree).manifests
    except OcisquashError:
        return 0
    return attestations_under(tops, names, lambda d: ocilayout.read_blob(tree, d, "index"), tree.label)


def attestations_under(tops: Sequence[model.Descriptor], names: list[str],
                       read: Callable[[model.Descriptor], bytes], label: str) -> int:
    """How many attestation manifests the index among ``tops`` named ``names`` lists (0 when unreadable)."""
    try:
        count = 0
        for d in tops:
            if (names and layoutnames.names_of(d) != names) or d.media_type not in model.INDEX_TYPES:
                continue
            idx = model.Index.parse(read(d), label, media_type=d.media_type)
            count += sum(1 for m in idx.manifests if ocilayout.is_attestation(m))
        return count
    except OcisquashError:
        return 0


class LayoutFormat(Format):
    """What every OCI layout shares, wherever it is held."""

    holds_index = True

    def candidates(self, tree: Tree) -> list[Candidate]:
        return layout_candidates(tree)

    def walk(self, tree: Tree, checker: Checker) -> None:
        walk.layout(tree, checker)

    def stored_names(self, tree: Tree) -> set[str]:
        return layout_blobs(tree)

    def attestations(self, tree: Tree, names: list[str]) -> int:
        return layout_attestations(tree, names)


class OciDir(LayoutFormat):
    name, title = "oci-dir", "an OCI layout directory"
    holds_many = True

    def claims(self, tree: Tree) -> bool:
        return isinstance(tree, DirTree) and (tree.exists("index.json") or tree.exists("oci-layout"))

    def claims_output(self, path: str) -> bool:
        return os.path.isdir(path) and not os.path.islink(path)

    def open_sink(self, path: str) -> Sink:
        if path == "-":
            raise OutputError("an OCI layout directory cannot go to standard output", hint="use --format oci or docker")
        return ocilayout.OciDirSink(path)


class OciTar(LayoutFormat):
    name, title = "oci", "an OCI layout tar"

    def claims(self, tree: Tree) -> bool:
        return isinstance(tree, TarTree) and tree.exists("index.json")

    def open_sink(self, path: str) -> Sink:
        return TarSink(path, docker=False)


class DockerSave(Format):
    """A ``docker save`` tarball; written in the Docker 25+ shape, which is an OCI layout tar too."""

    name, title = "docker", "a docker save tarball"
    index_stand_in = "oci"

    def claims(self, tree: Tree) -> bool:
        if not isinstance(tree, TarTree):
            return False
        if dockersave.is_docker_archive(tree):
            return True
        if not tree.exists("index.json") and tree.exists("repositories"):
            raise FormatError(f"{tree.label}: a pre-1.10 docker save tarball (no manifest.json); not supported",
                              hint="re-save it with a current Docker")
        return False

    def candidates(self, tree: Tree) -> list[Candidate]:
        assert isinstance(tree, TarTree)
        return dockersave.candidates(tree)

    def claims_output(self, path: str) -> bool:
        # Standard output, a tar name or an existing file: the Docker 25+ shape, which docker load reads
        # and which is also an OCI layout tar (--format oci asks for a pure one).
        if path != "-" and os.path.isdir(path) and not os.path.islink(path):
            return False  # a directory, whatever its name: a layout directory
        if path == "-" or path.lower().endswith(TAR_NAMES):
            return True
        return os.path.exists(path) and stat.S_ISREG(os.stat(path).st_mode)

    def open_sink(self, path: str) -> Sink:
        return TarSink(path, docker=True)

    def walk(self, tree: Tree, checker: Checker) -> None:
        walk.docker(tree, checker)
        if tree.exists("index.json"):
            walk.layout(tree, checker)  # Docker 25+ and containerd tars hold an OCI layout too: check it as well

    def stored_names(self, tree: Tree) -> set[str]:
        # the config and layers manifest.json names (not the legacy copies beside them), and the OCI
        # layout's blobs when there is one
        names: set[str] = set()
        try:
            items = model.load_json(tree.read("manifest.json", MAX_DOCUMENT), "manifest.json")
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    refs = [item.get("Config"), *(item.get("Layers") or [])]
                    names.update(r for r in refs if isinstance(r, str))
        except Exception:
            names = set(tree.names())  # validate reports what is wrong; the bar just counts everything
        if tree.exists("index.json"):
            names.update(layout_blobs(tree))
        return names


OCI_DIR, OCI_TAR, DOCKER = OciDir(), OciTar(), DockerSave()
