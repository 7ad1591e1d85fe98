"""Read a stream on a background thread, so decompression and hashing overlap the caller's work.

ISA-L, zstd and hashlib release the GIL on large buffers, so a layer decompressed (and hashed) on one
core while the tar is parsed and copied on the other uses both cores of a small CI machine. Memory is
bounded: at most ``depth`` chunks wait in the queue. An exception on the thread is raised to the
reader at the point in the stream where it happened.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from ocisquash.streams import LayerStream, Reader

CHUNK = 1 << 20


class Prefetcher(Reader):
    """A ``LayerStream`` read ahead on a thread; itself a ``LayerStream``."""

    def __init__(self, raw: LayerStream, chunk: int = CHUNK, depth: int = 4) -> None:
        self._raw = raw
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._run, args=(chunk,), daemon=True, name="ocisquash-prefetch")
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, chunk: int) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(chunk)
                if not data:
                    self._put(None)
                    return
                if not self._put(data):
                    return
        except BaseException as e:  # handed to the reading thread, which raises it
            self._put(e)

    def _next(self) -> bool:
        if self._eof:
            return False
        item = self._q.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._buf = memoryview(item)
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = [bytes(self._buf)]
            self._buf = memoryview(b"")
            while self._next():
                parts.append(bytes(self._buf))
            self._buf = memoryview(b"")
            return b"".join(parts)
        if not self._buf and not self._next():
            return b""
        out = self._buf[:n]
        self._buf = self._buf[n:]
        return bytes(out)

    def readinto(self, b: Any) -> int:
        if not self._buf and not self._next():
            return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def skip_rest(self) -> None:
        """Stop reading ahead and let the wrapped stream finish on its own (its ``skip_rest``)."""
        self._stop.set()
        self._thread.join()
        self._buf = memoryview(b"")
        self._eof = True
        self._raw.skip_rest()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._raw.close()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
