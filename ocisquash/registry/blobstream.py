"""A blob's bytes from a registry as a stream, resumed with ``Range`` where the connection drops.

The body is read through ``bounds`` (its deadline and progress rule, its decoding); a drop mid-way is
re-requested from the offset reached, at most ``MAX_RESUMES`` times, with the client's backoff.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx

from ocisquash.registry import bounds
from ocisquash.registry.bounds import RegistryError
from ocisquash.streams import Reader

if TYPE_CHECKING:  # the client opens blob streams: a type here, not an import at run time
    from ocisquash.registry.client import Client

MAX_RESUMES = 5  # Range re-requests of one blob download


class BlobStream(Reader):
    """A blob's bytes as a stream, resumed with ``Range`` where the connection drops."""

    def __init__(self, client: Client, digest: str, what: str) -> None:
        self._c = client
        self._digest = digest
        self._what = what
        self._offset = 0
        self._resumes = 0
        self._buf = b""
        self._resp: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._eof = False
        self._open()

    def _open(self) -> None:
        headers = {"Range": f"bytes={self._offset}-"} if self._offset else {}
        resp = self._c.request("GET", f"/v2/{self._c.ref.repo}/blobs/{self._digest}", what=self._what,
                               headers=headers, stream=True)
        if resp.status_code not in (200, 206):
            try:
                raise self._c.fail(resp, f"blob {self._digest}")
            finally:
                resp.close()
        skip = self._offset if resp.status_code == 200 else 0  # no Range support: skip what we have
        self._resp = resp
        budget = bounds.budget_of(resp)
        if budget is not None:
            budget.to_progress()  # the headers came in time; a large body may take long, if it moves
        # no chunk_size: a chunker would hold back bytes a dropped connection then loses
        self._chunks = bounds.chunks(resp, self._what)
        while skip > 0:
            chunk = self._next()
            if not chunk:
                raise RegistryError(f"{self._what}: the registry sent less than before on a retry")
            if len(chunk) > skip:
                self._buf = chunk[skip:]
            skip -= min(skip, len(chunk))

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            out = bytearray()
            while chunk := self.read(1 << 20):
                out += chunk
            return bytes(out)
        while not self._buf and not self._eof:
            assert self._chunks is not None
            try:
                self._buf = self._next()
            except httpx.TransportError as e:
                if bounds.not_retried(e):
                    raise self._error(e) from None
                self._reopen(e)
                continue
            if not self._buf:
                self._eof = True
        data, self._buf = self._buf[:n], self._buf[n:]
        self._offset += len(data)
        return data

    def _next(self) -> bytes:
        assert self._chunks is not None
        try:
            return next(self._chunks, b"")
        except httpx.TransportError:
            raise  # the caller resumes where it can
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, UnicodeError) as e:
            raise self._error(e) from None

    def _error(self, e: BaseException) -> RegistryError:
        return bounds.as_error(e, self._what, "download")

    def _reopen(self, e: BaseException) -> None:
        self._resumes += 1
        if self._resumes > MAX_RESUMES:
            raise RegistryError(f"{self._what}: download dropped {self._resumes} times: {bounds.one_line(e)}") from None
        if self._resp is not None:
            self._resp.close()
        time.sleep(bounds.backoff(self._resumes))
        self._open()

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None

