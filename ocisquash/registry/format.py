"""``docker://`` as a ``Format``: a reference, not a path, read as a virtual OCI layout and written by pushing.

A registry image is read by the layout code (``formats.builtin.LayoutFormat``: its candidates, its
``validate`` walk, its attestations) over ``registry.source.RegistryTree``; only recognising, opening
and the output's own names are the registry's.
"""

from __future__ import annotations

from ocisquash.formats.base import Opened
from ocisquash.formats.builtin import LayoutFormat, layout_candidates
from ocisquash.formats.commit import Sink
from ocisquash.registry import open_sink, open_tree, output_tags
from ocisquash.registry.ref import is_registry_ref


class Registry(LayoutFormat):
    name, title = "registry", "a registry"

    def claims_reference(self, text: str) -> bool:
        return is_registry_ref(text)

    def open_reference(self, text: str) -> Opened:
        tree, bind = open_tree(text)
        try:
            return Opened(tree, layout_candidates(tree, bind))
        except BaseException:
            tree.close()
            raise

    def claims_output(self, path: str) -> bool:
        return is_registry_ref(path)

    def open_sink(self, path: str) -> Sink:
        return open_sink(path)

    def output_tags(self, dest: str, tags: list[str]) -> list[str] | None:
        return output_tags(dest, tags)


REGISTRY = Registry()
