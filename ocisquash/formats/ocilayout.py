"""OCI image layouts, read and written: find the images a layout (a directory or a tar of one) holds and
load them; write a layout directory (``OciDirSink``) and the ``index.json`` of any layout.

Reading and writing sit together because they share one idea of what a layout's files are; the tar
form is written by ``ocitar``.

``index.json`` is walked through nested indexes (with a depth cap and cycle guard); attestation
manifests and unknown media types are skipped; a platform whose manifest blob is missing (a
containerd export of one platform) is skipped too, since only a blob we need is an error. Every blob
read is checked against its descriptor's size and digest. The walk (``walk_index``) and the image built
from a manifest (``image_of``) take how the documents and blobs are read, so a registry reference
(``registry.format``) is read by the same rules without being a layout.

Writing: a new layout is built in a temporary directory beside the destination and renamed into
place at commit; an existing one is written in place under its lock (``commit.LayoutLock``, held
from open to commit, ``index.json`` read again under it). A blob already there is used only once its
size and digest are checked, and replaced atomically if wrong; a failed run removes the blobs it
added and only those; a FIFO, socket or device where the layout has a file is an error, never opened.

The names an ``index.json`` entry gives its image, read and written, follow one rule, ``layoutnames``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ocisquash import limits, model
from ocisquash.archive import Tree
from ocisquash.compression import Codec, codec_of_media_type
from ocisquash.digest import Digest, HashingWriter
from ocisquash.errors import DigestMismatch, FormatError, LimitExceeded, MissingBlob, OutputError
from ocisquash.formats import commit
from ocisquash.formats.commit import Sink
from ocisquash.formats.layoutnames import index_bytes, index_entries, names_of, preferred_names
from ocisquash.image import BlobOpener, Image, Layer
from ocisquash.model import Descriptor, ImageConfig, Index, Manifest

ATTESTATION_KEY = "vnd.docker.reference.type"


def blob_path(d: Digest) -> str:
    # Digest.parse already checked the grammar and, for sha256/sha512, the exact hex form.
    if not d.verifiable:
        raise FormatError(f"blob {d}: unsupported digest algorithm; cannot build a verified path")
    return f"blobs/{d.algorithm}/{d.encoded}"


def read_blob(tree: Tree, desc: Descriptor, what: str, max_size: int | None = None) -> bytes:
    """A small blob (JSON), checked against its descriptor before anyone parses it."""
    cap = max_size if max_size is not None else limits.current().max_json
    if desc.size > cap:
        raise limits.exceeded("max_json", f"{tree.label}: {what} {desc.digest} is {desc.size} bytes, over the cap")
    path = blob_path(desc.digest)
    try:
        data = tree.read(path, cap)
    except FormatError:
        # asked only now, not before every read: for a blob that is not there, this message
        if tree.exists(path):
            raise
        raise MissingBlob(f"{tree.label}: {what} {desc.digest} is missing") from None
    if len(data) != desc.size:
        raise DigestMismatch(f"{tree.label}: {what} {desc.digest} is {len(data)} bytes, "
                             f"its descriptor says {desc.size}")
    got = hashlib.new(desc.digest.algorithm, data).hexdigest()
    if got != desc.digest.encoded:
        raise DigestMismatch(f"{tree.label}: {what} {desc.digest} does not match its content "
                             f"({desc.digest.algorithm}:{got})")
    return data


@dataclass(slots=True)  # slots: a listing of 20,000 images holds one per image
class Entry:
    """One image manifest reachable from index.json, with the names of the top-level entry it is under."""

    names: list[str]
    descriptor: Descriptor
    manifest: Manifest
    platform: model.Platform | None
    top: Descriptor
    annotations: dict[str, str] = field(default_factory=dict)


def read_index_json(tree: Tree) -> Index:
    if tree.exists("oci-layout"):
        f = model.Fields(model.load_json(tree.read("oci-layout", 1 << 16), f"{tree.label}: oci-layout"),
                         f"{tree.label}: oci-layout")
        version = f.req_str("imageLayoutVersion")
        if version != "1.0.0":
            raise FormatError(f"{tree.label}: oci-layout version {version!r} is not supported (1.0.0 is)")
    if not tree.exists("index.json"):
        raise FormatError(f"{tree.label}: not an OCI image layout (no index.json)")
    cap = limits.current().max_json
    return Index.parse(tree.read("index.json", cap), f"{tree.label}: index.json")


Fetch = Callable[[Descriptor], bytes | None]
"""A manifest or index named by a descriptor, its bytes checked against it (``read_blob``); None when the
input does not hold it."""


def entries(tree: Tree) -> list[Entry]:
    """Every image manifest index.json leads to, in index order."""
    def fetch(desc: Descriptor) -> bytes | None:
        # Whether the blob is there is asked only when reading it failed, not before every read.
        try:
            return read_blob(tree, desc, "manifest")
        except (MissingBlob, LimitExceeded) as e:
            if isinstance(e, LimitExceeded) and tree.exists(blob_path(desc.digest)):
                raise
            return None  # missing, whatever size its descriptor claims

    return walk_index(read_index_json(tree).manifests, fetch, tree.label)


def walk_index(tops: Sequence[Descriptor], fetch: Fetch, label: str) -> list[Entry]:
    """Every image manifest the descriptors ``tops`` lead to, in order, whoever holds the documents (a
    layout's index.json lists ``tops``; a registry reference resolves to one)."""
    out: list[Entry] = []
    visits = [0]
    docs: dict[tuple[Digest, str], Index | Manifest | None] = {}
    sizes: dict[Digest, int] = {}
    for desc in tops:
        _walk(fetch, label, desc, desc, out, depth=0, seen=set(), visits=visits, docs=docs, sizes=sizes)
    cap = limits.current().max_images
    if len(out) > cap:
        raise limits.exceeded("max_images", f"{label}: holds {len(out)} images, over the cap of {cap}")
    return out


def is_attestation(desc: Descriptor) -> bool:
    if desc.annotations.get(ATTESTATION_KEY) == "attestation-manifest":
        return True
    if "io.containerd.manifest.subject" in desc.annotations:
        return True
    p = desc.platform
    return p is not None and p.os == "unknown" and p.architecture == "unknown"


def _walk(fetch: Fetch, label: str, desc: Descriptor, top: Descriptor, out: list[Entry], depth: int,
          seen: set[Digest], visits: list[int], docs: dict[tuple[Digest, str], Index | Manifest | None],
          sizes: dict[Digest, int]) -> None:
    # Indexes may repeat a child many times at every level: count descriptors walked, or a small
    # file fans out to billions of visits (found by fuzzing).
    visits[0] += 1
    cap = limits.current().max_images
    if visits[0] > cap:
        raise limits.exceeded("max_images", f"{label}: its indexes list more than {cap} manifests in all")
    if is_attestation(desc):
        return
    kind_hint = desc.media_type
    if kind_hint not in model.INDEX_TYPES and kind_hint not in model.MANIFEST_TYPES:
        if kind_hint in model.SCHEMA1:
            raise FormatError(f"{label}: {desc.digest} is a Docker schema 1 manifest, which is obsolete and "
                              "not supported")
        return  # unknown media types MUST NOT be an error: skip them
    if desc.digest in seen:
        raise FormatError(f"{label}: index {desc.digest} refers back to itself (a cycle)")
    # Each document is read, verified and parsed once per walk (``docs``), however many descriptors name
    # it: 10,000 index entries naming one 16 MiB manifest would otherwise read 160 GB and hold it all.
    key = (desc.digest, desc.media_type)
    if key not in docs:
        data = fetch(desc)
        if data is None:
            if desc is not top:
                return  # a platform nobody pulled: fine until someone asks for it
            raise MissingBlob(f"{label}: manifest {desc.digest} named in index.json is missing")
        where = f"{label}: {desc.digest}"
        obj = model.load_json(data, where)
        kind = model.document_kind(obj, desc.media_type)
        doc: Index | Manifest | None = None
        if kind == "index":
            doc = Index.parse(data, where, media_type=desc.media_type, parsed=obj)
        elif kind == "manifest":
            doc = Manifest.parse(data, where, media_type=desc.media_type, parsed=obj)
        docs[key] = doc
        sizes[desc.digest] = desc.size
    elif sizes[desc.digest] != desc.size:
        raise DigestMismatch(f"{label}: manifest {desc.digest} is {sizes[desc.digest]} bytes, "
                             f"its descriptor says {desc.size}")
    doc = docs[key]
    if isinstance(doc, Index):
        max_depth = limits.current().max_index_depth
        if depth + 1 > max_depth:
            raise limits.exceeded("max_index_depth", f"{label}: image indexes nested deeper than {max_depth}")
        for child in doc.manifests:
            _walk(fetch, label, child, top, out, depth + 1, seen | {desc.digest}, visits, docs, sizes)
    elif isinstance(doc, Manifest):
        if doc.config.media_type not in model.CONFIG_TYPES:
            return  # an artifact, not an image
        out.append(Entry(names_of(top), desc, doc, desc.platform, top, dict(top.annotations)))


def load(tree: Tree, entry: Entry, *, source: str = "", plain: dict[str, bool] | None = None) -> Image:
    """The image behind one entry: its config (verified) and its layers (verified when read).

    ``plain``: whether each uncompressed layer blob is a seekable file there, kept across the loads of one
    listing (its images share their layers: 20,000 images name 44,000 layers, a few dozen blobs)."""
    def layer_blob(ld: Descriptor, what: str) -> tuple[BlobOpener, bool]:
        path = blob_path(ld.digest)
        return _opener(tree, path, what), codec_of_media_type(ld.media_type) is Codec.NONE and \
            _plain_file(tree, path, plain)

    return image_of(entry, read_blob(tree, entry.manifest.config, "config"), tree.label, layer_blob, source)


LayerBlob = Callable[[Descriptor, str], tuple[BlobOpener, bool]]
"""How an input opens a layer's blob (``(descriptor, what)``): the opener, and whether it is an
uncompressed tar in a seekable file."""


def image_of(entry: Entry, cfg_bytes: bytes, label: str, layer_blob: LayerBlob, source: str = "") -> Image:
    """The image behind one entry, from its config's bytes (checked against the manifest already) and how
    the input opens each layer blob, whoever holds them (a layout, a registry)."""
    man = entry.manifest
    config = ImageConfig.parse(cfg_bytes, f"{label}: config {man.config.digest}")
    if len(man.layers) != len(config.diff_ids):
        raise FormatError(f"{label}: manifest {entry.descriptor.digest} has {len(man.layers)} layers but its "
                          f"config has {len(config.diff_ids)} diff IDs")
    cap = limits.current().max_layers
    if len(man.layers) > cap:
        raise limits.exceeded("max_layers", f"{label}: image has {len(man.layers)} layers, over the cap")
    layers = []
    for i, (ld, diff_id) in enumerate(zip(man.layers, config.diff_ids, strict=True)):
        what = f"{label}: layer {i + 1}/{len(man.layers)} {ld.digest}"
        opener, plain = layer_blob(ld, what)
        layers.append(Layer(
            index=i, diff_id=diff_id, size=ld.size, media_type=ld.media_type, digest=ld.digest,
            opener=opener, what=what, is_plain_file=plain,
            urls=ld.urls, annotations=dict(ld.annotations), codec=codec_of_media_type(ld.media_type),
        ))
    img = Image(names=preferred_names(entry.names), config=config, layers=layers, manifest=man,
                manifest_digest=entry.descriptor.digest, manifest_descriptor=entry.descriptor,
                source=source or label, index_annotations=entry.annotations)
    return img


def _plain_file(tree: Tree, path: str, memo: dict[str, bool] | None) -> bool:
    got = memo.get(path) if memo is not None else None
    if got is None:
        got = tree.exists(path) and tree.is_seekable_file(path)
        if memo is not None:
            memo[path] = got
    return got


def _opener(tree: Tree, path: str, what: str):  # type: ignore[no-untyped-def]
    def open_blob():  # type: ignore[no-untyped-def]
        if not tree.exists(path):
            raise MissingBlob(f"{what}: blob is missing")
        return tree.open(path)

    return open_blob


OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'


class OciDirSink(Sink):
    """An OCI layout directory: a new one (built beside, renamed in at commit) or an existing one.

    An existing layout is written under its lock (``commit.LayoutLock``); its ``oci-layout``,
    ``index.json`` and blob names must be regular files (a FIFO or device there is an error, never
    opened). A blob it already holds under a digest this run writes is relied on only if its size
    and digest are right; otherwise it is replaced, atomically, with the bytes just written. A run
    that fails removes the blobs it added, and only those.

    Blobs may be written from several threads at once (each streams into a temporary file of its own);
    ``_placing`` serialises checking a blob's name and renaming it into place.
    """

    concurrency = "shared"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.label = path
        self.dest = os.path.abspath(path)
        commit.refuse_symlink(self.dest)
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
        self._lock: commit.LayoutLock | None = None
        self._added: list[str] = []  # blobs (and directories) this run put into an existing layout
        self._verified: set[Digest] = set()  # existing blobs checked once this run
        self._temps: list[str] = []
        self._placing = threading.Lock()
        if self.existing:
            self.root = self.dest
            for sub in ("blobs", "blobs/sha256", "index.json"):
                commit.refuse_symlink(os.path.join(self.root, sub))  # a layout must not lead us outside it
        with commit.writing(path):
            if self.existing:
                self._check_layout()
                self._lock = commit.LayoutLock(self.root, path)
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
            st = commit.lstat_or_none(os.path.join(self.root, name))
            if st is None:
                continue
            if want_dir and not stat.S_ISDIR(st.st_mode):
                raise commit.not_regular(self.label, name, st.st_mode, "a directory")
            if not want_dir and not stat.S_ISREG(st.st_mode):
                raise commit.not_regular(self.label, name, st.st_mode)
        if os.path.lexists(os.path.join(self.root, "oci-layout")):
            raw = commit.read_regular(os.path.join(self.root, "oci-layout"), self.label, "oci-layout", 1 << 16,
                                      "max_json")
            obj = model.load_json(raw, f"{self.label}: oci-layout")
            version = obj.get("imageLayoutVersion") if isinstance(obj, dict) else None
            if version != "1.0.0":
                raise FormatError(f"{self.label}: oci-layout version {version!r} is not supported (1.0.0 is)",
                                  hint="write to a new directory")

    def _read_index(self) -> list[dict[str, Any]]:
        raw = commit.read_regular(os.path.join(self.root, "index.json"), self.label, "index.json",
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
        st = commit.lstat_or_none(p)
        if st is None:
            return "absent"
        if stat.S_ISLNK(st.st_mode):
            return "bad"  # replaced by the real blob: a layout must not lead outside itself
        name = f"blobs/sha256/{digest.encoded}"
        if not stat.S_ISREG(st.st_mode):
            raise commit.not_regular(self.label, name, st.st_mode)
        if size is not None and st.st_size != size:
            return "bad"
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise commit.not_regular(self.label, name, os.fstat(fd).st_mode)
            h = hashlib.new(digest.algorithm)
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != digest.encoded:
            return "bad"
        self._verified.add(digest)
        return "ok"

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        with commit.writing(self.label):
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self._blobs)
        self._temps.append(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                writeback = commit.Writeback(fd, self.label)
                try:
                    out = commit.GuardedWriter(f, self.label, writeback)
                    with contextlib.closing(HashingWriter(out, threaded=True)) as hw:  # type: ignore[arg-type]
                        produce(hw)  # type: ignore[arg-type]
                        d = hw.digest()
                    with commit.writing(self.label):
                        with self._placing:
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
            with commit.writing(self.label), self._placing:
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
        with commit.writing(self.label):
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
        data = index_bytes(index_entries(self.images, existing))
        # The blobs index.json will name were renamed into place: their names must be on disk first.
        commit.fsync_dir(self._blobs)
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
        commit.fsync_dir(self.root)
        if self._tmpdir is not None:
            os.chmod(self._tmpdir, 0o755)
            if os.path.isdir(self.dest):
                if os.listdir(self.dest):
                    raise OutputError(f"{self.label}: was created by another writer while this one ran",
                                      hint="run again to add the image to it")
                os.rmdir(self.dest)  # an empty directory given as the destination
            os.rename(self._tmpdir, self.dest)
            self._tmpdir = None
            commit.fsync_dir(os.path.dirname(os.path.abspath(self.dest)))

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
