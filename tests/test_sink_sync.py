"""Background writeback of a tar output: the same bytes, synced before the rename, and its errors and
thread handled like the rest of the sink (one clean error, no temporary, no thread left behind)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from ocisquash.digest import Digest
from ocisquash.errors import OutputError
from ocisquash.formats import commit
from ocisquash.formats.ocilayout import OciDirSink
from ocisquash.formats.ocitar import TarSink

STEP = 64 << 10
DATA = bytes(range(256)) * (40 * STEP // 256)  # 40 steps: the thread runs many times


@pytest.fixture
def small_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "WRITEBACK_STEP", STEP)


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    yield
    assert [t for t in threading.enumerate() if t.name in ("ocisquash-writeback", "ocisquash-hash")] == []


def chunks(data: bytes, n: int = 4096) -> Callable[[BinaryIO], None]:
    def produce(w: BinaryIO) -> None:
        for i in range(0, len(data), n):
            w.write(data[i:i + n])

    return produce


def write_tar(path: Path) -> Digest:
    s = TarSink(str(path), docker=False)
    try:
        d, n = s.put_stream(chunks(DATA))
        assert n == len(DATA)
        s.commit()
    except BaseException:
        s.abort()
        raise
    return d


class Calls:
    """Records fdatasync/fsync/replace in order, passing them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[str] = []
        self.dirs: list[str] = []  # the directories fsynced, in order
        self.lock = threading.Lock()
        for name in ("fdatasync", "fsync", "replace", "rename"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name: str, real: Callable[..., None]) -> Callable[..., None]:
        def call(*a: object) -> None:
            real(*a)
            entry = name
            if name == "fsync" and stat.S_ISDIR(os.fstat(a[0]).st_mode):  # type: ignore[arg-type]
                entry = "fsync-dir"
                self.dirs.append(os.readlink(f"/proc/self/fd/{a[0]}"))
            with self.lock:
                self.log.append(entry)

        return call


def test_same_bytes_synced_in_the_background_and_fsynced_before_the_rename(
        tmp_path: Path, small_step: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "WRITEBACK_STEP", 1 << 40)
    write_tar(tmp_path / "plain.tar")
    monkeypatch.setattr(commit, "WRITEBACK_STEP", STEP)
    calls = Calls(monkeypatch)
    d = write_tar(tmp_path / "synced.tar")
    assert d.encoded == hashlib.sha256(DATA).hexdigest()
    assert (tmp_path / "synced.tar").read_bytes() == (tmp_path / "plain.tar").read_bytes()
    assert "fdatasync" in calls.log  # the thread ran while the blob was written ...
    # ... and the fsync before the rename stays; then the directory holding the new name is synced
    assert calls.log[-3:] == ["fsync", "replace", "fsync-dir"]
    assert calls.dirs == [str(tmp_path)]
    assert sorted(os.listdir(tmp_path)) == ["plain.tar", "synced.tar"]


