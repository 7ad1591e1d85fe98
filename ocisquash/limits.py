"""Safety caps for untrusted input, with defaults no real image reaches.

Each cap can be raised with an environment variable ``OCISQUASH_<NAME>`` (for example
``OCISQUASH_MAX_JSON=67108864``) or, from the CLI, ``--limit NAME=VALUE``. Hitting a cap is a
``LimitExceeded`` error that names the cap and how to raise it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ocisquash.errors import LimitExceeded, UsageError


@dataclass(frozen=True)
class Limits:
    max_json: int = 16 << 20  # bytes of one JSON document (containerd: 20 MiB, skopeo: 4 MiB)
    max_index_depth: int = 8  # nested image indexes
    max_images: int = 10_000  # images in one input
    max_layers: int = 1_000  # layers in one image (Docker refuses chains over 125)
    max_outer_members: int = 1_000_000  # members of an outer tarball
    max_entries_per_layer: int = 10_000_000  # tar entries in one layer
    max_path: int = 65_536  # bytes of one path or link target inside a layer
    max_pax_header: int = 1 << 20  # bytes of a PAX or GNU long-name header (Go refuses more than 1 MiB)
    max_layer_bytes: int = 1 << 40  # decompressed bytes of one layer
    # decompressed bytes / compressed bytes of one layer (bombs), above 64 MiB; deflate itself tops out
    # near 1032:1 (gzip -9 of zeros), so 2000 never refuses a real gzip layer; zstd, bzip2, xz go far higher
    max_ratio: int = 2_000
    # decompressed bytes of an input that can be read only once (stdin, a FIFO), held in a temporary file
    max_spool: int = 1 << 40


_current: Limits | None = None


def env_name(field: str) -> str:
    return "OCISQUASH_" + field.upper()


def current() -> Limits:
    """The caps in force: defaults, overridden by ``OCISQUASH_*`` variables and ``configure()``."""
    global _current
    if _current is None:
        values: dict[str, int] = {}
        for f in dataclasses.fields(Limits):
            raw = os.environ.get(env_name(f.name))
            if raw is not None:
                values[f.name] = _parse(f.name, raw)
        _current = Limits(**values)
    return _current


def configure(overrides: dict[str, int]) -> Limits:
    global _current
    _current = dataclasses.replace(current(), **overrides)
    return _current


def reset() -> None:
    global _current
    _current = None


def _parse(name: str, raw: str) -> int:
    try:
        v = int(raw)
    except ValueError:
        raise UsageError(f"{env_name(name)}={raw!r}: not a whole number") from None
    if v <= 0:
        raise UsageError(f"{env_name(name)}={raw!r}: must be positive")
    return v


def parse_option(text: str) -> tuple[str, int]:
    """``NAME=VALUE`` from ``--limit``; NAME is a field of ``Limits`` (``max_`` prefix optional)."""
    name, sep, raw = text.partition("=")
    name = name.strip().lower().replace("-", "_")
    if not name.startswith("max_"):
        name = "max_" + name
    names = [f.name for f in dataclasses.fields(Limits)]
    if not sep or name not in names:
        raise UsageError(f"--limit {text!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
    return name, _parse(name, raw)


RATIO_FLOOR = 64 << 20  # the ratio cap applies only past this many decompressed bytes


def check_expansion(what: str, decompressed: int, compressed: int, *, total_cap: bool = True) -> None:
    """Raise when a decompressed stream grows past ``max_layer_bytes`` (with ``total_cap``) or, once past
    ``RATIO_FLOOR`` bytes, past ``max_ratio`` times the compressed bytes read so far (a bomb)."""
    lim = current()
    if total_cap and decompressed > lim.max_layer_bytes:
        raise exceeded("max_layer_bytes", f"{what}: decompresses to more than {lim.max_layer_bytes} bytes")
    if decompressed > RATIO_FLOOR and decompressed > lim.max_ratio * max(compressed, 1):
        raise exceeded("max_ratio", f"{what}: decompresses to more than {lim.max_ratio} times its compressed "
                                    f"size ({decompressed} bytes from {compressed}): a decompression bomb?")


def exceeded(name: str, message: str) -> LimitExceeded:
    return LimitExceeded(message + f" (cap {name})",
                         hint=f"if this input is trusted, raise it with --limit {name}=N or {env_name(name)}=N")
