"""Writing several images into one sink at once (``--platform all``): each image's writer gets a sink
of its own, and the shared one sees the same calls, in the same order, as one writer after another.

A sink says how (``Sink.concurrency``): ``shared``, its blob writes are safe from several threads (an
OCI layout directory: each blob goes to a temporary file of its own), so each writer gets the sink
itself behind a ``Cancellable`` guard; ``staged``, it is not (a tar is one stream), so each writer
stages its blobs in a private directory (``Staged``) and ``replay`` writes them into the sink in the
images' order afterwards, which gives the bytes a sequential run writes. Either way a writer stops at
its next write once ``cancel`` is set: another image failed, and the run will abort.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

from ocisquash.digest import Digest, HashingWriter
from ocisquash.errors import OcisquashError
from ocisquash.formats.commit import GuardedWriter, Reusable, Sink, WrittenImage, writing
from ocisquash.streams import Writer

COPY_BLOCK = 1 << 20


class Cancelled(OcisquashError):
    """A writer stopped because another image of the run failed (that one's error is the run's)."""


class _StopWhenCancelled(Writer):
    def __init__(self, raw: BinaryIO, cancel: threading.Event) -> None:
        self._raw = raw
        self._cancel = cancel

    def write(self, data: Any) -> int:
        if self._cancel.is_set():
            raise Cancelled("stopped: another image of the run failed")
        n: int = self._raw.write(data)
        return n


def _guarded(produce: Callable[[BinaryIO], None], cancel: threading.Event) -> Callable[[BinaryIO], None]:
    def run(w: BinaryIO) -> None:
        produce(_StopWhenCancelled(w, cancel))  # type: ignore[arg-type]

    return run


class Cancellable(Sink):
    """``target`` itself (its ``concurrency`` is ``shared``), its blob writes stopped once ``cancel`` is set."""

    def __init__(self, target: Sink, cancel: threading.Event) -> None:
        super().__init__()
        self.docker, self.label = target.docker, target.label
        self._target = target
        self._cancel = cancel

    def has(self, digest: Digest) -> bool:
        return self._target.has(digest)

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        return self._target.put_stream(_guarded(produce, self._cancel))

    def put_bytes(self, data: bytes) -> tuple[Digest, int]:
        return self._target.put_bytes(data)

    def adopt_layer(self, layer: Reusable) -> bool:
        return self._target.adopt_layer(layer)

    def add_image(self, image: WrittenImage) -> None:
        self._target.add_image(image)


class Staged(Sink):
    """One image's blobs staged in a private directory (in ``directory``, else $TMPDIR) and its calls
    recorded; ``replay`` makes them on ``target``, ``abort`` (or ``replay``) removes the directory."""

    def __init__(self, target: Sink, directory: str | None, cancel: threading.Event) -> None:
        super().__init__()
        self.docker, self.label = target.docker, target.label
        self._target = target
        self._cancel = cancel
        with writing(self.label):
            self._dir: str | None = tempfile.mkdtemp(prefix=".ocisquash-stage-", dir=directory)
        self._calls: list[tuple[Digest | None, str | bytes | WrittenImage]] = []  # a file's path, bytes, an image
        self._have: set[Digest] = set()

    def has(self, digest: Digest) -> bool:
        return digest in self._have

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        assert self._dir is not None
        with writing(self.label):
            fd, path = tempfile.mkstemp(dir=self._dir)
        with os.fdopen(fd, "wb") as f, contextlib.closing(
                HashingWriter(GuardedWriter(f, self.label), threaded=True)) as hw:  # type: ignore[arg-type]
            _guarded(produce, self._cancel)(hw)  # type: ignore[arg-type]
            d, n = hw.digest(), hw.count
        self._calls.append((d, path))
        self._have.add(d)
        return d, n

    def put_bytes(self, data: bytes) -> tuple[Digest, int]:
        d = Digest("sha256", hashlib.sha256(data).hexdigest())
        self._calls.append((d, data))
        self._have.add(d)
        return d, len(data)

    def add_image(self, image: WrittenImage) -> None:
        self._calls.append((None, image))

    def replay(self) -> None:
        """Make the recorded calls on the target, in order; a staged blob is read back as written."""
        try:
            for d, what in self._calls:
                if isinstance(what, WrittenImage):
                    self._target.add_image(what)
                    continue
                got = self._target.put_bytes(what) if isinstance(what, bytes) else self._target.put_stream(
                    _copy_of(what))
                if got[0] != d:  # the staged file changed under us: never publish other bytes than hashed
                    raise OcisquashError(f"{self.label}: a staged blob changed before it was written ({d})")
        finally:
            self.abort()

    def commit(self) -> None:
        raise NotImplementedError("a staged image is replayed into its sink, which commits")

    def abort(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _copy_of(path: str) -> Callable[[BinaryIO], None]:
    def produce(w: BinaryIO) -> None:
        with open(path, "rb") as f:
            shutil.copyfileobj(f, w, COPY_BLOCK)

    return produce
