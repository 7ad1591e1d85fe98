"""Registry credentials go only where they belong (issue 19, classes 1, 2 and 3).

Every test starts its own misbehaving registry on loopback (``hostileregistry``): 127.0.0.1 and
127.0.0.2 play two hosts, two ports on one address two origins, TLS from a CA made here. Each asserts
that the password (plain or in its base64 ``user:pass`` form) or the token reached no server it should
not have, nor stdout or stderr; and, for a refused run, exit 1 (2 for usage) with one error line, in
seconds, and nothing written at OUT.

- class 1, credentials follow a Location: ``test_upload_location_elsewhere_gets_no_credentials``,
  ``test_relative_upload_location_is_resolved_against_the_request``,
  ``test_refused_mount_location_elsewhere_gets_no_credentials``
- class 2, credentials answer any challenge: ``test_blob_redirect_to_a_cdn_strips_credentials``,
  ``test_cdn_challenge_is_not_answered_with_the_registrys_credentials``,
  ``test_plain_http_realm_on_another_host_gets_no_password``,
  ``test_https_realm_gets_the_password_and_the_token_goes_to_the_registry_only``,
  ``test_a_token_realm_redirect_elsewhere_gets_no_password``, ``test_redirect_loop_is_one_line``,
  ``test_creds_for_two_registries_is_a_usage_error``, ``test_src_and_dest_creds_reach_their_own_registry``
- class 3, secrets echoed: ``test_userinfo_in_a_reference_is_never_echoed``,
  ``test_redact_hides_userinfo_and_keeps_digests``
- the rules themselves, as pure logic: ``test_origin_rules``
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import registryd
from childrun import MAX_RSS_MB, Run, run_cli
from hostileregistry import (
    Conn,
    Handler,
    HostileServer,
    Request,
    TinyImage,
    Uploads,
    basic,
    guarded,
    serve_image,
    tiny_image,
    token_service,
)

from ocisquash.registry import origin
from ocisquash.registry.ref import redact

USER, PASSWORD = "alice", "Pa55-w0rd-Alice-XYZ"
USER_B, PASSWORD_B = "bob", "Pa55-w0rd-Bob-QRS"
TOKEN = "tok-Secret-0123456789abcdef"
BASIC_CHALLENGE = 'Basic realm="registry"'
SECRETS = (PASSWORD, f"{USER}:{PASSWORD}", PASSWORD_B, f"{USER_B}:{PASSWORD_B}", TOKEN)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, Path], Path]:
    """A server certificate for 127.0.0.1 and 127.0.0.2, and a --cert-dir trusting its CA."""
    d = tmp_path_factory.mktemp("ca")
    ca = registryd.make_ca(d)
    pair = ca.issue("srv", ips=("127.0.0.1", "127.0.0.2"))
    certs = d / "certs.d"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(ca.ca_crt.read_bytes())
    return pair, certs


@pytest.fixture(scope="module")
def img() -> TinyImage:
    return tiny_image()


@pytest.fixture
def layout(tmp_path: Path, img: TinyImage) -> Path:
    """``img`` as an OCI layout directory, tagged 1: an IN that needs no registry."""
    d = tmp_path / "in"
    (d / "blobs" / "sha256").mkdir(parents=True)
    (d / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for digest, data in [*img.blobs.items(), (img.digest, img.manifest)]:
        (d / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    (d / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": img.digest,
        "size": len(img.manifest), "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    return d


def error(r: Run, code: int = 1) -> str:
    """The one error line of a failed run: exit ``code``, no traceback, in seconds, under the RSS bound."""
    assert r.code == code, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    assert r.seconds < 30, r.seconds
    assert r.rss_mb < MAX_RSS_MB, f"peak RSS {r.rss_mb:.0f} MB"
    return lines[0]


def run(tmp_path: Path, *args: str, certs: Path | None = None) -> Run:
    """``ocisquash ARGS`` with no credentials but the ones given (HOME is empty, no auth file)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG",
                                                            "XDG_RUNTIME_DIR")}
    env["HOME"] = str(tmp_path / "home")
    extra = ["--cert-dir", str(certs)] if certs is not None else []
    r = run_cli(*args, *extra, limit=120, env=env)
    for s in SECRETS:
        assert s not in r.stdout and s not in r.stderr, f"{s!r} printed"
    return r


