"""``convert``: read one image from any source and write it to any sink, verified end to end."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from typing import IO, Any

from ocisquash import compression as codecs
from ocisquash import reference, registry, sink, spool, transfer
from ocisquash.apitypes import OutputFormat
from ocisquash.errors import UsageError
from ocisquash.image import Image, Layer
from ocisquash.samefile import refuse_overlap
from ocisquash.sources import Source, open_source
from ocisquash.transports import RefName


def output_tags(names: list[str], tags: list[str]) -> list[str]:
    """The names to give the output: ``--tag`` values (normalised), else the input image's names."""
    chosen = tags or names
    if not tags:
        # A layout entry names its image twice, by io.containerd.image.name (``docker.io/acme/app:1.2``)
        # and by ref.name (``1.2``): the bare tag is the full name's own, not a second name, and
        # writing it again would put a second index.json entry in a tarball (skopeo's oci-archive:
        # then asks which image to take).
        full_tags = {reference.split(n)[1] or "latest" for n in names if "/" in n or ":" in n}
        chosen = [n for n in names if "/" in n or ":" in n or n not in full_tags]
    out: list[str] = []
    for t in chosen:
        if isinstance(t, RefName):  # a layout ref.name from oci:DIR:REF: written as given
            if t not in out:
                out.append(t)
            continue
        full = reference.normalize(t) if ("/" in t or ":" in t or tags) else t
        if tags and reference.name_too_long(full):
            raise UsageError(f"--tag {t!r}: the repository name is over {reference.NAME_TOTAL_LENGTH_MAX} "
                             "characters (docker's limit, counting the registry)")
        if tags and not reference.is_valid_tagged(full):
            raise UsageError(f"--tag {t!r} is not a valid name:tag")
        if full not in out:
            out.append(full)
    return out


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
        out_fmt = fmt or sink.guess_format(dest)
        names = output_tags(img.names, tags or [])
        if registry.is_registry_ref(dest):
            names = registry.output_tags(dest, tags or [])
        out = sink.open_sink(dest, out_fmt)
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
        "image": img.label, "output": dest, "format": out_fmt, "tags": names,
        "manifest": str(written.manifest.digest), "config": str(written.config_digest),
        "layers": [str(d) for d in written.layer_digests], "note": platform_note,
    }


def _counted(layer: Layer, on_bytes: Callable[[int], None]) -> Layer:
    """The layer, its blob's reads reported to ``on_bytes``."""
    opener = layer.opener

    def open_counted() -> IO[bytes]:
        return _CountingBlob(opener(), on_bytes)  # type: ignore[return-value]

    origin = getattr(opener, "origin", None)
    if origin is not None:  # still says which registry repository it is in: a sink there mounts it
        from ocisquash.registry.sink import OriginOpener

        return dataclasses.replace(layer, opener=OriginOpener(open_counted, origin))
    return dataclasses.replace(layer, opener=open_counted)


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
