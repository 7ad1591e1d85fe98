"""Hostile inputs: a named corpus with the exact error each must give, and property-based fuzzing.

The fuzz tests mutate valid inputs (outer tarballs, JSON documents, compressed streams, layer tars)
and run the readers to the end; any exception that is not an ``OcisquashError`` is a bug.
The corpus saved by the atheris harness (``testdata/corpus/<target>/``) is replayed here too.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fuzz import images as I
from fuzz.harness import exercise_decompress, exercise_source, read_all
from fuzz.targets import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layertar import Entry, f, hl, inputs, layer, sym

from ocisquash import limits, merge
from ocisquash.errors import DigestMismatch, FormatError, LimitExceeded, OcisquashError, UnsafePath
from ocisquash.sources import open_source

CORPUS = Path(__file__).resolve().parent.parent / "testdata" / "corpus"


@pytest.fixture(autouse=True)
def fresh_limits() -> Iterator[None]:
    limits.reset()
    yield
    limits.reset()


def load(path: Path) -> int:
    with open_source(str(path)) as src:
        img = src.choose()
        img.check_consistent()
        return sum(read_all(ly.uncompressed()) for ly in img.layers)


def ti(name: str, type_: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mode, t.mtime = type_, link, 0o644, I.MTIME
    return t


def docker_with(extra: list[tuple[tarfile.TarInfo, bytes | None]], drop: str | None = None) -> bytes:
    m = I.members_docker()
    pairs: list[tuple[tarfile.TarInfo, bytes | None]] = [(ti(k), v) for k, v in m.items() if k != drop]
    return I.tar_of(pairs + extra)


# ------------------------------------------------------------------------------------------ outer tars

def _layer_path() -> str:
    return str(json.loads(I.members_docker()["manifest.json"])[0]["Layers"][0])


OUTER_CASES: dict[str, tuple[Callable[[], bytes], type[OcisquashError], str]] = {
    "traversal": (lambda: docker_with([(ti("../evil"), b"x")]), UnsafePath, "contains '..'"),
    "absolute": (lambda: docker_with([(ti("/etc/evil"), b"x")]), UnsafePath, "is absolute"),
    "backslash": (lambda: docker_with([(ti("a\\..\\b"), b"x")]), UnsafePath, "NUL or a backslash"),
    "duplicate": (lambda: docker_with([(ti("./manifest.json"), b"[]")]), UnsafePath, "appears twice"),
    "symlink-escape": (lambda: docker_with([(ti(_layer_path(), tarfile.SYMTYPE, "../../../etc/passwd"), None)],
                                           drop=_layer_path()), UnsafePath, "symlink leaving the archive"),
    "symlink-absolute": (lambda: docker_with([(ti(_layer_path(), tarfile.SYMTYPE, "/etc/passwd"), None)],
                                             drop=_layer_path()), UnsafePath, "symlink to an absolute path"),
    "symlink-cycle": (lambda: docker_with([(ti(_layer_path(), tarfile.SYMTYPE, "x"), None),
                                           (ti(_layer_path().rsplit("/", 1)[0] + "/x", tarfile.SYMTYPE,
                                               _layer_path().rsplit("/", 1)[1]), None)],
                                          drop=_layer_path()), UnsafePath, "too many links"),
    "hardlink-escape": (lambda: docker_with([(ti("h", tarfile.LNKTYPE, "../../etc/shadow"), None)]),
                        UnsafePath, "contains '..'"),
    "not-utf8-manifest": (lambda: docker_with([(ti("manifest.json"), b'[{"Config":"\xff"}]')], drop="manifest.json"),
                          FormatError, "not UTF-8 JSON"),
    "truncated-outer": (lambda: I.tar_of(I.members_docker())[:3000], FormatError, "unexpected end of data"),
}


@pytest.mark.parametrize("case", sorted(OUTER_CASES))
def test_hostile_outer_tar(case: str, tmp_path: Path) -> None:
    build, cls, phrase = OUTER_CASES[case]
    p = tmp_path / "in.tar"
    p.write_bytes(build())
    with pytest.raises(cls) as e:
        load(p)
    assert phrase in str(e.value)


def test_non_utf8_member_names_are_kept_apart(tmp_path: Path) -> None:
    """A member name that is not UTF-8 is just another name: the image beside it reads fine."""
    pairs = [(ti(k), v) for k, v in I.members_docker().items()]
    raw = I.tar_of([*pairs, (ti("blobs/caf\udce9"), b"x")])
    assert b"caf\xe9" in raw
    p = tmp_path / "in.tar"
    p.write_bytes(raw)
    assert load(p) > 0


# ------------------------------------------------------------------------------------------ digests, sizes, streams

def _oci_tar(tmp_path: Path, mutate: Callable[[dict[str, bytes]], None], codec: str = "gzip") -> Path:
    m = I.members_oci(codec=codec)
    mutate(m)
    p = tmp_path / "o.tar"
    p.write_bytes(I.tar_of(m))
    return p


def _manifest(m: dict[str, bytes]) -> tuple[str, dict]:  # type: ignore[type-arg]
    d = json.loads(m["index.json"])["manifests"][0]["digest"][7:]
    return f"blobs/sha256/{d}", json.loads(m[f"blobs/sha256/{d}"])


def _relink(m: dict[str, bytes], man: dict) -> None:  # type: ignore[type-arg]
    raw = I.jbytes(man)
    m[f"blobs/sha256/{I.sha(raw)[7:]}"] = raw
    idx = json.loads(m["index.json"])
    idx["manifests"][0].update(digest=I.sha(raw), size=len(raw))
    m["index.json"] = I.jbytes(idx)


def _layer_blob(m: dict[str, bytes], i: int = 0) -> str:
    return "blobs/sha256/" + _manifest(m)[1]["layers"][i]["digest"][7:]


def _swap_layer(m: dict[str, bytes], blob: bytes) -> None:
    """Put ``blob`` in place of layer 0 with a correct descriptor (the diff ID stays the old one)."""
    _, man = _manifest(m)
    m[f"blobs/sha256/{I.sha(blob)[7:]}"] = blob
    man["layers"][0].update(digest=I.sha(blob), size=len(blob))
    _relink(m, man)


def test_digest_lie(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        k = _layer_blob(m)
        m[k] = m[k][:-1] + bytes([m[k][-1] ^ 1])
    with pytest.raises(DigestMismatch, match="content hashes to"):
        load(_oci_tar(tmp_path, mutate))


def test_size_lie_longer(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        m[_layer_blob(m)] += b"\0" * 10
    with pytest.raises(DigestMismatch, match="larger than its descriptor's size"):
        load(_oci_tar(tmp_path, mutate))


def test_size_lie_shorter(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        k = _layer_blob(m)
        m[k] = m[k][:-10]
    with pytest.raises(DigestMismatch, match="truncated"):
        load(_oci_tar(tmp_path, mutate))


def test_diff_id_lie(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        _swap_layer(m, gzip.compress(I.layer_tar({"other": b"content"}), mtime=0))
    with pytest.raises(DigestMismatch, match="diff ID"):
        load(_oci_tar(tmp_path, mutate))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_truncated_compressed_stream(tmp_path: Path, codec: str) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        blob = m[_layer_blob(m)]
        _swap_layer(m, blob[: len(blob) // 2])
    with pytest.raises(FormatError, match=f"corrupt {codec} data"):
        load(_oci_tar(tmp_path, mutate, codec))


def test_media_type_lies_about_compression(tmp_path: Path) -> None:
    def mutate(m: dict[str, bytes]) -> None:
        _swap_layer(m, I.default_layers()[0])  # a plain tar under a +gzip media type
    with pytest.raises(FormatError, match="its media type says gzip but its bytes are none"):
        load(_oci_tar(tmp_path, mutate))


def test_cyclic_index_cannot_pass_digest_checks(tmp_path: Path) -> None:
    """An index naming itself (a cycle needs a digest lie): refused before any walk."""
    def mutate(m: dict[str, bytes]) -> None:
        fake = "sha256:" + "ab" * 32
        body = I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_INDEX,
                         "manifests": [{"mediaType": I.OCI_INDEX, "digest": fake, "size": 10}]})
        m["blobs/sha256/" + "ab" * 32] = body
        m["index.json"] = I.jbytes({"schemaVersion": 2, "manifests": [
            {"mediaType": I.OCI_INDEX, "digest": fake, "size": len(body)}]})
    with pytest.raises(DigestMismatch, match="does not match its content"):
        load(_oci_tar(tmp_path, mutate))


def test_index_fan_out_is_capped(tmp_path: Path) -> None:
    """Regression: one child listed 40 times per level, 6 levels: 40^6 visits hung open_source."""
    m = I.members_oci()
    top = json.loads(m["index.json"])["manifests"][0]
    desc = {k: top[k] for k in ("mediaType", "digest", "size")}
    for _ in range(6):
        idx = I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_INDEX, "manifests": [desc] * 40})
        m[f"blobs/sha256/{I.sha(idx)[7:]}"] = idx
        desc = {"mediaType": I.OCI_INDEX, "digest": I.sha(idx), "size": len(idx)}
    m["index.json"] = I.jbytes({"schemaVersion": 2, "manifests": [desc]})
    p = tmp_path / "fan.tar"
    p.write_bytes(I.tar_of(m))
    with (limits.scoped({"max_images": 500}),
          pytest.raises(LimitExceeded, match=r"more than 500 manifests in all \(cap max_images\)")):
        open_source(str(p))


def test_zstd_bomb(tmp_path: Path) -> None:
    """A few KB of zstd that would expand to 200 MiB: stopped at the default ratio, past 64 MiB."""
    ti_ = tarfile.TarInfo("z")
    ti_.size = 200 << 20
    head = ti_.tobuf(tarfile.PAX_FORMAT)
    import zstandard

    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [cobj.compress(head)]
    chunk = bytes(1 << 20)
    for _ in range(200):
        parts.append(cobj.compress(chunk))
    parts.append(cobj.compress(bytes(1024)))
    parts.append(cobj.flush())
    blob = b"".join(parts)
    assert len(blob) < 100_000

    def mutate(m: dict[str, bytes]) -> None:
        _, man = _manifest(m)
        m[f"blobs/sha256/{I.sha(blob)[7:]}"] = blob
        man["layers"][0].update(digest=I.sha(blob), size=len(blob), mediaType=I.OCI_LAYER + "+zstd")
        _relink(m, man)
    with pytest.raises(LimitExceeded, match="a decompression bomb"):
        load(_oci_tar(tmp_path, mutate))


# ------------------------------------------------------------------------------------------ layer tars (merge)

def _pax_record(key: str, value: str) -> bytes:
    rec = f" {key}={value}\n".encode()
    n = len(rec) + 1
    while len(str(n)) + len(rec) != n:
        n += 1
    return str(n).encode() + rec


LAYER_CASES: dict[str, tuple[Callable[[], bytes], type[OcisquashError], str]] = {
    "traversal": (lambda: layer(f("../etc/passwd", b"x")), UnsafePath, "escapes the root"),
    "deep-traversal": (lambda: layer(f("a/../../x", b"x")), UnsafePath, "escapes the root"),
    "hardlink-escape": (lambda: layer(f("a", b"x"), hl("b", "../../etc/shadow")), UnsafePath, "escapes the root"),
    "whiteout-dot": (lambda: layer(f(".wh..", b"")), UnsafePath, "names no file in its directory"),
    "whiteout-dotdot": (lambda: layer(f("a/.wh...", b"")), UnsafePath, "names no file in its directory"),
    "whiteout-empty": (lambda: layer(f("a/.wh.", b"")), UnsafePath, "names no file in its directory"),
    "truncated": (lambda: layer(f("a", b"x" * 2000))[:1200], FormatError, "truncated tar"),
    "huge-pax": (lambda: layer(Entry("p", data=b"x", pax={"comment": "c" * (1 << 20)})), LimitExceeded,
                 "(cap max_pax_header)"),
    "huge-gnu-longname": (lambda: layer(f("g/" + "n" * (1 << 20), b"x"), fmt=tarfile.GNU_FORMAT), LimitExceeded,
                          "(cap max_pax_header)"),
    "bad-checksum": (lambda: (lambda t: t[:148] + b"0000000\0" + t[156:])(layer(f("a", b"x"))), FormatError,
                     "checksum"),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_hostile_layer(case: str) -> None:
    build, cls, phrase = LAYER_CASES[case]
    with pytest.raises(cls) as e:
        merge.plan(inputs([build()]), 0)
    assert phrase in str(e.value)


def test_layer_symlink_escape_stays_inside() -> None:
    """``l -> ../../../tmp`` then ``l/x``: resolved inside the rootfs (clamped at /), never an error."""
    plan = merge.plan(inputs([layer(sym("l", "../../../tmp"), f("l/x", b"x"))]), 0)
    out = io.BytesIO()
    merge.write(plan, inputs([layer(sym("l", "../../../tmp"), f("l/x", b"x"))]), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        names = [m.name for m in tf]
    assert "tmp/x" in [n.rstrip("/") for n in names], names
    assert not any(n.startswith(("/", "..")) for n in names)


def test_layer_duplicates_and_non_utf8_names() -> None:
    tars = [layer(f("a", b"1"), f("a", b"2"), Entry("caf\udce9", data=b"x"))]
    plan = merge.plan(inputs(tars), 0)
    out = io.BytesIO()
    merge.write(plan, inputs(tars), out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), encoding="utf-8", errors="surrogateescape") as tf:
        members = {m.name: m for m in tf}
        assert tf.extractfile(members["a"]).read() == b"2"  # type: ignore[union-attr]
    assert "caf\udce9" in members


# ------------------------------------------------------------------------------------------ fuzzing (hypothesis)

# OCISQUASH_FUZZ_EXAMPLES raises the count for a longer hunt.
FUZZ = settings(max_examples=int(os.environ.get("OCISQUASH_FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=list(HealthCheck), database=None)


def _seeds() -> dict[str, bytes]:
    return {
        "docker": I.tar_of(I.members_docker()),
        "docker-gz": gzip.compress(I.tar_of(I.members_docker(codec="gzip")), mtime=0),
        "oci-gzip": I.tar_of(I.members_oci()),
        "oci-zstd": I.tar_of(I.members_oci(codec="zstd")),
    }


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "zero"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "zero":
            buf[pos : pos + draw(st.integers(1, 1024))] = bytes(min(1024, len(buf) - pos))
    return bytes(buf)


def only_ours(fn: Callable[[], object]) -> None:
    with contextlib.suppress(OcisquashError):
        fn()


@pytest.mark.parametrize("seed", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_fuzz_outer_bytes(seed: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    raw = data.draw(mutated(SEEDS[seed]))
    p = tmp_path_factory.mktemp("fz") / "in.tar"
    p.write_bytes(raw)
    only_ours(lambda: exercise_source(str(p)))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12,
)


def _json_paths(obj: object, path: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, (*path, i))


def _replace(obj: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        return {**obj, head: _replace(obj[head], rest, value)}  # type: ignore[index]
    assert isinstance(obj, list)
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(obj)]


@pytest.mark.parametrize("doc", ["docker-manifest", "docker-config", "oci-index"])
@FUZZ
@given(data=st.data())
def test_fuzz_json_documents(doc: str, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Replace one value anywhere in a JSON document (not digest-checked) with arbitrary JSON."""
    if doc == "oci-index":
        m, key = I.members_oci(), "index.json"
    else:
        m = I.members_docker()
        items = json.loads(m["manifest.json"])
        m["config.json"] = m.pop(items[0]["Config"])  # a name that claims no digest, so it gets parsed
        items[0]["Config"] = "config.json"
        m["manifest.json"] = I.jbytes(items)
        key = "manifest.json" if doc == "docker-manifest" else "config.json"
    obj = json.loads(m[key])
    path = data.draw(st.sampled_from(list(_json_paths(obj))))
    m[key] = json.dumps(_replace(obj, path, data.draw(JSON))).encode()
    p = tmp_path_factory.mktemp("fz") / "in.tar"
    p.write_bytes(I.tar_of(m))
    only_ours(lambda: exercise_source(str(p)))


