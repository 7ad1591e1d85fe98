"""Read-only file trees an image source is read from: a directory, or an outer tar indexed once.

``TarTree`` indexes a tarball's members in one pass (names normalised and checked: no absolute names,
no ``..``, no NUL or backslash, no duplicates; symlinked and hardlinked members resolved inside the
archive only, with a hop cap), then serves members as byte ranges of the file: nothing is extracted.
A compressed tarball or standard input is first spooled, decompressed, to a temporary file, since
``manifest.json`` may be its last member. ``DirTree`` opens each directory once and every file relative
to its directory, each component with ``O_NOFOLLOW``, and requires regular files, so a layout cannot
point a reader outside itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tempfile
import threading
import weakref
from dataclasses import dataclass
from typing import IO, BinaryIO, Protocol

from ocisquash import limits, tarheader
from ocisquash.compression import Codec, decompressing_reader, sniff_bytes
from ocisquash.errors import FormatError, MissingBlob, UnsafePath
from ocisquash.streams import Reader

MAX_LINK_HOPS = 16
_SPECIAL = {"3": "character device", "4": "block device", "6": "FIFO"}


class Tree(Protocol):
    """What readers need of an input: named files, read whole (JSON) or streamed (blobs)."""

    label: str

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def open(self, name: str) -> IO[bytes]: ...

    def read(self, name: str, max_size: int) -> bytes: ...

    def is_seekable_file(self, name: str) -> bool: ...

    def names(self) -> list[str]: ...

    def close(self) -> None: ...


def kind_of_mode(mode: int) -> str:
    """What a file of this mode is, for errors: "a FIFO", "a socket", "a character device"..."""
    for test, what in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return what
    return "a special file"


def file_kind(path: str) -> str:
    try:
        return kind_of_mode(os.lstat(path).st_mode)
    except OSError:
        return "unreadable"


def clean_member_name(name: str, where: str) -> str:
    """Normalise an outer-tar member name; reject what could escape or mean two things."""
    parts = name.split("/")
    # the usual name, already clean (a layout's blobs/sha256/HEX), is returned after C-level searches only
    if "" not in parts and "." not in parts and ".." not in parts and "\x00" not in name and "\\" not in name:
        return name
    if "\x00" in name or "\\" in name:
        raise UnsafePath(f"{where}: member name {name!r} contains a NUL or a backslash")
    if name.startswith("/"):
        raise UnsafePath(f"{where}: member name {name!r} is absolute")
    parts = [p for p in parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafePath(f"{where}: member name {name!r} contains '..'")
    return "/".join(parts)


class JsonBudget:
    """Counts the bytes of JSON documents a tree serves (``read``) against ``max_json_total``: whatever an
    input names, a run reads a bounded amount of JSON (the callers read each document once when they can)."""

    json_read = 0

    def charge(self, label: str, name: str, n: int) -> None:
        self.json_read += n
        cap = limits.current().max_json_total
        if self.json_read > cap:
            raise limits.exceeded("max_json_total", f"{label}: reading {name} takes the JSON read in this run "
                                                    f"past {cap} bytes")


class RangeReader(Reader):
    """Reads ``size`` bytes at ``offset`` of a file, through its own file handle."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._f.seek(offset)
        self._start = offset
        self._left = size
        self._size = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n is None or n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        if len(data) < n and not data:
            raise FormatError(f"{self._f.name}: unexpected end of file (truncated tar?)")
        self._left -= len(data)
        return data

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size - self._left

    def seek(self, pos: int, whence: int = 0) -> int:
        cur = self._size - self._left
        new = max(0, pos if whence == 0 else cur + pos if whence == 1 else self._size + pos)
        # Past the end is allowed, as in a file (reads then return nothing), and reported as such: a
        # reader that skips a member's data by seeking learns that the member is truncated.
        self._f.seek(self._start + min(new, self._size))
        self._left = self._size - new
        return new

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int
    kind: str  # "file", "dir", "symlink", "hardlink"
    link: str = ""


