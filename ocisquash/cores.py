"""How much of the machine one piece of work may take: its own helper threads, or one core's worth.

A squash keeps both cores of a small machine busy with helper threads (a layer read ahead, sha256
beside the reader and the writer, a gzip writer on two threads). When the platforms of an index are
squashed at once, the platforms themselves fill the cores: helper threads there only add hand-offs
and context switches, so each platform's work runs inside ``one_core()`` and asks ``helpers()``
before it starts one. The bytes written are the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_one_core: ContextVar[bool] = ContextVar("ocisquash_one_core", default=False)


def helpers() -> bool:
    """Whether the work running here may start helper threads of its own."""
    return not _one_core.get()


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
