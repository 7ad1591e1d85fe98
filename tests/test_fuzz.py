"""Property-based fuzzing of every reader, and the replay of the saved corpus.

The fuzz tests mutate valid inputs (outer tarballs, JSON documents, compressed streams, layer tars)
and run the readers to the end; any exception that is not an ``OcisquashError`` is a bug.
The corpus saved by the atheris harness (``testdata/corpus/<target>/``) is replayed here too."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fuzz import images as I
from fuzz.harness import exercise_decompress, exercise_source
from fuzz.targets import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layertar import Entry, f, hl, inputs, layer, sym
from untrusted import (
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    )

from ocisquash import merge
from ocisquash.errors import OcisquashError

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


CORPUS = Path(__file__).resolve().parent.parent / "testdata" / "corpus"


def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file()) if CORPUS.is_dir() else []


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_replay_corpus(path: Path) -> None:
    target = TARGETS[path.parent.name]
    only_ours(lambda: target(path.read_bytes()))
