"""Bounds on what a registry can make the client spend: time per request, bytes per body, one-line errors.

**Time.** Each request gets a ``Budget`` (``--registry-timeout``, ``RegistryOptions.timeout``, 60 s by default)
that the sockets themselves enforce: ``transport()`` gives httpx a network backend whose streams
compute every socket wait from the budget of the request running on that thread. Connecting, sending a
small body, the status line, the headers and a small body (a manifest, a config, a token, an error)
share one deadline, so a server that trickles a byte a second or says nothing is cut off when it
passes. A blob's body, and a large upload, are held to a progress rule instead, curl's low-speed
limit (``--speed-limit``/``--speed-time``): at least ``MIN_RATE`` bytes a second in every window of
the timeout, so a large layer on a slow link still arrives and a stalled one stops. (containers/image
and go-containerregistry bound dialing and the TLS handshake, and leave the rest of a transfer to the
caller's context: a stalled body there waits for as long as the caller lets it.)

**Bytes.** Bodies are read only through ``chunks``, which decodes a ``Content-Encoding`` itself (gzip
and deflate, in pieces of at most ``PIECE`` bytes however much one wire chunk inflates to) and refuses
any other; ``read_body`` stops at the cap of its kind (``TOKEN_CAP``, ``ERROR_CAP``, a manifest's 4
MiB), counted after decoding. The client asks for ``Accept-Encoding: identity``.

**Errors.** ``mapped`` turns whatever httpx, h11 (through httpcore), idna or URL parsing raises into a
one-line ``RegistryError`` naming the registry and the operation; a spent budget is a ``RegistryTimeout``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore
import httpx

from ocisquash.errors import OcisquashError

MIN_RATE = 1024  # bytes/s a blob or a large upload must average over each window of the timeout
PIECE = 1 << 20  # most bytes one decoded piece may hold
ERROR_CAP = 8 << 10  # an error body: enough for the registry's error code and message
TOKEN_CAP = 1 << 20  # a token response (containers/image allows 1 MiB too)
_WRITE_PIECE = 64 << 10  # an upload is sent in pieces this large, each within the budget


class RegistryError(OcisquashError):
    """The registry refused a request or could not be reached."""


class RegistryTimeout(RegistryError):
    """A request's budget of time was spent."""


class Budget:
    """The time one request may take: a deadline, or (``progress``) a minimum rate over windows."""

    def __init__(self, timeout: float, *, progress: bool = False) -> None:
        self.timeout = timeout
        self.progress = progress
        self.start = time.monotonic()
        self._window = self.start
        self._bytes = 0

    def to_progress(self) -> None:
        """From now on, judge progress (a blob's body after its headers came within the deadline)."""
        self.progress = True
        self._window = time.monotonic()
        self._bytes = 0

    def wait(self) -> float:
        """Seconds the next socket operation may wait; raises ``httpcore.ReadTimeout`` once spent."""
        now = time.monotonic()
        if not self.progress:
            left = self.start + self.timeout - now
            if left <= 0:
                raise httpcore.ReadTimeout(f"no complete answer within {self.timeout:g} s")
            return left
        end = self._window + self.timeout
        if now >= end:
            if self._bytes < MIN_RATE * self.timeout:
                raise httpcore.ReadTimeout(f"less than {MIN_RATE >> 10} KiB/s for {self.timeout:g} s "
                                           f"({self._bytes} bytes)")
            self._window, self._bytes = now, 0
            end = now + self.timeout
        return end - now

    def moved(self, n: int) -> None:
        self._bytes += n


_local = threading.local()
_budgets: weakref.WeakKeyDictionary[httpx.Response, Budget] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def active(budget: Budget | None) -> Iterator[None]:
    """Socket operations on this thread, inside the block, are bounded by ``budget``."""
    saved = getattr(_local, "budget", None)
    _local.budget = budget
    try:
        yield
    finally:
        _local.budget = saved


def attach(resp: httpx.Response, budget: Budget) -> None:
    _budgets[resp] = budget


def budget_of(resp: httpx.Response) -> Budget | None:
    return _budgets.get(resp)


class _Stream(httpcore.NetworkStream):
    """A socket stream whose every wait comes from the budget active on the calling thread."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        budget: Budget | None = getattr(_local, "budget", None)
        if budget is None:
            return self._inner.read(max_bytes, timeout)
        while True:
            wait = budget.wait()  # raises once the budget is spent
            try:
                data = self._inner.read(max_bytes, wait)
            except httpcore.ReadTimeout:
                continue  # budget.wait() decides: a new progress window, or raise
            budget.moved(len(data))
            return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        budget: Budget | None = getattr(_local, "budget", None)
        if budget is None:
            self._inner.write(buffer, timeout)
            return
        for i in range(0, len(buffer), _WRITE_PIECE):
            piece = buffer[i:i + _WRITE_PIECE]
            # progress: each piece may take one window (at least 64 KiB a window); a deadline: what is left
            wait = budget.timeout if budget.progress else budget.wait()
            try:
                self._inner.write(piece, wait)
            except httpcore.WriteTimeout:
                raise httpcore.WriteTimeout(f"the registry took not {len(piece)} bytes within {wait:.3g} s") from None
            budget.moved(len(piece))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        budget: Budget | None = getattr(_local, "budget", None)
        wait = min(timeout or budget.timeout, budget.wait()) if budget is not None else timeout
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, wait))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        budget: Budget | None = getattr(_local, "budget", None)
        wait = min(timeout or budget.timeout, budget.wait()) if budget is not None else timeout
        return _Stream(self._inner.connect_tcp(host, port, wait, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def transport(verify: Any) -> httpx.HTTPTransport:
    """httpx's own transport, its sockets bounded by the active ``Budget``."""
    t = httpx.HTTPTransport(verify=verify)
    # httpx takes no network backend: put ours around the one its connection pool made (httpcore's
    # ConnectionPool keeps it there and asks it for every new connection).
    pool: Any = t._pool
    pool._network_backend = _Backend(pool._network_backend)
    return t


