"""OCI layout tarballs, written: one tar writer for the OCI layout tar and the ``docker save`` tarball.

A Docker 25+ ``docker save`` tarball is an OCI layout tar with ``manifest.json`` added, so one writer
serves both: ``TarSink(docker=True)`` adds the ``manifest.json`` that ``dockersave`` builds. Reading
either form needs no code here: ``archive.TarTree`` gives the members, ``ocilayout`` and
``dockersave`` read them.

The tar is written to a temporary file beside the destination and renamed into place at commit
(``commit.publish``). Blobs are content-addressed and written once; their digests are computed while
they stream, so each is written behind a placeholder header that is patched with the real name and
size once the blob is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import IO, BinaryIO

from ocisquash.compression import Codec, compressing_writer
from ocisquash.digest import Digest, HashingWriter
from ocisquash.errors import OutputError
from ocisquash.formats import commit
from ocisquash.formats.commit import Sink
from ocisquash.formats.dockersave import docker_manifest_json
from ocisquash.formats.layoutnames import index_bytes, index_entries
from ocisquash.formats.ocilayout import OCI_LAYOUT_BYTES
from ocisquash.tar.encode import member_header

OUTER_CODECS = {".tar.gz": Codec.GZIP, ".tgz": Codec.GZIP, ".tar.zst": Codec.ZSTD, ".tar.zstd": Codec.ZSTD}
"""Output names that ask for the whole tarball compressed, as ``docker save | gzip`` gives (docker load,
podman and skopeo read those); the ``docker save`` format claims them (``formats.builtin``)."""


def outer_codec(path: str) -> Codec:
    lower = path.lower()
    return next((c for ext, c in OUTER_CODECS.items() if lower.endswith(ext)), Codec.NONE)


class TarSink(Sink):
    """An OCI layout tar, or with ``docker=True`` a ``docker save`` tar in the Docker 25+ shape.

    Written to a temporary file beside the destination (or in $TMPDIR for standard output) and renamed
    or copied out at commit; all members are regular files.
    """

    concurrency = "staged"  # one stream: images written at once are staged, then appended in order

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
            commit.refuse_symlink(path)
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise OutputError(f"{path}: its directory {parent} does not exist")
            if os.path.isdir(path):
                raise OutputError(f"{path}: is a directory", hint="use --format oci-dir to write a layout directory")
            with commit.writing(path):
                fd, self._tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.ocisquash-", dir=parent)
        self._dir = os.path.dirname(os.path.abspath(path)) if path != "-" else ""
        self._tmp2: str | None = None
        self._outer = outer_codec(path)
        self._f: IO[bytes] | None = os.fdopen(fd, "w+b")
        self._digests: set[Digest] = set()
        # Only a temporary that becomes the output is synced: the one copied to stdout or compressed
        # into a second file is read back instead, and would be written to disk for nothing.
        self._writeback = commit.Writeback(fd, self.label) if path != "-" and self._outer is Codec.NONE else None
        try:
            self._add_member("oci-layout", OCI_LAYOUT_BYTES)
        except BaseException:
            self.abort()
            raise

    def _add_member(self, name: str, data: bytes) -> None:
        assert self._f is not None
        with commit.writing(self.label):
            self._f.write(member_header(name, len(data)))
            self._f.write(data)
            self._f.write(b"\0" * (-len(data) % 512))

    def has(self, digest: Digest) -> bool:
        return digest in self._digests

    def put_stream(self, produce: Callable[[BinaryIO], None]) -> tuple[Digest, int]:
        f = self._f
        assert f is not None
        with commit.writing(self.label):
            start = f.tell()
            f.write(b"\0" * 512)  # placeholder header: the name is the digest, known only at the end
        # On an error the caller aborts the whole sink: nothing to take back out here.
        out = commit.GuardedWriter(f, self.label, self._writeback)
        with contextlib.closing(HashingWriter(out, threaded=True)) as hw:  # type: ignore[arg-type]
            produce(hw)  # type: ignore[arg-type]
            d, n = hw.digest(), hw.count
        with commit.writing(self.label):
            hw.flush()
            if d in self._digests:
                f.seek(start)
                f.truncate()
                return d, n
            f.write(b"\0" * (-n % 512))
            end = f.tell()
            f.seek(start)
            f.write(member_header(f"blobs/sha256/{d.encoded}", n))
            f.seek(end)
        self._digests.add(d)
        return d, n

    def commit(self) -> None:
        with commit.writing(self.label):
            self._commit()

    def _commit(self) -> None:
        f = self._f
        assert f is not None
        self._add_member("index.json", index_bytes(index_entries(self.images, [])))
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
        commit.publish(self._tmp, self.dest, self._dir)

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
        commit.publish(tmp, self.dest, self._dir)
        self._tmp2 = None

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

