"""Small helpers to build layer tars in tests: ``layer(f("a", b"x"), d("dir"), wh("old"), ...)``."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from ocisquash import merge
from ocisquash.merge import LayerInput

MTIME = 1_600_000_000


@dataclass
class Entry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    xattrs: dict[str, str] = field(default_factory=dict)
    mtime: int | str = MTIME
    dev: tuple[int, int] = (0, 0)
    pax: dict[str, str] = field(default_factory=dict)

    def tarinfo(self) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(self.name)
        ti.type = self.type
        ti.mode = self.mode
        ti.uid, ti.gid = self.uid, self.gid
        ti.linkname = self.linkname
        ti.size = len(self.data) if self.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
        pax = dict(self.pax)
        pax.update({f"SCHILY.xattr.{k}": v for k, v in self.xattrs.items()})
        if isinstance(self.mtime, str):
            pax["mtime"] = self.mtime
            ti.mtime = int(self.mtime.split(".")[0])
        else:
            ti.mtime = self.mtime
        ti.pax_headers = pax
        ti.devmajor, ti.devminor = self.dev
        return ti


def f(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode, **kw)  # type: ignore[arg-type]


def d(name: str, mode: int = 0o755, **kw: object) -> Entry:
    return Entry(name, tarfile.DIRTYPE, b"", mode, **kw)  # type: ignore[arg-type]


def sym(name: str, target: str, **kw: object) -> Entry:
    return Entry(name, tarfile.SYMTYPE, b"", 0o777, linkname=target, **kw)  # type: ignore[arg-type]


def hl(name: str, target: str, **kw: object) -> Entry:
    return Entry(name, tarfile.LNKTYPE, b"", kw.pop("mode", 0o644), linkname=target, **kw)  # type: ignore[arg-type]


def wh(path: str) -> Entry:
    """Whiteout of ``path`` (``dir/.wh.name``)."""
    head, _, base = path.rstrip("/").rpartition("/")
    return Entry(f"{head}/.wh.{base}" if head else f".wh.{base}", tarfile.REGTYPE, b"", 0o644)


def opq(dirpath: str) -> Entry:
    dirpath = dirpath.strip("/")
    return Entry(f"{dirpath}/.wh..wh..opq" if dirpath else ".wh..wh..opq", tarfile.REGTYPE, b"", 0o644)


def fifo(name: str, **kw: object) -> Entry:
    return Entry(name, tarfile.FIFOTYPE, b"", 0o644, **kw)  # type: ignore[arg-type]


def chrdev(name: str, major: int = 1, minor: int = 3, **kw: object) -> Entry:
    return Entry(name, tarfile.CHRTYPE, b"", 0o666, dev=(major, minor), **kw)  # type: ignore[arg-type]


def layer(*entries: Entry, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for e in entries:
            ti = e.tarinfo()
            tf.addfile(ti, io.BytesIO(e.data) if ti.size else None)
    return buf.getvalue()


def raw_layer(blocks: Iterable[bytes]) -> bytes:
    return b"".join(blocks)


def inputs(tars: Iterable[bytes]) -> list[LayerInput]:
    out = []
    for i, data in enumerate(tars):
        def opener(b: bytes = data) -> BinaryIO:
            return io.BytesIO(b)
        out.append(LayerInput(f"L{i}", opener, opener))
    return out


def squash_stream(tars: list[bytes], keep: int) -> bytes:
    """The merged layer as ``merge.stream`` writes it (each squashed layer read once)."""
    out = io.BytesIO()
    p, ws = merge.stream(inputs(tars), keep, out)
    data = out.getvalue()
    assert ws.bytes_written == len(data)
    assert ws.entries == p.out_entries
    return data
