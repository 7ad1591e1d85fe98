"""Seeds of the hostile classes of issue 11, for the saved fuzz corpus (``testdata/corpus/<target>/``).

    python tests/fuzz/hostile_seeds.py testdata/corpus

Each seed is small (big shapes go in compressed) and must end in an ``OcisquashError`` quickly; the
corpus replay in ``tests/test_fuzz.py`` runs them all in-process, so a seed that hangs or raises
anything else fails the suite.
"""

from __future__ import annotations

import gzip
import io
import json
import lzma
import sys
import tarfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fuzz import images as I  # noqa: E402

header = I.raw_header
pad = I.pad


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _docker_with_layer(layer: bytes) -> bytes:
    return I.tar_of(I.members_docker(layers=[layer]))


def _special_member(type_: bytes) -> bytes:
    m = I.members_docker()
    pairs = []
    for k, v in m.items():
        ti = tarfile.TarInfo(k)
        ti.mtime = I.MTIME
        if k == "manifest.json":
            ti.type = type_
            pairs.append((ti, None))
        else:
            pairs.append((ti, v))
    return I.tar_of(pairs)


def _xz_dict(code: int) -> bytes:
    data = bytearray(lzma.compress(b"x" * 100, format=lzma.FORMAT_XZ,
                                   filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]))
    hsize = (data[12] + 1) * 4
    i = data.index(b"\x21\x01", 12, 12 + hsize)
    data[i + 2] = code
    data[12 + hsize - 4:12 + hsize] = zlib.crc32(bytes(data[12:12 + hsize - 4])).to_bytes(4, "little")
    return bytes(data)


def _lying_pax_layer() -> bytes:
    rec = b"size=1000000000000\n"
    rec = b"%d %s" % (len(rec) + 3, rec)
    return header("././@PaxHeader", size=len(rec), type_=b"x") + pad(rec) + header("big", size=3) + pad(b"abc")


def _history_bomb() -> bytes:
    """A docker tarball whose 16 MiB config holds 5 million empty history entries (~2 GB once parsed)."""
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    cfg = json.loads(m.pop(item["Config"]))
    cfg["history"] = []
    raw = I.jbytes(cfg).replace(b'"history":[]', b'"history":[' + b",".join([b"{}"] * 5_000_000) + b"]")
    item["Config"] = "blobs/sha256/" + I.sha(raw)[7:]
    m[item["Config"]] = raw
    m["manifest.json"] = I.jbytes([item])
    return I.tar_of(m)


def _zstd_bomb() -> bytes:
    import zstandard

    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as w:
        for _ in range(96):
            w.write(bytes(1 << 20))
    return out.getvalue()


def seeds() -> dict[str, dict[str, bytes]]:
    cfg = json.loads(I.config_for(I.default_layers()))
    return {
        "outer": {
            "hostile-negative-base256-size": header("manifest.json", b"\xff" * 11 + b"\x00") + bytes(1024),
            "hostile-base256-over-int64": header("manifest.json", b"\x80" + b"\xff" * 11) + bytes(1024),
            "hostile-pax-digits.gz": _gz(header("././@PaxHeader", size=1 << 20, type_=b"x") + pad(b"1" * (1 << 20))
                                         + header("a") + bytes(1024)),
            "hostile-pax-many-records.gz": _gz(header("././@PaxHeader", size=6 * 20_000, type_=b"x")
                                               + pad(b"6 a=b\n" * 20_000) + header("a") + bytes(1024)),
            "hostile-pax-gigabyte-header": header("././@PaxHeader", size=1 << 30, type_=b"x") + bytes(1024),
            "hostile-fifo-manifest.gz": _gz(_special_member(tarfile.FIFOTYPE)),
            "hostile-chardev-manifest.gz": _gz(_special_member(tarfile.CHRTYPE)),
            "hostile-history-5m.gz": _gz(_history_bomb()),
            "hostile-long-member-name.gz": _gz(I.tar_of({"x" * 5000: b"x", **I.members_docker()})),
            "hostile-pax-size-lie-layer.gz": _gz(_docker_with_layer(_lying_pax_layer())),
        },
        "json": {
            "hostile-nested-800": b'{"a":' + b"[" * 800 + b"]" * 800 + b"}",
            "hostile-lone-surrogate": I.jbytes({**cfg, "config": {"Labels": {"a": "SURR"}}}).replace(b"SURR",
                                                                                                      b"\\ud800"),
            "hostile-size-1e400": I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_INDEX, "manifests": [
                {"mediaType": I.OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 7}]}).replace(
                    b'"size":7', b'"size":1' + b"0" * 400),
        },
        "compression": {
            "hostile-xz-dict-2g": _xz_dict(38),
            "hostile-xz-dict-3g": _xz_dict(39),
            "hostile-zstd-bomb": _zstd_bomb(),
        },
        "layer": {
            "hostile-pax-size-lie": _lying_pax_layer() + bytes(1024),
            "hostile-negative-base256-size": header("f", b"\xff" * 11 + b"\x00") + bytes(1024),
        },
    }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else HERE.parent.parent / "testdata" / "corpus")
    for target, files in seeds().items():
        (root / target).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (root / target / name).write_bytes(data)
            print(f"{target}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
