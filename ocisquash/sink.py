"""Where images are written: an OCI layout directory, an OCI layout tar, or a ``docker save`` tar.

Every sink writes under a temporary name beside its destination and renames into place only in
``commit()``: a failed or interrupted run leaves the old state, and ``abort()`` removes what was
written. Blobs are content-addressed and written once (deduplicated by digest); their digests are
computed while they stream, so nothing is hashed twice. A tar sink writes each streamed blob behind a
placeholder header that is patched with the real name and size once the blob is complete.

Adding to an existing layout directory: writers take turns under ``LOCK_NAME`` (an ``flock`` held
from open to commit, ``index.json`` read again under it); a blob already there is used only once
its size and digest are checked, and replaced atomically if wrong; a failed run removes the blobs it
added and only those; a FIFO, socket or device where the layout has a file is an error, never opened.
New entries are named as ``layout``'s docstring says.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import shutil
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from ocisquash import layout, limits, model, reference
from ocisquash.compression import Codec, compressing_writer
from ocisquash.digest import Digest, HashingWriter
from ocisquash.errors import FormatError, OutputError
from ocisquash.merge.tarwrite import member_header
from ocisquash.model import Descriptor

OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass
class WrittenImage:
    """What a sink records of one image, to write the index (and manifest.json) at commit."""

    manifest: Descriptor
    config_digest: Digest
    layer_digests: list[Digest]
    tags: list[str]  # full references (``docker.io/acme/app:1.2``) or bare layout tags
    platform: model.Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)


class Sink:
    """Base: blob writing and image bookkeeping shared by the directory and tar sinks."""

    docker: bool = False
    label: str = ""

    def __init__(self) -> None:
        self.images: list[WrittenImage] = []

    # blob primitives, provided by subclasses
    def has(self, digest: Digest) -> bool:
        raise NotImplementedError

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        raise NotImplementedError

    def put_bytes(self, data: bytes) -> tuple[Digest, int]:
        def produce(w: BinaryIO) -> None:
            w.write(data)

        return self.put_stream(produce)

    def add_image(self, image: WrittenImage) -> None:
        self.images.append(image)

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


_HINTS = {
    errno.ENOSPC: "free some space, or write the output to another file system",
    errno.EDQUOT: "free some space, or write the output to another file system",
    errno.EROFS: "the file system is read-only: write the output elsewhere",
    errno.EACCES: "no permission to write there: write the output elsewhere",
    errno.EPERM: "no permission to write there: write the output elsewhere",
}


def output_error(e: OSError, label: str) -> OutputError:
    """An OSError met while writing an output, as a one-line error naming the output."""
    reason = e.strerror or type(e).__name__
    reason = reason[:1].lower() + reason[1:]
    return OutputError(f"{label}: cannot write the output: {reason}", hint=_HINTS.get(e.errno or 0))


@contextlib.contextmanager
def writing(label: str) -> Iterator[None]:
    """Turns an OSError raised inside into ``output_error`` (use only around output operations)."""
    try:
        yield
    except OSError as e:
        raise output_error(e, label) from None


# Bytes written between two background fdatasyncs. The page cache holds a whole output (a 229 MB
# tar stays under vm.dirty_background_ratio), so without this the disk sees nothing until the fsync
# before the rename, which then took 0.35-0.45 s of a 3-4 s squash; syncing every 16 MiB on a thread
# left it 0.03 s (64 MiB: 0.11 s, the last step's bytes are still unwritten at the end).
WRITEBACK_STEP = 16 << 20


class _Writeback:
    """Writes a file's bytes to disk while more are still being produced, so the fsync before the
    rename has little left to do: a thread runs ``fdatasync`` each time ``WRITEBACK_STEP`` more bytes
    have been written (kicks during a running fdatasync coalesce into one more). It only moves I/O
    earlier: the final fsync stays, and ``close()`` must be called before the file is closed."""

    def __init__(self, fd: int, label: str) -> None:
        self._fd = fd
        self._label = label
        self._pending = 0
        self._wake = threading.Event()
        self._stop = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None  # started at the first step: small files never need it

    def wrote(self, n: int) -> None:
        self._pending += n
        if self._pending < WRITEBACK_STEP:
            return
        self._pending = 0
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ocisquash-writeback", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                self._error = e
                return

    def close(self) -> None:
        """Stops the thread, waiting for a running fdatasync (it uses the fd), and raises its error."""
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        # The kernel reports a writeback error once per open file: one the thread saw would not come
        # back from the final fsync, so it must be raised here.
        if self._error is not None:
            raise output_error(self._error, self._label)


class _GuardedWriter(io.RawIOBase):
    """A file's write/flush with OSError mapped to OutputError: a blob's producer also reads input, so
    the mapping must sit on the output file itself, not around the producer."""

    def __init__(self, f: IO[bytes], label: str, writeback: _Writeback | None = None) -> None:
        self._f = f
        self._label = label
        self._writeback = writeback

    def write(self, data: Any) -> int:
        with writing(self._label):
            n = self._f.write(data)
        if self._writeback is not None:
            self._writeback.wrote(n)
        return n

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        with writing(self._label):
            self._f.flush()


def refuse_symlink(path: str) -> None:
    if os.path.islink(path):
        raise OutputError(f"{path}: is a symlink; refusing to write through it", hint="give the real path")


def _index_entries(images: list[WrittenImage], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """index.json ``manifests``: the existing entries no new name takes, then one per new name.

    The naming rule is ``layout.same_name``'s: a new name takes only an entry of the same image name
    (its full reference, or a bare layout tag); another repository's entry with the same
    ``ref.name`` tag stays.
    """
    new_names = [t for img in images for t in img.tags]

    def taken(e: dict[str, Any]) -> bool:
        ann = e.get("annotations")
        name = layout.entry_name(ann) if isinstance(ann, dict) else None
        return name is not None and any(layout.same_name(name, t) for t in new_names)

    out = [e for e in existing if not taken(e)]
    for img in images:
        base = img.manifest.to_json()
        base.pop("annotations", None)
        if img.platform is not None:
            base["platform"] = img.platform.to_json()
        if not img.tags:
            ann = dict(img.annotations)
            if ann:
                base["annotations"] = ann
            out.append(base)
        for t in img.tags:
            d = dict(base)
            ann = dict(img.annotations)
            if layout.is_full_name(t):
                ann[model.CONTAINERD_NAME] = t
            ann[model.REF_NAME] = _ref_name(t)
            d["annotations"] = ann
            out.append(d)
    return out


def _ref_name(tag: str) -> str:
    """What goes in ``org.opencontainers.image.ref.name``: the tag, as Docker and containerd write it."""
    if layout.is_full_name(tag):
        _, t, _ = reference.split(tag)
        return t or "latest"
    return tag


def index_bytes(entries: list[dict[str, Any]]) -> bytes:
    return model.canonical_json({"schemaVersion": 2, "mediaType": model.OCI_INDEX, "manifests": entries})


def docker_manifest_json(images: list[WrittenImage]) -> bytes:
    items = []
    for img in images:
        tags = [reference.familiar(t) for t in img.tags if "/" in t or ":" in t]
        items.append({
            "Config": f"blobs/sha256/{img.config_digest.encoded}",
            "RepoTags": tags,
            "Layers": [f"blobs/sha256/{d.encoded}" for d in img.layer_digests],
        })
    return model.canonical_json(items) + b"\n"


# The lock that serialises writers of one existing layout. Neither containers/image nor umoci locks
# index.json (containers/image#1028; umoci flocks only its own .umoci-* temporary directories against
# its gc), so the name is ours: it says what it guards. It exists only while a writer holds it.
LOCK_NAME = "index.json.lock"

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symlink",
          stat.S_IFREG: "a regular file"}


def _not_regular(label: str, name: str, mode: int, want: str = "a regular file") -> OutputError:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return OutputError(f"{label}: {name} is {kind}, not {want}; refusing to write into this layout",
                       hint=f"an OCI layout has {want} there: remove {name}, or write to a new directory")


def _read_regular(path: str, label: str, name: str, cap: int, cap_name: str) -> bytes:
    """A small file of an existing layout, read without ever blocking: its type is checked with
    ``lstat`` before it is opened (a FIFO would block ``open()``, a device could act on it), and again
    on the open file; the size cap is checked before anything is read."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(label, name, st.st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(label, name, st.st_mode)
        if st.st_size > cap:
            raise limits.exceeded(cap_name, f"{label}: {name} is {st.st_size} bytes, over the cap of {cap}")
        data = f.read(cap + 1)
    if len(data) > cap:
        raise limits.exceeded(cap_name, f"{label}: {name} is over the cap of {cap} bytes")
    return data


