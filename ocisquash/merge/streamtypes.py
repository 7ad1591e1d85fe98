"""The stream type the merge asks of a layer, in a module mypyc does not compile.

A compiled module makes its classes native, and ``typing.runtime_checkable`` refuses a native class;
the merge tests ``isinstance(f, SkipsRest)``, so the protocol lives here, interpreted, beside the
compiled modules (see setup.py's HOT list).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SkipsRest(Protocol):
    """A layer stream that can finish without being read to its end: ``skip_rest()`` checks what is
    left to check (for ``Layer.uncompressed(Check.BLOB)``'s streams, the rest of the blob's digest
    without decompressing it). ``ocisquash.streams.LayerStream`` is one; a plain file is not, and is
    drained instead. Declared here, not imported, so the merge imports nothing but errors and limits."""

    def skip_rest(self) -> None: ...
