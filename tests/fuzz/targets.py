"""One fuzz target per reader: each takes bytes and may raise only ``OcisquashError``.

- ``outer``: the bytes as an input file for ``open_source`` (+ load every image, read every layer);
- ``json``: the bytes as index.json / manifest / config, parsed by the model classes;
- ``compression``: the bytes as a compressed (or plain) stream, read to EOF;
- ``layer``: the bytes as a layer tar, through the merge's ``plan()`` and ``write()``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Callable

from ocisquash import merge, model

from .harness import exercise_decompress, exercise_source

_TMP = os.environ.get("OCISQUASH_FUZZ_TMP") or tempfile.mkdtemp(prefix="ocisquash-fuzz-")
if "OCISQUASH_FUZZ_TMP" not in os.environ:
    atexit.register(shutil.rmtree, _TMP, True)  # a process that made its own scratch dir removes it


def outer(data: bytes) -> None:
    path = os.path.join(_TMP, "input.tar")
    with open(path, "wb") as f:
        f.write(data)
    exercise_source(path)


def json_docs(data: bytes) -> None:
    for parse in (model.Index.parse, model.Manifest.parse, model.ImageConfig.parse):
        with contextlib.suppress(model.FormatError):
            parse(data, "fuzz")


def compression(data: bytes) -> None:
    exercise_decompress(data)


def layer(data: bytes) -> None:
    def opener() -> io.BytesIO:
        return io.BytesIO(data)

    layers = [merge.LayerInput("fuzz", opener, opener)]
    plan = merge.plan(layers, 0)
    merge.write(plan, layers, io.BytesIO())
    merge.stream(layers, 0, io.BytesIO())


TARGETS: dict[str, Callable[[bytes], None]] = {
    "outer": outer, "json": json_docs, "compression": compression, "layer": layer,
}
