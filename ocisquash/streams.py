"""The small plumbing every stream wrapper shares: a reader base class, a byte counter, a writer base.

Reading wrappers (verifying, hashing, decompressing, prefixing, teeing) implement ``read`` only;
``Reader`` gives them the rest of what ``io``, ``shutil`` and the codecs call, and closes what they wrap.
Writing wrappers (hashing, mapping errors) implement ``write``; ``Writer`` gives them the rest.
``LayerStream`` is what ``Layer.uncompressed`` returns: a stream that can finish its checks early.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class Reader:
    """Base for read-only stream wrappers over ``self._raw``: not seekable, closes what it wraps."""

    _raw: Any

    def read(self, n: int = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._raw.close()


class CountingReader(Reader):
    """Counts the bytes read through it (compressed bytes a decompressor pulls, for bomb ratios)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)
        self.count += len(data)
        return data


class Writer:
    """Base for write-only stream wrappers that pass bytes on to ``self._raw`` (None: to nothing)."""

    _raw: Any

    def write(self, data: Any) -> int:
        raise NotImplementedError

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        if self._raw is not None:
            self._raw.flush()


@runtime_checkable
class LayerStream(Protocol):
    """A layer's decompressed tar stream that verifies at its end (``Layer.uncompressed``).

    ``skip_rest()`` finishes the stream without handing out more bytes: it checks the rest of the blob
    without decompressing it when the blob digest is all that is left to check, else reads (and
    checks) the rest as usual. A reader that needs nothing more calls it instead of draining.
    Runtime-checkable so the merge, which also takes plain file objects, can tell the two apart.
    """

    def read(self, n: int = -1, /) -> bytes: ...

    def readinto(self, buf: Any, /) -> int: ...

    def seekable(self) -> bool: ...

    def close(self) -> None: ...

    def skip_rest(self) -> None: ...
