"""The package's layering, read from its source: which modules may import which (imports inside
functions count too: hiding an import there does not remove the arrow)."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ocisquash"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _target(module: str, name: str) -> str:
    """``from module import name``: the submodule when ``name`` is one, else the module."""
    full = f"{module}.{name}"
    rel = Path(*full.split("."))
    return full if (ROOT.parent / rel).with_suffix(".py").is_file() or (ROOT.parent / rel).is_dir() else module


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ocisquash":
                out.update(_target(node.module, a.name) for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.split(".")[0] == "ocisquash")
        edges[module_name(path)] = out
    return edges


GRAPH = graph()


def reaches(start: str, goal: str) -> list[str] | None:
    """An import path from ``start`` to ``goal`` (a package reaches its ``__init__`` and modules), or None."""
    queue, seen = deque([[start]]), {start}
    while queue:
        path = queue.popleft()
        for nxt in GRAPH.get(path[-1], ()):
            if nxt == goal or nxt.startswith(goal + "."):
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                queue.append([*path, nxt])
    return None


def test_the_graph_sees_imports_inside_functions() -> None:
    # registry.check_credentials imports auth inside the function; were imports inside functions missed,
    # the tests below could not fail
    assert "ocisquash.registry.auth" in GRAPH["ocisquash.registry"]
    assert reaches("ocisquash.sources", "ocisquash.registry") is not None  # through the format table


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m == "ocisquash.tar" or m.startswith("ocisquash.tar.")))
def test_the_tar_codec_sits_below_its_users(module: str) -> None:
    """The codec imports errors and limits only: the outer archive reader and the merge both stand on it."""
    assert GRAPH[module] <= {"ocisquash.errors", "ocisquash.limits"}, GRAPH[module]
    assert "ocisquash.tar.header" in GRAPH["ocisquash.tarheader"] and "ocisquash.tar.header" in GRAPH[
        "ocisquash.merge.tarread"]


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("ocisquash.merge")))
def test_the_merge_imports_only_errors_limits_and_the_tar_codec(module: str) -> None:
    others = {m for m in GRAPH[module] if not m.startswith(("ocisquash.merge", "ocisquash.tar"))}
    # gcpause: the collector pause `images` shares with the merge without importing the merge package;
    # cores: whether the work may start threads or processes of its own
    assert others <= {"ocisquash.errors", "ocisquash.limits", "ocisquash.gcpause", "ocisquash.cores"}, others


@pytest.mark.parametrize("leaf", ["ocisquash.errors", "ocisquash.gcpause", "ocisquash.cores"])
def test_the_merges_leaves_import_nothing_of_the_package(leaf: str) -> None:
    assert GRAPH[leaf] == set()


def test_formats_do_not_depend_on_the_merge() -> None:
    for module in (m for m in GRAPH if m.startswith("ocisquash.formats")):
        assert reaches(module, "ocisquash.merge") is None, reaches(module, "ocisquash.merge")


def test_no_circle_between_the_registry_and_sources() -> None:
    """sources opens every input, the registry's too: the registry must not import it back."""
    for module in (m for m in GRAPH if m.startswith("ocisquash.registry")):
        assert reaches(module, "ocisquash.sources") is None, reaches(module, "ocisquash.sources")


FORMAT_OBJECTS = {"ocisquash.formats.builtin", "ocisquash.registry.format"}
FORMAT_READERS = {"ocisquash.formats.ocilayout", "ocisquash.formats.layoutnames", "ocisquash.formats.dockersave",
                  "ocisquash.formats.ocitar", "ocisquash.formats.walk"}


def _inside_the_formats(module: str) -> bool:
    return module == "ocisquash.formatlist" or module.startswith(("ocisquash.formats", "ocisquash.registry"))


def test_only_the_registration_table_names_the_formats() -> None:
    """The format objects are imported by the table (``formatlist``) alone, and a format's own modules by
    the formats, the registry and the table: everyone else asks the ``Format`` a source or output has."""
    for module, edges in GRAPH.items():
        objects = edges & FORMAT_OBJECTS
        if module != "ocisquash.formatlist" and module not in FORMAT_OBJECTS:
            assert not objects, (module, objects)
        if not _inside_the_formats(module):
            assert not edges & FORMAT_READERS, (module, edges & FORMAT_READERS)
    assert GRAPH["ocisquash.formatlist"] >= FORMAT_OBJECTS


def test_no_format_name_is_branched_on_outside_the_table() -> None:
    """No ``kind == "docker"``: a comparison with a format's name appears only in the formats, the table
    and ``transports`` (skopeo's transport names, which map onto the format names)."""
    names = {"docker", "oci", "oci-dir", "registry"}

    def literal(node: ast.expr) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(literal(e) for e in node.elts)
        return isinstance(node, ast.Constant) and node.value in names

    found = []
    for path in ROOT.rglob("*.py"):
        module = module_name(path)
        if _inside_the_formats(module) or module == "ocisquash.transports":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(literal(c) for c in [node.left, *node.comparators]):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert not found, found
