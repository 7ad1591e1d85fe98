"""``docker://`` inputs and outputs against a real registry (Debian's docker-registry), and the client's
retry, error and credential rules against a mock transport.

Registries run on 127.0.0.1 only (``registryd``): plain HTTP; TLS with a CA made here plus htpasswd
basic auth; and bearer tokens from a loopback token endpoint that implements the distribution token
spec (the registry verifies the tokens itself, so the flow is the real one, not a proxy's imitation).
Results are pulled back with skopeo and unpacked with umoci (``assert_same_rootfs``); uploads are
counted from the registry's access log.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import registryd
from conftest import skip_or_fail
from fixtures import BuiltImage
from oracle import assert_same_rootfs, skopeo
from platforms import OCI_INDEX, OCI_MANIFEST
from platforms import put as _blob

from ocisquash.errors import FormatError, NotFound
from ocisquash.registry import auth, client
from ocisquash.registry.auth import AuthError
from ocisquash.registry.client import Client, RegistryError
from ocisquash.registry.options import AuthOptions, RegistryOptions
from ocisquash.registry.ref import parse

OCISQUASH = [sys.executable, "-m", "ocisquash"]
USER, PASSWORD = "tester", "s3cret-Pa55word"


def ocisquash(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OCISQUASH, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, check=False)


def ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    p = ocisquash(*args, env=env)
    assert p.returncode == 0, f"ocisquash {' '.join(args)} exited {p.returncode}:\n{p.stderr}"
    return p


def one_line_error(p: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def need_registry() -> None:
    problem = registryd.problem()
    if problem is not None:
        skip_or_fail(problem)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, need_registry: None) -> Iterator[registryd.Registry]:
    with registryd.Registry(tmp_path_factory.mktemp("plain")) as r:
        yield r


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory, need_registry: None) -> registryd.CA:
    return registryd.make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def tls_basic(tmp_path_factory: pytest.TempPathFactory, ca: registryd.CA) -> Iterator[registryd.Registry]:
    crt, key = ca.issue("server")
    with registryd.Registry(tmp_path_factory.mktemp("tls"), tls=(crt, key), htpasswd={USER: PASSWORD}) as r:
        yield r


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory, ca: registryd.CA) -> Path:
    d = tmp_path_factory.mktemp("certs.d")
    (d / "ca.crt").write_bytes(ca.ca_crt.read_bytes())
    return d


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   need_registry: None) -> Iterator[tuple[registryd.Registry, registryd.TokenServer]]:
    signer = registryd.make_ca(tmp_path_factory.mktemp("signer"), "signer")
    with registryd.TokenServer(tmp_path_factory.mktemp("token"), {USER: PASSWORD}, signer) as ts, \
            registryd.Registry(tmp_path_factory.mktemp("tokenreg"), token=ts) as r:
        yield r, ts


def push(src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "-q", "--dest-tls-verify=false", *extra, src, dest)


def pull(ref: str, dest: Path, *extra: str) -> str:
    """Pull a registry image back into an OCI layout with skopeo: the oracle reads that."""
    skopeo("copy", "-q", "--src-tls-verify=false", *extra, ref, f"oci:{dest}:img")
    return f"{dest}:img"


def manifest_of(ref: str, *extra: str) -> dict[str, object]:
    out = skopeo("inspect", "--raw", "--tls-verify=false", *extra, ref).stdout
    return json.loads(out)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------- plain registry


def test_squash_registry_to_registry_onto_parent_mounts_kept_layers(plain: registryd.Registry,
                                                                    trap_oci: BuiltImage, tmp_path: Path) -> None:
    h = plain.host
    push(f"oci:{trap_oci.path}:l2", f"docker://{h}/base/trap:l2")
    push(f"oci:{trap_oci.path}:latest", f"docker://{h}/apps/trap:1")
    kept = [ly["digest"] for ly in manifest_of(f"docker://{h}/base/trap:l2")["layers"]]  # type: ignore[index]
    before = plain.mark()
    rep = json.loads(ok(f"docker://{h}/apps/trap:1", f"docker://{h}/out/trap:sq", "--parent",
                        f"docker://{h}/base/trap:l2", "--tls-verify=false", "--json").stdout)
    # the report counts the mounted layers' sizes as a file squash does
    file_rep = json.loads(ok(str(trap_oci.path), str(tmp_path / "file-sq"), "--image", "latest", "--parent", "l2",
                             "--json").stdout)
    for key in ("bytes_after_uncompressed", "bytes_after_compressed", "kept_layers", "layers_after"):
        assert rep[key] == file_rep[key], key
    man = manifest_of(f"docker://{h}/out/trap:sq")
    layers = [ly["digest"] for ly in man["layers"]]  # type: ignore[index]
    assert layers[:2] == kept and len(layers) == 3
    uploaded = plain.uploads("out/trap", before)
    # the new layer and the new config travel; the kept parent layers are mounted, never uploaded
    assert sorted(uploaded) == sorted([layers[2], man["config"]["digest"]])  # type: ignore[index]
    assert sorted(plain.mounts("out/trap", before)) == sorted(kept)
    assert_same_rootfs(f"{trap_oci.path}:latest", pull(f"docker://{h}/out/trap:sq", tmp_path / "back"), tmp_path)

    # again into the same repository: every blob is there already, only the manifest is written
    again = plain.mark()
    ok(f"docker://{h}/apps/trap:1", f"docker://{h}/out/trap:sq2", "--parent", f"docker://{h}/base/trap:l2",
       "--tls-verify=false", "-q", "--timestamp", "0")
    man2 = manifest_of(f"docker://{h}/out/trap:sq2")
    assert [ly["digest"] for ly in man2["layers"]] == layers  # type: ignore[index]
    assert plain.uploads("out/trap", again) == [man2["config"]["digest"]]  # type: ignore[index]
    assert plain.mounts("out/trap", again) == []


def test_squash_file_to_registry_and_back(plain: registryd.Registry, trap_oci: BuiltImage, tmp_path: Path) -> None:
    h = plain.host
    rep = json.loads(ok(str(trap_oci.path), f"docker://{h}/flat/trap:1", "--image", "latest", "--tls-verify=false",
                        "--tag", "also", "--json").stdout)
    assert rep["tags"] == [f"{h}/flat/trap:1", f"{h}/flat/trap:also"]
    man = manifest_of(f"docker://{h}/flat/trap:1")
    assert manifest_of(f"docker://{h}/flat/trap:also") == man
    assert "own repository" in one_line_error(ocisquash(str(trap_oci.path), f"docker://{h}/flat/trap:2", "--image",
                                                        "latest", "--tls-verify=false", "--tag", "other/repo:1"), 2)
    assert len(man["layers"]) == 1  # type: ignore[arg-type]
    assert_same_rootfs(f"{trap_oci.path}:latest", pull(f"docker://{h}/flat/trap:1", tmp_path / "b1"), tmp_path)
    # registry -> file, squashing the registry image's own source pushed as-is
    push(f"oci:{trap_oci.path}:latest", f"docker://{h}/src/trap:1")
    out = tmp_path / "flat.tar"
    ok(f"docker://{h}/src/trap:1", str(out), "--tls-verify=false", "-q")
    assert_same_rootfs(f"{trap_oci.path}:latest", str(out), tmp_path)


def test_convert_images_history_validate_on_registry(plain: registryd.Registry, sample_docker: BuiltImage,
                                                     tmp_path: Path) -> None:
    h = plain.host
    ref = f"docker://{h}/sample/app:1"
    ok("convert", str(sample_docker.path), ref, "--tls-verify=false", "-q")
    listed = ok("images", ref, "--tls-verify=false", "--json").stdout
    row = json.loads(listed.splitlines()[0])
    assert (row["repository"], row["tag"], row["layers"]) == (f"{h}/sample/app", "1", 3)
    hist = ok("history", ref, "--tls-verify=false", "-q").stdout.split()
    assert len(hist) >= 1
    assert "layers" in ok("analyze", ref, "--tls-verify=false").stdout
    val = json.loads(ok("validate", ref, "--tls-verify=false", "--json").stdout)
    assert val["ok"] and val["blobs_checked"] >= 5
    ok("convert", ref, str(tmp_path / "back.tar"), "--tls-verify=false", "-q")
    assert_same_rootfs(str(sample_docker.path), str(tmp_path / "back.tar"), tmp_path)


def test_registry_errors_are_one_line(plain: registryd.Registry, sample_docker: BuiltImage) -> None:
    h = plain.host
    line = one_line_error(ocisquash("images", f"docker://{h}/nothing/here:1", "--tls-verify=false"))
    assert "manifest unknown" in line and "nothing/here" in line
    # plain HTTP registry with TLS verification on (the default): a TLS error, with a hint
    p = ocisquash("images", f"docker://{h}/nothing/here:1")
    assert "TLS" in one_line_error(p) and "--tls-verify=false" in p.stderr
    assert "digest" in one_line_error(ocisquash(str(sample_docker.path), f"docker://{h}/x/y@sha256:" + "0" * 64,
                                                "--tls-verify=false"))
    assert "not a valid" in ocisquash("images", "docker://UPPER/Case:1").stderr


# ------------------------------------------------------------------------------ TLS + basic auth


def test_tls_and_basic_auth(tls_basic: registryd.Registry, cert_dir: Path, sample_docker: BuiltImage,
                            tmp_path: Path) -> None:
    h = tls_basic.host
    ref = f"docker://{h}/secure/app:1"
    creds = f"{USER}:{PASSWORD}"
    skopeo("copy", "-q", f"--dest-cert-dir={cert_dir}", f"--dest-creds={creds}",
           f"docker-archive:{sample_docker.path}", ref)
    tls = ["--cert-dir", str(cert_dir)]
    # verified TLS with our CA and --creds: squash there and back
    ok(ref, f"docker://{h}/secure/app:sq", *tls, "--creds", creds, "-q")
    back = tmp_path / "back"
    skopeo("copy", "-q", f"--src-cert-dir={cert_dir}", f"--src-creds={creds}", f"docker://{h}/secure/app:sq",
           f"oci:{back}:img")
    assert_same_rootfs(str(sample_docker.path), f"{back}:img", tmp_path)

    # no CA: the certificate is refused, in one line with a hint
    assert "TLS" in one_line_error(ocisquash("images", ref, "--creds", creds))
    # no credentials: authentication required; wrong ones: refused, and the password is never shown
    assert "authentication required" in one_line_error(
        ocisquash("images", ref, *tls, env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}))
    bad = ocisquash("--debug", "images", ref, *tls, "--creds", f"{USER}:wrong-Pa55word-XYZ")
    assert bad.returncode == 1
    assert "wrong-Pa55word-XYZ" not in bad.stderr + bad.stdout
    assert base64.b64encode(f"{USER}:wrong-Pa55word-XYZ".encode()).decode() not in bad.stderr
    # --tls-verify=false accepts the certificate without the CA
    ok("images", ref, "--tls-verify=false", "--creds", creds)

    # --authfile, $REGISTRY_AUTH_FILE and ${XDG_RUNTIME_DIR}/containers/auth.json (containers-auth.json)
    entry = {"auths": {h: {"auth": base64.b64encode(creds.encode()).decode()}}}
    af = tmp_path / "auth.json"
    af.write_text(json.dumps(entry))
    ok("images", ref, *tls, "--authfile", str(af))
    ok("images", ref, *tls, env={"REGISTRY_AUTH_FILE": str(af), "HOME": str(tmp_path)})
    xdg = tmp_path / "xdg"
    (xdg / "containers").mkdir(parents=True)
    (xdg / "containers" / "auth.json").write_text(json.dumps(entry))
    ok("images", ref, *tls, env={"XDG_RUNTIME_DIR": str(xdg), "HOME": str(tmp_path)})


def test_credential_helper_from_docker_config(tls_basic: registryd.Registry, cert_dir: Path,
                                              sample_docker: BuiltImage, tmp_path: Path) -> None:
    h = tls_basic.host
    ref = f"docker://{h}/helper/app:1"
    creds = f"{USER}:{PASSWORD}"
    skopeo("copy", "-q", f"--dest-cert-dir={cert_dir}", f"--dest-creds={creds}",
           f"docker-archive:{sample_docker.path}", ref)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    asked = tmp_path / "asked"
    helper = bindir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 1\nread server\necho "$server" >> {asked}\n'
        f'[ "$server" = "{h}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}\n'
        f"echo '{{\"ServerURL\":\"{h}\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    env = {"HOME": str(home), "PATH": f"{bindir}:{os.environ['PATH']}", "XDG_RUNTIME_DIR": str(tmp_path / "none")}
    for cfg in ({"credHelpers": {h: "test"}}, {"credsStore": "test"}):
        (home / ".docker" / "config.json").write_text(json.dumps(cfg))
        p = ok("images", ref, "--cert-dir", str(cert_dir), env=env)
        assert "helper/app" in p.stdout
        assert PASSWORD not in p.stdout + p.stderr
    assert asked.read_text().split() == [h, h]


# ------------------------------------------------------------------------------------ bearer tokens


def test_bearer_token_flow(token_registry: tuple[registryd.Registry, registryd.TokenServer],
                           trap_oci: BuiltImage, tmp_path: Path) -> None:
    reg, ts = token_registry
    h = reg.host
    creds = f"{USER}:{PASSWORD}"
    push(f"oci:{trap_oci.path}:latest", f"docker://{h}/tok/src:1", f"--dest-creds={creds}")
    before = reg.mark()
    issued = len(ts.issued)
    ok(f"docker://{h}/tok/src:1", f"docker://{h}/tok/out:1", "--from-layer", "3", "--tls-verify=false",
       "--creds", creds, "-q")
    # the token for the push carried pull on the source repository too: kept layers were mounted
    assert len(reg.mounts("tok/out", before)) == 2
    assert len(reg.uploads("tok/out", before)) == 2  # the new layer and the config
    # tokens are kept and reused: one per client and scope set, not one per request
    assert len(ts.issued) - issued <= 4
    grants = [a for t in ts.issued[issued:] for a in t["access"]]  # type: ignore[attr-defined]
    assert {"type": "repository", "name": "tok/src", "actions": ["pull"]} in grants
    back = pull(f"docker://{h}/tok/out:1", tmp_path / "back", f"--src-creds={creds}")
    assert_same_rootfs(f"{trap_oci.path}:latest", back, tmp_path)
    # anonymous: the token service refuses, one line, no traceback
    refused = ts.refused
    line = one_line_error(ocisquash("images", f"docker://{h}/tok/src:1", "--tls-verify=false",
                                    env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}))
    assert "token service refused" in line
    assert ts.refused > refused
    bad = ocisquash("images", f"docker://{h}/tok/src:1", "--tls-verify=false", "--creds", f"{USER}:nopeNOPE77")
    assert "nopeNOPE77" not in bad.stderr and bad.returncode == 1


# ----------------------------------------------------------------------- client rules, no registry


def _client(handler: object, ref: str = "docker://reg.example:5000/a/b:1") -> Client:
    return Client(parse(ref), RegistryOptions(), transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.time, "sleep", lambda s: None)


def test_retries_are_bounded_and_recover(no_sleep: None) -> None:
    calls: list[str] = []

    def flaky(req: httpx.Request) -> httpx.Response:
        calls.append(req.method)
        if len(calls) == 1:
            raise httpx.RemoteProtocolError("peer closed connection", request=req)
        if len(calls) in (2, 3):
            return httpx.Response(503 if len(calls) == 2 else 429, headers={"Retry-After": "1"})
        return httpx.Response(200, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})

    c = _client(flaky)
    assert c.has_blob("sha256:" + "a" * 64)
    assert len(calls) == 4

    always: list[int] = []

    def down(req: httpx.Request) -> httpx.Response:
        always.append(1)
        return httpx.Response(502)

    with pytest.raises(RegistryError, match="HTTP 502"):
        _client(down).has_blob("sha256:" + "a" * 64)
    assert len(always) == client.MAX_ATTEMPTS


def test_blob_download_resumes_with_range(no_sleep: None) -> None:
    data = bytes(range(256)) * 4096
    served: list[str | None] = []

    class Dropping(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield data[:100_000]
            raise httpx.ReadError("connection reset")

    def handler(req: httpx.Request) -> httpx.Response:
        rng = req.headers.get("range")
        served.append(rng)
        if rng is None:
            return httpx.Response(200, stream=Dropping())
        start = int(rng.split("=")[1].rstrip("-"))
        return httpx.Response(206, stream=httpx.ByteStream(data[start:]))

    f = _client(handler).open_blob("sha256:" + "b" * 64, "blob")
    got = f.read()
    assert got == data
    assert served == [None, "bytes=100000-"]


def test_manifest_over_4mib_refused() -> None:
    big = b"{" + b" " * (client.MAX_MANIFEST + 10) + b"}"

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=big, headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    with pytest.raises(FormatError, match="over the 4 MiB"):
        _client(handler).get_manifest("1", "application/json")


def test_status_errors_name_the_problem() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        code = {"/v2/a/b/manifests/gone": 404, "/v2/a/b/manifests/forbidden": 403}.get(req.url.path, 500)
        body = {"errors": [{"code": "MANIFEST_UNKNOWN" if code == 404 else "DENIED", "message": "x"}]}
        return httpx.Response(code, json=body)

    c = _client(handler)
    with pytest.raises(NotFound, match="manifest unknown: gone"):
        c.get_manifest("gone", "application/json")
    with pytest.raises(AuthError, match="denied"):
        c.get_manifest("forbidden", "application/json")


def test_refs_default_like_docker() -> None:
    r = parse("docker://busybox")
    assert (r.host, r.repo, r.reference, r.api_host) == ("docker.io", "library/busybox", "latest",
                                                         "registry-1.docker.io")
    r = parse("docker://localhost:5000/a/b@sha256:" + "c" * 64)
    assert (r.host, r.repo, r.tag, r.reference) == ("localhost:5000", "a/b", None, "sha256:" + "c" * 64)
    assert parse("docker://acme/app:1.2").repo == "acme/app"
    for bad in ("docker:///x", "docker://h.io/A/b", "docker://h.io/a:b:c!", "docker://h.io/a@sha256:12"):
        with pytest.raises(Exception, match="docker://"):
            parse(bad)


def test_auth_lookup_order_and_no_leaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = parse("docker://reg.example:5000/team/app:1")
    enc = base64.b64encode(b"u1:p1-secret").decode()
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps({"auths": {"https://reg.example:5000": {"auth": enc}}}))
    second.write_text(json.dumps({"auths": {"reg.example:5000/team": {"username": "u2", "password": "p2"}}}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(first))
    c = auth.find(ref, AuthOptions())
    assert c is not None and (c.username, c.password) == ("u1", "p1-secret")
    assert "p1-secret" not in repr(c) and "u1" not in repr(c)
    c = auth.find(ref, AuthOptions(authfile=str(second)))  # --authfile: that file alone
    assert c is not None and (c.username, c.password) == ("u2", "p2")
    c = auth.find(ref, AuthOptions(creds="u3:p3"))
    assert c is not None and c.username == "u3"
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    assert auth.find(ref, AuthOptions()) is None
    hub = tmp_path / ".docker"
    hub.mkdir()
    (hub / "config.json").write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": enc}}}))
    c = auth.find(parse("docker://library/busybox"), AuthOptions())
    assert c is not None and c.username == "u1"
    (tmp_path / "broken.json").write_text('{"auths": {"reg.example:5000": {"auth": "%%%p1-secret"}}}')
    with pytest.raises(AuthError) as e:
        auth.find(ref, AuthOptions(authfile=str(tmp_path / "broken.json")))
    assert "secret" not in str(e.value)


def test_bearer_challenge_parsing() -> None:
    scheme, p = auth.parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                                     'scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert p == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"}


def test_produced_blob_is_uploaded_in_chunks_as_it_is_produced(plain: registryd.Registry,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ocisquash.registry import sink as rsink

    monkeypatch.setattr(rsink, "CHUNK", 64 << 10)
    data = os.urandom(300 << 10)
    out = rsink.RegistrySink(parse(f"docker://{plain.host}/chunks/blob:1"),
                             Client(parse(f"docker://{plain.host}/chunks/blob:1"),
                                    RegistryOptions(tls_verify=False), push=True))
    before = plain.mark()
    seen_patches: list[int] = []

    def produce(w: object) -> None:
        for i in range(0, len(data), 50_000):
            w.write(data[i:i + 50_000])  # type: ignore[attr-defined]
            # a chunk goes out while the producer is still producing
            seen_patches.append(sum(1 for m, p, s in plain.requests()[before:] if m == "PATCH"))

    d, n = out.put_stream(produce)  # type: ignore[arg-type]
    assert n == len(data) and out.has(d)
    patches = [(m, s) for m, p, s in plain.requests()[before:] if m == "PATCH"]
    # a PATCH each time 64 KiB or more are buffered (after writes 2, 4 and 6), the rest with the PUT
    assert len(patches) == 3 and all(s == 202 for _, s in patches)
    assert seen_patches == [0, 1, 1, 2, 2, 3, 3]
    assert plain.uploads("chunks/blob", before) == [str(d)]
    blob = httpx.get(f"{plain.url}/v2/chunks/blob/blobs/{d}").content
    assert blob == data


def test_refused_chunks_fall_back_to_one_put(monkeypatch: pytest.MonkeyPatch) -> None:
    from ocisquash.registry import sink as rsink

    monkeypatch.setattr(rsink, "CHUNK", 1000)
    got: dict[str, bytes] = {}
    log: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        log.append(req.method)
        if req.method == "HEAD":
            return httpx.Response(404)
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": f"/v2/a/b/blobs/uploads/u{len(log)}"})
        if req.method == "PATCH":
            return httpx.Response(405)
        if req.method == "PUT":
            got[req.url.params["digest"]] = req.read()
            return httpx.Response(201)
        return httpx.Response(204)

    ref = parse("docker://reg.example:5000/a/b:1")
    out = rsink.RegistrySink(ref, Client(ref, RegistryOptions(), push=True, transport=httpx.MockTransport(handler)))
    data = os.urandom(5000)
    d, n = out.put_stream(lambda w: w.write(data))  # type: ignore[arg-type, func-returns-value]
    assert got == {str(d): data} and n == len(data)
    assert log.count("PATCH") == 1 and log.count("PUT") == 1


# ------------------------------------------------------------------------- --platform all (item 2)

def make_multi(trap: Path, layout: Path) -> None:
    """A copy of the trap layout with two image indexes: ``multi`` (the 5-layer image for linux/amd64
    and linux/arm64/v8, plus a BuildKit attestation manifest) and ``multi-base`` (its 2-layer parent,
    both platforms). The arm64 images differ only in their configs."""
    import shutil

    shutil.copytree(trap, layout)
    index = json.loads((layout / "index.json").read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}

    def platforms(tag: str, attest: bool) -> dict[str, object]:
        desc = by_tag[tag]
        man = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
        cfg = json.loads((layout / "blobs" / "sha256" / man["config"]["digest"][7:]).read_bytes())
        arm_cfg = dict(cfg, architecture="arm64", variant="v8")
        arm_man = dict(man, config=dict(man["config"], **_blob(layout, json.dumps(arm_cfg).encode())))
        entries = [
            {"mediaType": OCI_MANIFEST, "digest": desc["digest"], "size": desc["size"],
             "platform": {"architecture": cfg["architecture"], "os": "linux"},
             "annotations": {"org.example.platform-note": "native"}},
            {"mediaType": OCI_MANIFEST, **_blob(layout, json.dumps(arm_man).encode()),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ]
        if attest:
            statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": []}).encode()
            att_cfg = json.dumps({"architecture": "unknown", "os": "unknown", "config": {},
                                  "rootfs": {"type": "layers", "diff_ids": []}}).encode()
            att = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(layout, att_cfg)},
                   "layers": [{"mediaType": "application/vnd.in-toto+json", **_blob(layout, statement)}]}
            entries.append({"mediaType": OCI_MANIFEST, **_blob(layout, json.dumps(att).encode()),
                            "platform": {"architecture": "unknown", "os": "unknown"},
                            "annotations": {"vnd.docker.reference.digest": desc["digest"],
                                            "vnd.docker.reference.type": "attestation-manifest"}})
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}

    for tag, src, attest in (("multi", "latest", True), ("multi-base", "l2", False)):
        idx = json.dumps(platforms(src, attest)).encode()
        index["manifests"].append({"mediaType": OCI_INDEX, **_blob(layout, idx),
                                   "annotations": {"org.opencontainers.image.ref.name": tag}})
    (layout / "index.json").write_text(json.dumps(index))


def check_every_platform(ref: str, trap: BuiltImage, tmp_path: Path, *extra: str) -> dict[str, object]:
    """The squashed index at skopeo ``ref``: two platforms, annotations kept, no attestation, each
    platform 3 layers (2 kept + the squashed one) unpacking to the trap image's rootfs."""
    idx = json.loads(skopeo("inspect", "--raw", *extra, ref).stdout)
    plats = [(m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
             for m in idx["manifests"]]
    assert plats[1:] == [("linux", "arm64", "v8")] and len(plats) == 2
    assert idx["manifests"][0]["annotations"] == {"org.example.platform-note": "native"}
    for arch, variant in ((plats[0][1], None), ("arm64", "v8")):
        flags = ["--override-arch", arch] + (["--override-variant", variant] if variant else [])
        one = tmp_path / f"one-{arch}"
        skopeo("copy", "-q", *flags, *[e.replace("--tls-verify", "--src-tls-verify") for e in extra], ref,
               f"oci:{one}:img")
        man = json.loads(skopeo("inspect", "--raw", f"oci:{one}:img").stdout)
        assert len(man["layers"]) == 3
        cfg = json.loads(skopeo("inspect", "--config", "--raw", f"oci:{one}:img").stdout)
        assert cfg["architecture"] == arch
        assert_same_rootfs(f"{trap.path}:latest", f"{one}:img", tmp_path)
    return idx  # type: ignore[no-any-return]


def test_platform_all_in_files(trap_oci: BuiltImage, tmp_path: Path) -> None:
    multi = tmp_path / "multi"
    make_multi(trap_oci.path, multi)
    out = tmp_path / "out"
    rep = json.loads(ok(str(multi), str(out), "--image", "multi", "--platform", "all", "--parent", "multi-base",
                        "--tag", "multi:sq", "--json").stdout)
    assert [p["kept_layers"] for p in rep["platforms"]] == [2, 2]
    assert "dropped 1 attestation manifest" in rep["note"]
    check_every_platform(f"oci:{out}:sq", trap_oci, tmp_path)
    dry = json.loads(ok(str(multi), "--image", "multi", "--platform", "all", "--dry-run", "--json").stdout)
    assert [p["layers_after"] for p in dry["platforms"]] == [1, 1] and dry["manifest"] is None
    assert "needs one image" in ocisquash(str(multi), "--platform", "all", "--dry-run").stderr
    # a .tar output holds an index as an OCI layout tar; --format docker cannot
    assert "--format oci" in ocisquash(str(multi), str(tmp_path / "x.tar"), "--image", "multi", "--platform", "all",
                                       "--format", "docker").stderr


def test_platform_all_registry_to_registry(plain: registryd.Registry, trap_oci: BuiltImage, tmp_path: Path) -> None:
    h = plain.host
    multi = tmp_path / "multi"
    make_multi(trap_oci.path, multi)
    push(f"oci:{multi}:multi", f"docker://{h}/multi/app:1", "--all")
    push(f"oci:{multi}:multi-base", f"docker://{h}/multi/base:1", "--all")
    l2 = json.loads(skopeo("inspect", "--raw", f"oci:{trap_oci.path}:l2").stdout)
    kept = {ly["digest"] for ly in l2["layers"]}  # both platforms' parents have these layers
    assert len(kept) == 2
    before = plain.mark()
    ok(f"docker://{h}/multi/app:1", f"docker://{h}/multi/flat:1", "--platform", "all", "--parent",
       f"docker://{h}/multi/base:1", "--tls-verify=false", "-q")
    uploaded = plain.uploads("multi/flat", before)
    assert not set(uploaded) & kept
    # one squashed layer (the same bytes for both platforms: uploaded once) and two configs
    assert len(uploaded) == 3
    check_every_platform(f"docker://{h}/multi/flat:1", trap_oci, tmp_path, "--tls-verify=false")


def test_dropped_chunk_is_resynced_not_sent_twice(no_sleep: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATCH whose connection drops after the registry took it: the retry gets 416, the upload's
    status says the chunk is there, and the upload goes on from there."""
    from ocisquash.registry import sink as rsink

    monkeypatch.setattr(rsink, "CHUNK", 1000)
    have = bytearray()
    patches: list[int] = []
    done: dict[str, bytes] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "HEAD":
            return httpx.Response(404)
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/u1"})
        if req.method == "PATCH":
            body = req.read()
            start = int(req.headers["content-range"].split("-")[0])
            patches.append(start)
            if start != len(have):
                return httpx.Response(416)
            have.extend(body)
            if len(patches) == 1:
                raise httpx.RemoteProtocolError("server disconnected", request=req)
            return httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/u1"})
        if req.method == "GET":
            return httpx.Response(204, headers={"Range": f"0-{len(have) - 1}", "Location": "/v2/a/b/blobs/uploads/u1"})
        if req.method == "PUT":
            done[req.url.params["digest"]] = bytes(have) + req.read()
            return httpx.Response(201)
        return httpx.Response(204)

    ref = parse("docker://reg.example:5000/a/b:1")
    out = rsink.RegistrySink(ref, Client(ref, RegistryOptions(), push=True, transport=httpx.MockTransport(handler)))
    data = os.urandom(2500)

    def produce(w: object) -> None:
        for i in range(0, len(data), 1200):
            w.write(data[i:i + 1200])  # type: ignore[attr-defined]

    d, _ = out.put_stream(produce)  # type: ignore[arg-type]
    assert done == {str(d): data}
    assert patches == [0, 0, 1200]  # the first chunk sent twice, taken once


def test_mount_refused_falls_back_to_upload(no_sleep: None) -> None:
    from ocisquash.image import Layer
    from ocisquash.registry import sink as rsink

    log: list[tuple[str, str]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        log.append((req.method, str(req.url.copy_with(query=None).path) + ("?mount" if "mount" in req.url.params
                                                                             else "")))
        if req.method == "HEAD":
            return httpx.Response(404)
        if req.method == "POST":  # this registry never mounts: it opens an upload instead
            return httpx.Response(202, headers={"Location": "/v2/a/b/blobs/uploads/m1"})
        return httpx.Response(204)

    ref = parse("docker://reg.example:5000/a/b:1")
    out = rsink.RegistrySink(ref, Client(ref, RegistryOptions(), push=True, transport=httpx.MockTransport(handler)))
    digest = "sha256:" + "d" * 64
    from ocisquash.digest import Digest

    layer = Layer(0, Digest.parse(digest), 10, None, Digest.parse(digest), lambda: None, "layer",  # type: ignore[arg-type, return-value]
                  origin=rsink.Origin("reg.example:5000", "other/repo"))
    assert out.adopt_layer(layer) is False
    assert ("POST", "/v2/a/b/blobs/uploads/?mount") in log
    assert ("DELETE", "/v2/a/b/blobs/uploads/m1") in log  # the upload it opened is cancelled
    # another registry's layer is never offered for a mount
    layer.origin = rsink.Origin("elsewhere:5000", "other/repo")
    n = len(log)
    assert out.adopt_layer(layer) is False
    assert [m for m, _ in log[n:]] == ["HEAD"]


# ------------------------------------------------------- docker:// beside the file forms (main's rules)


def test_registry_out_from_a_pipe_and_from_the_layout_it_is_run_in(plain: registryd.Registry,
                                                                  sample_docker: BuiltImage, trap_oci: BuiltImage,
                                                                  tmp_path: Path) -> None:
    """Standard input is spooled to $TMPDIR for a registry OUT (it has no directory to spool beside), and
    an IN layout that is the working directory does not hold a relative ``docker://`` OUT (it is no path)."""
    h = plain.host
    work = tmp_path / "work"
    work.mkdir()
    with sample_docker.path.open("rb") as stdin:
        p = subprocess.run([*OCISQUASH, "-", f"docker://{h}/pipe/app:1", "--tls-verify=false", "-q"], stdin=stdin,
                           capture_output=True, text=True, timeout=300, cwd=work, check=False)
    assert p.returncode == 0, p.stderr
    assert list(work.iterdir()) == []  # nothing spooled in (or under "docker:/" of) the working directory
    assert len(manifest_of(f"docker://{h}/pipe/app:1")["layers"]) == 1  # type: ignore[arg-type]
    assert_same_rootfs(str(sample_docker.path), pull(f"docker://{h}/pipe/app:1", tmp_path / "pipe"), tmp_path)
    p = subprocess.run([*OCISQUASH, ".", f"docker://{h}/here/app:1", "--image", "latest", "--tls-verify=false",
                        "-q"], capture_output=True, text=True, timeout=300, cwd=trap_oci.path, check=False)
    assert p.returncode == 0, p.stderr
    assert_same_rootfs(f"{trap_oci.path}:latest", pull(f"docker://{h}/here/app:1", tmp_path / "here"), tmp_path)


def test_docker_transport_is_parsed_with_skopeos_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker://`` is a registry wherever IN and OUT are parsed, even beside a file named ``docker``
    (which FILE:REF would otherwise take it for); a pipe read for a registry OUT is spooled to $TMPDIR,
    not under a "directory" of the reference."""
    from ocisquash import spool, transports

    monkeypatch.chdir(tmp_path)
    (tmp_path / "docker").write_bytes(b"")
    ref = "docker://localhost:5000/app/x:1"
    assert transports.parse(ref) == transports.Ref(ref)
    assert transports.input_ref(ref, "other") == (ref, "other")
    assert transports.output_ref(ref, None, ["t"]) == (ref, None, ["t"])
    (tmp_path / "docker:" / "localhost:5000" / "app").mkdir(parents=True)
    assert spool.beside(ref) is None


def test_platform_all_takes_a_platform_from_the_config() -> None:
    """--platform all on a docker tarball: its image's platform is its config's, as --platform judges it."""
    rep = json.loads(ok("testdata/sample.docker.tar", "--platform", "all", "--dry-run", "--json").stdout)
    assert [p["image"] for p in rep["platforms"]] == ["docker.io/ocisquash/sample:latest [linux/amd64]"]


def test_platform_all_refuses_an_image_without_a_platform(tmp_path: Path) -> None:
    """An image whose index entry names no platform and whose config names no architecture has no
    platform to squash it for (nor to choose its parent by, nor to list in the index): an error."""
    from listing_inputs import Img, layer_tar, write_oci

    class NoArch(Img):
        def build(self) -> None:
            super().build()
            cfg = json.loads(self.config)
            cfg["architecture"] = ""
            self.config = json.dumps(cfg).encode()

    layout = write_oci(tmp_path / "lay", [NoArch(["x/app:1"], "2024-01-01T00:00:00Z",
                                                 [layer_tar({"a": b"1"}), layer_tar({"b": b"2"})])])
    line = one_line_error(ocisquash(str(layout), "--platform", "all", "--dry-run"))
    assert "names no platform" in line and "x/app:1" in line


def test_uploaded_chunks_are_not_held_while_gc_is_paused(plain: registryd.Registry,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A squash pauses the cyclic gc (merge.records.gc_paused); httpx's request and response objects
    # refer to each other, so a request that kept its chunk kept every chunk sent until the squash
    # ended: 85 MB of an upload held at once on the bench image (peak RSS 176 MB, now 78 MB).
    import gc
    import tracemalloc

    from ocisquash.registry import sink as rsink

    chunk = 256 << 10
    monkeypatch.setattr(rsink, "CHUNK", chunk)
    data = os.urandom(chunk)
    ref = parse(f"docker://{plain.host}/chunks/held:1")
    out = rsink.RegistrySink(ref, Client(ref, RegistryOptions(tls_verify=False), push=True))
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        d, n = out.put_stream(lambda w: [w.write(data) for _ in range(24)])  # type: ignore[arg-type, attr-defined, func-returns-value]
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert n == 24 * chunk and out.has(d)
    assert held < 4 * chunk, f"{held / chunk:.1f} chunks still held after the upload"
    # what is written waits as written, not copied again into one buffer (that took two chunks' room)
    assert peak < 1.8 * chunk, f"peak {peak / chunk:.1f} chunks"