class _LayoutLock:
    """An exclusive ``flock`` on ``LOCK_NAME`` in a layout, held from the moment a sink opens an
    existing layout until its commit or abort: writers of one layout run one after another, so each
    reads ``index.json`` after the previous one wrote it, and the blobs a failed run removes are
    ones no other writer can have come to rely on.

    The file is removed on release so a layout is left as it was found. Removing a lock file is safe
    only because a locker checks, once it holds the lock, that the name still leads to the file it
    locked; if not (the holder removed it meanwhile), it locks the new one instead.
    """

    def __init__(self, root: str, label: str) -> None:
        self._path = os.path.join(root, LOCK_NAME)
        self._label = label
        self._fd: int | None = None
        while self._fd is None:
            fd = self._open()
            try:
                self._lock(fd)
                st, now = os.fstat(fd), _lstat_or_none(self._path)
                if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    self._fd = fd
            finally:
                if self._fd is None:
                    os.close(fd)

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            return os.open(self._path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            pass
        st = _lstat_or_none(self._path)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise _not_regular(self._label, LOCK_NAME, st.st_mode)
        try:
            fd = os.open(self._path, flags)
        except FileNotFoundError:
            return self._open()  # its holder removed it between our two opens: create it
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _not_regular(self._label, LOCK_NAME, st.st_mode)
        return fd

    def _lock(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        with contextlib.suppress(OSError, ValueError):  # a closed stderr must not stop the write
            sys.stderr.write(f"note: {self._label}: waiting for another writer of this layout to finish\n")
            sys.stderr.flush()
        fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)  # while still locked: see the class docstring
        finally:
            os.close(fd)  # releases the lock


def _lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


class OciDirSink(Sink):
    """An OCI layout directory: a new one (built beside, renamed in at commit) or an existing one.

    An existing layout is written under its lock (``_LayoutLock``); its ``oci-layout``,
    ``index.json`` and blob names must be regular files (a FIFO or device there is an error, never
    opened). A blob it already holds under a digest this run writes is relied on only if its size
    and digest are right; otherwise it is replaced, atomically, with the bytes just written. A run
    that fails removes the blobs it added, and only those.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.label = path
        self.dest = os.path.abspath(path)
        refuse_symlink(self.dest)
        self.existing = os.path.isdir(self.dest) and os.path.lexists(os.path.join(self.dest, "index.json"))
        if os.path.exists(self.dest) and not self.existing:
            if not os.path.isdir(self.dest):
                raise OutputError(f"{path}: exists and is not a directory")
            if os.listdir(self.dest):
                raise OutputError(f"{path}: exists, is not empty and is not an OCI layout",
                                  hint="give a new directory name, or an existing layout to add the image to")
        parent = os.path.dirname(self.dest) or "."
        if not os.path.isdir(parent):
            raise OutputError(f"{path}: its directory {parent} does not exist")
        self._tmpdir: str | None = None
        self._lock: _LayoutLock | None = None
        self._added: list[str] = []  # blobs (and directories) this run put into an existing layout
        self._verified: set[Digest] = set()  # existing blobs checked once this run
        self._temps: list[str] = []
        if self.existing:
            self.root = self.dest
            for sub in ("blobs", "blobs/sha256", "index.json"):
                refuse_symlink(os.path.join(self.root, sub))  # a layout must not lead us outside it
        with writing(path):
            if self.existing:
                self._check_layout()
                self._lock = _LayoutLock(self.root, path)
                try:
                    self._read_index()  # a broken index.json fails now, not after the whole squash
                except BaseException:
                    self.abort()
                    raise
            else:
                self._tmpdir = tempfile.mkdtemp(prefix=f".{os.path.basename(self.dest)}.ocisquash-", dir=parent)
                self.root = self._tmpdir
                try:
                    with open(os.path.join(self.root, "oci-layout"), "wb") as f:
                        f.write(OCI_LAYOUT_BYTES)
                except BaseException:
                    self.abort()
                    raise
            self._blobs = os.path.join(self.root, "blobs", "sha256")
            try:
                for d in (os.path.join(self.root, "blobs"), self._blobs):
                    if not os.path.isdir(d):
                        os.mkdir(d)
                        if self.existing:
                            self._added.append(d)
            except BaseException:
                self.abort()
                raise

    def _check_layout(self) -> None:
        """An existing layout's own files are what the spec says they are, before anything is written."""
        for name, want_dir in (("oci-layout", False), ("index.json", False), ("blobs", True),
                               ("blobs/sha256", True)):
            st = _lstat_or_none(os.path.join(self.root, name))
            if st is None:
                continue
            if want_dir and not stat.S_ISDIR(st.st_mode):
                raise _not_regular(self.label, name, st.st_mode, "a directory")
            if not want_dir and not stat.S_ISREG(st.st_mode):
                raise _not_regular(self.label, name, st.st_mode)
        if os.path.lexists(os.path.join(self.root, "oci-layout")):
            raw = _read_regular(os.path.join(self.root, "oci-layout"), self.label, "oci-layout", 1 << 16, "max_json")
            obj = model.load_json(raw, f"{self.label}: oci-layout")
            version = obj.get("imageLayoutVersion") if isinstance(obj, dict) else None
            if version != "1.0.0":
                raise FormatError(f"{self.label}: oci-layout version {version!r} is not supported (1.0.0 is)",
                                  hint="write to a new directory")

    def _read_index(self) -> list[dict[str, Any]]:
        raw = _read_regular(os.path.join(self.root, "index.json"), self.label, "index.json",
                            limits.current().max_json, "max_json")
        idx = model.load_json(raw, f"{self.label}: index.json")
        if not isinstance(idx, dict) or not isinstance(idx.get("manifests"), list):
            raise FormatError(f"{self.label}: index.json has no manifests list")
        return idx["manifests"]  # type: ignore[no-any-return]

    def has(self, digest: Digest) -> bool:
        """Whether the layout holds ``digest`` with the right content (checked once per run)."""
        return self._blob_state(digest, None) == "ok"

    def _blob_state(self, digest: Digest, size: int | None) -> str:
        """``ok`` (there, right size and digest), ``absent``, or ``bad`` (junk or a symlink there, to be
        replaced). A FIFO, socket, device or directory under a blob's name is an error, never opened."""
        if digest in self._verified:
            return "ok"
        p = os.path.join(self._blobs, digest.encoded)
        st = _lstat_or_none(p)
        if st is None:
            return "absent"
        if stat.S_ISLNK(st.st_mode):
            return "bad"  # replaced by the real blob: a layout must not lead outside itself
        name = f"blobs/sha256/{digest.encoded}"
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(self.label, name, st.st_mode)
        if size is not None and st.st_size != size:
            return "bad"
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _not_regular(self.label, name, os.fstat(fd).st_mode)
            h = hashlib.new(digest.algorithm)
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != digest.encoded:
            return "bad"
        self._verified.add(digest)
        return "ok"

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        with writing(self.label):
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self._blobs)
        self._temps.append(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                writeback = _Writeback(fd, self.label)
                try:
                    hw = HashingWriter(_GuardedWriter(f, self.label, writeback))  # type: ignore[arg-type]
                    produce(hw)  # type: ignore[arg-type]
                    d = hw.digest()
                    with writing(self.label):
                        state = self._blob_state(d, hw.count)
                        f.flush()
                        writeback.close()
                        if state != "ok":
                            # index.json, fsynced at commit, will name this blob: its bytes must be on
                            # disk first, or a crash could leave a layout whose index names empty files.
                            os.fsync(fd)
                finally:
                    with contextlib.suppress(OutputError):
                        writeback.close()  # its thread syncs fd: stopped before the file is closed
            final = os.path.join(self._blobs, d.encoded)
            with writing(self.label):
                if state == "ok":
                    os.unlink(tmp)
                else:
                    os.chmod(tmp, 0o644)
                    # Atomic: a reader sees the old file or the whole new one, never a partial blob.
                    os.replace(tmp, final)
                    if state == "absent" and self.existing:
                        self._added.append(final)
                    self._verified.add(d)
            self._temps.remove(tmp)
            return d, hw.count
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def commit(self) -> None:
        with writing(self.label):
            self._commit()
        # Released only on success: a failed commit is followed by abort(), which removes this run's
        # blobs and must still hold the lock while it does.
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _commit(self) -> None:
        index_path = os.path.join(self.root, "index.json")
        # Read again now, under the lock: the layout's latest entries are the ones to keep.
        existing = self._read_index() if self.existing else []
        data = index_bytes(_index_entries(self.images, existing))
        # The blobs index.json will name were renamed into place: their names must be on disk first.
        _fsync_dir(self._blobs)
        fd, tmp = tempfile.mkstemp(prefix=".index.json.", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, index_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._added = []  # index.json names them now: an abort after this point must keep them
        _fsync_dir(self.root)
        if self._tmpdir is not None:
            os.chmod(self._tmpdir, 0o755)
            if os.path.isdir(self.dest):
                if os.listdir(self.dest):
                    raise OutputError(f"{self.label}: was created by another writer while this one ran",
                                      hint="run again to add the image to it")
                os.rmdir(self.dest)  # an empty directory given as the destination
            os.rename(self._tmpdir, self.dest)
            self._tmpdir = None
            _fsync_dir(os.path.dirname(os.path.abspath(self.dest)))

    def abort(self) -> None:
        for t in self._temps:
            with contextlib.suppress(OSError):
                os.unlink(t)
        # What this run added to an existing layout, newest first (blobs before the directories they
        # are in); blobs that were there before stay. The lock is still held, so no other writer can
        # have started to rely on them.
        for p in reversed(self._added):
            with contextlib.suppress(OSError):
                if os.path.isdir(p):
                    os.rmdir(p)
                else:
                    os.unlink(p)
        self._added = []
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


_header = member_header  # the project's one tar header writer (ocisquash.merge.tarwrite)


class TarSink(Sink):
    """An OCI layout tar, or with ``docker=True`` a ``docker save`` tar in the Docker 25+ shape.

    Written to a temporary file beside the destination (or in $TMPDIR for standard output) and renamed
    or copied out at commit; all members are regular files.
    """

    def __init__(self, path: str, *, docker: bool) -> None:
        super().__init__()
        self.docker = docker
        self.label = "<stdout>" if path == "-" else path
        self.dest = path
        if path == "-":
            if sys.stdout.isatty():
                raise OutputError("refusing to write a tarball to a terminal", hint="redirect stdout or give a file")
            fd, self._tmp = tempfile.mkstemp(prefix="ocisquash-out-", suffix=".tar")
        else:
            refuse_symlink(path)
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise OutputError(f"{path}: its directory {parent} does not exist")
            if os.path.isdir(path):
                raise OutputError(f"{path}: is a directory", hint="use --format oci-dir to write a layout directory")
            with writing(path):
                fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.ocisquash-", dir=parent)
        self._dir = os.path.dirname(os.path.abspath(path)) if path != "-" else ""
        self._tmp2: str | None = None
        lower = path.lower()
        # A name ending in .tar.gz/.tgz or .tar.zst asks for the whole tarball compressed, as
        # `docker save | gzip` gives; docker load, podman and skopeo read those.
        self._outer = (Codec.GZIP if lower.endswith((".tar.gz", ".tgz")) else
                       Codec.ZSTD if lower.endswith((".tar.zst", ".tar.zstd")) else Codec.NONE)
        self._f: IO[bytes] | None = os.fdopen(fd, "w+b")
        self._digests: set[Digest] = set()
        # Only a temporary that becomes the output is synced: the one copied to stdout or compressed
        # into a second file is read back instead, and would be written to disk for nothing.
        self._writeback = _Writeback(fd, self.label) if path != "-" and self._outer is Codec.NONE else None
        try:
            self._add_member("oci-layout", OCI_LAYOUT_BYTES)
        except BaseException:
            self.abort()
            raise

    def _add_member(self, name: str, data: bytes) -> None:
        assert self._f is not None
        with writing(self.label):
            self._f.write(_header(name, len(data)))
            self._f.write(data)
            self._f.write(b"\0" * (-len(data) % 512))

    def has(self, digest: Digest) -> bool:
        return digest in self._digests

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        f = self._f
        assert f is not None
        with writing(self.label):
            start = f.tell()
            f.write(b"\0" * 512)  # placeholder header: the name is the digest, known only at the end
        hw = HashingWriter(_GuardedWriter(f, self.label, self._writeback))  # type: ignore[arg-type]
        # On an error the caller aborts the whole sink: nothing to take back out here.
        produce(hw)  # type: ignore[arg-type]
        with writing(self.label):
            hw.flush()
            d, n = hw.digest(), hw.count
            if d in self._digests:
                f.seek(start)
                f.truncate()
                return d, n
            f.write(b"\0" * (-n % 512))
            end = f.tell()
            f.seek(start)
            f.write(_header(f"blobs/sha256/{d.encoded}", n))
            f.seek(end)
        self._digests.add(d)
        return d, n

    def commit(self) -> None:
        with writing(self.label):
            self._commit()

    def _commit(self) -> None:
        f = self._f
        assert f is not None
        self._add_member("index.json", index_bytes(_index_entries(self.images, [])))
        if self.docker:
            self._add_member("manifest.json", docker_manifest_json(self.images))
        f.write(b"\0" * 1024)
        f.flush()
        if self.dest == "-":
            f.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            f.close()
            self._f = None
            os.unlink(self._tmp)
            return
        if self._outer is not Codec.NONE:
            self._compress_outer(f)
            return
        if self._writeback is not None:
            self._writeback.close()
        os.fsync(f.fileno())
        f.close()
        self._f = None
        os.chmod(self._tmp, 0o644 & ~_umask())
        os.replace(self._tmp, self.dest)
        _fsync_dir(self._dir)

    def _compress_outer(self, f: IO[bytes]) -> None:
        """``OUT.tar.gz`` / ``OUT.tar.zst``: the finished tar, compressed into a second temporary file
        beside the destination (the tar itself needed seeking to write), then renamed into place."""
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.dest)}.ocisquash-", dir=self._dir)
        self._tmp2 = tmp
        with os.fdopen(fd, "wb") as out:
            f.seek(0)
            with compressing_writer(out, self._outer) as w:
                shutil.copyfileobj(f, w, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        f.close()
        self._f = None
        os.unlink(self._tmp)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, self.dest)
        self._tmp2 = None
        _fsync_dir(self._dir)

    def abort(self) -> None:
        if self._writeback is not None:
            with contextlib.suppress(OutputError):
                self._writeback.close()  # before closing the fd its thread syncs
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None
        for tmp in (self._tmp, self._tmp2):
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def _fsync_dir(path: str) -> None:
    """Make the renames and new names in directory ``path`` durable (a rename is an entry in its
    directory, which has to reach the disk too). File systems that cannot sync a directory say so
    with EINVAL; nothing more can be done there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        return  # a directory we may write but not read: the kernel's own writeback will do
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def open_sink(path: str, fmt: str) -> Sink:
    """``fmt``: ``docker`` (docker save tar), ``oci`` (OCI layout tar) or ``oci-dir``; a ``docker://``
    reference is a registry (``fmt`` does not apply)."""
    from ocisquash import registry

    if registry.is_registry_ref(path):
        return registry.open_sink(path)
    if fmt == "oci-dir":
        if path == "-":
            raise OutputError("an OCI layout directory cannot go to standard output", hint="use --format oci or docker")
        return OciDirSink(path)
    return TarSink(path, docker=fmt == "docker")


def guess_format(path: str) -> str:
    """The output format from the output path, whatever the input's form: standard output, a
    ``.tar`` name (also ``.tar.gz``/``.tgz``/``.tar.zst``) or an existing file is a ``docker save``
    tarball in the Docker 25+ shape, which ``docker load`` reads and which is also an OCI layout tar;
    a directory, or any other new name, is an OCI layout directory. ``--format oci`` asks for a pure
    OCI layout tar: following the input's form instead gave OCI-tar inputs a ``.tar`` ``docker load``
    cannot read."""
    if path == "-":
        return "docker"
    if os.path.isdir(path) and not os.path.islink(path):
        return "oci-dir"
    lower = path.lower()
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")):
        return "docker"
    if os.path.exists(path) and stat.S_ISREG(os.stat(path).st_mode):
        return "docker"
    return "oci-dir"