STREAMS = {
    "gzip": gzip.compress(I.default_layers()[0], mtime=0),
    "zstd": I.compress(I.default_layers()[0], "zstd"),
    "bzip2": bz2.compress(I.default_layers()[0]),
    "xz": lzma.compress(I.default_layers()[0]),
}


@pytest.mark.parametrize("codec", sorted(STREAMS))
@FUZZ
@given(data=st.data())
def test_fuzz_compressed_streams(codec: str, data: st.DataObject) -> None:
    raw = data.draw(mutated(STREAMS[codec]))
    only_ours(lambda: exercise_decompress(raw))


LAYER_SEED = layer(f("etc/a", b"hello"), sym("etc/l", "a"), hl("etc/h", "etc/a"), f("etc/.wh.gone"),
                   Entry("p", data=b"x", pax={"SCHILY.xattr.user.k": "v", "mtime": "1.5"}),
                   f("g/" + "n" * 120, b"long"))


@FUZZ
@given(data=st.data())
def test_fuzz_layer_tars(data: st.DataObject) -> None:
    lower = data.draw(mutated(LAYER_SEED))
    upper = data.draw(mutated(LAYER_SEED))

    tars = [lower, upper]
    keep = data.draw(st.integers(0, 1))

    def two_pass() -> None:
        merge.write(merge.plan(inputs(tars), keep), inputs(tars), io.BytesIO())

    def one_read() -> None:
        merge.stream(inputs(tars), keep, io.BytesIO())

    def refused(fn: Callable[[], None]) -> bool:
        try:
            fn()
        except OcisquashError:
            return True
        return False

    # Both merges refuse the same inputs, each with one of our errors (anything else fails the test).
    assert refused(two_pass) == refused(one_read)


# ------------------------------------------------------------------------------------------ saved corpus

def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay_corpus(path: Path) -> None:
    target = TARGETS[path.parent.name]
    only_ours(lambda: target(path.read_bytes()))
