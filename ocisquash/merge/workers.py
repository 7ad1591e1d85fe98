"""Reading layers' headers in forked worker processes, while the parent applies earlier ones."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from ocisquash.errors import OcisquashError
from ocisquash.merge.records import LayerInput, MergeLimits
from ocisquash.merge.tarread import Hdr, read_layer

# Worker processes read (decompress and parse) layers while the main process applies earlier ones:
# parsing tar headers is Python work bound to one core by the GIL, and a squash has two. Workers
# are forked, so they inherit the layers' openers; results and our errors come back pickled.
#
# Not multiprocessing.Pool: its workers share one task queue lock with the parent, and tearing a
# pool down after an error while a worker waits on that lock hangs for ever (issue 10, seen in 2 of
# 200 plans). Here each worker has a pipe of its own and takes a fixed share of the layers (worker w
# reads layers w, w + W, ...); nothing is shared, so the parent can stop a worker at any point.
PARALLEL_MIN_BYTES = 32 << 20


def worker_count(layers: Sequence[LayerInput]) -> int:
    raw = os.environ.get("OCISQUASH_WORKERS")
    if raw is not None and raw.strip().isdigit():
        return max(1, min(int(raw), len(layers)))
    if len(layers) < 2 or sum(ly.work for ly in layers) < PARALLEL_MIN_BYTES or not hasattr(os, "fork"):
        return 1
    return min(2, os.cpu_count() or 1, len(layers))


_LEN = struct.Struct("<Q")


def _read_job(layer: LayerInput, lim: MergeLimits) -> tuple[Any, ...]:
    try:
        entries, consumed = read_layer(layer, lim)
        # Plain tuples pickle several times faster than slotted objects.
        flat = [(h.name, h.type, h.size, h.linkname, h.meta, h.dev, off) for h, off in entries]
        return ("ok", flat, consumed)
    except OcisquashError as e:
        return ("error", type(e), str(e), e.hint)


def _worker(layers: Sequence[LayerInput], lim: MergeLimits, first: int, step: int, fd: int) -> None:
    """A forked worker's whole life: read its share of the layers, send each result down ``fd``."""
    # Ctrl-C reaches the whole process group: the parent reports it and stops its workers, which
    # must not print tracebacks of their own; the parent's SIGTERM handler must not run here either.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with os.fdopen(fd, "wb") as out:
        for i in range(first, len(layers), step):
            data = pickle.dumps(_read_job(layers[i], lim), pickle.HIGHEST_PROTOCOL)
            out.write(_LEN.pack(len(data)))
            out.write(data)
            out.flush()


def read_layers(layers: Sequence[LayerInput], lim: MergeLimits) -> Iterator[tuple[list[tuple[Hdr, int]], int]]:
    workers = worker_count(layers)
    if workers <= 1:
        for layer in layers:
            yield read_layer(layer, lim)
        return
    pids: list[int] = []
    pipes: list[BinaryIO] = []
    try:
        for w in range(workers):
            r, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the worker: never returns into the parent's code
                code = 0
                try:
                    os.close(r)
                    for p in pipes:
                        p.close()
                    _worker(layers, lim, w, workers, wfd)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            pids.append(pid)
            os.close(wfd)
            pipes.append(os.fdopen(r, "rb"))
        for i in range(len(layers)):
            pipe = pipes[i % workers]
            head = pipe.read(_LEN.size)
            data = pipe.read(_LEN.unpack(head)[0]) if len(head) == _LEN.size else b""
            if not data:
                raise OcisquashError(f"internal error: the worker reading layer {layers[i].label} died")
            res = pickle.loads(data)
            if res[0] == "error":
                raise res[1](res[2], hint=res[3])
            yield [(Hdr(*t[:6]), t[6]) for t in res[1]], res[2]
    finally:
        # Done, failed or abandoned: a worker may still be reading a layer. It holds nothing the
        # parent needs, so stop it and reap it.
        for p in pipes:
            p.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
