"""``convert``: read one image from any source and write it to any sink, verified end to end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from typing import IO, Any

from ocisquash import compression as codecs
from ocisquash import formatlist, outnames, registry, sink, spool, transfer
from ocisquash.apitypes import OutputFormat
from ocisquash.image import Image, Layer
from ocisquash.samefile import refuse_overlap
from ocisquash.sources import Source, open_source


def convert(src_path: str, dest: str, *, image: str | None = None, platform: str | None = None,
            tags: list[str] | None = None, fmt: OutputFormat | None = None, compression: codecs.Codec | None = None,
            level: int | None = None, on_step: Callable[[str], None] | None = None,
            on_start: Callable[[str, int | None], None] | None = None,
            on_bytes: Callable[[int], None] | None = None,
            opened: tuple[Source, Image, str | None] | None = None) -> dict[str, Any]:
    """Copy one image of ``src_path`` to ``dest``; ``compression`` None keeps each layer's own, ``level``
    None is the codec's default. ``on_start(phase, total)`` then ``on_bytes(n)`` count the layer blobs'
    bytes as they are read (each blob is read once), for a progress bar. ``opened``: the input already
    open, the image chosen in it and the note on that choice, written as it is, without opening the
    input or choosing again."""
    codec = compression
    compression_level = codecs.check_level(codec, level) if codec is not None else level
    registry.check_credentials([src_path], dest)
    refuse_overlap(dest, [("IN", src_path)])
    with nullcontext(opened[0]) if opened else open_source(src_path, spool.beside(dest)) as src:
        img, platform_note = opened[1:] if opened else src.choose_default(image, platform)
        img.check_consistent()
        out_fmt = formatlist.output_format(dest, fmt)
        names, _ = outnames.names_for(out_fmt, dest, img.names, tags or [])
        out = out_fmt.open_sink(dest)
        try:
            if on_bytes is not None:  # a copy: an opened image stays as its caller holds it
                img = dataclasses.replace(img, layers=[_counted(ly, on_bytes) for ly in img.layers])
            if on_start:
                on_start("converting", sum(ly.size for ly in img.layers) if on_bytes is not None else None)
            written = transfer.write_image(out, img, transfer.plan_convert(img, codec, compression_level),
                                           tags=names, progress=on_step)
            out.commit()
        except BaseException:
            out.abort()
            raise
    return {
        "image": img.label, "output": dest, "format": fmt or sink.guess_format(dest), "tags": names,
        "manifest": str(written.manifest.digest), "config": str(written.config_digest),
        "layers": [str(d) for d in written.layer_digests], "note": platform_note,
    }


def _counted(layer: Layer, on_bytes: Callable[[int], None]) -> Layer:
    """The layer, its blob's reads reported to ``on_bytes``."""
    opener = layer.opener

    def open_counted() -> IO[bytes]:
        return _CountingBlob(opener(), on_bytes)  # type: ignore[return-value]

    return dataclasses.replace(layer, opener=open_counted)  # its origin kept: a sink there still mounts it


class _CountingBlob:
    def __init__(self, raw: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._on_bytes(len(data))
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def __getattr__(self, name: str) -> Any:  # seek, tell, close...: the blob's own
        return getattr(self._raw, name)

    def __enter__(self) -> _CountingBlob:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()
