"""Safety caps for untrusted input, with defaults no real image reaches.

Each cap can be raised with an environment variable ``OCISQUASH_<NAME>`` (for example
``OCISQUASH_MAX_JSON=67108864``) or, from the CLI, ``--limit NAME=VALUE``. Hitting a cap is a
``LimitExceeded`` error that names the cap and how to raise it.

The caps in force are one value for the process (every reader consults ``current()``, deep in the call
stack). Whoever changes them does it inside ``scoped()``, which puts the previous caps back when its
block ends: the CLI wraps each run in it (``main`` may run many times in one process, as in the tests),
and a library caller or a test lowers a cap for one block without leaking it to the next.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ocisquash.errors import LimitExceeded, UsageError


@dataclass(frozen=True)
class Limits:
    max_json: int = 16 << 20  # bytes of one JSON document (containerd: 20 MiB, skopeo: 4 MiB)
    # bytes of JSON documents one run reads in all, every read counted (each document is read and hashed
    # once per run when it can be, so real inputs read each a few times at most): bounds the work an input
    # that names one big document 10,000 times can cause; 10,000 images with 30 KB configs read ~1 GB
    max_json_total: int = 1 << 30
    # values (objects, lists, strings, numbers) in one JSON document, counted from an upper bound taken
    # before parsing: 16 MiB of ``{}`` is 5.6 million objects and ~2 GB once parsed (and copied by a
    # squash); 500,000 measured peaks under 300 MB; a real config or index holds thousands (10,000
    # index entries of ~10 values each: 100,000)
    max_json_values: int = 500_000
    # entries in an image config's history: one per build step (Docker refuses over 125 layers; steps that
    # make no layer add a few more); each becomes an object and a table row, ~4 KB in all per entry
    max_history: int = 10_000
    max_index_depth: int = 8  # nested image indexes
    max_images: int = 10_000  # images in one input
    max_layers: int = 1_000  # layers in one image (Docker refuses chains over 125)
    max_outer_members: int = 1_000_000  # members of an outer tarball
    # tar entries in one layer, and entries one merge applies over all its layers: each path the merge
    # holds costs ~400 bytes (measured: bench rss-1m), so 600,000 keeps a squash near 250 MB; a layer of
    # 1,000,000 empty files once took 1.07 GB. Real images hold tens of thousands (Debian with a
    # toolchain: ~30,000; a large node_modules: ~100,000)
    max_entries_per_layer: int = 600_000
    max_paths: int = 600_000
    # bytes of one path or link target in a layer or an outer tar: Linux's PATH_MAX, so no unpacker could
    # create a longer one anyway (and 10,000 names of 60 KB would take ~2 GB to hold)
    max_path: int = 4096
    max_pax_header: int = 1 << 20  # bytes of a PAX or GNU long-name header (Go refuses more than 1 MiB)
    # bytes of the extra PAX records (xattrs) one layer member keeps: Linux refuses an xattr value over
    # 64 KiB (XATTR_SIZE_MAX), so no unpacker could apply more; the merge holds them until it writes
    max_xattr: int = 1 << 16
    # bytes of extra PAX records all members of one layer keep (500 members of 1 MiB each took 530 MB)
    max_xattr_total: int = 64 << 20
    max_layer_bytes: int = 1 << 40  # decompressed bytes of one layer
    # decompressed bytes / compressed bytes of one layer (bombs), above 64 MiB; deflate itself tops out
    # near 1032:1 (gzip -9 of zeros), so 2000 never refuses a real gzip layer; zstd, bzip2, xz go far higher
    max_ratio: int = 2_000
    # decompressed bytes of an input that can be read only once (stdin, a FIFO), held in a temporary file
    max_spool: int = 1 << 40
    # decompressed bytes / compressed bytes of a whole compressed tarball spooled to TMPDIR, once past 1 GiB:
    # it holds layers that are mostly compressed already (real ones measure 1-5:1), while gzip of zeros
    # reaches 1032:1, under max_ratio, so a 4 MB file would fill 4 GB of TMPDIR; now it stops at 1 GiB
    max_spool_ratio: int = 100


_current: Limits | None = None


def env_name(field: str) -> str:
    return "OCISQUASH_" + field.upper()


def current() -> Limits:
    """The caps in force: defaults, overridden by ``OCISQUASH_*`` variables and ``scoped()``/``configure()``."""
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
    """Override some caps until the enclosing ``scoped()`` block ends (for the rest of the process outside
    one): the CLI applies each ``--limit`` this way inside the scope ``main`` opens."""
    global _current
    _current = dataclasses.replace(current(), **overrides)
    return _current


@contextmanager
def scoped(overrides: dict[str, int] | None = None) -> Iterator[Limits]:
    """The caps with ``overrides`` applied, for the ``with`` block; when it ends (by an error too) the caps
    in force before it come back, whatever ``configure`` did inside."""
    global _current
    saved = _current
    try:
        yield configure(overrides or {})
    finally:
        _current = saved


def reset() -> None:
    global _current
    _current = None


MAX_VALUE = 1 << 62  # a cap is used as a read size and in sums: it must stay a C ssize_t with room to add


def _parse(name: str, raw: str, source: str | None = None) -> int:
    where = f"{source or env_name(name)}={raw[:40]!r}"
    try:
        v = int(raw) if len(raw) <= 40 else int("x")
    except ValueError:
        raise UsageError(f"{where}: not a whole number (at most {MAX_VALUE})") from None
    if v <= 0:
        raise UsageError(f"{where}: must be positive")
    if v > MAX_VALUE:
        raise UsageError(f"{where}: too large (at most {MAX_VALUE})")
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
    return name, _parse(name, raw, f"--limit {name}")


RATIO_FLOOR = 64 << 20  # the ratio cap applies only past this many decompressed bytes
SPOOL_RATIO_FLOOR = 1 << 30  # and max_spool_ratio only once a spooled tarball is past 1 GiB


def check_expansion(what: str, decompressed: int, compressed: int, *, total_cap: bool = True,
                    spool: bool = False) -> None:
    """Raise when a decompressed stream grows past ``max_layer_bytes`` (with ``total_cap``) or, once past
    ``RATIO_FLOOR`` bytes, past ``max_ratio`` times the compressed bytes read so far (a bomb); a whole
    tarball being spooled (``spool``) also past ``max_spool_ratio`` once over ``SPOOL_RATIO_FLOOR``."""
    lim = current()
    if total_cap and decompressed > lim.max_layer_bytes:
        raise exceeded("max_layer_bytes", f"{what}: decompresses to more than {lim.max_layer_bytes} bytes")
    checks = [("max_ratio", lim.max_ratio, RATIO_FLOOR)]
    if spool:
        checks.append(("max_spool_ratio", lim.max_spool_ratio, SPOOL_RATIO_FLOOR))
    for name, ratio, floor in checks:
        if decompressed > floor and decompressed > ratio * max(compressed, 1):
            raise exceeded(name, f"{what}: decompresses to more than {ratio} times its compressed "
                                 f"size ({decompressed} bytes from {compressed}): a decompression bomb?")


def exceeded(name: str, message: str) -> LimitExceeded:
    return LimitExceeded(message + f" (cap {name})",
                         hint=f"if this input is trusted, raise it with --limit {name}=N or {env_name(name)}=N")