def no_leak(*servers: HostileServer, secrets: tuple[str, ...] = SECRETS) -> None:
    for s in servers:
        assert s.leaked(*secrets) == [], f"{s.netloc} received {s.leaked(*secrets)}"


def authorizations(server: HostileServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.requests]


def asking(challenge: str = BASIC_CHALLENGE) -> Handler:
    """A handler that asks every request for credentials (a host a registry points a client to)."""

    def ask(req: Request, conn: Conn) -> None:
        conn.respond(401, b"", {"WWW-Authenticate": challenge})

    return ask


@pytest.fixture
def servers() -> Iterator[list[HostileServer]]:
    """Servers a test starts (``started``), all stopped when it ends."""
    started: list[HostileServer] = []
    yield started
    for s in started:
        s.stop()


def start(servers: list[HostileServer], handler: Handler, host: str = "127.0.0.1",
          tls: tuple[Path, Path] | None = None) -> HostileServer:
    s = HostileServer(handler, host=host, tls=tls)
    s.__enter__()
    servers.append(s)
    return s


def pushing_registry(img: TinyImage, uploads: Uploads, user: str = USER, password: str = PASSWORD) -> Handler:
    """A registry behind basic auth that serves ``img`` at a/b:1 and takes pushes into ``uploads``."""
    return guarded(serve_image(img, override=uploads), basic(user, password), BASIC_CHALLENGE)


# ------------------------------------------------------------------------- class 1: upload Locations


@pytest.mark.parametrize("where", ["other-host", "other-port", "plain-http"])
def test_upload_location_elsewhere_gets_no_credentials(where: str, tls: tuple[tuple[Path, Path], Path],
                                                       img: TinyImage, layout: Path, tmp_path: Path,
                                                       servers: list[HostileServer]) -> None:
    pair, certs = tls
    # the host an upload is sent to asks for credentials, as another registry would
    elsewhere = start(servers, asking(), host="127.0.0.2" if where == "other-host" else "127.0.0.1",
                      tls=None if where == "plain-http" else pair)
    uploads = Uploads(lambda req: f"{elsewhere.url}/v2/a/b/blobs/uploads/stolen")
    reg = start(servers, pushing_registry(img, uploads), tls=pair)
    r = run(tmp_path, f"{layout}:1", f"docker://{reg.netloc}/out/app:1", "--dest-creds", f"{USER}:{PASSWORD}",
            certs=certs)
    line = error(r, 1)
    no_leak(elsewhere)
    assert uploads.manifests == {}  # nothing written at OUT
    assert any(a is not None for a in authorizations(reg))  # the registry itself did get them
    if where == "plain-http":
        assert "plain http" in line
        assert elsewhere.requests == []  # not even without credentials: nothing leaves TLS
    else:
        assert elsewhere.requests and all(a is None for a in authorizations(elsewhere))
        assert "asks for authentication" in line


def test_relative_upload_location_is_resolved_against_the_request(tls: tuple[tuple[Path, Path], Path],
                                                                  img: TinyImage, layout: Path, tmp_path: Path,
                                                                  servers: list[HostileServer]) -> None:
    """``Location: session/7`` (no leading slash) is next to the last segment of the POST's path
    (RFC 3986 §5.2), not glued onto scheme://host:port."""
    pair, certs = tls
    uploads = Uploads(lambda req: "session/7?state=x")
    reg = start(servers, pushing_registry(img, uploads), tls=pair)
    run(tmp_path, f"{layout}:1", f"docker://{reg.netloc}/out/app:1", "--dest-creds", f"{USER}:{PASSWORD}",
        certs=certs)
    sent = {r.target for r in reg.requests if r.method in ("PATCH", "PUT") and "/manifests/" not in r.path}
    assert sent and all(t.startswith("/v2/out/app/blobs/uploads/session/7?state=x") for t in sent), sent
    assert "1" in uploads.manifests  # and the push went through


