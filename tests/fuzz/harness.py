"""What every fuzz target runs: a reader driven the way the CLI drives it, to the end of every stream.

``exercise_source`` opens an input with ``open_source``, loads every candidate image and reads every
layer to EOF (which checks digests and diff IDs); any exception that is not an ``OcisquashError``
escapes and is a bug.
"""

from __future__ import annotations

import contextlib
import io

from ocisquash import compression
from ocisquash.errors import OcisquashError
from ocisquash.sources import open_source

CHUNK = 1 << 16


def read_all(stream: object) -> int:
    n = 0
    try:
        while True:
            data = stream.read(CHUNK)  # type: ignore[attr-defined]
            if not data:
                return n
            n += len(data)
    finally:
        stream.close()  # type: ignore[attr-defined]


def exercise_source(path: str) -> int:
    """Open, list, load every image and read every layer; returns the bytes read (errors propagate)."""
    total = 0
    with open_source(path) as src:
        for cand in src.candidates:
            try:
                img = cand.load()
                img.check_consistent()
            except OcisquashError:
                continue  # one broken image must not hide the others from the fuzzer
            for layer in img.layers:
                with contextlib.suppress(OcisquashError):
                    total += read_all(layer.uncompressed())
    return total


def exercise_decompress(data: bytes) -> int:
    return read_all(compression.decompressing_reader(io.BytesIO(data), "fuzz"))
