#!/usr/bin/env python3
"""The floor under target (c): what any squash that verifies what it reads must do to a docker tar.

    verify_floor.py IN.docker.tar SQUASHED.tar OUT

Hashes every byte of the input (sha256, as verifying each layer against its diff ID needs), and,
on a second thread, writes the squashed layer's bytes to OUT while hashing them (its diff ID), then
fsyncs OUT, as a safe writer must before renaming it into place. No tar is parsed and nothing is
decided: a squash that also parses 32,000 headers cannot be faster than this on the same machine.
hashlib releases the GIL, so the two threads use two cores.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

CHUNK = 1 << 20


def hash_file(path: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(CHUNK):
            h.update(data)


def copy_hashed(src: str, dst: str) -> None:
    h = hashlib.sha256()
    with open(src, "rb") as f, open(dst, "wb") as out:
        while data := f.read(CHUNK):
            h.update(data)
            out.write(data)
        out.flush()
        os.fsync(out.fileno())


def main() -> None:
    src, squashed, out = sys.argv[1:4]
    t = threading.Thread(target=copy_hashed, args=(squashed, out))
    t.start()
    hash_file(src)
    t.join()


if __name__ == "__main__":
    main()
