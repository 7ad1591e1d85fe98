"""How much of the machine one piece of work may take: its own helper threads, or one core's worth.

A squash keeps both cores of a small machine busy with helper threads (a layer read ahead, sha256
beside the reader and the writer, a gzip writer on two threads). When the platforms of an index are
squashed at once, the platforms themselves fill the cores: helper threads there only add hand-offs
and context switches. So each platform runs inside ``sharing()``: while another platform runs beside
it, ``helpers()`` says no; once it is the last one running, its next streams get their helpers back
(the larger platform's tail, its write above all, runs on both cores). ``one_core()`` says no whatever
else runs. Work asks ``helpers()`` when it starts a stream; the bytes written are the same either way.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_one_core: ContextVar[bool] = ContextVar("ocisquash_one_core", default=False)
_sharing: ContextVar[bool] = ContextVar("ocisquash_sharing", default=False)
_lock = threading.Lock()
_running = 0  # jobs inside sharing() now


def available() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def helpers() -> bool:
    """Whether the work running here may start helper threads of its own."""
    if _one_core.get():
        return False
    return not _sharing.get() or _running <= 1


def may_fork() -> bool:
    """Whether the work running here may fork worker processes: not from a job that shares the machine
    (a fork from a platform's thread would copy the other threads' state mid-way)."""
    return not (_one_core.get() or _sharing.get())


def writer_threads() -> int:
    """Threads a compressing writer started here may use."""
    return 2 if helpers() else 1


@contextmanager
def one_core() -> Iterator[None]:
    """Run the body as one core's worth of work: no helper threads (``helpers()`` is false)."""
    token = _one_core.set(True)
    try:
        yield
    finally:
        _one_core.reset(token)


@contextmanager
def sharing() -> Iterator[None]:
    """Run the body as one of the jobs sharing the machine: one core's worth while another runs."""
    global _running
    with _lock:
        _running += 1
    token = _sharing.set(True)
    try:
        yield
    finally:
        _sharing.reset(token)
        with _lock:
            _running -= 1