class TarTree(JsonBudget):
    """An uncompressed tar file on disk, indexed once; members are served as byte ranges."""

    def __init__(self, path: str, label: str, *, temp: bool = False, fd: int | None = None) -> None:
        self.path = path
        self.label = label
        self._temp = temp
        self._fd = fd  # an unlinked spool read back as /proc/self/fd/N: closing it frees the space
        self._members: dict[str, _Member] = {}
        self._index()

    def _index(self) -> None:
        cap = limits.current().max_outer_members
        try:
            with open(self.path, "rb") as f:
                for h in tarheader.headers(f, self.label):
                    if len(self._members) >= cap:
                        raise limits.exceeded("max_outer_members", f"{self.label}: more than {cap} members")
                    name = clean_member_name(h.name, self.label)
                    if not name:
                        continue
                    if name in self._members:
                        raise UnsafePath(f"{self.label}: member {name!r} appears twice (readers disagree on which "
                                         "copy wins)")
                    if h.type == "5":
                        m = _Member(0, 0, "dir")
                    elif h.type == "2":
                        m = _Member(0, 0, "symlink", h.linkname)
                    elif h.type == "1":
                        m = _Member(0, 0, "hardlink", clean_member_name(h.linkname, self.label))
                    elif h.type == "0":
                        m = _Member(h.offset, h.size, "file")
                    else:
                        # a device, FIFO or unknown type: named so that reading it is a clear error
                        m = _Member(0, 0, _SPECIAL.get(h.type, f"member of tar type {h.type!r}"))
                    self._members[name] = m
        except OSError as e:
            raise FormatError(f"{self.label}: cannot read: {e.strerror or e}") from None

    def _resolve(self, name: str) -> _Member:
        name = clean_member_name(name, self.label)
        for _ in range(MAX_LINK_HOPS):
            m = self._members.get(name)
            if m is None:
                raise MissingBlob(f"{self.label}: no member {name!r}")
            if m.kind == "file":
                return m
            if m.kind == "hardlink":
                name = m.link
                continue
            if m.kind == "symlink":
                if m.link.startswith("/"):
                    raise UnsafePath(f"{self.label}: member {name!r} is a symlink to an absolute path")
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.link))
                if target == ".." or target.startswith("../") or target.startswith("/"):
                    raise UnsafePath(f"{self.label}: member {name!r} is a symlink leaving the archive")
                name = target
                continue
            if m.kind == "dir":
                raise FormatError(f"{self.label}: member {name!r} is a directory, not a file")
            raise FormatError(f"{self.label}: member {name!r} is a {m.kind}, not a regular file")
        raise UnsafePath(f"{self.label}: member {name!r}: too many links (a cycle?)")

    def exists(self, name: str) -> bool:
        try:
            self._resolve(name)
            return True
        except MissingBlob:
            return False

    def size(self, name: str) -> int:
        return self._resolve(name).size

    def open(self, name: str) -> IO[bytes]:
        m = self._resolve(name)
        return RangeReader(self.path, m.offset, m.size)  # type: ignore[return-value]

    def read(self, name: str, max_size: int) -> bytes:
        m = self._resolve(name)
        if m.size > max_size:
            raise limits.exceeded("max_json", f"{self.label}: {name} is {m.size} bytes, over the cap of {max_size}")
        self.charge(self.label, name, m.size)
        with self.open(name) as f:
            return f.read()

    def is_seekable_file(self, name: str) -> bool:
        return True

    def names(self) -> list[str]:
        return list(self._members)

    def close(self) -> None:
        if self._temp:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_DIR_FDS = 32
"""Directory descriptors a ``DirTree`` keeps open (a layout has three or four directories)."""


