"""Hostile input, second round (issue 11, input side): hangs, resource bombs, internal errors, terminal safety.

Every case runs the real CLI in a child process with a timeout, so a hang fails the test instead of
hanging the suite, and the child's peak RSS is measured with ``os.wait4`` (its own rusage, not an
estimate). Big inputs are sparse files or streamed, so the tests stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import json
import lzma
import os
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
from fuzz import images as I

from ocisquash import limits

RSS_CAP = 300 << 20  # bytes: the bound for every hostile case


@pytest.fixture(autouse=True)
def fresh_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for k in list(os.environ):
        if k.startswith("OCISQUASH_"):
            monkeypatch.delenv(k)
    limits.reset()
    yield
    limits.reset()


@dataclass
class Run:
    rc: int
    out: str
    err: str
    peak_rss: int  # bytes

    def error(self) -> str:
        return self.err


# The child's own rusage: a vforked child's ru_maxrss starts from the parent's high-water mark (Linux
# records the old mm's peak at exec), so the CLI runs as the grandchild of a small fresh interpreter,
# which reports the peak RSS of the CLI alone.
_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "ocisquash", *sys.argv[2:]])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(ru.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def cli(*args: str | os.PathLike[str] | bytes, timeout: float = 60, stdin: bytes | None = None,
        env: dict[str, str] | None = None) -> Run:
    """Run ``ocisquash ARGS`` as a child; fail (not hang) after ``timeout`` seconds; measure its peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp, \
            tempfile.NamedTemporaryFile("r") as rss:
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
        argv = [os.fsencode(a) if not isinstance(a, bytes) else a for a in args]
        p = subprocess.Popen([os.fsencode(sys.executable), b"-c", _WRAPPER.encode(), rss.name.encode(), *argv],
                             stdout=out, stderr=err, stdin=inp, env=e, start_new_session=True)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            pytest.fail(f"ocisquash {' '.join(map(str, args))} hung (killed after {timeout} s)")
        out.seek(0)
        err.seek(0)
        peak = int(rss.read() or 0)
        return Run(p.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"), peak)


def assert_clean_error(r: Run, phrase: str, rc: int = 1) -> None:
    """Exit ``rc`` with exactly one ``error:`` line naming ``phrase`` (a hint line may follow), no traceback."""
    assert r.rc == rc, (r.rc, r.err[-2000:])
    lines = r.err.strip("\n").split("\n")
    assert lines[0].startswith("error: "), r.err[-2000:]
    assert all(ln.startswith("hint: ") for ln in lines[1:]), r.err[-2000:]
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert phrase in r.err, r.err[-2000:]
    assert "\x1b" not in r.err


def assert_rss(r: Run, what: str) -> None:
    print(f"peak RSS {what}: {r.peak_rss / (1 << 20):.0f} MiB")
    assert r.peak_rss < RSS_CAP, f"{what}: peak RSS {r.peak_rss >> 20} MiB"


def layout_dir(tmp: Path, members: dict[str, bytes] | None = None) -> Path:
    return I.write_dir(I.members_oci() if members is None else members, tmp / "lay")


header = I.raw_header
pax_record = I.pax_record
pad = I.pad


# ======================================================================================== 1. hangs

SPECIALS = ["fifo", "socket", "chardev"]


def make_special(path: Path, kind: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        short = tempfile.mkdtemp(dir="/tmp")  # AF_UNIX paths are at most 107 bytes: bind short, then move
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(short, "s"))
        s.close()
        os.rename(os.path.join(short, "s"), path)
        os.rmdir(short)
    else:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: never ends


@pytest.mark.parametrize("kind", SPECIALS)
@pytest.mark.parametrize("where", ["oci-layout", "index.json", "manifest", "config", "layer"])
@pytest.mark.parametrize("cmd", ["images", "squash", "validate"])
def test_special_file_in_layout_dir(tmp_path: Path, kind: str, where: str, cmd: str) -> None:
    m = I.members_oci()
    man = json.loads(m["index.json"])["manifests"][0]["digest"][7:]
    man_obj = json.loads(m[f"blobs/sha256/{man}"])
    name = {"oci-layout": "oci-layout", "index.json": "index.json", "manifest": f"blobs/sha256/{man}",
            "config": "blobs/sha256/" + man_obj["config"]["digest"][7:],
            "layer": "blobs/sha256/" + man_obj["layers"][0]["digest"][7:]}[where]
    lay = layout_dir(tmp_path, m)
    make_special(lay / name, kind)
    args = {"images": ["images", lay], "squash": ["squash", lay, tmp_path / "out.tar", "-t", "x:1"],
            "validate": ["validate", lay]}[cmd]
    r = cli(*args, timeout=30)
    what = {"fifo": "a FIFO", "socket": "a socket", "chardev": "a character device"}[kind]
    if cmd == "validate" and r.rc == 1 and not r.err:
        assert what in r.out and "not a regular file" in r.out, r.out  # a finding, reported as a mismatch
    elif cmd == "images" and where == "layer":
        assert r.rc == 0  # listing reads JSON only; the planted layer is never opened
    else:
        assert_clean_error(r, f"{what}, not a regular file")
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("type_", [b"6", b"3", b"4"])
@pytest.mark.parametrize("target", ["manifest.json", "config", "layer"])
def test_special_member_in_outer_tar(tmp_path: Path, type_: bytes, target: str) -> None:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    name = {"manifest.json": "manifest.json", "config": item["Config"], "layer": item["Layers"][0]}[target]
    pairs: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for k, v in m.items():
        ti = tarfile.TarInfo(k)
        ti.mode, ti.mtime = 0o644, I.MTIME
        if k == name:
            ti.type = type_
            pairs.append((ti, None))
        else:
            pairs.append((ti, v))
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(pairs))
    what = {b"6": "FIFO", b"3": "character device", b"4": "block device"}[type_]
    r = cli("squash", p, tmp_path / "out.tar", "-t", "x:1", timeout=30)
    assert_clean_error(r, f"is a {what}, not a regular file")


