"""The "unavoidable codec work" of a squash, run as a child process so bench/run.py measures it alike.

Decompresses every input layer blob (gzip via ISA-L; zstd via zstandard if importable; plain tars are
read) and compresses the uncompressed squashed layer once with ISA-L gzip at the given level, on one
thread, writing the result to ``--out``. Prints a JSON summary on stdout. Without ``--compress`` it
only decompresses: the reference for ``--dry-run`` and ``analyze``, which read every layer and write
nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from isal import igzip

CHUNK = 1 << 20


def decompress(path: Path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(4)
    n = 0
    if head.startswith(b"\x1f\x8b"):
        with igzip.open(path, "rb") as gz:
            while data := gz.read(CHUNK):
                n += len(data)
    elif head == b"\x28\xb5\x2f\xfd":
        import zstandard  # only for zstd inputs

        with open(path, "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as zr:
            while data := zr.read(CHUNK):
                n += len(data)
    else:
        with open(path, "rb") as fh:
            while data := fh.read(CHUNK):
                n += len(data)
    return n


def compress(src: Path, out: Path, level: int) -> int:
    with open(src, "rb") as fh, igzip.open(out, "wb", compresslevel=level) as gz:
        while data := fh.read(CHUNK):
            gz.write(data)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--level", type=int, default=1, help="ISA-L gzip level (0-3)")
    ap.add_argument("--compress", type=Path, help="the uncompressed squashed layer (omit: inflate only)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("blobs", type=Path, nargs="+", help="input layer blobs to decompress")
    args = ap.parse_args(argv)
    if (args.compress is None) != (args.out is None):
        ap.error("--compress and --out go together")
    inflated = sum(decompress(b) for b in args.blobs)
    summary: dict[str, int] = {"decompressed_bytes": inflated}
    if args.compress is not None:
        summary.update(compressed_input_bytes=args.compress.stat().st_size, level=args.level,
                       compressed_output_bytes=compress(args.compress, args.out, args.level))
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
