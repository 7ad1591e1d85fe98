"""The layer merge: many layer tar streams in, one tar stream out.

``plan()`` reads the headers of every layer and applies them to an in-memory tree the way
``umoci unpack`` (the oracle, docs/formats.md §4.5) does; the merged layer is the difference between the
final tree and the tree the kept layers give. ``write()`` then reads the squashed layers again and
writes it. ``stream()``, which a squash runs, gives the same bytes reading each squashed layer once:
top down, its file contents spooled to a temporary file unless a layer above certainly hides them
(an uncompressed layer on disk is not spooled: its headers are read by seeking, its contents copied
from it at the end), then written in the same order (parents first, hardlink targets before links).

The package, a module per concern (names as the modules import each other, bottom up), imports
nothing of ocisquash but errors, limits and the tar codec (``ocisquash.tar``: header rules and encoding):

- ``records``: layer inputs, limits, statistics and the metadata record, shared by all;
- ``tarread``: the layer tar reader (PAX and GNU extensions, name cleaning);
- ``tarwrite``: an entry's header, its metadata record encoded by the tar codec;
- ``tree``: the in-memory tree and the header applier (umoci's semantics);
- ``workers``: reading layers' headers in forked worker processes;
- ``plan``: ``plan()`` and the diff onto kept layers;
- ``layerwrite``: ``write()``, the merged layer in its one order, and the spool of file contents;
- ``oneread``: ``stream()``, each squashed layer read once.
"""

from __future__ import annotations

from ocisquash.merge.layerwrite import write
from ocisquash.merge.oneread import stream
from ocisquash.merge.plan import MergePlan, plan
from ocisquash.merge.records import LARGEST_HIDDEN, HiddenFile, LayerInput, LayerStats, MergeLimits, WriteStats

__all__ = [
    "LARGEST_HIDDEN", "HiddenFile", "LayerInput", "LayerStats", "MergeLimits", "MergePlan", "WriteStats",
    "plan", "stream", "write",
]
