"""Writing an image into a sink: layers copied, recompressed or generated, then config and manifest.

This is the one place that turns an ``Image`` (or a squashed one) into blobs and a manifest, so
``convert`` and ``squash`` write identically. Every layer is verified as it passes: a copied blob
is checked against its digest and, decompressed on the fly, against its diff ID.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ocisquash import compression, model
from ocisquash.codecs import Codec, written
from ocisquash.digest import Digest, HashingWriter
from ocisquash.errors import FormatError
from ocisquash.formats.commit import Sink, WrittenImage
from ocisquash.image import Image, Layer
from ocisquash.model import Descriptor

BLOCK = 1 << 20


@dataclass
class OutLayer:
    """How one output layer is produced: ``copy`` a source layer, ``recompress`` it, or ``generate`` one."""

    kind: str
    layer: Layer | None = None
    codec: Codec = Codec.GZIP
    level: int | None = None
    produce: Callable[[BinaryIO], None] | None = None  # generate: writes the uncompressed tar
    annotations: dict[str, str] = field(default_factory=dict)
    annotate: Callable[[], dict[str, str]] | None = None
    """generate: annotations known once the layer is written (asked after ``produce`` has run)."""


@dataclass
class LayerResult:
    descriptor: Descriptor
    diff_id: Digest
    uncompressed_size: int | None


def _copy_layer(sink: Sink, layer: Layer, docker: bool) -> LayerResult:
    codec = layer.codec
    # A registry output places a blob it has already, or can mount from another repository, without
    # its bytes: kept parent layers are never uploaded again.
    if layer.digest is not None and sink.adopt_layer(layer):
        mt = _media_type(layer, codec, docker)
        desc = Descriptor(mt, layer.digest, layer.size, dict(layer.annotations), None, layer.urls)
        return LayerResult(desc, layer.diff_id, None)
    counted: list[int] = [0]

    def produce(out: BinaryIO) -> None:
        counted[0] = layer.copy_blob(out)

    digest, size = sink.put_stream(produce)
    if layer.digest is not None and digest != layer.digest:
        raise FormatError(f"{layer.what}: copied blob hashes to {digest}, expected {layer.digest}")
    mt = _media_type(layer, codec, docker)
    desc = Descriptor(mt, digest, size, dict(layer.annotations), None, layer.urls)
    return LayerResult(desc, layer.diff_id, counted[0])


def _media_type(layer: Layer, codec: Codec | None, docker: bool) -> str:
    if layer.media_type and (docker or not layer.media_type.startswith("application/vnd.docker.")):
        return layer.media_type
    if codec is None or codec.media_suffix is None:
        raise FormatError(f"{layer.what}: {codec.name if codec else 'unknown'} compression has no OCI media type; "
                          f"recompress it with --compression {'|'.join(c.name for c in written())}")
    if layer.media_type and not docker:
        # Docker media types are refused by umoci in OCI layouts: use the OCI equivalent.
        return compression.layer_media_type(codec, docker=False)
    return compression.layer_media_type(codec, docker=False)


def _encode(sink: Sink, write_tar: Callable[[BinaryIO], None], codec: Codec, level: int | None,
            docker_family: bool, annotate: Callable[[], dict[str, str]] | None = None) -> LayerResult:
    if codec is Codec.NONE:
        # Uncompressed: the blob digest the sink computes is the diff ID; hash the bytes once.
        digest, size = sink.put_stream(write_tar)
        mt = compression.layer_media_type(codec, docker=docker_family)
        return LayerResult(Descriptor(mt, digest, size, annotate() if annotate else {}), digest, size)
    diff: list[HashingWriter] = []

    def produce(out: BinaryIO) -> None:
        # the diff ID hashed on a thread: on the main thread it took 0.12 s of a 1.3 s squash
        with compression.compressing_writer(out, codec, level) as cw, closing(HashingWriter(cw, threaded=True)) as hw:
            write_tar(hw)  # type: ignore[arg-type]
            diff.append(hw)

    digest, size = sink.put_stream(produce)
    hw = diff[0]
    mt = compression.layer_media_type(codec, docker=docker_family)
    # The uncompressed size rides along, so listings compare sizes on one basis without decompressing.
    ann = {model.UNCOMPRESSED_SIZE: str(hw.count), **(annotate() if annotate else {})}
    return LayerResult(Descriptor(mt, digest, size, ann), hw.digest(), hw.count)


def write_layer(sink: Sink, out: OutLayer, docker_family: bool) -> LayerResult:
    if out.kind == "copy":
        assert out.layer is not None
        return _copy_layer(sink, out.layer, docker_family)
    if out.kind == "recompress":
        layer = out.layer
        assert layer is not None

        def write_tar(w: BinaryIO) -> None:
            r = layer.uncompressed()
            try:
                shutil.copyfileobj(r, w, BLOCK)
            finally:
                r.close()

        res = _encode(sink, write_tar, out.codec, out.level, docker_family)
        if res.diff_id != layer.diff_id:
            raise FormatError(f"{layer.what}: recompressed content changed its diff ID")
        return res
    assert out.produce is not None
    return _encode(sink, out.produce, out.codec, out.level, docker_family, out.annotate)


def write_image(sink: Sink, image: Image, layers: list[OutLayer], *, config_bytes: bytes | None = None,
                tags: list[str], progress: Callable[[str], None] | None = None) -> WrittenImage:
    """Write ``layers``, then the config (``config_bytes`` or the image's own) and a manifest."""
    docker_family = bool(image.manifest and image.manifest.is_docker and sink.docker)
    results = []
    for i, out in enumerate(layers):
        if progress:
            progress(f"layer {i + 1}/{len(layers)}")
        results.append(write_layer(sink, out, docker_family))
    return finish_image(sink, image, results, config_bytes, tags, docker_family)


def finish_image(sink: Sink, image: Image, results: list[LayerResult], config_bytes: bytes | None,
                 tags: list[str], docker_family: bool, *,
                 annotations: Mapping[str, str] | None = None) -> WrittenImage:
    """Write the config and the manifest for layers already written, and record the image in the sink.
    ``annotations``: a new manifest's (default: the source manifest's).

    The source manifest's bytes are kept when nothing it describes changed; otherwise a new one is
    written in the source's media-type family (Docker or OCI) for a docker tarball, and with OCI types
    in an OCI layout, where umoci refuses Docker types.
    """
    src_man = image.manifest
    cfg = config_bytes if config_bytes is not None else image.config.raw
    cfg_digest, cfg_size = sink.put_bytes(cfg)
    cfg_type = model.DOCKER_CONFIG if docker_family else model.OCI_CONFIG
    layer_descs = [r.descriptor for r in results]
    keep = (
        src_man is not None
        and config_bytes is None
        and (docker_family or not src_man.is_docker)
        and [d.digest for d in layer_descs] == [d.digest for d in src_man.layers]
        and [d.media_type for d in layer_descs] == [d.media_type for d in src_man.layers]
    )
    if keep:
        assert src_man is not None
        man_bytes = src_man.raw
        man_type = src_man.media_type
    else:
        obj: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": model.DOCKER_MANIFEST if docker_family else model.OCI_MANIFEST,
            "config": Descriptor(cfg_type, cfg_digest, cfg_size).to_json(),
            "layers": [d.to_json() for d in layer_descs],
        }
        if annotations is None:
            annotations = src_man.annotations if src_man is not None else {}
        if annotations:
            obj["annotations"] = dict(annotations)
        man_bytes = model.canonical_json(obj)
        man_type = obj["mediaType"]
    man_digest, man_size = sink.put_bytes(man_bytes)
    platform = model.Platform(image.config.os, image.config.architecture, image.config.variant)
    written = WrittenImage(
        manifest=Descriptor(man_type, man_digest, man_size),
        config_digest=cfg_digest,
        layer_digests=[d.digest for d in layer_descs],
        tags=tags,
        platform=platform,
    )
    sink.add_image(written)
    return written


def plan_convert(image: Image, codec: Codec | None, level: int | None) -> list[OutLayer]:
    """Each layer copied as it is, or recompressed when ``codec`` is given and differs."""
    out = []
    for layer in image.layers:
        if codec is None and (layer.codec is None or layer.codec.media_suffix is None):
            # bzip2/xz members of a docker tarball have no OCI media type: store them as gzip.
            out.append(OutLayer("recompress", layer, Codec.GZIP, level))
        elif codec is None or (layer.codec is codec and level is None):
            out.append(OutLayer("copy", layer))
        else:
            out.append(OutLayer("recompress", layer, codec, level))
    return out