def test_refused_mount_location_elsewhere_gets_no_credentials(tls: tuple[tuple[Path, Path], Path],
                                                              img: TinyImage, tmp_path: Path,
                                                              servers: list[HostileServer]) -> None:
    """A registry refusing a cross-repository mount opens an upload at a Location on another host: the
    client cancels it there without credentials, and uploads on the registry itself."""
    pair, certs = tls
    catcher = start(servers, asking(), host="127.0.0.2", tls=pair)
    uploads = Uploads(lambda req: f"{catcher.url}/mount-session" if "mount=" in req.query else
                      f"/v2/_uploads/{len(uploads.blobs)}")
    reg = start(servers, pushing_registry(img, uploads), tls=pair)
    r = run(tmp_path, "convert", f"docker://{reg.netloc}/a/b:1", f"docker://{reg.netloc}/c/d:1", "--creds",
            f"{USER}:{PASSWORD}", certs=certs)
    assert r.code == 0, r.stderr
    assert any("mount=" in q.query for q in reg.requests)
    assert [q.method for q in catcher.requests] == ["DELETE"] * len(catcher.requests) and catcher.requests
    no_leak(catcher)
    assert "1" in uploads.manifests


# ------------------------------------------------------------------- class 2: challenges and redirects


def _redirecting_registry(img: TinyImage, cdn: str) -> Handler:
    """A registry behind basic auth that sends its blob downloads to ``cdn``."""

    def to_cdn(req: Request, conn: Conn) -> bool:
        if "/blobs/sha256:" in req.path and req.method == "GET":
            conn.respond(307, b"", {"Location": f"{cdn}/cdn{req.path}?sig=1"})
            return True
        return False

    return guarded(serve_image(img, override=to_cdn), basic(USER, PASSWORD), BASIC_CHALLENGE)


def test_blob_redirect_to_a_cdn_strips_credentials(tls: tuple[tuple[Path, Path], Path], img: TinyImage,
                                                   tmp_path: Path, servers: list[HostileServer]) -> None:
    pair, certs = tls

    def cdn_serves(req: Request, conn: Conn) -> None:
        data = img.blobs[req.path.rsplit("/", 1)[1]]
        conn.respond(200, data, {"Content-Type": "application/octet-stream"})

    cdn = start(servers, cdn_serves, host="127.0.0.2", tls=pair)
    reg = start(servers, _redirecting_registry(img, cdn.url), tls=pair)
    out = tmp_path / "out.tar"
    r = run(tmp_path, f"docker://{reg.netloc}/a/b:1", str(out), "--creds", f"{USER}:{PASSWORD}", certs=certs)
    assert r.code == 0, r.stderr
    assert out.is_file() and cdn.requests
    assert all(a is None for a in authorizations(cdn))
    no_leak(cdn)


def test_cdn_challenge_is_not_answered_with_the_registrys_credentials(tls: tuple[tuple[Path, Path], Path],
                                                                      img: TinyImage, tmp_path: Path,
                                                                      servers: list[HostileServer]) -> None:
    """The host a blob is redirected to answers 401 with its own Bearer realm: neither it nor its realm
    gets the registry's password; the run stops with one line."""
    pair, certs = tls
    cdn = start(servers, asking(), host="127.0.0.2", tls=pair)
    cdn.handler = asking(f'Bearer realm="{cdn.url}/token",service="cdn"')  # its own realm, on its own host
    reg = start(servers, _redirecting_registry(img, cdn.url), tls=pair)
    out = tmp_path / "out.tar"
    r = run(tmp_path, f"docker://{reg.netloc}/a/b:1", str(out), "--creds", f"{USER}:{PASSWORD}", certs=certs)
    line = error(r, 1)
    assert "asks for authentication" in line and "127.0.0.2" in line
    assert [q.path for q in cdn.requests if q.path.startswith("/token")] == []
    assert all(a is None for a in authorizations(cdn))
    no_leak(cdn)
    assert not out.exists()


