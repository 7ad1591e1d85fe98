"""The one registration table: every image format ocisquash knows, in the order they are asked.

A reference format (``docker://``) is asked first whether a name is its own; an opened directory or tar
goes to the first format that claims it; an output path without ``--format`` to the first that claims
the path, else an OCI layout directory. ``register`` adds a format (a plug-in, a test's own); nothing
outside this table names a format.
"""

from __future__ import annotations

from ocisquash.archive import Tree
from ocisquash.errors import FormatError, UsageError
from ocisquash.formats.base import Format
from ocisquash.formats.builtin import DOCKER, OCI_DIR, OCI_TAR
from ocisquash.registry.format import REGISTRY

FORMATS: list[Format] = [REGISTRY, DOCKER, OCI_TAR, OCI_DIR]
"""Asked in this order: the reference format, then ``docker save`` before the OCI layout tar it may also be."""

DEFAULT_OUTPUT = OCI_DIR
"""An output path no format claims (a new name without a tar extension): a layout directory."""


def register(fmt: Format) -> None:
    """Add a format, asked after the built-in ones (a name already taken is replaced)."""
    FORMATS[:] = [f for f in FORMATS if f.name != fmt.name] + [fmt]


def unregister(fmt: Format) -> None:
    FORMATS[:] = [f for f in FORMATS if f is not fmt]


def writable_names() -> list[str]:
    """The ``--format`` names the library takes."""
    return [f.name for f in FORMATS if f is not REGISTRY]


def by_name(name: str) -> Format:
    for f in FORMATS:
        if f.name == name and f is not REGISTRY:
            return f
    raise UsageError(f"--format {name!r}: use {', '.join(writable_names()[:-1])} or {writable_names()[-1]}")


def reference_format(text: str) -> Format | None:
    """The format whose reference ``text`` is (``docker://...``), or None for a path."""
    return next((f for f in FORMATS if f.claims_reference(text)), None)


def recognise(tree: Tree, is_dir: bool) -> Format:
    """The format of an opened directory or tar; a clear error when none claims it."""
    for f in FORMATS:
        if f.claims(tree):
            return f
    if is_dir:
        raise FormatError(f"{tree.label}: a directory, but not an OCI image layout (no index.json)")
    raise FormatError(f"{tree.label}: neither a docker save tarball (no manifest.json) nor an OCI layout "
                      "(no index.json)")


def output_format(dest: str, name: str | None) -> Format:
    """The format of an output: a reference's own (``--format`` does not apply), else ``--format``'s,
    else the first that claims the path."""
    ref = reference_format(dest)
    if ref is not None:
        return ref
    if name is not None:
        return by_name(name)
    return next((f for f in FORMATS if f.claims_output(dest)), DEFAULT_OUTPUT)
