"""``convert``: read one image from any source and write it to any sink, verified end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ocisquash import compression as codecs
from ocisquash import reference, sink, transfer
from ocisquash.errors import UsageError
from ocisquash.sources import open_source

FORMATS = ("docker", "oci", "oci-dir")


def output_tags(names: list[str], tags: list[str]) -> list[str]:
    """The names to give the output: ``--tag`` values (normalised), else the input image's names."""
    chosen = tags or names
    out: list[str] = []
    for t in chosen:
        full = reference.normalize(t) if ("/" in t or ":" in t or tags) else t
        if tags and reference.name_too_long(full):
            raise UsageError(f"--tag {t!r}: the repository name is over {reference.NAME_TOTAL_LENGTH_MAX} "
                             "characters (docker's limit, counting the registry)")
        if tags and not reference.is_valid_tagged(full):
            raise UsageError(f"--tag {t!r} is not a valid name:tag")
        if full not in out:
            out.append(full)
    return out


def check_format(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use docker, oci or oci-dir")


def convert(src_path: str, dest: str, *, image: str | None = None, platform: str | None = None,
            tags: list[str] | None = None, fmt: str | None = None, compression: str | None = None,
            level: int | None = None, on_step: Callable[[str], None] | None = None,
            on_start: Callable[[str, int | None], None] | None = None) -> dict[str, Any]:
    check_format(fmt)
    codec = compression_codec(compression)
    compression_level = codecs.check_level(codec, level) if codec is not None else level
    with open_source(src_path) as src:
        img = src.choose(image, platform)
        img.check_consistent()
        out_fmt = fmt or sink.guess_format(dest, src.kind)
        names = output_tags(img.names, tags or [])
        out = sink.open_sink(dest, out_fmt)
        try:
            if on_start:
                on_start("converting", None)
            written = transfer.write_image(out, img, transfer.plan_convert(img, codec, compression_level),
                                           tags=names, progress=on_step)
            out.commit()
        except BaseException:
            out.abort()
            raise
    return {
        "image": img.label, "output": dest, "format": out_fmt, "tags": names,
        "manifest": str(written.manifest.digest), "config": str(written.config_digest),
        "layers": [str(d) for d in written.layer_digests],
    }


def compression_codec(text: str | None) -> codecs.Codec | None:
    return None if text is None else codecs.parse_codec(text)
