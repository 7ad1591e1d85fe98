"""The merged layer's entry headers: an entry's metadata record, encoded by the tar codec.

The encoding itself (ustar packed directly, PAX through ``tarfile`` when a field needs it) is
``ocisquash.tar.encode``, which the tar sinks use too.
"""

from __future__ import annotations

from ocisquash.merge.records import Meta
from ocisquash.tar import encode


def header(
    name: str, type_: str, meta: Meta, *, size: int = 0, linkname: str = "", dev: tuple[int, int] | None = None
) -> bytes:
    """The header of one layer entry (``type_`` a tar type flag; ``size`` bytes of contents follow),
    with a PAX record in front when a field needs one (long or non-ASCII names, large numbers,
    sub-second times, xattrs)."""
    return encode.header(name, type_, meta.fields(), size, linkname, dev)


def header_size(
    name: str, type_: str, meta: Meta, size: int = 0, linkname: str = "", dev: tuple[int, int] | None = None
) -> int:
    """The length of ``header``'s bytes for the same entry (PAX record included), without packing the
    common case: what a dry run adds up to predict the merged layer's size."""
    return encode.header_size(name, type_, meta.fields(), size, linkname, dev)
