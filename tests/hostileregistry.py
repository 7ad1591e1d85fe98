"""A programmable, misbehaving registry on loopback, for the registry-trust tests.

``HostileServer`` listens on one loopback address (127.0.0.1, or 127.0.0.2 to play "another host"),
plain or TLS (a certificate from ``registryd.make_ca``), and hands each parsed request to a handler
that answers through ``Conn``: a whole response, raw bytes, or bytes trickled with pauses. Every
request it receives is kept whole (``raw``), so a test can assert that a password, its base64 form
or a token reached no host it should not (``leaked``). ``tiny_image`` gives a valid one-layer image
and ``serve_image`` a handler that serves it the way a registry does, with hooks to misbehave.

Bounds: the server stops itself after ``lifetime`` seconds or ``max_requests`` requests, each
connection's request head is read up to 64 KiB and its body up to 16 MiB, and every socket has a
timeout, so a test that forgets to stop it cannot hang the run.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import json
import re
import socket
import ssl
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_HEAD = 64 << 10
_REQUEST_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.[01]\r\n")
MAX_BODY = 16 << 20


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    server: str  # the netloc that received it, e.g. 127.0.0.2:41234

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


class Conn:
    """The connection a handler answers on."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                reason: str = "X") -> None:
        hdrs = {"Content-Length": str(len(body))}
        hdrs.update(headers or {})
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        self.send(head.encode("latin-1") + body)

    def trickle(self, data: bytes, every: float = 1.0, step: int = 1, limit: float = 30.0) -> None:
        """Send ``data`` ``step`` bytes at a time, ``every`` seconds apart, for at most ``limit`` seconds."""
        end = time.monotonic() + limit
        for i in range(0, len(data), step):
            if time.monotonic() > end:
                break
            self.send(data[i:i + step])
            time.sleep(every)

    def stream(self, pieces: Iterator[bytes], limit: float = 30.0) -> None:
        """Send pieces until they end, the client goes away, or ``limit`` seconds pass."""
        end = time.monotonic() + limit
        for piece in pieces:
            if time.monotonic() > end:
                break
            self.send(piece)

    def close(self) -> None:
        self.closed = True


Handler = Callable[[Request, Conn], None]


def _read_request(f: io.BufferedReader, server: str) -> tuple[Request, bytes] | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline(MAX_HEAD)
        if not line:
            return None
        head += line
        if len(head) > MAX_HEAD:
            return None
        if head == b"\r\n":
            head = b""
        elif head == line and not _REQUEST_LINE.match(line):
            return None  # not HTTP (a TLS hello sent to a plain server): hang up, as a server would
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while len(body) <= MAX_BODY:
            size = int(f.readline(100).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                f.readline(100)
                break
            body += f.read(size)
            f.readline(100)
    elif headers.get("content-length", "").isdigit():
        body = f.read(min(int(headers["content-length"]), MAX_BODY))
    return Request(method, target, headers, body, server), head + body


class HostileServer:
    """One misbehaving server; use as a context manager."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None,
                 lifetime: float = 60.0, max_requests: int = 500) -> None:
        assert host.startswith("127."), "test servers listen on loopback only"
        self.handler = handler
        self.host = host
        self.tls = tls
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.requests: list[Request] = []
        self.raw: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._ctx: ssl.SSLContext | None = None
        if tls is not None:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(str(tls[0]), str(tls[1]))

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.netloc}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def leaked(self, *secrets: str) -> list[str]:
        """The secrets (plain or base64 in any user:pass pair) found in anything this server received."""
        blob = b"\n".join(self.raw)
        found = []
        for s in secrets:
            forms = [s.encode()]
            forms += [base64.b64encode(s.encode())[:-4]] if len(s) > 8 else []
            if any(f and f in blob for f in forms):
                found.append(s)
        return found

    def _serve(self) -> None:
        end = time.monotonic() + self.lifetime
        while not self._stop.is_set() and time.monotonic() < end and len(self.requests) < self.max_requests:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._conn, args=(sock, end), daemon=True).start()

    def _conn(self, sock: socket.socket, end: float) -> None:
        sock.settimeout(10)
        try:
            if self._ctx is not None:
                sock = self._ctx.wrap_socket(sock, server_side=True)
            f = sock.makefile("rb")
            conn = Conn(sock)
            while not conn.closed and not self._stop.is_set() and time.monotonic() < end \
                    and len(self.requests) < self.max_requests:
                got = _read_request(f, self.netloc)
                if got is None:
                    break
                req, raw = got
                self.requests.append(req)
                self.raw.append(raw)
                self.handler(req, conn)
        except (OSError, ValueError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()


# ---- a valid image to serve


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class TinyImage:
    manifest: bytes
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return _digest(self.manifest)


def tiny_image(config_padding: int = 0, files: dict[str, bytes] | None = None) -> TinyImage:
    """A one-layer image (gzip layer); ``config_padding`` bytes of label make a large config."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted((files or {"hello.txt": b"hello\n"}).items()):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Labels": {"pad": "x" * config_padding} if config_padding else {}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(raw)]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tiny"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _digest(layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    return TinyImage(manifest, {_digest(config): config, _digest(layer): layer})


