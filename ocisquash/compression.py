"""Compression: sniff a stream's codec, open decompressing readers and compressing writers.

Sniffing looks at magic bytes first (cheap and exact) and asks python-magic only when none match.
Readers read every gzip member and every zstd frame to the end; writers are deterministic (gzip header
mtime 0, no file name) so the same input gives the same bytes. gzip goes through ISA-L (``isal``), the
fastest well-kept gzip codec on PyPI, with its compression on a background thread.
"""

from __future__ import annotations

import _compression
import bz2
import gzip
import io
import lzma
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO, Any, BinaryIO, cast

import isal.igzip as igzip
import isal.igzip_lib as igzip_lib
import isal.igzip_threaded as igzip_threaded

from ocisquash import cores, limits, model
from ocisquash.codecs import CODECS
from ocisquash.codecs import Codec as Codec  # the table's entries, as every reader of a layer names them
from ocisquash.codecs import check_level as check_level
from ocisquash.errors import FormatError
from ocisquash.streams import CountingReader, Reader

# python-magic (~10-15 ms to import, with ctypes and logging, and it loads libmagic) and zstandard are imported
# where they are needed, for start-up time: magic only when no magic bytes match, zstandard only for zstd.

SNIFF_BYTES = 512


# gzip's levels onto ISA-L's 0-3, in three bands of gzip's (fast 1-3, default 4-6, best 7-9); 0 is
# gzip's "store", no compression at all (zlib's level 0, not ISA-L's, which compresses). Measured on
# one thread on 64 MB of a real layer (a tar of /usr/lib/python3.11 and /usr/bin), output/input and
# speed: ISA-L 0 0.510 153 MB/s, 1 0.445 178 MB/s, 2 0.439 169 MB/s, 3 0.433 73 MB/s; zlib 1 0.427
# 34 MB/s, 6 0.391 8 MB/s, 9 0.390 3 MB/s. ISA-L 0 is no faster than 1 here, for a 15% larger output,
# so no gzip level maps to it; the default 6 is ISA-L 2, the codec's own default.
ISAL_LEVEL = (0, 1, 1, 1, 2, 2, 2, 3, 3, 3)
"""ISA-L's level for each gzip level (index 0 is unused: level 0 is stored)."""


def sniff_bytes(head: bytes) -> Codec:
    """The codec of a stream from its first bytes (up to SNIFF_BYTES): the table's magic bytes, the plain
    tar's last, then libmagic's names."""
    for codec in CODECS.values():
        if codec is not Codec.NONE and codec.magic(head):
            return codec
    if Codec.NONE.magic(head):
        return Codec.NONE
    try:
        import magic
    except ImportError:  # python-magic without libmagic (or not installed): the magic bytes below suffice
        return _sniff_rare(head)

    mime = magic.from_buffer(head, mime=True)
    known = {name: codec for codec in CODECS.values() for name in codec.mime}
    if mime in known:
        return known[mime]
    if mime in ("application/x-lzip", "application/x-lz4", "application/x-lzma", "application/x-compress"):
        raise FormatError(f"unsupported compression ({mime})")
    return Codec.NONE  # old-style tars without the ustar magic; the tar reader judges the rest


# The compressions libmagic names that no image tool writes: refused by name rather than misread as a tar.
# (Raw lzma has no magic worth the name: "]\0\0" also starts a v7 tar holding a file named "]". Without
# libmagic such a layer reaches the tar reader, which refuses it as not a tar.)
_RARE = ((b"LZIP", "application/x-lzip"), (b"\x04\x22\x4d\x18", "application/x-lz4"),
         (b"\x1f\x9d", "application/x-compress"))


def _sniff_rare(head: bytes) -> Codec:
    """What ``sniff_bytes`` concludes without libmagic: a rare compression is refused, the rest is a tar."""
    for prefix, mime in _RARE:
        if head.startswith(prefix):
            raise FormatError(f"unsupported compression ({mime})")
    return Codec.NONE


def codec_of_media_type(media_type: str) -> Codec | None:
    """The codec a layer media type declares, or None for a type that does not say (Docker tarballs)."""
    for codec in CODECS.values():
        if codec.media_suffix and media_type.endswith(("+" + codec.media_suffix, "." + codec.media_suffix)):
            return codec
    if media_type in (model.OCI_LAYER, model.DOCKER_LAYER, model.OCI_LAYER_ND):
        return Codec.NONE
    return None


def layer_media_type(codec: Codec, docker: bool) -> str:
    mt = codec.media_type(docker)
    if mt is None:
        raise FormatError(f"{codec.name} compression has no layer media type")
    return mt


