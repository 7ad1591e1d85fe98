"""The caps keep memory bounded: each case runs the CLI on an input built to exhaust memory and
measures its peak RSS (under 300 MB), or counts the reads of a document named many times."""

from __future__ import annotations

import functools
import io
import json
import lzma
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from fuzz import images as I
from untrusted import (
    assert_clean_error,
    assert_rss,
    cli,
    docker_with_config,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    header,
    layout_dir,
    pad,
    pax_record,
)

from ocisquash import limits
from ocisquash.sources import open_source

# ------------------------------------------------------------------------------------------ fan-out


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


# ------------------------------------------------------------------------------------------ xz dictionaries


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


@pytest.mark.parametrize("code", [38, 39])
def test_xz_giant_dictionary_rss(tmp_path: Path, code: int) -> None:
    p = _docker_with_layer0(tmp_path, xz_declaring_dictionary(code))
    r = cli("validate", p, timeout=60)
    assert r.rc == 1
    assert "MiB of memory" in r.out, r.out + r.err
    assert_rss(r, f"xz dictionary code {code} (validate)")


# ------------------------------------------------------------------------------------------ JSON


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

    return docker_with_config(tmp_path, put)


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


# ------------------------------------------------------------------------------------------ tar headers


def test_gigabyte_pax_header_in_outer_tar(tmp_path: Path) -> None:
    p = tmp_path / "pax.tar"
    with open(p, "wb") as f:
        f.write(header("././@PaxHeader", size=1 << 30, type_=b"x"))
        f.seek(512 + (1 << 30))
        f.write(header("a") + bytes(1024))
    r = cli("images", p, timeout=30)
    assert_clean_error(r, "max_pax_header")
    assert_rss(r, "1 GiB PAX header")


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
