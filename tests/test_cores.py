"""``cores``: work that is one core's worth starts no helper threads and writes the same bytes.

``--platform all`` runs each platform inside ``sharing()`` (``test_platform_all_concurrent`` checks that,
and the bytes): one core's worth while another platform runs, the machine's once alone. Here that rule
is checked with threads held at each step, and each helper on its own under ``one_core()``: the
read-ahead thread, the hashing threads, the gzip writer's threads, the merge's forked workers.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from contextvars import copy_context
from typing import Any

import pytest
from layertar import f, layer
from test_layer_interface import gz_layer, read_all

from ocisquash import compression, cores
from ocisquash.digest import Digest, HashingReader, HashingWriter, VerifyingReader
from ocisquash.merge.records import LayerInput
from ocisquash.merge.workers import PARALLEL_MIN_BYTES, worker_count
from ocisquash.prefetch import Prefetcher

# 7 MB that deflate about 2:1 (several of igzip_threaded's 1 MiB blocks; past digest.THREAD_MIN, 4 MiB)
_RNG = random.Random(7)
_WORDS = [b"alpha ", b"beta ", *(_RNG.randbytes(16) for _ in range(64))]
DATA = b"".join(_RNG.choices(_WORDS, k=500_000))


def test_one_core_is_set_inside_and_reset_after() -> None:
    assert cores.helpers() and cores.writer_threads() == 2
    with cores.one_core():
        assert not cores.helpers() and cores.writer_threads() == 1
        with cores.one_core():
            assert not cores.helpers()
        assert not cores.helpers()
    assert cores.helpers()


def test_one_core_stays_in_its_thread() -> None:
    seen: list[bool] = []
    with cores.one_core():
        t = threading.Thread(target=lambda: seen.append(cores.helpers()))
        t.start()
        t.join()
        seen.append(copy_context().run(cores.helpers))
    assert seen == [True, False]  # a new thread starts from the default; a copied context keeps it


def test_sharing_is_one_core_while_another_job_runs_and_the_machine_once_alone() -> None:
    seen: dict[str, list[tuple[bool, bool]]] = {"a": [], "b": []}
    both_in, b_checked, a_left = threading.Barrier(2), threading.Event(), threading.Event()

    def job_a() -> None:
        with cores.sharing():
            both_in.wait(timeout=30)
            seen["a"].append((cores.helpers(), cores.may_fork()))  # two jobs running
            assert b_checked.wait(timeout=30)
        a_left.set()

    def job_b() -> None:
        with cores.sharing():
            both_in.wait(timeout=30)
            seen["b"].append((cores.helpers(), cores.may_fork()))
            b_checked.set()
            assert a_left.wait(timeout=30)
            seen["b"].append((cores.helpers(), cores.may_fork()))  # alone now: helpers, still no forks
            seen["b"].append((cores.writer_threads() == 2, False))

    threads = [threading.Thread(target=job_a), threading.Thread(target=job_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen == {"a": [(False, False)], "b": [(False, False), (True, False), (True, False)]}
    assert cores.helpers() and cores.may_fork()  # outside any job: the machine's


def _gzip(data: bytes) -> tuple[bytes, int]:
    """``data`` through the squash's gzip writer; the most threads alive while it wrote."""
    out = io.BytesIO()
    most = 0
    with compression.compressing_writer(out, compression.Codec.GZIP, 6) as w:
        for i in range(0, len(data), 1 << 20):
            w.write(data[i:i + (1 << 20)])
            most = max(most, threading.active_count())
    return out.getvalue(), most


def test_the_gzip_writer_takes_one_thread_and_writes_the_same_bytes() -> None:
    before = threading.active_count()
    two, most_two = _gzip(DATA)
    with cores.one_core():
        one, most_one = _gzip(DATA)
    assert one == two  # block-parallel gzip: the bytes do not depend on the thread count
    assert most_two - before == 3 and most_one - before == 1  # 2 compressors + the writer; the writer alone
    assert compression.decompressing_reader(io.BytesIO(one), "x", compression.Codec.GZIP).read() == DATA


def test_zstd_writes_the_same_bytes_on_one_core() -> None:
    outs = []
    for lean in (False, True):
        out = io.BytesIO()
        with (cores.one_core() if lean else contextlib.nullcontext(),
              compression.compressing_writer(out, compression.Codec.ZSTD, 3) as w):
            w.write(DATA)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]


def _fed_writer() -> tuple[HashingWriter, Callable[[], Digest]]:
    w = HashingWriter(io.BytesIO(), threaded=True)
    w.write(DATA)
    return w, w.digest


def _fed_reader() -> tuple[HashingReader, Callable[[], Digest]]:
    r = HashingReader(io.BytesIO(DATA), threaded=True)
    while r.read(1 << 20):
        pass
    return r, r.digest


def _fed_verifying() -> tuple[VerifyingReader, Callable[[], Digest]]:
    r = VerifyingReader(io.BytesIO(DATA), Digest.of(DATA), len(DATA), "b")
    r.read(1 << 20)

    def finish() -> Digest:
        r.verify()  # raises unless the rest hashes to the digest
        return Digest.of(DATA)
    return r, finish


@pytest.mark.parametrize("lean", [False, True], ids=["helpers", "one-core"])
@pytest.mark.parametrize("make", [_fed_writer, _fed_reader, _fed_verifying], ids=["writer", "reader", "verifying"])
def test_hashes_run_beside_the_stream_only_with_helpers(
        lean: bool, make: Callable[[], tuple[Any, Callable[[], Digest]]]) -> None:
    before = {t.ident for t in threading.enumerate()}
    with cores.one_core() if lean else contextlib.nullcontext():
        obj, finish = make()
        hashing = [t for t in threading.enumerate() if t.ident not in before and t.name == "ocisquash-hash"]
        assert len(hashing) == (0 if lean else 1)
        assert finish() == Digest.of(DATA)
    obj.close()


def test_a_layer_is_read_ahead_only_with_helpers() -> None:
    s = gz_layer().uncompressed()
    assert isinstance(s, Prefetcher)
    want = read_all(s)
    with cores.one_core():
        s = gz_layer().uncompressed()
        assert not isinstance(s, Prefetcher)
        assert read_all(s) == want == layer(f("a", b"x" * 5000), f("b", b"y" * 3000))


def test_the_merge_forks_no_workers_on_one_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCISQUASH_WORKERS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    half = PARALLEL_MIN_BYTES  # each layer alone enough, none more than the share one worker takes
    layers = [LayerInput(str(i), io.BytesIO, io.BytesIO, work=half) for i in range(3)]
    assert worker_count(layers) == 2
    with cores.one_core():
        assert worker_count(layers) == 1
    with cores.sharing():
        assert cores.helpers()  # alone: it may start threads, but not fork
        assert worker_count(layers) == 1


def test_available_is_the_cores_the_process_may_run_on() -> None:
    # taskset, not our own reading of the affinity, says how many: one core given, one counted
    code = "from ocisquash import cores; print(cores.available())"
    p = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "1"
