"""Writing the merged layer in its one order, bodies from the spool or from a read of their layer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import BinaryIO

from ocisquash.errors import FormatError, OutputError
from ocisquash.merge.plan import END_BLOCKS, MergePlan, body_links
from ocisquash.merge.records import LayerInput, MergeLimits, Meta, SpoolIndex, WriteStats
from ocisquash.merge.streamtypes import SkipsRest
from ocisquash.merge.tarread import COPY, REFILL, REGULAR_FLAGS, ZERO, Source, open_layer
from ocisquash.merge.tarwrite import header
from ocisquash.merge.tree import Ino


class Writer:
    def __init__(self, out: BinaryIO, stats: WriteStats) -> None:
        self.out = out
        self.stats = stats
        self.buf = bytearray()

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.out.write(data)
        except OSError as e:
            raise OutputError(f"cannot write the merged layer: {e}") from e
        self.stats.bytes_written += len(data)

    def flush(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = bytearray()

    def header(
        self, name: str, type_: str, meta: Meta, size: int = 0, linkname: str = "",
        dev: tuple[int, int] | None = None,
    ) -> None:
        self.buf += header(name, type_, meta, size=size, linkname=linkname, dev=dev)
        self.stats.entries += 1
        if len(self.buf) >= COPY:
            self.flush()

    def data(self, chunk: bytes) -> None:
        if len(chunk) < REFILL:
            self.buf += chunk
            if len(self.buf) >= COPY:
                self.flush()
        else:
            self.flush()
            self._emit(chunk)
        self.stats.content_bytes += len(chunk)

    def small(self, data: bytes | memoryview, size: int) -> None:
        """A small file's contents: the first ``size`` bytes of ``data``, then zeros to the block."""
        buf = self.buf
        buf += memoryview(data)[:size]
        if size % 512:
            buf += ZERO[: 512 - size % 512]
        self.stats.content_bytes += size
        if len(buf) >= COPY:
            self.flush()

    def pad(self, size: int) -> None:
        if size % 512:
            self.buf += bytes(512 - size % 512)

    def finish(self) -> None:
        self.buf += bytes(END_BLOCKS)
        self.flush()


_IOV_MAX = 1024  # buffers one writev takes (Linux's UIO_MAXIOV)


class Spool:
    """Decompressed file bodies kept for the merged layer, in one unlinked temporary file.

    ``stream`` reads the squashed layers top down but writes the merged layer parents first, so a
    body that passes before its directories are known waits here; each is stored with its tar
    padding, at an offset the writer reads it back from.
    """

    def __init__(self, directory: str | None) -> None:
        self.f = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.fd = self.f.fileno()
        self.parts: list[bytes] = []  # small bodies not written yet, in order (one writev for many)
        self.pending = 0  # their bytes
        self.size = 0  # bytes written to the file so far (parts follow)
        self.where: dict[int, SpoolIndex] = {}  # per layer: data offset in the layer -> spool offset
        self.rbuf = memoryview(b"")  # read-ahead window of the file, from offset rstart
        self.rstart = 0

    def add(self, layer: int, offset: int, src: Source, size: int) -> None:
        """Store the ``size`` bytes of contents (and their padding) ``src`` stands at."""
        index = self.where.get(layer)
        if index is None:
            index = self.where[layer] = SpoolIndex()
        index.add(offset, self.size + self.pending)
        padded = (size + 511) & ~511
        if padded < REFILL:
            data = src.read(padded)
            if len(data) != padded:
                raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
            self.parts.append(data)
            self.pending += padded
            if self.pending >= COPY or len(self.parts) >= _IOV_MAX:
                self._flush()
            return
        self._flush()
        for chunk in src.chunks(size):
            self._write([chunk])
        rest = padded - size
        if rest:
            tail = src.read(rest)
            if len(tail) != rest:
                raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
            self.parts.append(tail)
            self.pending += rest

    def _write(self, parts: list[bytes]) -> None:
        try:
            while parts:
                n = os.writev(self.fd, parts)
                self.size += n
                if n == sum(map(len, parts)):
                    return
                # a short write (rare on a regular file): drop what went, go on with the rest
                i = 0
                while n >= len(parts[i]):
                    n -= len(parts[i])
                    i += 1
                parts = [parts[i][n:], *parts[i + 1 :]]
        except OSError as e:
            raise OutputError(f"cannot write the temporary file of file contents: {e}",
                              hint="it holds the squashed layer's file contents: point TMPDIR at a "
                                   "file system with room for them") from e

    def _flush(self) -> None:
        if self.parts:
            self._write(self.parts)
            self.parts = []
            self.pending = 0

    def seal(self) -> None:
        """Done adding: everything to the file, for reading back."""
        self._flush()

    def _read(self, at: int, n: int) -> memoryview:
        """``n`` bytes at ``at``, through a read-ahead window: the writer asks for the bodies of a
        layer in the order they were stored, so one large read serves many small files."""
        lo = at - self.rstart
        if lo < 0 or lo + n > len(self.rbuf):
            want = max(n, COPY)
            try:
                data = os.pread(self.fd, want, at)
            except OSError as e:
                raise OutputError(f"cannot read the temporary file of file contents: {e}") from e
            if len(data) < n:
                raise OutputError("the temporary file of file contents was cut short")
            self.rbuf, self.rstart, lo = memoryview(data), at, 0
        return self.rbuf[lo : lo + n]

    def copy(self, start: int, size: int, w: Writer) -> None:
        """Copy ``size`` bytes of contents stored at ``start`` to ``w`` (with the output's padding)."""
        if size < REFILL:
            w.small(self._read(start, size), size)
            return
        pos, end = start, start + size
        while pos < end:
            n = min(COPY, end - pos)
            try:
                chunk = os.pread(self.fd, n, pos)
            except OSError as e:
                raise OutputError(f"cannot read the temporary file of file contents: {e}") from e
            if len(chunk) != n:
                raise OutputError("the temporary file of file contents was cut short")
            w.data(chunk)
            pos += n
        w.pad(size)

    def close(self) -> None:
        self.rbuf = memoryview(b"")
        self.f.close()


