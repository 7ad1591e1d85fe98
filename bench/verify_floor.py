#!/usr/bin/env python3
"""The floor under a verifying squash: the codec and hash work it cannot avoid, on two cores, no tar parsed.

    verify_floor.py IN.docker.tar SQUASHED.tar OUT
    verify_floor.py --gzip LEVEL SQUASHED.tar OUT BLOB...
    verify_floor.py --inflate BLOB...

Hashes every byte of the input (sha256, as verifying each layer against its diff ID needs), and,
on a second thread, writes the squashed layer's bytes to OUT while hashing them (its diff ID), then
fsyncs OUT, as a safe writer must before renaming it into place. No tar is parsed and nothing is
decided: a squash that also parses 32,000 headers cannot be faster than this on the same machine.
hashlib releases the GIL, so the two threads use two cores.

With ``--gzip``, the same for gzip layers in and a gzip layer out: each input blob is read, hashed
(its digest), inflated and the inflated bytes hashed (its diff ID), two blobs at a time on two threads;
then the squashed layer is deflated with ISA-L at LEVEL on two threads (as ocisquash does), hashed
before and after deflating, written to OUT and fsynced. Unlike bench/codec_work.py (one thread, no
hashes) this is a floor a verifying squash can be held to: its sha256 work alone (every input byte
twice, every output byte twice) is about 0.6 s of CPU on the bench image, beside 0.95 s of codec work.

With ``--inflate``, the floor under ``--dry-run`` and ``analyze``, which read and verify every layer and
write nothing: each blob is read, hashed (its digest), inflated and the inflated bytes hashed (its diff
ID), two blobs at a time; each of the two hashes runs on a thread of its own beside the inflate, so
that one blob much larger than the rest (the entry-heavy image's) still keeps both cores busy. Its wall
time is then as low as these three streams go on two cores; the limit is the larger of that wall and
its CPU over the cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

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


def inflate_hashed(path: str, blob: Any, diff: Any) -> None:
    """Read the gzip blob at ``path`` to its end, its bytes into ``blob`` and its inflated bytes into ``diff``."""
    from isal import igzip

    class Hashed:
        def __init__(self, f: Any) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            data: bytes = self.f.read(n)
            blob.update(data)
            return data

        def readinto(self, b: Any) -> int:
            data = self.read(len(b))
            b[: len(data)] = data
            return len(data)

    with open(path, "rb") as f, igzip.GzipFile(fileobj=Hashed(f), mode="rb") as gz:  # type: ignore[no-untyped-call]
        while data := gz.read(CHUNK):
            diff.update(data)


def inflate_verified(path: str) -> None:
    inflate_hashed(path, hashlib.sha256(), hashlib.sha256())


def deflate_hashed(src: str, dst: str, level: int) -> None:
    from isal import igzip_threaded

    diff, blob = hashlib.sha256(), hashlib.sha256()

    class Hashed:
        def __init__(self, f: Any) -> None:
            self.f = f

        def write(self, data: Any) -> int:
            blob.update(data)
            return int(self.f.write(data))

        def flush(self) -> None:
            self.f.flush()

        def close(self) -> None:
            self.f.flush()

    with open(src, "rb") as f, open(dst, "wb") as out:
        gz: Any = igzip_threaded.open(Hashed(out), "wb", compresslevel=level, threads=2)  # type: ignore[no-untyped-call]
        while data := f.read(CHUNK):
            diff.update(data)
            gz.write(data)
        gz.close()
        out.flush()
        os.fsync(out.fileno())


def two_at_a_time(blobs: list[str], job: Callable[[str], Any]) -> dict[str, Any]:
    """``job`` on every blob, largest first, on two threads; each blob's result. The first error is
    raised again here: a broken input is a failed run."""
    todo = sorted(blobs, key=os.path.getsize, reverse=True)
    lock = threading.Lock()
    errors: list[BaseException] = []
    done: dict[str, Any] = {}

    def worker() -> None:
        while True:
            with lock:
                if not todo or errors:
                    return
                path = todo.pop(0)
            try:
                done[path] = job(path)
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done


def gzip_floor(level: int, squashed: str, out: str, blobs: list[str]) -> None:
    two_at_a_time(blobs, inflate_verified)
    deflate_hashed(squashed, out, level)


class _HashThread:
    """sha256 of the chunks handed to ``update``, computed on a thread of its own (hashlib drops the GIL)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.q: queue.Queue[bytes | None] = queue.Queue(8)
        self.t = threading.Thread(target=self._run, daemon=True)  # an error must not leave it holding the exit
        self.t.start()

    def _run(self) -> None:
        while (data := self.q.get()) is not None:
            self.h.update(data)

    def update(self, data: bytes) -> None:
        self.q.put(data)

    def hexdigest(self) -> str:
        self.q.put(None)
        self.t.join()
        return self.h.hexdigest()


def inflate_pipelined(path: str) -> tuple[str, str]:
    blob, diff = _HashThread(), _HashThread()
    inflate_hashed(path, blob, diff)
    return blob.hexdigest(), diff.hexdigest()


def inflate_floor(blobs: list[str]) -> dict[str, tuple[str, str]]:
    """Each blob's (digest, diff ID), hex."""
    return two_at_a_time(blobs, inflate_pipelined)


def main() -> None:
    if sys.argv[1] == "--inflate":
        print(json.dumps(inflate_floor(sys.argv[2:])))  # after the work: the digests show it was done
        return
    if sys.argv[1] == "--gzip":
        gzip_floor(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
        return
    src, squashed, out = sys.argv[1:4]
    t = threading.Thread(target=copy_hashed, args=(squashed, out))
    t.start()
    hash_file(src)
    t.join()


if __name__ == "__main__":
    main()
