"""What a hostile or broken registry can make a ``docker://`` run spend: time, memory, and the shape of its
error; and the real-pull failures of issue 19 (class 7).

Each test starts misbehaving servers on loopback (``hostileregistry``) and runs the CLI as a child
process, measuring its wall time and its peak RSS (GNU ``time``'s ``%M`` of that child alone: a child
forked from pytest itself would count pytest's pages too). Every
refusal must be exit 1 with one error line (and at most a hint), within seconds (the deadline is set
small with ``--registry-timeout``), under 150 MB, with nothing written at OUT.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import registryd
import zstandard
from childrun import MAX_RSS_MB, Run, run_cli
from hostileregistry import (
    Conn,
    HostileServer,
    Request,
    TinyImage,
    TrickleProxy,
    Uploads,
    as_registry,
    serve_image,
    serve_index,
    tiny_image,
    tiny_index,
)

from ocisquash.registry import bounds

TIMEOUT = "3"  # --registry-timeout for these tests: each stall must end in a few seconds
MANIFEST = "/v2/a/b/manifests/"
BLOBS = "/v2/a/b/blobs/"
GET = ("GET",)


def refused(r: Run, max_seconds: float) -> str:
    """``r`` failed as a bad registry must make it fail: exit 1, one error line (a hint at most), within
    ``max_seconds``, under ``MAX_RSS_MB``. Returns the error line."""
    assert r.code == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("error:"), r.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint:")), r.stderr
    assert r.seconds < max_seconds, f"took {r.seconds:.1f} s: {r.stderr}"
    assert r.rss_mb < MAX_RSS_MB, f"peak RSS {r.rss_mb:.0f} MB: {r.stderr}"
    return lines[0]


def pull(server: HostileServer, out: Path, *extra: str) -> Run:
    """Squash ``docker://SERVER/a/b:1`` into the file ``out``, over plain HTTP."""
    return run_cli(f"docker://{server.netloc}/a/b:1", str(out), "--tls-verify=false",
                   "--registry-timeout", TIMEOUT, "-q", *extra)


def on(path_part: str, answer: Callable[[Request, Conn], None],
       methods: tuple[str, ...] = ("GET", "HEAD")) -> Callable[[Request, Conn], bool]:
    """An ``override`` that answers requests whose path holds ``path_part`` with ``answer`` (a body is
    sent to a GET: a HEAD is answered by the image, its manifest then fetched with a GET)."""
    def override(req: Request, conn: Conn) -> bool:
        if path_part not in req.path or req.method not in methods:
            return False
        answer(req, conn)
        conn.close()
        return True
    return override


def endless(status: int, headers: dict[str, str] | None = None) -> Callable[[Request, Conn], None]:
    """An answer whose body never ends (a huge Content-Length, 64 KiB pieces as fast as they go)."""
    def answer(req: Request, conn: Conn) -> None:
        hdrs = {"Content-Length": str(1 << 40), "Content-Type": "application/json", **(headers or {})}
        conn.send(f"HTTP/1.1 {status} X\r\n".encode() + b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items())
                  + b"\r\n" + b'{"errors":[')
        conn.stream(itertools.repeat(b"x" * 65536), limit=20)
    return answer


@functools.cache
def bomb(encoding: str) -> bytes:
    """512 MiB of JSON-ish spaces, compressed: a manifest bomb of a few hundred KiB (made once: 7 s)."""
    piece = b" " * (1 << 20)
    z: Any = zstandard.ZstdCompressor(level=3).compressobj() if encoding == "zstd" else \
        zlib.compressobj(6, zlib.DEFLATED, 31)
    return b"".join([z.compress(b"{"), *(z.compress(piece) for _ in range(512)), z.compress(b"}"), z.flush()])


def layer_of(img: TinyImage) -> str:
    return next(d for d, b in img.blobs.items() if b[:2] == b"\x1f\x8b")


def config_of(img: TinyImage) -> str:
    return next(d for d, b in img.blobs.items() if b[:1] == b"{")


@pytest.fixture
def out(tmp_path: Path) -> Iterator[Path]:
    p = tmp_path / "out.tar"
    yield p
    assert not p.exists() and not any(tmp_path.iterdir()), "a failed run left something at OUT"


# ---------------------------------------------------------------------------------- class 4: bodies


@pytest.mark.parametrize("shape", ["endless 503", "endless 401", "endless 404", "huge token",
                                   "gzip bomb", "zstd bomb", "gzip blob bomb"])