@pytest.mark.parametrize("registry_tls", [True, False])
def test_plain_http_realm_on_another_host_gets_no_password(registry_tls: bool,
                                                           tls: tuple[tuple[Path, Path], Path], img: TinyImage,
                                                           tmp_path: Path, servers: list[HostileServer]) -> None:
    pair, certs = tls
    realm = start(servers, token_service(basic(USER, PASSWORD), TOKEN), host="127.0.0.2")
    challenge = f'Bearer realm="{realm.url}/token",service="reg"'
    reg = start(servers, guarded(serve_image(img), f"Bearer {TOKEN}", challenge),
                tls=pair if registry_tls else None)
    out = tmp_path / "out.tar"
    extra = [] if registry_tls else ["--tls-verify=false"]
    r = run(tmp_path, f"docker://{reg.netloc}/a/b:1", str(out), "--creds", f"{USER}:{PASSWORD}", *extra,
            certs=certs)
    line = error(r, 1)
    assert "clear text" in line
    assert realm.requests == []
    no_leak(realm, reg)
    assert not out.exists()


def test_https_realm_gets_the_password_and_the_token_goes_to_the_registry_only(
        tls: tuple[tuple[Path, Path], Path], img: TinyImage, tmp_path: Path, servers: list[HostileServer]) -> None:
    """The ordinary token flow still works: an https realm on another host gets basic auth, the token it
    issues goes to the registry's origin and nowhere else (not to the realm, not to a CDN)."""
    pair, certs = tls
    realm = start(servers, token_service(basic(USER, PASSWORD), TOKEN), host="127.0.0.2", tls=pair)

    def cdn_serves(req: Request, conn: Conn) -> None:
        conn.respond(200, img.blobs[req.path.rsplit("/", 1)[1]])

    cdn = start(servers, cdn_serves, host="127.0.0.2", tls=pair)

    def to_cdn(req: Request, conn: Conn) -> bool:
        if "/blobs/sha256:" in req.path and req.method == "GET":
            conn.respond(307, b"", {"Location": f"{cdn.url}/cdn{req.path}"})
            return True
        return False

    challenge = f'Bearer realm="{realm.url}/token",service="reg"'
    reg = start(servers, guarded(serve_image(img, override=to_cdn), f"Bearer {TOKEN}", challenge), tls=pair)
    out = tmp_path / "out.tar"
    r = run(tmp_path, f"docker://{reg.netloc}/a/b:1", str(out), "--creds", f"{USER}:{PASSWORD}", certs=certs)
    assert r.code == 0, r.stderr
    assert out.is_file()
    assert set(authorizations(realm)) <= {None, basic(USER, PASSWORD)} and basic(USER, PASSWORD) in \
        authorizations(realm)
    no_leak(realm, secrets=(TOKEN,))
    no_leak(cdn)
    no_leak(reg, secrets=(PASSWORD, f"{USER}:{PASSWORD}"))


def test_redirect_loop_is_one_line(tls: tuple[tuple[Path, Path], Path], img: TinyImage, tmp_path: Path,
                                   servers: list[HostileServer]) -> None:
    pair, certs = tls

    def loop(req: Request, conn: Conn) -> bool:
        if req.method == "GET" and "/manifests/" in req.path:
            conn.respond(302, b"", {"Location": req.target})  # to itself
            return True
        return False

    reg = start(servers, guarded(serve_image(img, override=loop), basic(USER, PASSWORD), BASIC_CHALLENGE),
                tls=pair)
    out = tmp_path / "out.tar"
    r = run(tmp_path, f"docker://{reg.netloc}/a/b:1", str(out), "--creds", f"{USER}:{PASSWORD}", certs=certs)
    assert "redirect" in error(r, 1)
    assert r.seconds < 20
    assert len([q for q in reg.requests if q.method == "GET"]) < 40
    assert not out.exists()