def serve_image(img: TinyImage, repo: str = "a/b", tag: str = "1",
                override: Callable[[Request, Conn], bool] | None = None) -> Handler:
    """A handler that serves ``img`` at ``repo:tag`` like a registry, without auth. ``override`` sees
    each request first and returns True when it has answered it."""

    def handle(req: Request, conn: Conn) -> None:
        if override is not None and override(req, conn):
            return
        path = req.path
        if path == "/v2/":
            conn.respond(200, b"{}", {"Content-Type": "application/json"})
            return
        if path in (f"/v2/{repo}/manifests/{tag}", f"/v2/{repo}/manifests/{img.digest}"):
            body = b"" if req.method == "HEAD" else img.manifest
            hdrs = {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                    "Docker-Content-Digest": img.digest, "Content-Length": str(len(img.manifest))}
            conn.respond(200, body, hdrs)
            return
        prefix = f"/v2/{repo}/blobs/"
        if path.startswith(prefix) and path[len(prefix):] in img.blobs:
            data = img.blobs[path[len(prefix):]]
            conn.respond(200, b"" if req.method == "HEAD" else data,
                         {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
            return
        conn.respond(404, b'{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}',
                     {"Content-Type": "application/json"})

    return handle


# ---- auth in front of any handler, and a registry that takes pushes


def basic(user: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _unauthorized(conn: Conn, challenge: str) -> None:
    conn.respond(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                 {"WWW-Authenticate": challenge, "Content-Type": "application/json"})


def guarded(handler: Handler, authorization: str, challenge: str) -> Handler:
    """``handler`` behind auth: a request without exactly ``authorization`` gets a 401 with ``challenge``
    (``Basic realm="r"``, or ``Bearer realm="URL",service="s"``)."""

    def handle(req: Request, conn: Conn) -> None:
        if req.headers.get("authorization") != authorization:
            _unauthorized(conn, challenge)
            return
        handler(req, conn)

    return handle


def token_service(authorization: str, token: str) -> Handler:
    """A distribution token endpoint: ``{"token": token}`` to a request carrying ``authorization``, else 401."""

    def handle(req: Request, conn: Conn) -> None:
        if req.headers.get("authorization") != authorization:
            _unauthorized(conn, 'Basic realm="token"')
            return
        conn.respond(200, json.dumps({"token": token}).encode(), {"Content-Type": "application/json"})

    return handle


class Uploads:
    """An ``override`` for ``serve_image`` that takes pushes as a registry does: ``POST …/blobs/uploads/``
    (a cross-repository mount too: it is refused) answers 202 with ``location(request)``, a Location header
    as sent (a test puts it on another host, port or scheme, or makes it relative); ``PATCH`` appends to
    the session at the path it is sent to, ``PUT ?digest=`` ends it (the digest checked), ``HEAD`` of a
    pushed blob finds it, manifests are kept by the reference they are put at. Sessions are keyed by
    path, so one ``Uploads`` may stand behind two servers a Location points between. A manifest PUT at a
    tag in ``refuse_tags`` is answered 400 (not retried), as a registry refusing it; ``as_registry`` puts
    one behind a whole registry of its own."""

    def __init__(self, location: Callable[[Request], str] | None = None, refuse_tags: tuple[str, ...] = ()) -> None:
        self.location = location or (lambda req: f"/v2/_uploads/{len(self.sessions) + len(self.blobs)}")
        self.refuse_tags = refuse_tags
        self.sessions: dict[str, bytearray] = {}
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}

    def __call__(self, req: Request, conn: Conn) -> bool:
        path, method = req.path, req.method
        if method == "POST" and path.endswith("/blobs/uploads/"):
            conn.respond(202, b"", {"Location": self.location(req), "Range": "0-0"})
        elif method == "PUT" and "/manifests/" in path and path.rsplit("/", 1)[1] in self.refuse_tags:
            conn.respond(400, b'{"errors":[{"code":"TAG_INVALID","message":"refused"}]}')
        elif method == "PUT" and "/manifests/" in path:
            self.manifests[path.rsplit("/", 1)[1]] = req.body
            conn.respond(201, b"", {"Docker-Content-Digest": _digest(req.body)})
        elif method in ("GET", "HEAD") and "/manifests/" in path and path.rsplit("/", 1)[1] in self.manifests:
            body = self.manifests[path.rsplit("/", 1)[1]]
            conn.respond(200, b"" if method == "HEAD" else body, {"Content-Length": str(len(body))})
        elif method == "HEAD" and "/blobs/" in path and path.rsplit("/", 1)[1] in self.blobs:
            conn.respond(200, b"", {"Content-Length": str(len(self.blobs[path.rsplit("/", 1)[1]]))})
        elif method == "PATCH":
            buf = self.sessions.setdefault(path, bytearray())
            buf += req.body
            conn.respond(202, b"", {"Location": req.target, "Range": f"0-{len(buf) - 1}"})
        elif method == "PUT" and "digest=" in req.query:
            data = bytes(self.sessions.pop(path, bytearray()) + req.body)
            want = req.query.split("digest=", 1)[1].split("&", 1)[0].replace("%3A", ":")
            if _digest(data) != want:
                conn.respond(400, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest"}]}')
                return True
            self.blobs[want] = data
            conn.respond(201, b"", {"Docker-Content-Digest": want})
        elif method == "DELETE":
            self.sessions.pop(path, None)
            conn.respond(204)
        else:
            return False
        return True
# ---- an index, and a registry that takes pushes


def tiny_index(img: TinyImage, platforms: list[str]) -> bytes:
    """An OCI index whose entries, one per ``os/arch`` in ``platforms``, all name ``img``'s manifest."""
    entries = []
    for p in platforms:
        os_, arch = p.split("/")
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
                        "size": len(img.manifest), "platform": {"os": os_, "architecture": arch}})
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries}, sort_keys=True).encode()