def test_every_body_read_is_capped(shape: str, out: Path) -> None:
    img = tiny_image()
    layer = layer_of(img)
    token_path = "/token"
    if shape == "endless 503":
        override = on(MANIFEST, endless(503), GET)
    elif shape == "endless 401":
        override = on(MANIFEST, endless(401), GET)
    elif shape == "endless 404":
        override = on(MANIFEST, endless(404), GET)
    elif shape == "huge token":
        def ask(req: Request, conn: Conn) -> None:
            conn.respond(401, b"", {"WWW-Authenticate": f'Bearer realm="http://{req.server}{token_path}"'})
        override_manifest, override_token = on(MANIFEST, ask, GET), on(token_path, endless(200))
        def override(req: Request, conn: Conn) -> bool:
            return override_token(req, conn) or override_manifest(req, conn)
    elif shape in ("gzip bomb", "zstd bomb"):
        data = bomb(shape.split()[0])
        enc = "gzip" if shape == "gzip bomb" else "zstd"
        override = on(MANIFEST, lambda req, conn: conn.respond(200, data, {
            "Content-Encoding": enc, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}), GET)
    else:  # a layer blob sent gzip-encoded on top: decoded in pieces, stopped at the descriptor's size
        data = bomb("gzip")
        override = on(BLOBS + layer, lambda req, conn: conn.respond(200, data, {"Content-Encoding": "gzip"}))
    with HostileServer(serve_image(img, override=override)) as server:
        line = refused(pull(server, out), 30)
    assert server.netloc in line
    expected = {"endless 503": "HTTP 503", "endless 401": "authentication", "endless 404": "manifest unknown",
                "huge token": "token service: the response is over 1 MiB", "gzip bomb": "over the 4 MiB",
                "zstd bomb": "Content-Encoding 'zstd'", "gzip blob bomb": "larger than its descriptor"}[shape]
    assert expected in line


# ---------------------------------------------------------------------------------- class 5: time


def trickled(head: bytes, body: bytes = b"") -> Callable[[Request, Conn], None]:
    """An answer sent a byte every half second: ``head`` at once and ``body`` trickled, or (no body)
    ``head`` trickled."""
    def answer(req: Request, conn: Conn) -> None:
        if body:
            conn.send(head)
        conn.trickle(body or head, every=0.5, limit=25)
    return answer


