"""The layer compressions ocisquash knows: one table, one entry per codec.

Everything the package says about a codec is read from its entry: the name ``--compression`` and
``Compression`` take, the magic bytes that recognise it, its levels, its layer media types, whether
ocisquash writes it, the words ``--help`` gives it. The table is pure data and cheap to import (the
command line builds its help from it); the built-in codecs' readers and writers are in ``compression``.
A codec added from outside (``register``) brings its own reader and writer (docs/design.md, "Adding a
compression").
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

from ocisquash.errors import UsageError

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

Reader = Callable[[BinaryIO], Any]
"""A decompressing reader over a stream of the codec's bytes (anything with ``read``)."""
Writer = Callable[[BinaryIO, int, int], AbstractContextManager[BinaryIO]]
"""``(raw, level, threads)``: a writer that compresses into ``raw`` (left open), at a checked level."""


@dataclass(frozen=True, eq=False)
class Codec:
    """A layer compression. Compared by identity: each is one entry of ``CODECS``."""

    name: str
    """As ``--compression``, ``Compression`` and the messages spell it."""
    magic: Callable[[bytes], bool]
    """Whether a stream's first bytes (up to 512) are this codec's."""
    mime: tuple[str, ...] = ()
    """libmagic's names for it (asked only when no magic bytes match)."""
    media_suffix: str | None = None
    """Its layer media types end in ``+SUFFIX`` (OCI) and ``.SUFFIX`` (Docker); "" for a plain tar; None:
    it has none (such a layer is recompressed on the way into a layout)."""
    writes: bool = False
    """Whether ocisquash writes it (``--compression``)."""
    levels: tuple[int, int] = (0, 0)
    default_level: int = 0
    level_note: str = ""
    """What ``--level``'s help says of its levels beyond the range and default."""
    reader: Reader | None = None
    """Its decompressing reader; None for a built-in codec (``compression`` has its reader)."""
    writer: Writer | None = None
    """Its compressing writer; None for a built-in codec or one ocisquash only reads."""
    errors: tuple[type[BaseException], ...] = ()
    """The exceptions its reader raises on corrupt data beyond OSError/ValueError/EOFError (one error line)."""

    NONE: ClassVar[Codec]
    GZIP: ClassVar[Codec]
    ZSTD: ClassVar[Codec]
    BZIP2: ClassVar[Codec]
    XZ: ClassVar[Codec]

    def media_type(self, docker: bool) -> str | None:
        """Its layer media type in an OCI (or Docker) manifest; None if it has none."""
        if self.media_suffix is None:
            return None
        base, sep = (DOCKER_LAYER, ".") if docker else (OCI_LAYER, "+")
        return base + sep + self.media_suffix if self.media_suffix else base

    def __repr__(self) -> str:
        return f"Codec({self.name!r})"


def _zstd_magic(head: bytes) -> bool:
    # a frame, or a skippable frame (0x184D2A5?)
    return head.startswith(b"\x28\xb5\x2f\xfd") or (len(head) >= 4 and head[0] & 0xF0 == 0x50
                                                    and head[1:4] == b"\x2a\x4d\x18")


def _tar_magic(head: bytes) -> bool:
    # the ustar magic, or an empty tar (all zero blocks) or nothing at all
    return (len(head) >= 262 and head[257:262] == b"ustar") or not any(head)


# In the order they are sniffed (the plain tar last) and listed: gzip first, ocisquash's default.
CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec("gzip", lambda h: h.startswith(b"\x1f\x8b"), ("application/gzip", "application/x-gzip"), "gzip",
          writes=True, levels=(0, 9), default_level=6,
          level_note="as gzip's: 0 stores; on ISA-L 1-3 is its level 1, 4-6 its 2, 7-9 its 3"),
    Codec("zstd", _zstd_magic, ("application/zstd",), "zstd", writes=True, levels=(1, 19), default_level=3),
    Codec("bzip2", lambda h: h.startswith(b"BZh"), ("application/x-bzip2",)),
    Codec("xz", lambda h: h.startswith(b"\xfd7zXZ\x00"), ("application/x-xz",)),
    Codec("none", _tar_magic, ("application/x-tar",), "", writes=True),
)}
Codec.GZIP, Codec.ZSTD, Codec.BZIP2 = CODECS["gzip"], CODECS["zstd"], CODECS["bzip2"]
Codec.XZ, Codec.NONE = CODECS["xz"], CODECS["none"]
BUILT_IN = frozenset(CODECS.values())


def register(codec: Codec) -> Codec:
    """Add a codec to the table: read by its magic bytes, written by ``--compression NAME`` if it
    ``writes``, its media types recognised, listed in messages. It brings its own reader (and writer)."""
    if codec.name in CODECS:
        raise ValueError(f"a codec named {codec.name!r} is registered already")
    if codec.reader is None or (codec.writes and codec.writer is None):
        raise ValueError(f"codec {codec.name!r}: a reader (and a writer, if it writes) is needed")
    CODECS[codec.name] = codec
    return codec


def unregister(codec: Codec) -> None:
    """Take a registered codec out again (a built-in one stays)."""
    if codec not in BUILT_IN:
        CODECS.pop(codec.name, None)


def written() -> list[Codec]:
    """The codecs ocisquash writes, in the table's order."""
    return [c for c in CODECS.values() if c.writes]


def either(words: list[str]) -> str:
    """``gzip, zstd or none``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def written_names() -> str:
    """The written codecs' names, ``gzip, zstd or none``."""
    return either([c.name for c in written()])


def parse(text: str) -> Codec:
    """The codec ocisquash writes named ``text`` (``--compression``'s words), else ``UsageError``."""
    c = CODECS.get(text)
    if c is None:
        raise UsageError(f"unknown compression {text!r}: use {written_names()}")
    if not c.writes:
        raise UsageError(f"ocisquash writes {written_names()}, not {text}")
    return c


def check_level(codec: Codec, level: int | None, spelt: str = "--level ") -> int:
    """``level`` if within the codec's range (its default for None), else ``UsageError`` naming it as
    ``spelt`` spells the option (the command line's ``--level N``, the API's ``level=N``)."""
    if level is None:
        return codec.default_level
    lo, hi = codec.levels
    if not lo <= level <= hi:
        raise UsageError(f"{spelt}{level} is out of range for {codec.name}: {lo} to {hi}")
    return level


def leveled() -> list[Codec]:
    """The written codecs that take a level (not the plain tar)."""
    return [c for c in written() if c.levels != (0, 0)]


def level_help() -> str:
    """``--level``'s help: each codec's range, default and note."""
    parts = [f"{c.name} {c.levels[0]}-{c.levels[1]} (default {c.default_level}"
             f"{'; ' + c.level_note if c.level_note else ''})" for c in leveled()]
    return f"Compression level: {', '.join(parts)}."