@pytest.mark.parametrize("cmd", ["images", "validate", "squash"])
def test_device_as_input(tmp_path: Path, cmd: str) -> None:
    dev = tmp_path / "zero"
    make_special(dev, "chardev")
    args = ["squash", dev, tmp_path / "o.tar"] if cmd == "squash" else [cmd, dev]
    assert_clean_error(cli(*args, timeout=30), "is a character device, not an image file")


# ======================================================================================== 2. outer tar CVE shapes

def negative_size_tar() -> bytes:
    """A member whose base-256 size is negative: Python 3.11.7's tarfile loops for ever (CVE-2025-8194)."""
    neg = b"\xff" * 11 + b"\x00"  # -256 in GNU base-256
    return header("manifest.json", neg) + bytes(1024)


def pax_digits_tar(n: int = 1 << 20) -> bytes:
    """A PAX header of ``n`` digits: tarfile's regex parses it in quadratic time (CVE-2024-6232)."""
    return header("././@PaxHeader", size=n, type_=b"x") + pad(b"1" * n) + header("a") + bytes(1024)


def test_negative_base256_size(tmp_path: Path) -> None:
    p = tmp_path / "neg.tar"
    p.write_bytes(negative_size_tar())
    for cmd in ("images", "validate"):
        assert_clean_error(cli(cmd, p, timeout=20), "negative size")
    assert_clean_error(cli("squash", p, tmp_path / "o.tar", timeout=20), "negative size")


def test_base256_size_over_int64(tmp_path: Path) -> None:
    p = tmp_path / "big.tar"
    p.write_bytes(header("manifest.json", b"\x80" + b"\xff" * 11) + bytes(1024))
    assert_clean_error(cli("images", p, timeout=20), "over 2^63-1")


def test_pax_header_of_digits(tmp_path: Path) -> None:
    p = tmp_path / "pax.tar"
    p.write_bytes(pax_digits_tar())
    assert_clean_error(cli("images", p, timeout=20), "malformed PAX record")
    gz = tmp_path / "pax.tar.gz"
    gz.write_bytes(gzip.compress(pax_digits_tar(), mtime=0))
    assert_clean_error(cli("validate", gz, timeout=20), "malformed PAX record")


def test_pax_record_count_is_capped(tmp_path: Path) -> None:
    recs = b"6 a=b\n" * 20_000
    p = tmp_path / "pax.tar"
    p.write_bytes(header("././@PaxHeader", size=len(recs), type_=b"x") + pad(recs) + header("a") + bytes(1024))
    assert_clean_error(cli("images", p, timeout=20), "more than 10000 records")


def test_bad_checksum_in_a_later_header(tmp_path: Path) -> None:
    """tarfile stops silently at a later bad header, so members after it vanish; refuse instead."""
    good = I.tar_of(I.members_docker())
    h = bytearray(header("zzz", size=1))
    h[0] = ord("y")  # checksum no longer matches
    raw = good[:-1024].rstrip(b"\x00")
    raw = raw + bytes(-len(raw) % 512) + bytes(h) + pad(b"x") + bytes(1024)
    p = tmp_path / "c.tar"
    p.write_bytes(raw)
    assert_clean_error(cli("images", p, timeout=20), "bad header checksum")


def test_outer_pax_size_and_prefix_are_honoured(tmp_path: Path) -> None:
    """The new reader keeps what tarfile got right: PAX paths and sizes, ustar name prefixes."""
    members = I.members_docker()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for k, v in members.items():
            ti = tarfile.TarInfo(k)
            ti.size, ti.mtime = len(v), I.MTIME
            ti.pax_headers = {"comment": "x" * 300}
            tf.addfile(ti, io.BytesIO(v))
    p = tmp_path / "pax.tar"
    p.write_bytes(buf.getvalue())
    r = cli("validate", p, timeout=30)
    assert r.rc == 0, r.err + r.out