class DirTree(JsonBudget):
    """A directory whose files are opened relative to directory descriptors, each component with
    ``O_NOFOLLOW``; only regular files are served.

    The root is opened once (following a symlink the user gave as the path), every directory below it
    once, relative to its parent and refusing a symlink, and each file relative to its directory: no path
    is walked again per file, and nothing can be swapped between a check and the open it guards.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.label = root
        self._dirs: dict[str, int] = {}  # a directory's name inside the tree ("" the root) -> its descriptor
        self._lock = threading.RLock()
        self._finalizer = weakref.finalize(self, _close_fds, self._dirs)

    def _path(self, name: str) -> str:
        return os.path.join(self.root, clean_member_name(name, self.label))

    def _dir_fd(self, rel: str) -> tuple[int, bool]:
        """The descriptor of the directory ``rel`` (a cleaned name, "" for the root) and whether the caller
        must close it (past ``MAX_DIR_FDS``); raises OSError, ``ENOTDIR`` where a component is a symlink."""
        fd = self._dirs.get(rel)  # the usual case, without the lock: a dict read is atomic
        if fd is not None:
            return fd, False
        with self._lock:  # readers may open blobs from several threads
            fd = self._dirs.get(rel)
            if fd is not None:
                return fd, False
            if not rel:
                fd = os.open(self.root, _DIR_FLAGS)
            else:
                parent, _, base = rel.rpartition("/")
                pfd, owned = self._dir_fd(parent)
                try:
                    fd = os.open(base, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=pfd)
                finally:
                    if owned:
                        os.close(pfd)
            if len(self._dirs) >= MAX_DIR_FDS:
                return fd, True
            self._dirs[rel] = fd
            return fd, False

    def _split(self, name: str) -> tuple[int, bool, str]:
        """``_dir_fd`` of ``name``'s directory, and its last component ("." for the root itself)."""
        rel, _, base = clean_member_name(name, self.label).rpartition("/")
        return (*self._dir_fd(rel), base or ".")

    def _dir_error(self, name: str, e: OSError) -> FormatError:
        """The error for a directory above ``name`` that could not be opened."""
        if e.errno in (errno.ENOTDIR, errno.ELOOP) and self._behind_symlink(name):
            return UnsafePath(f"{self.label}: {name} lies behind a symlinked directory")
        if e.errno == errno.ENOENT:
            return MissingBlob(f"{self.label}: {name} is missing")
        return FormatError(f"{self.label}: cannot open {name}: {e.strerror}")

    def _behind_symlink(self, name: str) -> bool:
        rel = clean_member_name(name, self.label).split("/")[:-1]
        return any(os.path.islink(os.path.join(self.root, *rel[: i + 1])) for i in range(len(rel)))

    def _open_fd(self, name: str) -> tuple[int, os.stat_result]:
        try:
            dfd, owned, base = self._split(name)
        except OSError as e:
            raise self._dir_error(name, e) from None
        try:
            # O_NONBLOCK: opening a FIFO someone planted here must not wait for a writer; the type check
            # below then refuses it (the flag means nothing for the regular files we go on to read).
            fd = os.open(base, _FILE_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            raise MissingBlob(f"{self.label}: {name} is missing") from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # the last component is a symlink
                raise UnsafePath(f"{self.label}: {name} is a symlink; layouts must hold regular files") from None
            if e.errno == errno.ENXIO:  # a socket (or a FIFO on some systems)
                raise FormatError(f"{self.label}: {name} is {file_kind(self._path(name))}, not a regular "
                                  "file") from None
            raise FormatError(f"{self.label}: cannot open {name}: {e.strerror}") from None
        finally:
            if owned:
                os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FormatError(f"{self.label}: {name} is {kind_of_mode(st.st_mode)}, not a regular file")
        return fd, st

    def _lstat(self, name: str) -> os.stat_result:
        """``lstat`` of ``name`` relative to its directory's descriptor; where that walk fails for any
        reason but absence (a symlinked directory, an unreadable one), the plain ``lstat`` of the path,
        so that ``exists`` and ``size`` answer as before and ``open`` reports the problem."""
        try:
            dfd, owned, base = self._split(name)
        except FileNotFoundError:
            raise
        except OSError:
            return os.lstat(self._path(name))
        try:
            return os.stat(base, dir_fd=dfd, follow_symlinks=False)
        finally:
            if owned:
                os.close(dfd)

    def exists(self, name: str) -> bool:
        try:
            self._lstat(name)
        except OSError:
            return False
        return True

    def size(self, name: str) -> int:
        return self._lstat(name).st_size

    def open(self, name: str) -> IO[bytes]:
        return os.fdopen(self._open_fd(name)[0], "rb")

    def read(self, name: str, max_size: int) -> bytes:
        fd, st = self._open_fd(name)
        try:
            # the size first: a huge file is refused before a byte of it is read
            if st.st_size > max_size:
                raise limits.exceeded("max_json", f"{self.label}: {name} is {st.st_size} bytes, over the cap of "
                                                  f"{max_size}")
            self.charge(self.label, name, st.st_size)
            # no more than the file's size + 1: a read of n allocates n bytes first, and max_size is MiBs
            # (20,000 small configs read with max_size + 1 spent a third of `images` in the allocator).
            # os.read on the descriptor: a buffered file object per document cost more than the read.
            data = _read_upto(fd, st.st_size + 1)
            if len(data) > st.st_size:  # it grew since fstat: read on to the cap
                data += _read_upto(fd, max_size + 1 - len(data))
        finally:
            os.close(fd)
        if len(data) > max_size:
            raise limits.exceeded("max_json", f"{self.label}: {name} is over the cap of {max_size} bytes")
        return data

    def is_seekable_file(self, name: str) -> bool:
        return True

    def names(self) -> list[str]:
        out: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            out.extend(f if rel == "." else f"{rel}/{f}" for f in files)
        return out

    def close(self) -> None:
        with self._lock:
            _close_fds(self._dirs)


def _read_upto(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from ``fd``, fewer only at its end (one ``read`` may return less)."""
    data = os.read(fd, n)
    if not data or len(data) == n:
        return data
    parts, got = [data], len(data)
    while got < n and (more := os.read(fd, n - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _close_fds(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def open_tar_input(path: str, stream: BinaryIO | None = None) -> TarTree:
    """Index a tarball given by path (or ``-``/a stream): plain files in place, others spooled first."""
    label = "<stdin>" if path == "-" else path
    if stream is None and path != "-":
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise FormatError(f"{label}: cannot read: {e.strerror}") from None
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            # a device never ends (/dev/zero) or is not an archive; a socket cannot be opened at all
            raise FormatError(f"{label}: is {kind_of_mode(mode)}, not an image file")
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError as e:
            raise FormatError(f"{label}: cannot read: {e.strerror}") from None
        if sniff_bytes(head) is Codec.NONE:
            return TarTree(path, label)
        src: IO[bytes] | BinaryIO = open(path, "rb")  # noqa: SIM115 - closed below
    else:
        src = stream if stream is not None else os.fdopen(os.dup(0), "rb")
    fd, tmp = tempfile.mkstemp(prefix="ocisquash-input-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as out:
            # a whole tarball has no byte cap of its own, but a bomb is still a bomb: max_spool_ratio
            reader = decompressing_reader(src, label, spool=True)
            while data := reader.read(1 << 20):
                out.write(data)
        src.close()
        return TarTree(tmp, label, temp=True)
    except BaseException:
        os.unlink(tmp)
        raise