def serve_index(index: bytes, img: TinyImage, repo: str = "a/b", tag: str = "1",
                override: Callable[[Request, Conn], bool] | None = None) -> Handler:
    """``serve_image`` of ``img`` with ``index`` at ``repo:tag`` (and by its digest)."""
    index_digest = _digest(index)

    def top(req: Request, conn: Conn) -> bool:
        if override is not None and override(req, conn):
            return True
        if req.path in (f"/v2/{repo}/manifests/{tag}", f"/v2/{repo}/manifests/{index_digest}"):
            hdrs = {"Content-Type": "application/vnd.oci.image.index.v1+json", "Docker-Content-Digest": index_digest,
                    "Content-Length": str(len(index))}
            conn.respond(200, b"" if req.method == "HEAD" else index, hdrs)
            return True
        return False

    return serve_image(img, repo, tag="\0", override=top)  # the tag is answered above


def as_registry(uploads: Uploads) -> Handler:
    """A registry without auth that takes pushes into ``uploads`` and answers 404 to anything else."""

    def handle(req: Request, conn: Conn) -> None:
        if req.path == "/v2/":
            conn.respond(200, b"{}")
        elif not uploads(req, conn):
            conn.respond(404, b"")

    return handle


class TrickleProxy:
    """A TCP proxy on loopback: the client's bytes go on at once, the server's one at a time, ``every``
    seconds apart. In front of a TLS ``HostileServer`` it trickles the handshake itself. Bounded like
    ``HostileServer``: it stops after ``lifetime`` seconds, every socket has a timeout."""

    def __init__(self, target: str, *, every: float = 0.3, host: str = "127.0.0.1", lifetime: float = 40.0) -> None:
        assert host.startswith("127."), "test servers listen on loopback only"
        th, tp = target.rsplit(":", 1)
        self.target = (th, int(tp))
        self.every = every
        self._end = time.monotonic() + lifetime
        self._sock = socket.socket()
        self._sock.bind((host, 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.netloc = f"{host}:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TrickleProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _live(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._end

    def _serve(self) -> None:
        while self._live():
            try:
                client, _ = self._sock.accept()
            except OSError:
                continue
            server = socket.create_connection(self.target, timeout=5)
            for sock in (client, server):
                sock.settimeout(1)
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.every), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, every: float) -> None:
        with contextlib.suppress(OSError):
            while self._live():
                try:
                    data = src.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                for i in range(0, len(data), 1 if every else len(data)):
                    if not self._live():
                        break
                    dst.sendall(data[i:i + 1] if every else data)
                    time.sleep(every)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()
