"""A throw-away CNCF distribution registry (Debian's ``docker-registry``) for the registry tests.

``Registry`` starts ``docker-registry serve`` on 127.0.0.1 on a free port with its storage in a
temporary directory: plain HTTP, or TLS with a certificate from a CA made here with ``openssl``
(``make_ca``), with htpasswd basic auth (``htpasswd -Bbn``) or bearer tokens from ``TokenServer``.
It is stopped by PID. Its access log (one line per request) is kept, so tests count uploads
(``uploads``) and mounts. ``TokenServer`` is a loopback HTTP endpoint implementing the distribution
token specification: basic auth in, a JWT signed (``openssl dgst``) with a key whose certificate
the registry trusts (``rootcertbundle``), carrying the ``x5c`` chain the registry verifies it by.
Every wait here is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REGISTRY = "/usr/bin/docker-registry"
START_TIMEOUT = 30.0


def problem() -> str | None:
    """Why the registry tests cannot run here, or None."""
    for tool in (REGISTRY, "openssl", "htpasswd", "skopeo", "umoci"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install -y docker-registry openssl apache2-utils skopeo umoci)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*argv: str, stdin: bytes | None = None) -> bytes:
    p = subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return p.stdout


@dataclass
class CA:
    dir: Path
    ca_crt: Path
    ca_key: Path

    def issue(self, name: str, cn: str = "127.0.0.1", ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
        """A server certificate for ``ips`` (127.0.0.1 by default) and localhost, signed by this CA."""
        key, csr, crt, ext = (self.dir / f"{name}.key", self.dir / f"{name}.csr", self.dir / f"{name}.crt",
                              self.dir / f"{name}.ext")
        alt = ",".join(f"IP:{ip}" for ip in ips)
        ext.write_text(f"subjectAltName={alt},DNS:localhost\nbasicConstraints=CA:FALSE\n")
        run("openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={cn}")
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca_crt), "-CAkey", str(self.ca_key),
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(crt))
        return crt, key


def make_ca(d: Path, name: str = "ca") -> CA:
    d.mkdir(parents=True, exist_ok=True)
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
        "-days", "2", "-subj", f"/CN=ocisquash test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    return CA(d, crt, key)


class Registry:
    """One running registry; use as a context manager."""

    def __init__(self, workdir: Path, *, tls: tuple[Path, Path] | None = None,
                 htpasswd: dict[str, str] | None = None, token: TokenServer | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = tls
        self.log = self.dir / "registry.log"
        self.proc: subprocess.Popen[bytes] | None = None
        cfg: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "storage")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        if tls is not None:
            cfg["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}  # type: ignore[index]
        if htpasswd is not None:
            lines = b"".join(run("htpasswd", "-Bbn", u, p).strip() + b"\n" for u, p in htpasswd.items())
            (self.dir / "htpasswd").write_bytes(lines)
            cfg["auth"] = {"htpasswd": {"realm": "ocisquash-test", "path": str(self.dir / "htpasswd")}}
        if token is not None:
            cfg["auth"] = {"token": {"realm": token.realm, "service": token.service, "issuer": token.issuer,
                                     "rootcertbundle": str(token.cert)}}
        # JSON is YAML: no YAML writer needed
        (self.dir / "config.yml").write_text(json.dumps(cfg))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> Registry:
        logf = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed right after
        try:
            self.proc = subprocess.Popen([REGISTRY, "serve", str(self.dir / "config.yml")], stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            logf.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                r = httpx.get(self.url + "/v2/", verify=False, timeout=2)
                if r.status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer within {START_TIMEOUT}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the access log
    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request so far, from the access log."""
        out = []
        for m in re.finditer(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3})', self.log.read_text(errors="replace")):
            out.append((m.group(1), m.group(2), int(m.group(3))))
        return out

    def mark(self) -> int:
        """How many requests are logged now: pass to ``uploads(since=…)``."""
        return len(self.requests())

    def uploads(self, repo: str, since: int = 0) -> list[str]:
        """Blob uploads into ``repo`` completed since ``since`` (each a ``PUT …?digest=`` of a session)."""
        return self._query_values("PUT", f"/v2/{repo}/blobs/uploads/", "digest", since)

    def mounts(self, repo: str, since: int = 0) -> list[str]:
        """Blobs mounted into ``repo`` from another repository since ``since`` (``POST …?mount=``)."""
        return self._query_values("POST", f"/v2/{repo}/blobs/uploads/?", "mount", since)

    def _query_values(self, method: str, prefix: str, key: str, since: int) -> list[str]:
        """The ``key`` query values of the ``method`` requests to paths under ``prefix`` that succeeded
        (201) since request number ``since``."""
        out = []
        for m, path, status in self.requests()[since:]:
            if m == method and path.startswith(prefix) and status == 201:
                out.extend(urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get(key, []))
        return out


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The distribution token endpoint: ``GET /token?service=S&scope=…`` with basic auth."""

    def __init__(self, workdir: Path, users: dict[str, str], ca: CA) -> None:
        self.users = users
        self.service = "ocisquash-test-registry"
        self.issuer = "ocisquash-test-token"
        self.key, self.cert = ca.ca_key, ca.ca_crt  # signs tokens; the registry trusts this certificate
        der = run("openssl", "x509", "-in", str(self.cert), "-outform", "DER")
        self._x5c = base64.b64encode(der).decode()
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self.issued: list[dict[str, object]] = []
        self.refused = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        q = urllib.parse.parse_qs(url.query)
        user = None
        authz = h.headers.get("Authorization", "")
        if authz.startswith("Basic "):
            with contextlib.suppress(ValueError):
                u, _, p = base64.b64decode(authz[6:]).decode().partition(":")
                if self.users.get(u) == p:
                    user = u
        if url.path != "/token" or q.get("service") != [self.service] or user is None:
            self.refused += 1
            h.send_response(401)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        access = []
        for scope in q.get("scope", []):
            typ, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]})
        token = self.sign(user, access)
        self.issued.append({"user": user, "access": access})
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def sign(self, user: str, access: list[dict[str, object]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        sig = run("openssl", "dgst", "-sha256", "-sign", str(self.key), stdin=signing_input.encode())
        return signing_input + "." + _b64url(sig)