class PrefixedReader(Reader):
    """A reader that yields ``prefix`` and then the rest of ``raw`` (used after sniffing a stream)."""

    def __init__(self, prefix: bytes, raw: IO[bytes] | BinaryIO) -> None:
        self._prefix = prefix
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if self._prefix:
            if n is None or n < 0:
                data: bytes = self._prefix + self._raw.read()
                self._prefix = b""
                return data
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return bytes(self._raw.read(n))


def _read_head(raw: IO[bytes] | BinaryIO) -> bytes:
    head = b""
    while len(head) < SNIFF_BYTES:
        chunk = raw.read(SNIFF_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head


# isal's stub declares IsalError as an instance of Exception, not a class: hence the cast.
_CODEC_ERRORS: tuple[type[BaseException], ...] = (EOFError, OSError, ValueError, lzma.LZMAError,
                                                  cast(type[BaseException], igzip_lib.IsalError))


class _ErrorMapping(Reader):
    """Turns codec exceptions (EOFError, zlib/zstd/lzma errors) into one FormatError naming the stream."""

    def __init__(self, inner: Any, what: str, codec: Codec) -> None:
        self._inner = inner
        self._what = what
        self._codec = codec
        self._errors = _CODEC_ERRORS + codec.errors
        if codec is Codec.ZSTD:  # only a zstd reader raises ZstdError (and only then is zstandard imported)
            import zstandard

            self._errors += (zstandard.ZstdError,)

    def read(self, n: int = -1) -> bytes:
        try:
            return cast(bytes, self._inner.read(n))
        except FormatError:
            raise
        except self._errors as e:
            msg = str(e) or type(e).__name__
            if isinstance(e, lzma.LZMAError) and "Memory usage limit" in msg:
                raise FormatError(f"{self._what}: this xz stream needs more than {XZ_MEMLIMIT >> 20} MiB of memory "
                                  "to decompress (its dictionary is larger than any real image uses)") from None
            if isinstance(e, EOFError):
                msg = "truncated stream (ended before the end marker)"
            raise FormatError(f"{self._what}: corrupt {self._codec.name} data: {msg}") from None

    def close(self) -> None:
        with suppress(Exception):
            self._inner.close()


_ZSTD_MAGIC = 0xFD2FB528


class _ZstdFrameCheck(Reader):
    """Passes zstd bytes through while walking the frame and block headers (it jumps over block contents, so
    it costs nothing), and raises EOFError when the input ends inside a frame: python-zstandard's reader
    silently returns what it has at such an EOF, so a truncated stream would pass for a short one."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._state = "magic"  # the header being collected next: magic, skipsize, fhd, block
        self._hdr = bytearray()
        self._skip = 0
        self._checksum = False

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)
        if data:
            self._scan(data)
        elif self._state != "magic" or self._hdr or self._skip:
            raise EOFError("zstd stream ends inside a frame")
        return data

    def _scan(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                k = min(self._skip, n - i)
                self._skip -= k
                i += k
                continue
            need = {"magic": 4, "skipsize": 4, "fhd": 1, "block": 3}[self._state]
            k = min(need - len(self._hdr), n - i)
            self._hdr += data[i:i + k]
            i += k
            if len(self._hdr) == need:
                self._advance(int.from_bytes(self._hdr, "little"))
                self._hdr.clear()

    def _advance(self, v: int) -> None:
        if self._state == "magic":
            if v == _ZSTD_MAGIC:
                self._state = "fhd"
            elif v & 0xFFFFFFF0 == 0x184D2A50:
                self._state = "skipsize"
            else:
                raise ValueError("not a zstd frame")
        elif self._state == "skipsize":
            self._skip, self._state = v, "magic"
        elif self._state == "fhd":
            fcs, single, did = v >> 6, (v >> 5) & 1, v & 3
            self._checksum = bool(v & 4)
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[did] + ((1 if single else 0), 2, 4, 8)[fcs]
            self._state = "block"
        else:
            last, btype, size = v & 1, (v >> 1) & 3, v >> 3
            if btype == 3:
                raise ValueError("reserved zstd block type")
            self._skip = 1 if btype == 1 else size
            if last:
                self._skip += 4 if self._checksum else 0
                self._state = "magic"


# xz -9 (a 64 MiB dictionary) needs 65 MiB to decompress: twice that takes every preset and custom
# setting a real image uses, and keeps a header declaring a 2 GiB dictionary from being honoured.
XZ_MEMLIMIT = 128 << 20


class _Capped(Reader):
    """Applies the decompression caps (``limits.check_expansion``) to every read of a decompressed stream."""

    def __init__(self, inner: Any, counted: CountingReader, what: str, spool: bool) -> None:
        self._raw = inner
        self._counted = counted
        self._what = what
        self._spool = spool
        self._out = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read(n)
        self._out += len(data)
        if self._out > limits.RATIO_FLOOR:
            limits.check_expansion(self._what, self._out, self._counted.count, total_cap=not self._spool,
                                   spool=self._spool)
        return data


def decompressing_reader(raw: IO[bytes] | BinaryIO, what: str, codec: Codec | None = None, *,
                         spool: bool = False) -> BinaryIO:
    """A reader of the decompressed bytes of ``raw``, sniffing the codec when ``codec`` is None.

    Every compressed stream is capped (``max_layer_bytes`` and ``max_ratio``; a whole tarball being
    spooled, ``spool``, by ``max_ratio`` and ``max_spool_ratio``), whichever command reads it; xz has a
    memory limit.
    """
    counted = CountingReader(raw)
    raw = cast(BinaryIO, counted)
    head = _read_head(raw)
    sniffed = sniff_bytes(head)
    if codec is not None and codec is not sniffed and head:
        raise FormatError(f"{what}: its media type says {codec.name} but its bytes are {sniffed.name}")
    src = PrefixedReader(head, raw)
    if sniffed is Codec.NONE:
        return cast(BinaryIO, src)
    inner = (sniffed.reader or _READERS[sniffed])(cast(BinaryIO, src))
    return cast(BinaryIO, _Capped(_ErrorMapping(inner, what, sniffed), counted, what, spool))


def _read_gzip(src: BinaryIO) -> Any:
    return igzip.GzipFile(fileobj=src, mode="rb")  # type: ignore[no-untyped-call]


def _read_zstd(src: BinaryIO) -> Any:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(cast(BinaryIO, _ZstdFrameCheck(src)),
                                                      read_across_frames=True, closefd=False)


def _read_bzip2(src: BinaryIO) -> Any:
    return bz2.BZ2File(src, "rb")


def _read_xz(src: BinaryIO) -> Any:
    # LZMAFile takes no memory limit: the same decompressing reader it builds, with one
    return io.BufferedReader(_compression.DecompressReader(
        cast(Any, src), lzma.LZMADecompressor, trailing_error=lzma.LZMAError, memlimit=XZ_MEMLIMIT))


_READERS = {Codec.GZIP: _read_gzip, Codec.ZSTD: _read_zstd, Codec.BZIP2: _read_bzip2, Codec.XZ: _read_xz}
"""The built-in codecs' readers (a registered codec brings its own, ``Codec.reader``)."""


class _NoClose:
    def __init__(self, raw: IO[bytes] | BinaryIO) -> None:
        self._raw = raw

    def write(self, data: Any) -> int:
        return self._raw.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self._raw.flush()


@contextmanager
def compressing_writer(raw: IO[bytes] | BinaryIO | Any, codec: Codec, level: int | None = None,
                       threads: int | None = None) -> Iterator[BinaryIO]:
    """A writer that compresses into ``raw`` (left open); deterministic for the same input and level."""
    lvl = check_level(codec, level)
    if threads is None:
        threads = cores.writer_threads()
    if codec.writer is not None:  # a registered codec brings its own writer
        with codec.writer(cast(BinaryIO, raw), lvl, threads) as w:
            yield w
        return
    if codec is Codec.NONE:
        yield cast(BinaryIO, raw)
        return
    if codec is Codec.GZIP:
        gz: Any
        if lvl == 0:
            # stored blocks, as gzip's level 0 means (deterministic: no name, mtime 0)
            gz = gzip.GzipFile(filename="", mode="wb", compresslevel=0, fileobj=_NoClose(raw), mtime=0)
        else:
            # igzip_threaded compresses 1 MiB blocks on worker threads and writes one gzip member
            # whose bytes do not depend on the thread count (checked in tests).
            opener: Any = igzip_threaded.open
            gz = opener(_NoClose(raw), "wb", compresslevel=ISAL_LEVEL[lvl], threads=threads)
        try:
            yield cast(BinaryIO, gz)
        finally:
            gz.close()
        return
    # zstd output is the same for any worker count >= 1 (it differs with 0 workers), and 1 MiB jobs
    # keep the workers' buffers small: measured on 300 MB, 2 workers take 27 MB RSS with 1 MiB jobs
    # and 75 MB with the default job size, at the same speed.
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(lvl, threads=max(1, threads), job_size=1 << 20,
                                                           write_checksum=False)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    zw: Any = cctx.stream_writer(raw, closefd=False)
    try:
        yield cast(BinaryIO, zw)
    finally:
        zw.close()
