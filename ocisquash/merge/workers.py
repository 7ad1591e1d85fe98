"""Reading layers' headers in forked worker processes, while the parent applies earlier ones."""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import struct
import threading
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from ocisquash import cores
from ocisquash.errors import OcisquashError
from ocisquash.merge.records import LayerInput, MergeLimits
from ocisquash.merge.tarread import Hdr, read_layer

# Worker processes read (decompress and parse) layers while the main process applies earlier ones:
# parsing tar headers is Python work bound to one core by the GIL, and a squash has two. Workers
# are forked, so they inherit the layers' openers; results and our errors come back pickled.
#
# Not multiprocessing.Pool: its workers share one task queue lock with the parent, and tearing a
# pool down after an error while a worker waits on that lock hangs for ever (issue 10, seen in 2 of
# 200 plans). Here the parent writes every layer index into one pipe before forking, and each worker
# takes the next index from it (a 4-byte read of a pipe is atomic), so the work is shared out as it
# comes, like the pool's; results come back on a pipe per worker, drained by a thread per pipe so a
# worker never waits for the parent. No lock is held across processes: the parent can stop a worker
# at any point.
PARALLEL_MIN_BYTES = 32 << 20
# Workers pay for pickling every header back to the parent, and two of them cannot finish before the
# largest layer is read: when it holds most of the image they lose. Measured on the bench images: the
# large one (largest layer 36% of the stored bytes) plans in 0.68 s with workers, 0.88 s without; the
# entry-heavy one (one layer of 52,000 entries, 90%) in 0.60 s with them, 0.50 s without.
PARALLEL_MAX_SHARE = 0.6


def worker_count(layers: Sequence[LayerInput]) -> int:
    raw = os.environ.get("OCISQUASH_WORKERS")
    if raw is not None and raw.strip().isdigit():
        return max(1, min(int(raw), len(layers)))
    total = sum(ly.work for ly in layers)
    # a platform squashed beside others forks no workers: the platforms fill the cores, and a fork from
    # a platform's thread copies the other platforms' threads' state mid-way
    if len(layers) < 2 or total < PARALLEL_MIN_BYTES or not hasattr(os, "fork") or not cores.may_fork():
        return 1
    if max(ly.work for ly in layers) > PARALLEL_MAX_SHARE * total:
        return 1
    return min(2, os.cpu_count() or 1, len(layers))


_INDEX = struct.Struct("<I")
_HEAD = struct.Struct("<IQ")  # layer index, bytes of the pickled result
_PIPE_MIN = 4096  # bytes a pipe takes without a reader (POSIX guarantees one page or more)


def _read_job(layer: LayerInput, lim: MergeLimits) -> tuple[Any, ...]:
    try:
        entries, consumed = read_layer(layer, lim)
        # Plain tuples pickle several times faster than slotted objects.
        flat = [(h.name, h.type, h.size, h.linkname, h.meta, h.dev, off) for h, off in entries]
        return ("ok", flat, consumed)
    except OcisquashError as e:
        return ("error", type(e), str(e), e.hint)


def _worker(layers: Sequence[LayerInput], lim: MergeLimits, tasks: int, fd: int) -> None:
    """A forked worker's whole life: take layer indices from ``tasks``, send each result down ``fd``."""
    # Ctrl-C reaches the whole process group: the parent reports it and stops its workers, which
    # must not print tracebacks of their own; the parent's SIGTERM handler must not run here either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.disable()  # a short-lived process that keeps every header it parses (see records.gc_paused)
    # the workers fill the cores: a worker's own read-ahead and hashing threads would only add hand-offs
    with cores.one_core(), os.fdopen(fd, "wb") as out:
        while len(raw := os.read(tasks, _INDEX.size)) == _INDEX.size:
            i = _INDEX.unpack(raw)[0]
            data = pickle.dumps(_read_job(layers[i], lim), pickle.HIGHEST_PROTOCOL)
            out.write(_HEAD.pack(i, len(data)))
            out.write(data)
            out.flush()


class _Results:
    """Results from the workers' pipes, by layer index, collected by one thread per pipe."""

    def __init__(self, pipes: list[BinaryIO]) -> None:
        self.cond = threading.Condition()
        self.got: dict[int, bytes] = {}
        self.open = len(pipes)
        self.threads = [threading.Thread(target=self._drain, args=(p,), daemon=True, name="ocisquash-results")
                        for p in pipes]
        for t in self.threads:
            t.start()

    def _drain(self, pipe: BinaryIO) -> None:
        try:
            while len(head := pipe.read(_HEAD.size)) == _HEAD.size:
                i, n = _HEAD.unpack(head)
                data = pipe.read(n)
                if len(data) != n:
                    break
                with self.cond:
                    self.got[i] = data
                    self.cond.notify_all()
        finally:
            with self.cond:
                self.open -= 1
                self.cond.notify_all()

    def take(self, i: int) -> bytes | None:
        """Layer ``i``'s result once it arrives; None if every worker is gone without it."""
        with self.cond:
            while i not in self.got and self.open:
                self.cond.wait()
            return self.got.pop(i, None)


def read_layers(layers: Sequence[LayerInput], lim: MergeLimits) -> Iterator[tuple[list[tuple[Hdr, int]], int]]:
    workers = worker_count(layers)
    n = len(layers)
    if workers <= 1 or n * _INDEX.size > _PIPE_MIN:
        for layer in layers:
            yield read_layer(layer, lim)
        return
    pids: list[int] = []
    pipes: list[BinaryIO] = []
    results: _Results | None = None
    tasks, feed = os.pipe()
    try:
        try:
            # Largest first, so the two workers end together (the parent applies in layer order
            # whichever comes first): on the bench image, whose three largest layers are on top,
            # in order one worker read 112 of 196 MB, largest first 100.
            order = sorted(range(n), key=lambda i: -layers[i].work)
            os.write(feed, b"".join(_INDEX.pack(i) for i in order))  # fits: checked above
        finally:
            os.close(feed)
        for _ in range(workers):
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the parent's code
                code = 0
                try:
                    os.close(r)
                    for p in pipes:
                        p.close()
                    _worker(layers, lim, tasks, wfd)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
            os.close(wfd)
            pipes.append(os.fdopen(r, "rb"))
        os.close(tasks)
        tasks = -1
        results = _Results(pipes)
        for i in range(n):
            data = results.take(i)
            if data is None:
                raise OcisquashError(f"internal error: the worker reading layer {layers[i].label} died")
            res = pickle.loads(data)
            if res[0] == "error":
                raise res[1](res[2], hint=res[3])
            yield [(Hdr(*t[:6]), t[6]) for t in res[1]], res[2]
    finally:
        # Done, failed or abandoned: a worker may still be reading a layer. It holds nothing the
        # parent needs, so stop it; its pipe then ends, which ends its drain thread; then reap it.
        if tasks >= 0:
            os.close(tasks)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if results is not None:
            for t in results.threads:
                t.join()
        for p in pipes:
            p.close()
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