# ======================================================================================== 3. fan-out

def _big_config(n: int = 16 << 20) -> bytes:
    layers = I.default_layers()
    base = json.loads(I.config_for(layers))
    base["pad"] = ""
    filler = n - len(I.jbytes(base)) - 1
    base["pad"] = "p" * filler
    return I.jbytes(base)


@pytest.mark.slow
def test_manifest_json_fan_out_reads_the_config_once(tmp_path: Path) -> None:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    cfg = _big_config()
    del m[item["Config"]]
    cfg_path = "blobs/sha256/" + I.sha(cfg)[7:]
    m[cfg_path] = cfg
    item["Config"] = cfg_path
    m["manifest.json"] = I.jbytes([{**item, "RepoTags": [f"r/x:{i}"]} for i in range(10_000)])
    p = tmp_path / "fan.tar"
    p.write_bytes(I.tar_of(m))
    # in-process: count reads of the config (timing-independent)
    from ocisquash import archive, listing
    from ocisquash.sources import open_source

    reads: list[str] = []
    orig = archive.TarTree.read

    def counting(self: archive.TarTree, name: str, max_size: int) -> bytes:
        reads.append(name)
        return orig(self, name, max_size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(archive.TarTree, "read", counting)
        with open_source(str(p)) as src:
            assert len(src.candidates) == 10_000
            listing.summarize(src.candidates, exact=False)
    assert reads.count(cfg_path) <= 2, reads.count(cfg_path)
    r = cli("images", p, "--format", "json", timeout=90)
    assert r.rc == 0, r.err
    assert len(r.out.splitlines()) == 10_000
    assert_rss(r, "manifest.json fan-out")


@pytest.mark.slow
def test_index_fan_out_reads_the_manifest_once(tmp_path: Path) -> None:
    m = I.members_oci()
    idx = json.loads(m["index.json"])
    desc = idx["manifests"][0]
    man = json.loads(m.pop("blobs/sha256/" + desc["digest"][7:]))
    man["annotations"] = {"pad": "p" * ((16 << 20) - len(I.jbytes(man)) - 40)}
    mb = I.jbytes(man)
    assert len(mb) <= 16 << 20
    m["blobs/sha256/" + I.sha(mb)[7:]] = mb
    idx["manifests"] = [{**desc, "digest": I.sha(mb), "size": len(mb),
                         "annotations": {I.REF_NAME: f"t{i}"}} for i in range(10_000)]
    m["index.json"] = I.jbytes(idx)
    lay = layout_dir(tmp_path, m)
    r = cli("images", lay, "--format", "json", timeout=90)
    assert r.rc == 0, r.err
    assert len(r.out.splitlines()) == 10_000
    assert_rss(r, "index fan-out")


def test_total_json_bytes_are_capped(tmp_path: Path) -> None:
    """Distinct documents add up: a run reads at most max_json_total bytes of JSON."""
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    items = []
    for i in range(40):
        cfg = json.loads(I.config_for(I.default_layers()))
        cfg["pad"] = f"{i}" + "p" * (1 << 20)
        cb = I.jbytes(cfg)
        m["blobs/sha256/" + I.sha(cb)[7:]] = cb
        items.append({**item, "Config": "blobs/sha256/" + I.sha(cb)[7:], "RepoTags": [f"r/x:{i}"]})
    m["manifest.json"] = I.jbytes(items)
    p = tmp_path / "many.tar"
    p.write_bytes(I.tar_of(m))
    r = cli("images", p, "--limit", "max_json_total=20000000", timeout=60)
    assert_clean_error(r, "max_json_total")
    assert "--limit max_json_total" in r.err
    assert cli("images", p, timeout=60).rc == 0


# ======================================================================================== 4. decompression caps

def _zstd_bomb(size: int) -> bytes:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=19)
    out = io.BytesIO()
    with cctx.stream_writer(out, closefd=False) as w:
        chunk = bytes(1 << 20)
        for _ in range(size >> 20):
            w.write(chunk)
    return out.getvalue()