def write(
    plan: MergePlan,
    layers: Sequence[LayerInput],
    out: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> WriteStats:
    """Pass 2: stream the squashed layers once, in order, and write the merged layer tar to ``out``.

    ``progress`` is called with the number of input bytes consumed since its last call. Every
    squashed layer's ``open()`` stream is read to its end (where it verifies itself). A kept layer is
    opened too only in one rare case: a hardlink the squashed layers add to a kept file whose kept
    names are all gone, so the content must be copied from that kept layer. The output is the same,
    byte for byte, as ``stream``'s for the same layers.
    """
    stats = WriteStats()
    write_layer(plan, layers, Writer(out, stats), progress, None)
    return stats


def write_layer(
    plan: MergePlan,
    layers: Sequence[LayerInput],
    w: Writer,
    progress: Callable[[int], None] | None,
    spool: Spool | None,
) -> None:
    """Write the merged layer in its one order: directories (each before its subtree) with the
    whiteouts below them, then special files, links to kept files, and regular files by layer and
    position, each followed by its hardlinks. Bodies come from ``spool`` when it holds them, else
    from a read of their layer."""
    layout = plan.layout
    for args in layout.fixed_entries():
        w.header(*args)
    for li in plan.pass2_layers():
        bodies = layout.bodies.get(li, [])
        spooled = plan.spooled.get(li) or SpoolIndex()
        copy_layer(li, layers[li], bodies, spooled, spool, plan.limits, w, progress,
                    plan.layers[li].tar_bytes if li < len(plan.layers) else 0, li not in plan.read_once)
    w.finish()


def copy_body(src: Source, w: Writer, name: str, meta: Meta, size: int) -> None:
    """Write a regular file's header as ``name`` and copy its ``size`` bytes of contents from ``src``
    (which stands at them), consuming the input's padding and writing zeros for the output's."""
    w.header(name, "0", meta, size=size)
    padded = (size + 511) & ~511
    if size < REFILL:  # most files: one slice, no generator
        data = src.read(padded)
        if len(data) != padded:
            raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
        w.small(data, size)
        return
    for chunk in src.chunks(size):
        w.data(chunk)
    if padded != size and not src.skip(padded - size):
        raise FormatError(f"layer {src.label}: truncated tar (file contents cut short)")
    w.pad(size)


def _ordinal(ino: Ino) -> int:
    return ino.ordinal


def copy_layer(
    index: int,
    layer: LayerInput,
    bodies: list[Ino],
    spooled: SpoolIndex,
    spool: Spool | None,
    limits: MergeLimits,
    w: Writer,
    progress: Callable[[int], None] | None,
    total: int,
    verify: bool,
) -> None:
    """Copy the contents the plan chose from one layer, in their order in the layer: from the spool
    when it holds them, else by their offsets in one read of the layer (no header is parsed again).

    The layer is read when a body is not in the spool, or to ``verify`` it: then the stream is read
    to its end (where it verifies itself); the 512-byte header in front of each copied body is
    checked to be a regular file's, so a layer that changed between the two reads fails instead of
    giving wrong contents.
    """
    label = layer.label
    f: BinaryIO | None = None
    src: Source | None = None
    try:
        if verify:
            f, src = open_layer(layer, False)
        reported = 0
        bodies.sort(key=_ordinal)
        for b in bodies:
            off, body, size, meta = b.ordinal, b.origin, b.size, b.meta
            assert meta is not None
            at = spooled.get(off)
            if at is not None and spool is not None:
                w.header(body, "0", meta, size=size)
                spool.copy(at, size, w)
            else:
                if src is None:
                    f, src = open_layer(layer, False)
                w.stats.refetched += spool is not None and not verify  # read once already: again
                if not src.skip(off - 512 - src.consumed):
                    raise FormatError(f"layer {label}: truncated tar (file contents cut short)")
                block = src.read(512)
                if len(block) != 512 or block[156:157] not in REGULAR_FLAGS:
                    raise FormatError(f"layer {label}: the layer changed between the two reads")
                copy_body(src, w, body, meta, size)
                if progress is not None and src.consumed - reported >= COPY:
                    progress(src.consumed - reported)
                    reported = src.consumed
            for args in body_links(b):
                w.header(*args)
        if src is None or f is None:
            return
        if isinstance(f, SkipsRest):
            # Nothing more to copy: a stream that can check its remaining bytes without
            # decompressing them does so (the layer's diff ID was checked in pass 1).
            f.skip_rest()
            src.consumed = max(src.consumed, total)
        else:
            src.drain()
        if progress is not None and src.consumed > reported:
            progress(src.consumed - reported)
    except OSError as e:
        raise FormatError(f"layer {label}: read error: {e}") from e
    finally:
        if f is not None:
            f.close()