# ---- bodies


def chunks(resp: httpx.Response, where: str) -> Iterator[bytes]:
    """The body's bytes decoded, in pieces of at most ``PIECE`` bytes, each read within the response's
    budget. gzip and deflate are decoded here (never more than a piece at once); other encodings refused."""
    if resp.is_stream_consumed:  # read already (by ``small``, under its cap), or begun and given up
        with contextlib.suppress(httpx.ResponseNotRead):
            yield resp.content
        return
    budget = budget_of(resp)
    raw = resp.iter_raw()
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(47)  # 32 + 15: a gzip or zlib header, found from the data
    elif encoding not in ("", "identity"):
        raise RegistryError(f"{where}: the registry sent the body with Content-Encoding "
                            f"{encoding[:40]!r}, which was not asked for (Accept-Encoding: identity)")
    while True:
        with active(budget):
            chunk = next(raw, None)
        if chunk is None:
            break
        if decoder is None:
            yield chunk
            continue
        try:
            while True:  # bounded output per call: a small chunk may inflate to gigabytes
                out = decoder.decompress(chunk, PIECE)
                chunk = decoder.unconsumed_tail
                if out:
                    yield out
                if not chunk and len(out) < PIECE:
                    break
        except zlib.error as e:
            raise RegistryError(f"{where}: the body is not valid {encoding} ({e})") from None


def read_body(resp: httpx.Response, cap: int, where: str, *, truncate: bool = False) -> bytes:
    """The whole body, decoded, looping until it ends; over ``cap`` bytes a ``RegistryError`` (or, with
    ``truncate``, the first ``cap`` bytes: an error body is only read for its message)."""
    buf = bytearray()
    try:
        for piece in chunks(resp, where):
            buf += piece
            if len(buf) > cap:
                if truncate:
                    return bytes(buf[:cap])
                raise RegistryError(f"{where}: the response is over {_size(cap)}, the cap "
                                    "for its kind")
        return bytes(buf)
    finally:
        resp.close()  # an unfinished body closes the connection: nothing more is read from it


def small(resp: httpx.Response, cap: int, where: str, *, truncate: bool = True) -> httpx.Response:
    """``resp`` with its body read (its first ``cap`` bytes, decoded; over ``cap`` an error unless
    ``truncate``): ``.content`` and ``.json()`` work."""
    body = read_body(resp, cap, where, truncate=truncate)
    # Content-Length stays as sent (a HEAD's tells the size of what a GET would send); the encoding is undone
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() != "content-encoding"]
    out = httpx.Response(resp.status_code, headers=headers, content=body, request=resp.request)
    budget = budget_of(resp)
    if budget is not None:
        attach(out, budget)
    return out


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10} KiB"


# ---- errors


BACKOFF_FIRST = 0.25  # seconds before the second try; doubled each try
BACKOFF_MAX = 8.0  # also the cap on a server's Retry-After


def backoff(attempt: int) -> float:
    """Seconds to wait after failed try number ``attempt`` (1, 2, ...): doubling, capped."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** (attempt - 1)))


def is_timeout(e: BaseException) -> bool:
    return isinstance(e, (httpx.TimeoutException, socket.timeout, TimeoutError))


def one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:200]


@contextlib.contextmanager
def mapped(where: str, what: str) -> Iterator[None]:
    """Anything httpx, h11, idna or URL parsing raises in the block, as one ``RegistryError`` line."""
    try:
        yield
    except OcisquashError:
        raise
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, UnicodeError) as e:
        raise as_error(e, where, what) from None


def as_error(e: BaseException, where: str, what: str) -> RegistryError:
    """``e`` as one line: ``WHERE: WHAT: what went wrong``."""
    if is_timeout(e):  # the budget's own words (``Budget.wait``), or the socket's
        return RegistryTimeout(f"{where}: {what}: timed out: {one_line(e)}",
                               hint="raise --registry-timeout SECONDS for a slow registry")
    if isinstance(e, httpx.TooManyRedirects):
        return RegistryError(f"{where}: {what}: too many redirects")
    if isinstance(e, (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError)):
        return RegistryError(f"{where}: {what}: invalid URL: {one_line(e)}")
    if isinstance(e, httpx.DecodingError):
        return RegistryError(f"{where}: {what}: undecodable body: {one_line(e)}")
    if isinstance(e, httpx.ProtocolError):
        return RegistryError(f"{where}: {what}: not a valid HTTP answer: {one_line(e)}")
    return RegistryError(f"{where}: {what}: {type(e).__name__}: {one_line(e)}")


def not_retried(e: BaseException) -> bool:
    """Errors a new try cannot mend: a spent budget, a URL that cannot be sent, a bad request of ours."""
    if not isinstance(e, httpx.TransportError):
        return True
    return is_timeout(e) or isinstance(e, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))