def test_every_request_has_a_deadline(out: Path) -> None:
    img = tiny_image()
    layer = layer_of(img)
    man_head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n"
                f"Content-Length: {len(img.manifest)}\r\n\r\n").encode()
    blob = img.blobs[layer]
    blob_head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(blob)}\r\n\r\n".encode()

    def silent(req: Request, conn: Conn) -> None:
        time.sleep(25)

    shapes: dict[str, Callable[[Request, Conn], bool]] = {
        "status line": on(MANIFEST, trickled(b"HTTP/1.1 200 OK\r\n" * 40)),
        "headers": on(MANIFEST, trickled(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: 1\r\n" * 200)),
        "manifest": on(MANIFEST, trickled(man_head, img.manifest), GET),
        "blob": on(BLOBS + layer, trickled(blob_head, blob)),
        "silent": on(MANIFEST, silent),
    }
    for shape, override in shapes.items():
        with HostileServer(serve_image(img, override=override)) as server:
            t0 = time.monotonic()
            line = refused(pull(server, out), 20)
            assert "timed out" in line, (shape, line)
            assert server.netloc in line, line
            assert time.monotonic() - t0 >= 2.5, (shape, "cut off before the deadline")


def test_a_trickled_tls_handshake_is_cut_off(tls: tuple[tuple[Path, Path], Path], out: Path) -> None:
    """A handshake that trickles ends with the deadline (ssl bounds a handshake's waits in sum by the
    socket's timeout, which the budget sets)."""
    cert, certs = tls
    with HostileServer(serve_image(tiny_image()), tls=cert) as server, TrickleProxy(server.netloc) as proxy:
        r = run_cli(f"docker://{proxy.netloc}/a/b:1", str(out), "--cert-dir", str(certs),
                    "--registry-timeout", TIMEOUT, "-q")
    line = refused(r, 20)
    assert "timed out" in line and "handshake" in line and proxy.netloc in line


def test_a_registry_output_that_stops_answering_is_cut_off_too() -> None:
    """An upload the registry takes and then never answers: the deadline ends it; no tag is written."""
    img = tiny_image()
    store = Uploads()
    pushes = as_registry(store)

    def stall(req: Request, conn: Conn) -> None:
        if req.method == "PUT" and "digest=" in req.query:
            time.sleep(25)  # took the blob, never says so
            return
        pushes(req, conn)

    with HostileServer(serve_image(img)) as src, HostileServer(stall, host="127.0.0.2") as dst:
        r = run_cli(f"docker://{src.netloc}/a/b:1", f"docker://{dst.netloc}/c/d:1", "--tls-verify=false",
                    "--registry-timeout", TIMEOUT, "-q")
    line = refused(r, 20)
    assert "timed out" in line and dst.netloc in line
    assert store.manifests == {}


def test_a_slow_blob_that_moves_is_not_cut_off(tmp_path: Path) -> None:
    """A blob that takes longer than the deadline but keeps moving (over 1 KiB/s) arrives."""
    img = tiny_image(files={"big.bin": os.urandom(40_000)})
    layer = layer_of(img)
    blob = img.blobs[layer]

    def slow(req: Request, conn: Conn) -> None:  # ~5.5 s at ~8 KiB/s: longer than the 3 s deadline
        conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {len(blob)}\r\n\r\n".encode())
        conn.trickle(blob, every=0.5, step=4096, limit=25)

    dest = tmp_path / "out.tar"
    with HostileServer(serve_image(img, override=on(BLOBS + layer, slow))) as server:
        r = pull(server, dest)
    assert r.code == 0, r.stderr
    assert r.seconds > 4 and dest.exists()


# ---------------------------------------------------------------------------------- class 6: one line


def test_transport_and_url_errors_are_one_line(out: Path) -> None:
    img = tiny_image()

    def redirect(to: str) -> Callable[[Request, Conn], None]:
        return lambda req, conn: conn.respond(302, b"", {"Location": to.replace("SELF", req.server)})

    def challenge(realm: str) -> Callable[[Request, Conn], None]:
        return lambda req, conn: conn.respond(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}"'})

    def encoded(enc: str, body: bytes) -> Callable[[Request, Conn], None]:
        return lambda req, conn: conn.respond(200, body, {
            "Content-Encoding": enc, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})

    shapes = {
        "redirect loop": redirect("http://SELF/v2/a/b/manifests/1"),
        "invalid Location": redirect("http://[zz]/x"),
        "Location to host ..": redirect("http://..:5000/x"),
        "Location to an invalid IDNA host": redirect("http://xn--zz-.com/x"),
        "Location ftp": redirect("ftp://SELF/x"),
        "invalid realm": challenge("http://[::1/token"),
        "realm on host ..": challenge("http://../token"),
        "realm without a scheme": challenge("token"),
        "bad Content-Encoding": encoded("br", img.manifest),
        "gzip that is not": encoded("gzip", img.manifest),
        "bad Content-Encoding on an error body": lambda req, conn: conn.respond(
            404, b"{}", {"Content-Encoding": "gzip"}),
        "not HTTP": lambda req, conn: conn.send(b"SSH-2.0-OpenSSH\r\n\r\n"),
    }
    for shape, answer in shapes.items():
        with HostileServer(serve_image(img, override=on(MANIFEST, answer, GET))) as server:
            line = refused(pull(server, out), 20)
        assert server.netloc in line and "manifest" in line, (shape, line)


def test_a_registry_named_dotdot_is_one_line(out: Path) -> None:
    line = refused(run_cli("docker://../a/b:1", str(out), "--registry-timeout", TIMEOUT, "-q"), 20)
    assert ".." in line


# ---------------------------------------------------------------------------------- class 7: real pulls


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Path, Path], Path]:
    ca = registryd.make_ca(tmp_path_factory.mktemp("ca"))
    cert = ca.issue("server")
    certs = tmp_path_factory.mktemp("certs.d")
    (certs / "ca.crt").write_bytes(ca.ca_crt.read_bytes())
    return cert, certs


def test_a_config_over_16_kib_is_read_whole_over_tls(tls: tuple[tuple[Path, Path], Path], tmp_path: Path) -> None:
    img = tiny_image(config_padding=40_000)
    cert, certs = tls
    with HostileServer(serve_image(img), tls=cert) as server:
        r = run_cli("images", f"docker://{server.netloc}/a/b:1", "--cert-dir", str(certs),
                    "--registry-timeout", TIMEOUT, "--format", "json")
    assert r.code == 0, r.stderr
    config = config_of(img)
    assert json.loads(r.stdout)["ID"] == config.split(":")[1][:12]  # the config read whole, and verified


