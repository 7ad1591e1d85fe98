"""``docker://`` as a ``Format``: a reference, not a path, read as a virtual OCI layout and written by pushing."""

from __future__ import annotations

from ocisquash.archive import Tree
from ocisquash.formats import walk
from ocisquash.formats.base import Checker, Format, Opened
from ocisquash.formats.builtin import layout_attestations, layout_candidates
from ocisquash.formats.commit import Sink
from ocisquash.image import Candidate
from ocisquash.registry import open_sink, open_tree, output_tags
from ocisquash.registry.ref import is_registry_ref


class Registry(Format):
    name, title = "registry", "a registry"
    holds_index = True
    names_from_output = True

    def claims_reference(self, text: str) -> bool:
        return is_registry_ref(text)

    def open_reference(self, text: str) -> Opened:
        tree, bind = open_tree(text)
        try:
            return Opened(tree, layout_candidates(tree, bind))
        except BaseException:
            tree.close()
            raise

    def candidates(self, tree: Tree) -> list[Candidate]:
        return layout_candidates(tree)

    def claims_output(self, path: str) -> bool:
        return is_registry_ref(path)

    def open_sink(self, path: str) -> Sink:
        return open_sink(path)

    def output_tags(self, dest: str, tags: list[str]) -> list[str] | None:
        return output_tags(dest, tags)

    def walk(self, tree: Tree, checker: Checker) -> None:
        walk.layout(tree, checker)

    def attestations(self, tree: Tree, names: list[str]) -> int:
        return layout_attestations(tree, names)


REGISTRY = Registry()
