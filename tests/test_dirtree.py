"""``archive.DirTree``: files opened relative to directory descriptors, each component with O_NOFOLLOW.

Every refusal the path-walking opener made is kept (a symlinked directory at any depth, a symlinked or
special file, a name leaving the tree), and a directory once opened is the one read from, whatever is
renamed over its path later.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ocisquash import archive, errors
from ocisquash.archive import DirTree
from ocisquash.errors import FormatError, MissingBlob, UnsafePath


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "lay"
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "index.json").write_bytes(b"{}")
    (root / "blobs" / "sha256" / "aa").write_bytes(b"blob-aa")
    return root


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_reads_files_at_every_depth(tmp_path: Path) -> None:
    t = DirTree(str(_tree(tmp_path)))
    assert t.read("index.json", 100) == b"{}"
    assert t.read("blobs/sha256/aa", 100) == b"blob-aa"
    assert t.read("./blobs//sha256/aa", 100) == b"blob-aa"
    with t.open("blobs/sha256/aa") as f:
        assert f.read() == b"blob-aa"
    assert t.exists("blobs/sha256/aa") and not t.exists("blobs/sha256/bb")
    assert t.size("blobs/sha256/aa") == 7
    t.close()


@pytest.mark.parametrize("link", ["blobs", "blobs/sha256"])
def test_symlinked_directory_at_any_depth_is_refused(tmp_path: Path, link: str) -> None:
    root = _tree(tmp_path)
    real = tmp_path / "elsewhere"
    (root / link).rename(real)
    (root / link).symlink_to(real)
    t = DirTree(str(root))
    with pytest.raises(UnsafePath, match="blobs/sha256/aa lies behind a symlinked directory"):
        t.read("blobs/sha256/aa", 100)
    with pytest.raises(UnsafePath, match="lies behind a symlinked directory"):
        t.open("blobs/sha256/aa")


def test_symlinked_directory_to_nowhere_is_refused_not_missing(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "blobs" / "sha256").rename(tmp_path / "gone")
    (root / "blobs" / "sha256").symlink_to(tmp_path / "nothing-here")
    with pytest.raises(UnsafePath, match="lies behind a symlinked directory"):
        DirTree(str(root)).read("blobs/sha256/aa", 100)


def test_symlinked_file_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (tmp_path / "outside").write_bytes(b"secret")
    (root / "blobs" / "sha256" / "bb").symlink_to(tmp_path / "outside")
    t = DirTree(str(root))
    with pytest.raises(UnsafePath, match="blobs/sha256/bb is a symlink; layouts must hold regular files"):
        t.read("blobs/sha256/bb", 100)


@pytest.mark.parametrize("name", ["../outside", "blobs/../../outside", "/etc/passwd", "blobs\\x", "a\x00b"])
def test_names_leaving_the_tree_are_refused(tmp_path: Path, name: str) -> None:
    root = _tree(tmp_path)
    (tmp_path / "outside").write_bytes(b"secret")
    with pytest.raises(UnsafePath):
        DirTree(str(root)).read(name, 100)


def test_fifo_and_directory_are_not_regular_files(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    os.mkfifo(root / "blobs" / "sha256" / "ff")
    (root / "blobs" / "sha256" / "dd").mkdir()
    t = DirTree(str(root))
    with pytest.raises(FormatError, match="blobs/sha256/ff is a FIFO, not a regular file"):
        t.read("blobs/sha256/ff", 100)  # O_NONBLOCK: no wait for a writer
    with pytest.raises(FormatError, match="blobs/sha256/dd is a directory, not a regular file"):
        t.read("blobs/sha256/dd", 100)


def test_missing_file_and_missing_directory(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    t = DirTree(str(root))
    with pytest.raises(MissingBlob, match="blobs/sha256/bb is missing"):
        t.read("blobs/sha256/bb", 100)
    with pytest.raises(MissingBlob, match="blobs/sha512/bb is missing"):
        t.read("blobs/sha512/bb", 100)
    (root / "plain").write_bytes(b"x")
    with pytest.raises(FormatError, match="cannot open plain/x"):
        t.read("plain/x", 100)  # a file where a directory should be


def test_a_directory_once_opened_is_the_one_read(tmp_path: Path) -> None:
    """No path is walked again per file: a symlink renamed over blobs/ later leads nowhere new."""
    root = _tree(tmp_path)
    t = DirTree(str(root))
    assert t.read("blobs/sha256/aa", 100) == b"blob-aa"
    other = tmp_path / "other" / "sha256"
    other.mkdir(parents=True)
    (other / "aa").write_bytes(b"swapped")
    (root / "blobs").rename(tmp_path / "blobs.old")
    (root / "blobs").symlink_to(other.parent)
    assert t.read("blobs/sha256/aa", 100) == b"blob-aa"
    t.close()
    with pytest.raises(UnsafePath):  # a new tree sees the symlink, and refuses it
        DirTree(str(root)).read("blobs/sha256/aa", 100)


def test_directories_past_the_cap_are_closed_after_use(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    n = archive.MAX_DIR_FDS + 8
    for i in range(n):
        (root / f"d{i}").mkdir()
        (root / f"d{i}" / "f").write_bytes(str(i).encode())
    t = DirTree(str(root))
    before = _open_fds()
    for _ in range(2):
        for i in range(n):
            assert t.read(f"d{i}/f", 100) == str(i).encode()
    assert _open_fds() - before == archive.MAX_DIR_FDS
    t.close()
    assert _open_fds() == before


def test_threads_share_the_directory_descriptors(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    t = DirTree(str(root))
    before = _open_fds()
    got: list[bytes] = []

    def read() -> None:
        for _ in range(50):
            got.append(t.read("blobs/sha256/aa", 100))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert got == [b"blob-aa"] * 200
    assert _open_fds() - before == 3  # the root, blobs/ and blobs/sha256/, each opened once
    t.close()


def test_read_upto_reads_on_after_a_short_read(tmp_path: Path) -> None:
    """One ``read`` may return less than asked (a pipe, a signal): the rest is read on, up to the end."""
    r, w = os.pipe()
    os.write(w, b"abc")

    def rest() -> None:
        time.sleep(0.05)
        os.write(w, b"def")
        os.close(w)

    th = threading.Thread(target=rest)
    th.start()
    try:
        assert archive._read_upto(r, 10) == b"abcdef"
    finally:
        th.join()
        os.close(r)
    p = tmp_path / "f"
    p.write_bytes(b"abcdef")
    fd = os.open(p, os.O_RDONLY)
    try:
        assert archive._read_upto(fd, 4) == b"abcd"
        assert archive._read_upto(fd, 4) == b"ef"
        assert archive._read_upto(fd, 4) == b""
    finally:
        os.close(fd)


def test_read_leaves_no_descriptor_open(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    t = DirTree(str(root))
    t.read("index.json", 100)  # the root's descriptor, kept
    before = _open_fds()
    for _ in range(20):
        assert t.read("blobs/sha256/aa", 100) == b"blob-aa"
        with pytest.raises(errors.LimitExceeded):
            t.read("blobs/sha256/aa", 3)
    assert _open_fds() - before == 2  # blobs/ and blobs/sha256/
    t.close()