def test_platform_all_writes_every_entry_of_a_shared_manifest(tmp_path: Path) -> None:
    img = tiny_image()
    index = tiny_index(img, ["linux/amd64", "linux/arm64"])
    dest = tmp_path / "out"
    with HostileServer(serve_index(index, img)) as server:
        r = run_cli(f"docker://{server.netloc}/a/b:1", str(dest), "--platform", "all", "--format", "oci-dir",
                    "--tls-verify=false", "--registry-timeout", TIMEOUT, "-q")
    assert r.code == 0, r.stderr
    top = json.loads((dest / "index.json").read_text())
    assert len(top["manifests"]) == 1
    d = top["manifests"][0]["digest"].split(":")[1]
    written = json.loads((dest / "blobs" / "sha256" / d).read_text())
    platforms = sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in written["manifests"])
    assert platforms == ["linux/amd64", "linux/arm64"]
    assert len({m["digest"] for m in written["manifests"]}) == 1  # squashed once, named by both entries


def test_images_fetches_a_shared_config_once(tmp_path: Path) -> None:
    img = tiny_image()
    config = config_of(img)
    index = tiny_index(img, ["linux/amd64", "linux/arm64", "linux/ppc64le"])
    with HostileServer(serve_index(index, img)) as server:
        r = run_cli("images", f"docker://{server.netloc}/a/b:1", "--tls-verify=false",
                    "--registry-timeout", TIMEOUT, "--format", "json")
    assert r.code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3
    gets = [q for q in server.requests if q.method == "GET" and q.path == BLOBS + config]
    assert len(gets) == 1
    # and the tag is resolved by a HEAD (its headers kept whole), the index then fetched by digest only
    assert [q.method for q in server.requests if q.path == MANIFEST + "1"] == ["HEAD"]


def test_a_refused_second_tag_says_which_tags_were_written(tmp_path: Path) -> None:
    img = tiny_image()
    store = Uploads(refuse_tags=("second",))
    with HostileServer(serve_image(img)) as src, HostileServer(as_registry(store), host="127.0.0.2") as dst:
        r = run_cli(f"docker://{src.netloc}/a/b:1", f"docker://{dst.netloc}/c/d:first", "--tag", "second",
                    "--tag", "third", "--tls-verify=false", "--registry-timeout", TIMEOUT, "-q")
    line = refused(r, 30)
    assert "tags written: first; not written: second, third" in line
    assert "first" in store.manifests and "second" not in store.manifests and "third" not in store.manifests



# ---------------------------------------------------------------------------------- the pure parts


def test_budget_deadline_and_progress_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(bounds.time, "monotonic", lambda: now[0])
    deadline = bounds.Budget(3)
    now[0] += 2.5
    assert deadline.wait() == pytest.approx(0.5)
    deadline.moved(1 << 30)  # bytes do not extend a deadline
    now[0] += 0.5
    with pytest.raises(httpcore.ReadTimeout, match="within 3 s"):
        deadline.wait()

    blob = bounds.Budget(3)
    blob.to_progress()
    blob.moved(bounds.MIN_RATE * 3)  # a window's worth: a new window opens
    now[0] += 3
    assert blob.wait() == pytest.approx(3)
    blob.moved(bounds.MIN_RATE * 3 - 1)  # one byte short
    now[0] += 3
    with pytest.raises(httpcore.ReadTimeout, match="less than 1 KiB/s for 3 s"):
        blob.wait()


def test_chunks_decode_a_bomb_a_piece_at_a_time_and_refuse_other_encodings() -> None:
    def response(body: bytes, encoding: str) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": encoding}, stream=httpx.ByteStream(body))

    pieces = bounds.chunks(response(bomb("gzip"), "gzip"), "here")
    sizes = [len(next(pieces)) for _ in range(8)]
    assert max(sizes) <= bounds.PIECE and sum(sizes) > 4 * bounds.PIECE
    with pytest.raises(bounds.RegistryError, match="over 1 MiB"):
        bounds.read_body(response(gzip.compress(b" " * (2 << 20)), "gzip"), 1 << 20, "here")
    assert bounds.read_body(response(gzip.compress(b"{}" * 5), "x-gzip"), 100, "here") == b"{}" * 5
    with pytest.raises(bounds.RegistryError, match="Content-Encoding 'zstd'"):
        bounds.read_body(response(zstandard.ZstdCompressor().compress(b"{}"), "zstd"), 100, "here")


def test_registry_timeout_must_be_a_positive_number(tmp_path: Path) -> None:
    for bad in ("0", "-1", "nan", "inf"):
        r = run_cli("images", "docker://127.0.0.1:9/a/b:1", "--registry-timeout", bad)
        assert r.code == 2 and "--registry-timeout" in r.stderr, r.stderr
