"""Layer sizes as the listings count them: docker's figure from the tar headers, and ocisquash's own.

``docker`` is the figure docker shows (``ocisquash.dockersize``: the layer's file contents, each inode
once), read from the layer's tar headers: in place for an uncompressed tar in a file, from the
decompressed stream with ``exact=True``; None when the headers were not read. ``size`` is ocisquash's
own: the byte length of the uncompressed tar when known (a layer stored uncompressed, or the size
ocisquash recorded on a layer it compressed, or with ``exact``), else the stored (compressed) blob size;
``exact`` says which. Tables show docker's figure, else ``size`` marked ``*`` (``size_text``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ocisquash.compression import Codec
from ocisquash.digest import Digest, chain_ids
from ocisquash.goformat import human_size
from ocisquash.image import Image, Layer
from ocisquash.model import DOCKER_SIZE, UNCOMPRESSED_SIZE
from ocisquash.streams import CountingReader

NONE = "<none>"
MISSING = "<missing>"


def size_text(n: int, exact: bool) -> str:
    """A size as tables print it: a trailing ``*`` marks a compressed (not uncompressed) figure."""
    return human_size(n) if exact else human_size(n) + "*"


# ------------------------------------------------------------------------------------------ summaries


@dataclass(slots=True)  # slots: a listing of 20,000 images holds about 90,000 of these
class LayerSize:
    diff_id: Digest
    chain_id: Digest
    stored: int
    """The blob's byte length as stored."""
    size: int
    """The figure we count: uncompressed tar bytes when known, else ``stored``."""
    exact: bool
    """Whether ``size`` is the uncompressed tar length."""
    docker: int | None = None
    """The size docker shows for the layer (``ocisquash.dockersize``), when its headers were read."""


def _recorded(image: Image, index: int, key: str) -> int | None:
    """A size ocisquash recorded on a layer it wrote (annotation ``key``), if any: on the layer's
    descriptor in a layout, or in the OCI manifest a docker tarball carries beside manifest.json. A claim,
    not a proof: ``validate`` checks the uncompressed size against the decompressed layer, and ``--exact``
    reads docker's figure from the headers instead."""
    ann = image.layers[index].annotations
    if key not in ann and image.manifest is not None and index < len(image.manifest.layers):
        ann = image.manifest.layers[index].annotations
    text = ann.get(key, "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None


def recorded_size(image: Image, index: int) -> int | None:
    """The uncompressed size ocisquash recorded on a layer it wrote (``model.UNCOMPRESSED_SIZE``)."""
    return _recorded(image, index, UNCOMPRESSED_SIZE)


def layer_size(layer: Layer, chain_id: Digest, exact: bool, recorded: int | None = None, *,
               headers: bool = False) -> LayerSize:
    """A layer's size (see the module docstring); with ``exact`` a compressed layer is decompressed.

    Docker's figure comes from the layer's tar headers: read in place (seeking over the contents) for an
    uncompressed tar in a file when ``headers`` or ``exact``, and from the decompressed stream with
    ``exact``; else it is unknown."""
    plain = layer.codec is Codec.NONE
    if plain and layer.is_plain_file and (headers or exact):
        from ocisquash import dockersize, tarheader  # here, not per layer: 20,000 images list 44,000 layers
        with layer.plain_file() as f:
            docker = dockersize.diff_size(tarheader.headers(f, layer.what))
        return LayerSize(layer.diff_id, chain_id, layer.size, layer.size, True, docker)
    if plain or (not exact and recorded is None):
        return LayerSize(layer.diff_id, chain_id, layer.size, layer.size, plain)
    if not exact and recorded is not None:
        return LayerSize(layer.diff_id, chain_id, layer.size, recorded, True)
    from ocisquash import dockersize, tarheader

    stream = CountingReader(layer.uncompressed())  # decompresses, and checks digest and diff ID at EOF
    try:
        docker = dockersize.diff_size(tarheader.headers(stream, layer.what, stream=True))  # type: ignore[arg-type]
        while stream.read(1 << 20):  # the end-of-archive blocks and any padding: the tar's length; EOF checks
            pass
    finally:
        stream.close()
    return LayerSize(layer.diff_id, chain_id, layer.size, stream.count, True, docker)


def image_sizes(image: Image, exact: bool, headers: bool = False) -> list[LayerSize]:
    """Every layer's sizes; docker's figure read from the headers where ``layer_size`` reads them, else the
    one ocisquash recorded on a layer it wrote (``model.DOCKER_SIZE``)."""
    chains = chain_ids(list(image.config.diff_ids))
    out = []
    for i, (ly, c) in enumerate(zip(image.layers, chains, strict=True)):
        size = layer_size(ly, c, exact, recorded_size(image, i), headers=headers)
        if size.docker is None:
            size.docker = _recorded(image, i, DOCKER_SIZE)
        out.append(size)
    return out
