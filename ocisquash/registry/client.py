"""A client of the OCI distribution API on httpx: TLS, auth, retries, streamed blobs.

One ``Client`` per registry host and set of repositories: one keep-alive connection pool, one
bearer token for the scopes it needs. Every request is retried, a bounded number of times with
exponential backoff, on 429, 5xx and dropped connections; a blob download that drops mid-way
resumes with a ``Range`` request. A 401 is answered once per challenge: ``Basic`` with the
credentials found (``auth.find``, looked up only then), ``Bearer`` by the token flow of the
distribution token spec (``realm?service=…&scope=…``, basic auth to the realm when credentials
exist and ``origin.realm_refusal`` allows it). Credentials and tokens appear in no message, log or ``repr``.

Credentials are attached in one place (``_send``) and only to the registry's own origin (a token realm's
basic auth only to the realm's): redirects are followed here, not by httpx, at most ``MAX_REDIRECTS``
hops, each ``Location`` resolved per RFC 3986 against the request it answers, and a hop to another
origin goes without them. A 401 from anywhere but the registry is an error, never answered with the
registry's credentials. Upload ``Location``s are resolved the same way (``location``). See ``origin``.

TLS is verified as ``tls`` sets it up; with ``--tls-verify=false`` the client falls back, like skopeo,
to plain HTTP when the registry does not speak TLS.

Time, body sizes and the mapping of transport errors to one line are ``bounds``' job: each try of a
request runs within a ``bounds.Budget``, and every body is read through ``bounds`` under a cap.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from ocisquash.errors import FormatError, MissingBlob, NotFound, OcisquashError
from ocisquash.registry import auth, bounds, origin, tls
from ocisquash.registry.auth import AuthError, Credentials
from ocisquash.registry.blobstream import BlobStream
from ocisquash.registry.bounds import ERROR_CAP, TOKEN_CAP
from ocisquash.registry.bounds import RegistryError as RegistryError  # raised by the client, named here too
from ocisquash.registry.options import RegistryOptions, current
from ocisquash.registry.origin import Origin
from ocisquash.registry.ref import RegistryRef

MAX_ATTEMPTS = 5  # tries of one request on 429/5xx/dropped connections
_HANDED_OFF = 64 << 10  # request bodies this large are not kept by the request once sent
MAX_MANIFEST = 4 << 20  # what registries accept (distribution's own cap), so what we accept
RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 10  # hops followed for one request (Go's http.Client stops at 10 too)
REDIRECT_STATUS = (301, 302, 303, 307, 308)


class Client:
    """Requests to one registry for ``ref.repo`` (and ``extra_repos``, for cross-repository mounts)."""

    def __init__(self, ref: RegistryRef, opts: RegistryOptions | None = None, *, push: bool = False,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.ref = ref
        self.opts = opts if opts is not None else current()
        self.host = ref.api_host
        self.scheme = "https"
        self._transport = transport
        self._push = push  # the side of a run: OUT (--dest-creds) or IN and --parent (--src-creds)
        self._scopes: dict[str, set[str]] = {ref.repo: {"pull", "push"} if push else {"pull"}}
        self._token: str | None = None
        self._basic: str | None = None
        self._creds: Credentials | None = None
        self._creds_looked = False
        self._ctx = tls.context(ref.host, self.opts) if transport is None else None
        self._http: httpx.Client | None = None
        self._pid = 0
        self._probed = False

    # ---- plumbing
    def _client(self) -> httpx.Client:
        # Layers are opened in forked worker processes too: a pool inherited across fork shares its
        # sockets with the parent, so a child builds its own.
        if self._http is None or self._pid != os.getpid():
            verify = self._ctx if self._ctx is not None else True
            self._http = httpx.Client(
                verify=verify, transport=self._transport or bounds.transport(verify),
                timeout=httpx.Timeout(60.0, connect=15.0), follow_redirects=False,
                # identity: a body the server encodes anyway is decoded by ``bounds``, under its cap
                headers={"User-Agent": "ocisquash", "Accept-Encoding": "identity"},
            )
            self._pid = os.getpid()
        return self._http

    def close(self) -> None:
        if self._http is not None and self._pid == os.getpid():
            self._http.close()
        self._http = None

    def url(self, path: str) -> str:
        """A path of the registry's API (``/v2/…``) as a URL; an absolute URL (a ``Location`` that
        ``location`` resolved) as it is."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.scheme}://{self.host}{path}"

    @property
    def origin(self) -> Origin:
        """The registry's own scheme, host and port: the one origin its credentials are sent to."""
        return origin.origin_of(httpx.URL(self.url("/v2/")))

    def location(self, resp: httpx.Response, what: str) -> str | None:
        """``resp``'s ``Location`` (an upload session's URL) resolved against the URL of the request it
        answers (RFC 3986 §5), or None without one. It gets the credentials only if it is the registry's
        origin (``_send``); one that leaves TLS is refused."""
        loc = resp.headers.get("location")
        return str(self._resolve(resp.request.url, loc, what)) if loc else None

    def _resolve(self, base: httpx.URL, location: str, what: str) -> httpx.URL:
        try:
            url = origin.resolve(base, location)
        except origin.BadURL as e:
            raise RegistryError(f"{self.host}: {what}: the registry's Location header is {e}") from None
        if origin.downgrade(url, self.origin):
            raise RegistryError(f"{self.host}: {what}: the registry sent the request from https to plain http "
                                f"({origin.show(origin.origin_of(url))}); refused",
                                hint="a registry behind a TLS proxy gives http:// Locations when the proxy does "
                                     "not pass X-Forwarded-Proto: https")
        return url

    def want_scope(self, repo: str, actions: set[str]) -> None:
        have = self._scopes.setdefault(repo, set())
        if not actions <= have:
            have |= actions
            self._token = None  # the next 401 asks for a token with every scope

    def _credentials(self) -> Credentials | None:
        if not self._creds_looked:
            self._creds = auth.find(self.ref, self.opts.auth, dest=self._push)
            self._creds_looked = True
        return self._creds

    def _creds_option(self) -> str:
        side = "--dest-creds" if self._push else "--src-creds"
        return f"{side} USER:PASSWORD (--creds if the run has one registry) or --authfile FILE"

    def _probe(self) -> None:
        """With --tls-verify=false, find out once whether the registry speaks TLS at all."""
        if self._probed:
            return
        self._probed = True
        if self.opts.tls_verify or self._transport is not None:
            return
        try:
            self._bounded_send(self._client().build_request("GET", self.url("/v2/")), "connect", stream=True).close()
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as e:
            if bounds.is_timeout(e):
                raise bounds.as_error(e, self.host, "connect") from None
            if tls.is_failure(e):
                self.scheme = "http"

    def request(self, method: str, path: str, *, what: str, headers: dict[str, str] | None = None,
                content: bytes | list[bytes] | Callable[[], Iterator[bytes]] | None = None, stream: bool = False,
                params: dict[str, str] | None = None) -> httpx.Response:
        """Send with auth and retries; returns the response of any status (callers map errors).

        ``content``: the body as bytes or as pieces sent one after another (an upload chunk as it was
        written, not joined), or a callable making a fresh iterator for each try."""
        self._probe()
        answered: set[str] = set()
        attempt = 0
        while True:  # bounded: MAX_ATTEMPTS retries plus one answer per distinct challenge
            attempt += 1
            hdrs = dict(headers or {})
            try:
                # a callable body is made again for each try: an iterator can be sent only once
                body: bytes | Iterator[bytes] | None
                if callable(content):
                    body = content()
                elif isinstance(content, list) or (content is not None and len(content) >= _HANDED_OFF):
                    # Sent from an iterator that lets go of each piece once sent: httpx's request and
                    # response refer to each other, and while a squash pauses the cyclic gc a request
                    # that kept its body kept every upload chunk until the end (85 MB on the bench).
                    pieces = content if isinstance(content, list) else [content]
                    hdrs["Content-Length"] = str(sum(map(len, pieces)))
                    body = iter(pieces)
                else:
                    body = content
                # merged by hand: httpx's params= would replace the query an upload Location carries
                url = httpx.URL(self.url(path))
                if params:
                    url = url.copy_merge_params(params)
                upload = body is not None and not isinstance(body, bytes)  # judged by progress, not a deadline
                resp = self._send(method, url, hdrs, body, stream=stream, what=what,
                                  bound=(self.origin, self._authorization()), upload=upload)
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as e:
                if bounds.not_retried(e):  # a spent deadline, a bad URL: trying again changes nothing
                    raise bounds.as_error(e, self.host, what) from None
                if tls.is_failure(e):
                    raise RegistryError(f"{self.host}: TLS handshake failed: {bounds.one_line(e)}",
                                        hint="give the registry's CA with --cert-dir DIR (DIR/ca.crt), or "
                                             "--tls-verify=false for a test registry") from None
                if attempt >= MAX_ATTEMPTS:
                    raise RegistryError(f"{self.host}: {what}: connection failed after {attempt} tries: "
                                        f"{bounds.one_line(e)}") from None
                time.sleep(bounds.backoff(attempt))
                continue
            if resp.status_code == 401:
                where = origin.origin_of(resp.request.url)
                if where != self.origin:
                    self._close(resp)
                    raise AuthError(f"{self.host}: {what}: {origin.show(where)}, where the registry sent the "
                                    "request, asks for authentication; the registry's credentials are sent to "
                                    "the registry only")
                challenge = resp.headers.get("www-authenticate", "")
                key = challenge + "|" + ",".join(sorted(self._scope_list()))
                if key in answered or len(answered) >= 4:
                    return resp
                answered.add(key)
                self._close(resp)
                self._answer(challenge, what)
                attempt -= 1  # an auth round-trip is not a failed try
                continue
            if resp.status_code in RETRY_STATUS and attempt < MAX_ATTEMPTS:
                delay = bounds.backoff(attempt)
                with contextlib.suppress(ValueError):
                    delay = min(bounds.BACKOFF_MAX, max(delay, float(resp.headers.get("retry-after", ""))))
                self._close(resp)
                time.sleep(delay)
                continue
            return resp

    def _authorization(self) -> str | None:
        if self._token is not None:
            return "Bearer " + self._token
        return self._basic

    def _send(self, method: str, url: httpx.URL, headers: dict[str, str], body: bytes | Iterator[bytes] | None,
              *, stream: bool, what: str, bound: tuple[Origin, str | None], upload: bool = False,
              cap: int = ERROR_CAP, truncate: bool = True) -> httpx.Response:
        """One request, its redirects followed (``GET`` and ``HEAD`` only: a body is not sent twice).
        The one place credentials are attached: ``bound`` is ``(origin, Authorization value)``, and the
        value goes to a URL of that origin only, so a hop elsewhere goes without it. Each hop is one
        bounded try (``_bounded_send``)."""
        for _ in range(MAX_REDIRECTS + 1):
            hdrs = dict(headers)
            if bound[1] is not None and origin.carries_credentials(url, bound[0]):
                hdrs["Authorization"] = bound[1]
            req = self._client().build_request(method, url, headers=hdrs, content=body)
            resp = self._bounded_send(req, what, stream=stream, upload=upload, cap=cap, truncate=truncate)
            loc = resp.headers.get("location")
            if resp.status_code not in REDIRECT_STATUS or not loc or method not in ("GET", "HEAD"):
                return resp
            self._close(resp)
            url = self._resolve(url, loc, what)
        raise RegistryError(f"{self.host}: {what}: more than {MAX_REDIRECTS} redirects (a redirect loop)")

    def _bounded_send(self, req: httpx.Request, what: str, *, stream: bool = False, upload: bool = False,
                      cap: int = ERROR_CAP, truncate: bool = True) -> httpx.Response:
        """One try of ``req`` within a ``bounds.Budget``: one deadline for connecting, the headers and
        (unless ``stream``) the body, read here up to ``cap``; an ``upload`` is judged by its progress."""
        budget = bounds.Budget(self.opts.timeout, progress=upload)
        with bounds.active(budget):
            resp = self._client().send(req, stream=True)
        bounds.attach(resp, budget)
        if stream:
            return resp
        return bounds.small(resp, cap, f"{self.host}: {what}", truncate=truncate)  # httpx errors: the caller's

    @staticmethod
    def _close(resp: httpx.Response) -> None:
        # a few KiB are read so the connection may be reused; a longer body closes it
        with contextlib.suppress(RegistryError, httpx.HTTPError):
            bounds.read_body(resp, ERROR_CAP, "", truncate=True)
        resp.close()

    def _scope_list(self) -> list[str]:
        return [f"repository:{repo}:{','.join(sorted(acts))}" for repo, acts in sorted(self._scopes.items())]

    def _answer(self, challenge: str, what: str) -> None:
        scheme, params = auth.parse_challenge(challenge)
        creds = self._credentials()
        if scheme == "basic":
            if creds is None:
                raise AuthError(f"{self.host}: {what}: authentication required",
                                hint=f"log in (podman login / docker login), or give {self._creds_option()}")
            self._basic = creds.basic_header()
            self._token = None
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"{self.host}: {what}: unsupported authentication challenge {scheme or '(none)'!r}")
        scopes = self._scope_list()
        if params.get("scope"):
            for s in params["scope"].split(" "):
                if s and s not in scopes:
                    scopes.append(s)
        self._token = self._fetch_token(params["realm"], params.get("service"), scopes, creds, what)

    def _fetch_token(self, realm: str, service: str | None, scopes: list[str], creds: Credentials | None,
                     what: str) -> str:
        q: list[tuple[str, str | int | float | bool | None]] = []
        if service:
            q.append(("service", service))
        q += [("scope", s) for s in scopes]
        try:
            url = origin.parse(realm)
        except origin.BadURL as e:
            raise RegistryError(f"{self.host}: {what}: the token realm is {e}") from None
        if creds is not None:
            why = origin.realm_refusal(url, self.origin)
            if why is not None:
                raise AuthError(f"{self.host}: {what}: credentials not sent to the token service at "
                                f"{origin.show(origin.origin_of(url))}: {why}")
        url = url.copy_merge_params(q)
        bound = (origin.origin_of(url), creds.basic_header() if creds is not None else None)
        resp = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:  # the token read whole, capped, within the deadline
                resp = self._send("GET", url, {}, None, stream=False, what=f"{what}: token service", bound=bound,
                                  cap=TOKEN_CAP, truncate=False)
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as e:
                if bounds.not_retried(e):
                    raise bounds.as_error(e, self.host, f"{what}: token service") from None
                if attempt == MAX_ATTEMPTS:
                    raise RegistryError(f"{self.host}: token service unreachable: {bounds.one_line(e)}") from None
                time.sleep(bounds.backoff(attempt))
                continue
            if resp.status_code in RETRY_STATUS and attempt < MAX_ATTEMPTS:
                time.sleep(bounds.backoff(attempt))
                continue
            break
        assert resp is not None
        if resp.status_code in (401, 403):
            raise AuthError(f"{self.host}: {what}: the token service refused "
                            f"{'the credentials' if creds else 'anonymous access'} ({resp.status_code})",
                            hint=None if creds else f"give {self._creds_option()}")
        if resp.status_code != 200:
            raise RegistryError(f"{self.host}: token service answered {resp.status_code}")
        try:
            obj = resp.json()
            token = (obj.get("token") or obj.get("access_token")) if isinstance(obj, dict) else None
        except ValueError:
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.host}: {what}: the token service gave no token")
        return token

    # ---- errors
    def fail(self, resp: httpx.Response, what: str) -> OcisquashError:
        """A one-line error for a failed response (the registry's error code, never a header)."""
        if not resp.is_stream_consumed:  # its first few KiB, for the registry's error code
            with contextlib.suppress(RegistryError, httpx.HTTPError):
                resp = bounds.small(resp, ERROR_CAP, self.host)
        code, message = _error_body(resp)
        detail = f" ({code}: {message})" if code else ""
        s = resp.status_code
        where = f"{self.ref.host}/{self.ref.repo}"
        if s == 401:
            creds = self._creds
            return AuthError(f"{where}: {what}: unauthorized{detail}",
                             hint="the credentials were refused" if creds else
                             f"give {self._creds_option()}")
        if s == 403:
            return AuthError(f"{where}: {what}: denied{detail}",
                             hint="the credentials have no access to this repository")
        if s == 404:
            if code in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN", "") and "manifest" in what:
                return NotFound(f"{where}: manifest unknown: {what.split()[-1]}{detail}")
            if "blob" in what:
                return MissingBlob(f"{where}: {what}: blob unknown{detail}")
            return NotFound(f"{where}: {what}: not found{detail}")
        return RegistryError(f"{where}: {what}: HTTP {s}{detail}")

    # ---- API
    def get_manifest(self, reference: str, accept: str) -> tuple[bytes, str, str | None]:
        """``(bytes, media type, Docker-Content-Digest)`` of a manifest; over ``MAX_MANIFEST`` refused."""
        what = f"manifest {reference}"
        resp = self.request("GET", f"/v2/{self.ref.repo}/manifests/{reference}", what=what,
                            headers={"Accept": accept}, stream=True)
        try:
            if resp.status_code != 200:
                raise self.fail(resp, what)
            length = resp.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > MAX_MANIFEST:
                raise FormatError(f"{self.ref.host}/{self.ref.repo}: {what} is {length} bytes, over the "
                                  f"{MAX_MANIFEST >> 20} MiB registries accept")
            buf = bytearray()
            with bounds.mapped(self.host, what):
                for chunk in bounds.chunks(resp, f"{self.host}: {what}"):  # decoded, counted as it comes
                    buf += chunk
                    if len(buf) > MAX_MANIFEST:
                        raise FormatError(f"{self.ref.host}/{self.ref.repo}: {what} is over the "
                                          f"{MAX_MANIFEST >> 20} MiB registries accept")
            ctype = resp.headers.get("content-type", "").split(";")[0].strip()
            return bytes(buf), ctype, resp.headers.get("docker-content-digest")
        finally:
            resp.close()

    def head_manifest(self, reference: str, accept: str) -> httpx.Response:
        what = f"manifest {reference}"
        resp = self.request("HEAD", f"/v2/{self.ref.repo}/manifests/{reference}", what=what,
                            headers={"Accept": accept})
        resp.close()
        return resp

    def open_blob(self, digest: str, what: str) -> BlobStream:
        return BlobStream(self, digest, what)

    def has_blob(self, digest: str) -> bool:
        resp = self.request("HEAD", f"/v2/{self.ref.repo}/blobs/{digest}", what=f"blob {digest}")
        resp.close()
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self.fail(resp, f"blob {digest}")


def _error_body(resp: httpx.Response) -> tuple[str, str]:
    try:
        obj: Any = resp.json()
        err = obj["errors"][0]
        return str(err.get("code", ""))[:64], str(err.get("message", ""))[:200]
    except Exception:
        return "", ""