def test_small_output_starts_no_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    write_tar(tmp_path / "out.tar")  # 2.5 MiB, under the default step
    assert calls.log == ["fsync", "replace", "fsync-dir"]


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_background_sync_error_is_a_clean_output_error(tmp_path: Path, small_step: None,
                                                       monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    def failing(fd: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "fdatasync", failing)
    with pytest.raises(OutputError) as e:
        write_tar(tmp_path / "out.tar")
    assert str(e.value) == f"{tmp_path / 'out.tar'}: cannot write the output: {os.strerror(err).lower()}"
    assert os.listdir(tmp_path) == []


def test_error_seen_only_at_the_end_still_fails_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error from the last background fdatasync, which the final fsync would not report again."""
    monkeypatch.setattr(commit, "WRITEBACK_STEP", len(DATA))  # one step, reached by the last chunk
    failed = threading.Event()

    def failing(fd: int) -> None:
        failed.set()
        raise OSError(errno.EIO, "Input/output error")

    def produce(w: BinaryIO) -> None:
        chunks(DATA)(w)
        assert failed.wait(10)  # the thread has met the error; nothing more is written after it

    monkeypatch.setattr(os, "fdatasync", failing)
    s = TarSink(str(tmp_path / "out.tar"), docker=False)
    s.put_stream(produce)
    with pytest.raises(OutputError, match=r"out\.tar: cannot write the output: input/output error"):
        try:
            s.commit()
        except BaseException:
            s.abort()
            raise
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_stream_leaves_no_thread_and_no_temporary(tmp_path: Path, small_step: None,
                                                              exc: type[BaseException]) -> None:
    started = threading.Event()

    def produce(w: BinaryIO) -> None:
        chunks(DATA[:10 * STEP])(w)
        started.set()
        raise exc

    s = TarSink(str(tmp_path / "out.tar"), docker=True)
    with pytest.raises(exc):
        try:
            s.put_stream(produce)
        finally:
            assert started.is_set()
            assert any(t.name == "ocisquash-writeback" for t in threading.enumerate())
            s.abort()
    assert os.listdir(tmp_path) == []


def test_stdout_and_compressed_tar_do_not_sync_their_temporary(tmp_path: Path, small_step: None,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    calls = Calls(monkeypatch)
    s = TarSink("-", docker=False)
    s.put_stream(chunks(DATA))
    s.commit()
    out = capfdbinary.readouterr().out
    assert DATA in out
    s = TarSink(str(tmp_path / "out.tar.gz"), docker=False)
    s.put_stream(chunks(DATA))
    s.commit()
    assert "fdatasync" not in calls.log
    assert os.listdir(tmp_path) == ["out.tar.gz"]


# ------------------------------------------------------------------------------------ OCI layout dir

def write_layout(path: Path) -> Digest:
    s = OciDirSink(str(path))
    try:
        d, _ = s.put_stream(chunks(DATA))
        s.put_bytes(b"small")
        s.commit()
    except BaseException:
        s.abort()
        raise
    return d


def test_layout_blobs_are_fsynced_before_their_rename(tmp_path: Path, small_step: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Calls(monkeypatch)
    d = write_layout(tmp_path / "out")
    assert (tmp_path / "out" / "blobs" / "sha256" / d.encoded).read_bytes() == DATA
    syncs = [c for c in calls.log if c != "fdatasync"]
    # big blob, small blob: each fsynced, then renamed; their directory synced before index.json
    # names them; index.json fsynced, renamed, its directory synced; the new layout renamed into
    # place and the directory holding it synced
    assert syncs == ["fsync", "replace"] * 2 + ["fsync-dir", "fsync", "replace", "fsync-dir", "rename", "fsync-dir"]
    assert calls.dirs[0].endswith("/blobs/sha256") and calls.dirs[2] == str(tmp_path)
    assert "fdatasync" in calls.log[:calls.log.index("fsync")]
    assert os.listdir(tmp_path) == ["out"]


def test_layout_blob_already_there_is_not_synced_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_layout(tmp_path / "out")
    calls = Calls(monkeypatch)
    write_layout(tmp_path / "out")  # an existing layout: both blobs are known
    assert calls.log == ["fsync-dir", "fsync", "replace", "fsync-dir"]  # index.json only
    assert calls.dirs == [str(tmp_path / "out" / "blobs" / "sha256"), str(tmp_path / "out")]


def test_layout_background_sync_error_is_a_clean_output_error(tmp_path: Path, small_step: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    write_layout(tmp_path / "out")
    before = sorted(os.listdir(tmp_path / "out" / "blobs" / "sha256"))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    for dest in ("out", "new"):
        s = OciDirSink(str(tmp_path / dest))
        with pytest.raises(OutputError, match=r"cannot write the output: input/output error"):
            try:
                s.put_stream(chunks(DATA[::-1]))
            finally:
                s.abort()
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sorted(os.listdir(tmp_path / "out" / "blobs" / "sha256")) == before


@pytest.mark.parametrize("err", [errno.EINVAL, errno.EIO])
def test_directory_sync_einval_is_tolerated_other_errors_are_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   err: int) -> None:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(err, os.strerror(err))  # some file systems cannot sync a directory
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    if err == errno.EINVAL:
        write_tar(tmp_path / "out.tar")
        assert (tmp_path / "out.tar").stat().st_size > len(DATA)
        write_layout(tmp_path / "out")
        assert (tmp_path / "out" / "index.json").exists()
    else:
        with pytest.raises(OutputError, match="cannot write the output: input/output error"):
            write_tar(tmp_path / "out.tar")


def mixed_writes(w: BinaryIO) -> None:
    """Small and large writes interleaved, through one reused bytearray: the threaded hash must copy it."""
    buf = bytearray()
    pos = 0
    for i, n in enumerate([100, 70_000, 3, 512, 200_000, 65_536, 1, 1 << 20] * 4):
        buf[:] = DATA[pos % len(DATA):][:n] or b"x" * n
        w.write(buf if i % 2 else memoryview(buf))
        buf[:] = b"\xff" * len(buf)  # reused at once, as a writer's buffer may be
        pos += n


def expected_mixed() -> bytes:
    out = bytearray()
    pos = 0
    for n in [100, 70_000, 3, 512, 200_000, 65_536, 1, 1 << 20] * 4:
        out += DATA[pos % len(DATA):][:n] or b"x" * n
        pos += n
    return bytes(out)


@pytest.mark.parametrize("sink", ["dir", "tar"])
def test_threaded_hash_of_mixed_writes(tmp_path: Path, sink: str) -> None:
    want = expected_mixed()
    s: OciDirSink | TarSink = OciDirSink(str(tmp_path / "lay")) if sink == "dir" else TarSink(str(tmp_path / "o.tar"),
                                                                                                 docker=False)
    try:
        d, n = s.put_stream(mixed_writes)
        s.commit()
    except BaseException:
        s.abort()
        raise
    assert (str(d), n) == ("sha256:" + hashlib.sha256(want).hexdigest(), len(want))


@pytest.mark.parametrize("sink", ["dir", "tar"])
def test_failed_producer_leaves_no_hashing_thread(tmp_path: Path, sink: str) -> None:
    s: OciDirSink | TarSink = OciDirSink(str(tmp_path / "lay")) if sink == "dir" else TarSink(str(tmp_path / "o.tar"),
                                                                                                 docker=False)

    def produce(w: BinaryIO) -> None:
        w.write(DATA)
        raise OSError("input went away")

    with pytest.raises(OSError, match="went away"):
        s.put_stream(produce)
    s.abort()  # the autouse fixture checks that no ocisquash-hash thread is left