def _oci_with_layer_blob(tmp_path: Path, blob: bytes, media: str, diff_id: str) -> Path:
    m = I.members_oci(layers=[I.default_layers()[0]])
    idx = json.loads(m["index.json"])
    man = json.loads(m.pop("blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
    cfg = json.loads(m.pop("blobs/sha256/" + man["config"]["digest"][7:]))
    m.pop("blobs/sha256/" + man["layers"][0]["digest"][7:])
    cfg["rootfs"]["diff_ids"] = [diff_id]
    cb = I.jbytes(cfg)
    m["blobs/sha256/" + I.sha(cb)[7:]] = cb
    m["blobs/sha256/" + I.sha(blob)[7:]] = blob
    man["config"] = {**man["config"], "digest": I.sha(cb), "size": len(cb)}
    man["layers"] = [{"mediaType": media, "digest": I.sha(blob), "size": len(blob)}]
    mb = I.jbytes(man)
    m["blobs/sha256/" + I.sha(mb)[7:]] = mb
    idx["manifests"][0].update(digest=I.sha(mb), size=len(mb))
    m["index.json"] = I.jbytes(idx)
    return layout_dir(tmp_path, m)


@pytest.mark.slow
def test_validate_stops_a_zstd_bomb(tmp_path: Path) -> None:
    bomb = _zstd_bomb(1 << 30)  # 1 GiB of zeros in ~30 KB
    lay = _oci_with_layer_blob(tmp_path, bomb, I.OCI_LAYER + "+zstd", "sha256:" + "0" * 64)
    r = cli("validate", lay, timeout=60)
    assert r.rc == 1
    assert "max_ratio" in r.out + r.err, r.out + r.err
    assert_rss(r, "validate zstd bomb")


def xz_declaring_dictionary(code: int) -> bytes:
    """A small valid xz stream whose LZMA2 filter declares dictionary size ``code`` (38: 2 GiB, 39: 3 GiB);
    patched in the header rather than compressed with it, which would take the encoder gigabytes."""
    import zlib

    data = bytearray(lzma.compress(I.default_layers()[0], format=lzma.FORMAT_XZ,
                                   filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]))
    hsize = (data[12] + 1) * 4  # the block header, after the 12-byte stream header, ends in its CRC32
    i = data.index(b"\x21\x01", 12, 12 + hsize)  # LZMA2 filter id, one property byte: the dictionary
    data[i + 2] = code
    data[12 + hsize - 4:12 + hsize] = zlib.crc32(bytes(data[12:12 + hsize - 4])).to_bytes(4, "little")
    assert lzma.decompress(bytes(data)) == I.default_layers()[0]  # still valid, given the memory
    return bytes(data)


def _docker_with_layer0(tmp_path: Path, blob: bytes) -> Path:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    old = item["Layers"][0]
    m.pop(old)
    item["Layers"][0] = "layer0.tar.xz"  # no digest in its name: checked against the diff ID as read
    m["layer0.tar.xz"] = blob
    m["manifest.json"] = I.jbytes([item])
    p = tmp_path / "xz.tar"
    p.write_bytes(I.tar_of(m))
    return p


def test_xz_huge_dictionary_is_refused(tmp_path: Path) -> None:
    """An xz layer whose header asks for a 2 GiB dictionary: refused by a memory limit, not allocated."""
    p = _docker_with_layer0(tmp_path, xz_declaring_dictionary(38))
    r = cli("squash", p, tmp_path / "o.tar", "-t", "x:1", timeout=60)
    assert_clean_error(r, "MiB of memory")
    assert_rss(r, "xz 2 GiB dictionary (squash)")


@pytest.mark.slow
def test_whole_tarball_gzip_bomb_is_capped(tmp_path: Path) -> None:
    """A gzip of a tar with a 1 GiB member of zeros: ~1 MB compressed; refused before spooling it all."""
    p = tmp_path / "bomb.tar.gz"
    with gzip.open(p, "wb", compresslevel=9) as g:
        g.write(header("zeros", size=1 << 30))
        z = bytes(1 << 20)
        for _ in range(1024):
            g.write(z)
        g.write(bytes(1024))
    tmp = tmp_path / "spool"
    tmp.mkdir()
    r = cli("images", p, timeout=60, env={"TMPDIR": str(tmp)})
    assert_clean_error(r, "max_spool_ratio")
    assert list(tmp.iterdir()) == []


# ======================================================================================== 5. memory

def test_config_with_millions_of_history_entries(tmp_path: Path) -> None:
    layers = I.default_layers()
    cfg = json.loads(I.config_for(layers))
    n = ((16 << 20) - 1000) // 3
    cfg["history"] = []
    raw = I.jbytes(cfg).replace(b'"history":[]', b'"history":[' + b",".join([b"{}"] * n) + b"]")
    assert len(raw) < 16 << 20
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    del m[item["Config"]]
    item["Config"] = "blobs/sha256/" + I.sha(raw)[7:]
    m[item["Config"]] = raw
    m["manifest.json"] = I.jbytes([item])
    p = tmp_path / "hist.tar"
    p.write_bytes(I.tar_of(m))
    for args in (["history", p], ["squash", p, tmp_path / "o.tar", "-t", "x:1"]):
        r = cli(*args, timeout=60)
        assert_clean_error(r, "max_json_values")
        assert_rss(r, "config of 5 million history entries")


def _config_field(tmp_path: Path, field: str, body: bytes) -> Path:
    def put(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg[field] = None
        return I.jbytes(cfg).replace(b'"%s":null' % field.encode(), b'"%s":' % field.encode() + body)

    return _docker_with_config(tmp_path, put)


def test_history_entries_are_capped(tmp_path: Path) -> None:
    p = _config_field(tmp_path, "history", b"[" + b",".join([b'{"created_by":"x"}'] * 10_001) + b"]")
    for args in (["history", p], ["images", p], ["squash", p, tmp_path / "o.tar", "-t", "x:1"]):
        r = cli(*args)
        assert_clean_error(r, "max_history")
        assert_rss(r, "10,001 history entries")


@pytest.mark.slow
@pytest.mark.parametrize(("item", "values_each"), [(b"{}", 2), (b'{"a":[1]}', 4)], ids=["objects", "nested"])
def test_json_just_under_the_values_cap_stays_small(tmp_path: Path, item: bytes, values_each: int) -> None:
    """Memory bounded by the cap's design: as many objects as the default max_json_values lets a config
    hold (each item counts ``values_each`` towards it), parsed, and copied by a squash: under 300 MB."""
    n = limits.Limits().max_json_values // values_each - 1000
    body = b"[" + b",".join([item] * n) + b"]"
    p = _config_field(tmp_path, "x", body)
    for args in (["history", p], ["squash", p, tmp_path / "o.tar", "-t", "x:1"]):
        r = cli(*args, timeout=120)
        assert r.rc == 0, r.err
        assert_rss(r, f"a config of {body.count(b'{')} objects ({args[0]})")


@pytest.mark.slow
def test_huge_existing_out_index_json(tmp_path: Path) -> None:
    """An OUT layout whose index.json is 1.5 GiB (sparse): its size is checked before it is read."""
    src = tmp_path / "in.tar"
    src.write_bytes(I.tar_of(I.members_docker()))
    out = layout_dir(tmp_path, I.members_oci())
    with open(out / "index.json", "r+b") as f:
        f.truncate(1536 << 20)
    r = cli("squash", src, out, "-t", "x:1", timeout=60)
    assert_clean_error(r, "max_json")
    assert_rss(r, "OUT index.json of 1.5 GiB")


def test_gigabyte_pax_header_in_outer_tar(tmp_path: Path) -> None:
    p = tmp_path / "pax.tar"
    with open(p, "wb") as f:
        f.write(header("././@PaxHeader", size=1 << 30, type_=b"x"))
        f.seek(512 + (1 << 30))
        f.write(header("a") + bytes(1024))
    r = cli("images", p, timeout=30)
    assert_clean_error(r, "max_pax_header")
    assert_rss(r, "1 GiB PAX header")


@pytest.mark.parametrize("code", [38, 39])
def test_xz_giant_dictionary_rss(tmp_path: Path, code: int) -> None:
    p = _docker_with_layer0(tmp_path, xz_declaring_dictionary(code))
    r = cli("validate", p, timeout=60)
    assert r.rc == 1
    assert "MiB of memory" in r.out, r.out + r.err
    assert_rss(r, f"xz dictionary code {code} (validate)")


def docker_tar_streaming(path: Path, write_layer: Callable[[BinaryIO], None]) -> None:
    """A docker save tarball whose one layer ``write_layer`` streams to disk (hashed as written): big
    layers never sit in the test's memory."""
    import hashlib

    layer_path = path.with_suffix(".layer")
    with open(layer_path, "wb") as f:
        write_layer(f)
    h = hashlib.sha256()
    with open(layer_path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    diff_id = "sha256:" + h.hexdigest()
    cfg = json.loads(I.config_for([]))
    cfg["rootfs"]["diff_ids"] = [diff_id]
    cfg["history"] = [{"created_by": "big"}]
    cb = I.jbytes(cfg)
    cfg_name = "blobs/sha256/" + I.sha(cb)[7:]
    layer_name = "blobs/sha256/" + diff_id[7:]
    man = I.jbytes([{"Config": cfg_name, "RepoTags": ["big/x:1"], "Layers": [layer_name]}])
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in ((cfg_name, cb), ("manifest.json", man)):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime = len(data), I.MTIME
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo(layer_name)
        ti.size, ti.mtime = layer_path.stat().st_size, I.MTIME
        with open(layer_path, "rb") as f:
            tf.addfile(ti, f)
    layer_path.unlink()


@pytest.mark.slow
def test_long_paths_are_refused_at_path_max(tmp_path: Path) -> None:
    """10,000 members with 60 KB names in a layer: a real unpacker refuses names over PATH_MAX (4096)."""
    def write(f: BinaryIO) -> None:
        for i in range(10_000):
            name = (("d/" * 30_000)[:60_000] + f"{i}").encode()
            f.write(header("././@LongLink", size=len(name) + 1, type_=b"L") + pad(name + b"\x00"))
            f.write(header(f"f{i}"))
        f.write(bytes(1024))

    p = tmp_path / "long.tar"
    docker_tar_streaming(p, write)
    r = cli("squash", p, tmp_path / "o.tar", "-t", "x:1", timeout=120)
    assert_clean_error(r, "max_path")
    assert_rss(r, "10,000 names of 60 KB")


def test_outer_member_names_are_capped_at_path_max(tmp_path: Path) -> None:
    m = I.members_docker()
    m["x" * 5000] = b"x"
    p = tmp_path / "n.tar"
    p.write_bytes(I.tar_of(m))
    assert_clean_error(cli("images", p, timeout=20), "max_path")


@functools.cache
def _many_records() -> bytes:
    return b"".join(pax_record(f"x{j}", b"v") for j in range(60_000))  # unknown keys are kept too


# (members, one member's PAX records, the cap that must stop them, what they are). Each member's records
# are held by the layer merge unless capped: the inputs are 0.5-1.2 GB once.
PAX_FLOODS: dict[str, tuple[int, Callable[[int], bytes], str, str]] = {
    # 530 MB: a member's xattrs are capped at Linux's 64 KiB (max_xattr)
    "xattrs-of-a-megabyte-each": (500, lambda i: pax_record(f"SCHILY.xattr.user.a{i}", b"v" * ((1 << 20) - 100)),
                                  "max_xattr", "500 xattrs of 1 MiB"),
    # 120 MB of xattrs of 60 KiB each, under the per-member cap: max_xattr_total stops them
    "xattrs-in-all-are-capped": (2000, lambda i: pax_record(f"SCHILY.xattr.user.a{i}", b"v" * (60 << 10)),
                                 "max_xattr_total", "2,000 xattrs of 60 KiB"),
    # 1.2 GB: each member's 60,000 records exceed what Linux could apply, so the first is refused
    "many-pax-records-per-member": (150, lambda i: _many_records(), "max_xattr",
                                    "150 members of 60,000 PAX records"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(PAX_FLOODS))
def test_pax_record_floods_are_capped(case: str, tmp_path: Path) -> None:
    """Members with huge or countless PAX records: a clear error naming the cap, in bounded memory."""
    members, records, cap, what = PAX_FLOODS[case]

    def write(f: BinaryIO) -> None:
        for i in range(members):
            rec = records(i)
            f.write(header("././@PaxHeader", size=len(rec), type_=b"x") + pad(rec) + header(f"f{i}"))
        f.write(bytes(1024))

    p = tmp_path / "x.tar"
    docker_tar_streaming(p, write)
    r = cli("squash", p, tmp_path / "o.tar", "-t", "x:1", timeout=120)
    assert r.rc == 1 and cap in r.err, r.err
    assert_rss(r, what)


@pytest.mark.slow
def test_a_million_empty_files(tmp_path: Path) -> None:
    """A layer of 1,000,000 empty files (1.07 GB once): past the default max_entries_per_layer/max_paths
    (600,000), a clear error that says how to raise the cap, in bounded memory."""
    def write(f: BinaryIO) -> None:
        blocks = []
        for i in range(1_000_000):
            blocks.append(header(f"d{i // 1000}/f{i % 1000}"))
            if len(blocks) == 10_000:
                f.write(b"".join(blocks))
                blocks.clear()
        f.write(b"".join(blocks) + bytes(1024))

    p = tmp_path / "m.tar"
    docker_tar_streaming(p, write)
    r = cli("squash", p, tmp_path / "o.tar", "-t", "x:1", timeout=300)
    assert r.rc == 1 and ("max_entries_per_layer" in r.err or "max_paths" in r.err), r.err
    assert "--limit" in r.err  # the hint says how to raise it
    assert_rss(r, "a layer of 1,000,000 empty files")
    assert not (tmp_path / "o.tar").exists()

# ======================================================================================== 6. internal errors

def _docker_with_config(tmp_path: Path, mutate: object) -> Path:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    cfg = json.loads(m.pop(item["Config"]))
    raw = mutate(cfg) if callable(mutate) else I.jbytes(cfg)
    if not isinstance(raw, bytes):
        raw = I.jbytes(raw)
    item["Config"] = "blobs/sha256/" + I.sha(raw)[7:]
    m[item["Config"]] = raw
    m["manifest.json"] = I.jbytes([item])
    p = tmp_path / "c.tar"
    p.write_bytes(I.tar_of(m))
    return p


def test_deeply_nested_config(tmp_path: Path) -> None:
    def nest(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg["deep"] = None
        return I.jbytes(cfg).replace(b'"deep":null', b'"deep":' + b"[" * 800 + b"]" * 800)

    p = _docker_with_config(tmp_path, nest)
    for args in (["squash", p, tmp_path / "o.tar", "-t", "x:1"], ["images", p], ["history", p]):
        assert_clean_error(cli(*args), "nested")


def test_lone_surrogate_in_a_label(tmp_path: Path) -> None:
    def label(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg["config"]["Labels"] = {"a": "SURR"}
        return I.jbytes(cfg).replace(b"SURR", b"\\ud800")

    p = _docker_with_config(tmp_path, label)
    for args in (["squash", p, tmp_path / "o.tar", "-t", "x:1"], ["images", p, "--format", "json"]):
        assert_clean_error(cli(*args), "surrogate")
    r = cli("validate", p)  # validate reports it as a finding, and goes on
    assert r.rc == 1 and "lone surrogate (\\ud800)" in r.out and "Traceback" not in r.err, r.out + r.err


def test_valid_surrogate_pair_is_fine(tmp_path: Path) -> None:
    def label(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg["config"]["Labels"] = {"a": "SURR"}
        return I.jbytes(cfg).replace(b"SURR", b"\\ud83d\\ude00")

    p = _docker_with_config(tmp_path, label)
    r = cli("images", p, "--format", "json")
    assert r.rc == 0, r.err


@pytest.mark.parametrize("size", ["1" + "0" * 400, str(1 << 63), "-1"])
def test_layer_size_out_of_range(tmp_path: Path, size: str) -> None:
    m = I.members_oci()
    idx = json.loads(m["index.json"])
    man = m.pop("blobs/sha256/" + idx["manifests"][0]["digest"][7:])
    obj = json.loads(man)
    obj["layers"][0]["size"] = 12345
    mb = I.jbytes(obj).replace(b"12345", size.encode())
    m["blobs/sha256/" + I.sha(mb)[7:]] = mb
    idx["manifests"][0].update(digest=I.sha(mb), size=len(mb))
    m["index.json"] = I.jbytes(idx)
    lay = layout_dir(tmp_path, m)
    for args in (["images", "-s", lay], ["history", lay]):
        assert_clean_error(cli(*args), "size")


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "99999999999999999999"])
def test_timestamp_out_of_range(tmp_path: Path, ts: str) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    assert_clean_error(cli("squash", p, tmp_path / "o.tar", "-t", "x:1", "--timestamp", ts), "--timestamp", rc=2)


@pytest.mark.parametrize("value", ["1" + "0" * 20, str(1 << 63)])
def test_limit_value_out_of_range(tmp_path: Path, value: str) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    assert_clean_error(cli("images", p, "--limit", f"max_json={value}"), "max_json", rc=2)
    r = cli("images", p, env={"OCISQUASH_MAX_JSON": value})
    assert_clean_error(r, "OCISQUASH_MAX_JSON", rc=2)


def test_message_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    args = [os.fsencode(a) for a in ("squash", str(p), str(tmp_path / "o.tar"), "-t", "x:1", "--message")]
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"ocisquash", *args, b"caf\xe9"],
                       capture_output=True, timeout=60)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, err
    assert err.startswith("error: ") and "--message" in err and "Traceback" not in err
    assert not (tmp_path / "o.tar").exists()


# ======================================================================================== 7. terminal safety

NASTY = "a\nb\x1b[31mred\x1b]0;title\x07\x9bc\r"


def _one_line_no_controls(text: str) -> None:
    for line in text.splitlines():
        assert "\x1b" not in line and "\x07" not in line and "\x9b" not in line and "\r" not in line, repr(line)


def test_control_characters_in_an_error(tmp_path: Path) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    r = cli("squash", p, tmp_path / "o.tar", "--image", NASTY)
    assert r.rc == 1
    assert r.err.startswith("error: ")
    assert len([ln for ln in r.err.splitlines() if not ln.startswith("hint: ")]) == 1, r.err
    _one_line_no_controls(r.err)
    assert "\\x1b" in r.err


def test_control_characters_in_names_and_history(tmp_path: Path) -> None:
    def hist(cfg: dict) -> bytes:  # type: ignore[type-arg]
        for h in cfg["history"]:
            h["created_by"] = NASTY
            h["comment"] = NASTY
        cfg["config"]["Labels"] = {NASTY: NASTY}
        return I.jbytes(cfg)

    p = _docker_with_config(tmp_path, hist)
    for args in (["history", p], ["history", "--no-trunc", p], ["images", p], ["analyze", p]):
        r = cli(*args)
        assert r.rc == 0, r.err
        _one_line_no_controls(r.out)
        assert "\\x1b" in r.out or args[0] in ("images", "analyze")
    member = tmp_path / "m.tar"
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    m["manifest.json"] = I.jbytes([{**item, "RepoTags": ["x:" + NASTY]}])
    member.write_bytes(I.tar_of(m))
    r = cli("images", member)
    _one_line_no_controls(r.out + r.err)
    for args, key in ((["--json"], "tag"), (["--format", "json"], "Tag"), (["--format", "{{json .}}"], "Tag")):
        r = cli("images", *args, member)
        assert r.rc == 0
        assert "\x9b" not in r.out and "\x1b" not in r.out
        assert json.loads(r.out.splitlines()[0])[key].endswith("\x9bc\r")


def test_markup_in_names_is_not_interpreted(tmp_path: Path) -> None:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    m["manifest.json"] = I.jbytes([{**item, "RepoTags": ["x:[bold]y"]}])
    p = tmp_path / "m.tar"
    p.write_bytes(I.tar_of(m))
    r = cli("images", p)
    assert "[bold]y" in r.out, r.out


@pytest.mark.parametrize("n", [238, 300])
def test_repository_name_over_255(tmp_path: Path, n: int) -> None:
    """Docker counts the normalised name: docker.io/library/ (18) + 238 is 256, one too many."""
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    name = "a" * n + ":1"
    assert_clean_error(cli("squash", p, tmp_path / "o.tar", "-t", name), "255", rc=2)
    assert not (tmp_path / "o.tar").exists()


def test_repository_name_of_255_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    r = cli("squash", p, tmp_path / "o.tar", "-t", "a" * 237 + ":1")
    assert r.rc == 0, r.err


# ======================================================================================== 8. lying PAX sizes

def _lying_layer() -> bytes:
    """A layer whose PAX ``size=`` claims 1 TB for a member whose data is 3 bytes."""
    rec = b"size=1000000000000\n"
    rec = b"%d %s" % (len(rec) + 3, rec)
    return (header("././@PaxHeader", size=len(rec), type_=b"x") + pad(rec) + header("big", size=3)
            + pad(b"abc") + bytes(1024))


@pytest.mark.parametrize("kind", ["docker-tar", "oci-dir-gzip", "oci-dir-plain"])
@pytest.mark.parametrize("cmd", ["analyze", "dry-run", "squash", "validate"])
def test_pax_size_lie_is_truncation_everywhere(tmp_path: Path, cmd: str, kind: str) -> None:
    if kind == "docker-tar":
        p = tmp_path / "lie.tar"
        p.write_bytes(I.tar_of(I.members_docker(layers=[_lying_layer()])))
    else:
        p = layout_dir(tmp_path, I.members_oci(layers=[_lying_layer()], codec=kind.rsplit("-", 1)[1]
                                               .replace("plain", "none")))
    args = {"analyze": ["analyze", p], "dry-run": ["squash", "--dry-run", p, tmp_path / "o.tar"],
            "squash": ["squash", p, tmp_path / "o.tar"], "validate": ["validate", p]}[cmd]
    r = cli(*args)
    assert r.rc == 1, (r.rc, r.out, r.err)
    assert "truncated" in r.err + r.out, r.err + r.out


# ======================================================================================== the header reader itself

@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tarheader_agrees_with_tarfile_on_valid_archives(tmp_path: Path, fmt: int) -> None:
    """Names (long ones: ustar prefix, GNU L/K, PAX path/linkpath), types, sizes and data offsets as
    tarfile reads them from archives it wrote itself."""
    from ocisquash import tarheader

    long_dir = "d" * 90 + "/" + "e" * 60
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, type_, data, link in [
            ("a", tarfile.REGTYPE, b"x" * 700, ""), ("dir/", tarfile.DIRTYPE, None, ""),
            (long_dir + "/file", tarfile.REGTYPE, b"y" * 513, ""), ("l", tarfile.SYMTYPE, None, "a"),
            ("h", tarfile.LNKTYPE, None, "a"), ("fifo", tarfile.FIFOTYPE, None, ""),
            ("ll" if fmt == tarfile.USTAR_FORMAT else "L" * 150, tarfile.SYMTYPE, None,
             "t" if fmt == tarfile.USTAR_FORMAT else "T" * 150),
            ("caf\udce9" if fmt != tarfile.USTAR_FORMAT else "cafe", tarfile.REGTYPE, b"", ""),
        ]:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mtime = type_, link, I.MTIME
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    p = tmp_path / "t.tar"
    p.write_bytes(buf.getvalue())
    with open(p, "rb") as f:
        got = [(h.name, h.type, h.size, h.offset if h.type == "0" else None, h.linkname)
               for h in tarheader.headers(f, "t")]
    with tarfile.open(p, encoding="utf-8", errors="surrogateescape") as tf:
        want = [(ti.name + ("/" if ti.isdir() and not ti.name.endswith("/") else ""),
                 ti.type.decode(), ti.size if ti.isreg() else 0, ti.offset_data if ti.isreg() else None,
                 ti.linkname) for ti in tf]
    got = [(n if t != "5" or n.endswith("/") else n + "/", t, *rest) for n, t, *rest in got]
    assert got == want


def test_tarheader_refuses_a_single_truncated_member(tmp_path: Path) -> None:
    from ocisquash import tarheader
    from ocisquash.errors import FormatError

    raw = I.tar_of({"a": b"x" * 5000})
    for cut in (100, 512 + 10, 1200):
        p = tmp_path / "t.tar"
        p.write_bytes(raw[:cut])
        with open(p, "rb") as f, pytest.raises(FormatError, match="unexpected end of data"):
            list(tarheader.headers(f, "t"))
