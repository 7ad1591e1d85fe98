"""``docker://`` as a ``Format``: a reference, not a path, read from the registry and written by pushing.

Reading: the reference resolves to its manifest (``registry.source.RegistryInput``); the index walk every
input shares (``ocilayout.walk_index``: platforms, attestations skipped, caps, cycles) runs over the
manifests fetched by digest, and each candidate loads its image from its config (fetched, checked,
cached) with its layers streamed from the registry and verified by digest as they are read. ``walk``
(``validate docker://…``) reads every manifest, config and layer blob the reference leads to, every
platform's, and checks each one's size and digest, and each layer's diff ID, by reading it (no ``HEAD``
is trusted for a check).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from ocisquash.archive import Tree
from ocisquash.formats import ocilayout, walk
from ocisquash.formats.base import Checker, Format, Opened
from ocisquash.formats.builtin import attestations_under, entry_candidates
from ocisquash.formats.commit import Sink
from ocisquash.image import BlobOpener, Image
from ocisquash.model import Descriptor
from ocisquash.registry import open_input, open_sink, output_tags
from ocisquash.registry.ref import is_registry_ref

if TYPE_CHECKING:  # the HTTP client (httpx: 70 ms of imports) is loaded by the first reference opened
    from ocisquash.registry.sink import Origin
    from ocisquash.registry.source import RegistryInput


class Registry(Format):
    name, title = "registry", "a registry"
    holds_index = True

    def claims_reference(self, text: str) -> bool:
        return is_registry_ref(text)

    def open_reference(self, text: str) -> Opened:
        inp, origin = open_input(text)
        try:
            found = ocilayout.walk_index([inp.top()], lambda d: inp.document(d, "manifest"), inp.label)
            return Opened(inp, entry_candidates(found, lambda e: _load(inp, origin, e)))
        except BaseException:
            inp.close()
            raise

    def claims_output(self, path: str) -> bool:
        return is_registry_ref(path)

    def open_sink(self, path: str) -> Sink:
        return open_sink(path)

    def output_tags(self, dest: str, tags: list[str]) -> list[str] | None:
        return output_tags(dest, tags)

    def walk(self, tree: Tree, checker: Checker) -> None:
        from ocisquash.registry.source import RegistryInput

        assert isinstance(tree, RegistryInput)
        walk.documents(tree, checker, [tree.top()], str)

    def attestations(self, tree: Tree, names: list[str]) -> int:
        from ocisquash.registry.source import RegistryInput

        assert isinstance(tree, RegistryInput)
        return attestations_under([tree.top()], names, lambda d: tree.document(d, "index"), tree.label)


def _load(inp: RegistryInput, origin: Origin, entry: ocilayout.Entry) -> Image:
    """One image: its config fetched and checked, its layers streamed from the registry, each carrying
    the registry's origin (a sink on the same registry mounts it instead of uploading it)."""
    def layer_blob(ld: Descriptor, what: str) -> tuple[BlobOpener, bool]:
        return partial(inp.open, str(ld.digest)), False

    img = ocilayout.image_of(entry, inp.document(entry.manifest.config, "config"), inp.label, layer_blob)
    for ly in img.layers:
        ly.origin = origin
    return img


REGISTRY = Registry()