def test_creds_for_two_registries_is_a_usage_error(tls: tuple[tuple[Path, Path], Path], img: TinyImage,
                                                   layout: Path, tmp_path: Path,
                                                   servers: list[HostileServer]) -> None:
    pair, certs = tls
    a = start(servers, serve_image(img), tls=pair)
    b = start(servers, serve_image(img), host="127.0.0.2", tls=pair)
    c = start(servers, serve_image(img), tls=pair)  # the same address as a, another port
    creds = ["--creds", f"{USER}:{PASSWORD}"]
    for args in ([f"docker://{a.netloc}/a/b:1", f"docker://{b.netloc}/c/d:1"],
                 ["convert", f"docker://{a.netloc}/a/b:1", f"docker://{c.netloc}/c/d:1"],
                 [str(layout) + ":1", f"docker://{b.netloc}/c/d:1", "--parent", f"docker://{a.netloc}/a/b:1"]):
        r = run(tmp_path, *args, *creds, certs=certs)
        assert "--creds" in error(r, 2)
        assert "--src-creds" in r.stderr and "--dest-creds" in r.stderr  # the hint names the two
    # --src-creds may not stand for two registries either
    r = run(tmp_path, f"docker://{a.netloc}/a/b:1", str(tmp_path / "o.tar"), "--parent",
            f"docker://{b.netloc}/a/b:1", "--src-creds", f"{USER}:{PASSWORD}", certs=certs)
    assert "--src-creds" in error(r, 2)
    assert a.requests == b.requests == c.requests == []  # refused before anything was sent
    assert not (tmp_path / "o.tar").exists()


def test_src_and_dest_creds_reach_their_own_registry(tls: tuple[tuple[Path, Path], Path], img: TinyImage,
                                                     tmp_path: Path, servers: list[HostileServer]) -> None:
    """IN on A (basic auth, alice), OUT on B (bearer tokens from B's https realm, bob): each password
    reaches its own registry (and B's realm) only; the push lands on B."""
    pair, certs = tls
    a = start(servers, pushing_registry(img, Uploads()), tls=pair)
    realm = start(servers, token_service(basic(USER_B, PASSWORD_B), TOKEN), host="127.0.0.2", tls=pair)
    uploads_b = Uploads()
    challenge = f'Bearer realm="{realm.url}/token",service="b"'
    b = start(servers, guarded(serve_image(img, repo="none/x", override=uploads_b), f"Bearer {TOKEN}", challenge),
              host="127.0.0.2", tls=pair)
    r = run(tmp_path, f"docker://{a.netloc}/a/b:1", f"docker://{b.netloc}/c/d:sq", "--src-creds",
            f"{USER}:{PASSWORD}", "--dest-creds", f"{USER_B}:{PASSWORD_B}", certs=certs)
    assert r.code == 0, r.stderr
    assert "sq" in uploads_b.manifests
    no_leak(a, secrets=(PASSWORD_B, f"{USER_B}:{PASSWORD_B}", TOKEN))
    no_leak(b, realm, secrets=(PASSWORD, f"{USER}:{PASSWORD}"))
    no_leak(b, secrets=(PASSWORD_B, f"{USER_B}:{PASSWORD_B}"))  # B itself sees the token only


# ----------------------------------------------------------------------------- class 3: secrets echoed


def test_userinfo_in_a_reference_is_never_echoed(tls: tuple[tuple[Path, Path], Path], img: TinyImage,
                                                 layout: Path, tmp_path: Path,
                                                 servers: list[HostileServer]) -> None:
    pair, certs = tls
    reg = start(servers, serve_image(img), tls=pair)
    ref = f"docker://{USER}:{PASSWORD}@{reg.netloc}/a/b:1"
    out = tmp_path / "out.tar"
    for args in ([ref, str(out)], ["convert", str(layout) + ":1", ref], ["images", ref],
                 [f"docker://{reg.netloc}/a/b:1", str(out), "--parent", ref],
                 ["history", f"docker://{USER}:{PASSWORD}@{reg.netloc}"]):
        r = run(tmp_path, *args, certs=certs)  # run() asserts no secret on stdout or stderr
        line = error(r, 2)
        assert "credentials" in line or "--creds" in r.stderr
    assert reg.requests == []
    assert not out.exists()


def test_redact_hides_userinfo_and_keeps_digests() -> None:
    d = "sha256:" + "a" * 64
    assert redact(f"error: docker://u:{PASSWORD}@h:5000/a/b and docker://t0k@ghcr.io/x") == \
        "error: docker://…@h:5000/a/b and docker://…@ghcr.io/x"
    for keep in (f"docker://alpine@{d}", f"docker://h:5000/a/b@{d}", f"docker://alpine:3@{d}"):
        assert redact(keep) == keep


def test_origin_rules() -> None:
    import httpx

    reg = origin.origin_of(httpx.URL("https://Reg.example:443/v2/"))
    assert reg == ("https", "reg.example", 443)
    base = httpx.URL("https://reg.example/v2/a/b/blobs/uploads/?mount=x")
    assert str(origin.resolve(base, "u1?s=1")) == "https://reg.example/v2/a/b/blobs/uploads/u1?s=1"
    assert str(origin.resolve(base, "/v2/u")) == "https://reg.example/v2/u"
    assert str(origin.resolve(base, "//cdn.example/b")) == "https://cdn.example/b"
    assert origin.resolve(base, "https://x:y@cdn.example/b").userinfo == b""
    for bad in ("ftp://h/x", "file:///etc/passwd", "gopher://reg.example/x"):
        with pytest.raises(origin.BadURL):
            origin.resolve(base, bad)
    assert origin.carries_credentials(httpx.URL("https://reg.example/x"), reg)
    for other in ("https://reg.example:5000/x", "http://reg.example/x", "https://cdn.reg.example/x"):
        assert not origin.carries_credentials(httpx.URL(other), reg)
    assert origin.downgrade(httpx.URL("http://reg.example/x"), reg)
    assert origin.realm_refusal(httpx.URL("https://auth.example/token"), reg) is None
    assert origin.realm_refusal(httpx.URL("http://reg.example:5001/token"), reg) is not None
    assert origin.realm_refusal(httpx.URL("http://127.0.0.1:5001/token"), ("https", "127.0.0.1", 5000)) is None
    assert origin.realm_refusal(httpx.URL("http://127.0.0.2/token"), ("https", "127.0.0.1", 5000)) is not None
    assert origin.realm_refusal(httpx.URL("http://reg.example:81/t"), ("http", "reg.example", 80)) is None


def test_a_token_realm_redirect_elsewhere_gets_no_password() -> None:
    """The token request is sent through the same rule: basic auth goes to the realm's origin, and a
    redirect from the realm to another host (or to plain http) goes without it."""
    import httpx

    from ocisquash.registry.client import Client, RegistryError
    from ocisquash.registry.options import AuthOptions, RegistryOptions
    from ocisquash.registry.ref import parse

    seen: list[tuple[str, str | None]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append((f"{req.url.scheme}://{req.url.host}{req.url.path}", req.headers.get("authorization")))
        if req.url.host == "reg.example" and req.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="https://auth.example/token"'})
        if req.url.host == "auth.example":
            return httpx.Response(307, headers={"Location": target})
        if req.url.host == "elsewhere.example":
            return httpx.Response(200, json={"token": TOKEN})
        return httpx.Response(200)

    opts = RegistryOptions(AuthOptions(creds=f"{USER}:{PASSWORD}"))
    for target in ("https://elsewhere.example/token", "http://auth.example/token"):
        seen.clear()
        c = Client(parse("docker://reg.example/a/b:1"), opts, transport=httpx.MockTransport(handler))
        if target.startswith("http:"):
            with pytest.raises(RegistryError, match="plain http"):
                c.has_blob("sha256:" + "a" * 64)
        else:
            assert c.has_blob("sha256:" + "a" * 64)
        assert ("https://auth.example/token", basic(USER, PASSWORD)) in seen
        # the password goes to the https realm only: never to the other host, never to the plain-http realm
        assert [a for u, a in seen if u != "https://auth.example/token" and a is not None and a.startswith("Basic")] \
            == []
        assert all(u.startswith("https://reg.example/") for u, a in seen if a == f"Bearer {TOKEN}")


@pytest.mark.parametrize(("args", "message"), [
    (["--src-creds", "nocolon"], "--src-creds: neither IN nor --parent is a registry"),
    (["--src-creds", "u:p"], "--src-creds: neither IN nor --parent is a registry"),
    (["--dest-creds", "u:p"], "--dest-creds: OUT is not a registry"),
])
def test_a_sides_credentials_for_no_registry_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    """A side's option where that side is a file would be ignored without a word: a usage error instead."""
    sample = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
    out = tmp_path / "o.tar"
    r = run(tmp_path, str(sample), str(out), *args)
    assert message in error(r, 2)
    assert not out.exists()
