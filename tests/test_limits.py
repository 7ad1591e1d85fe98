"""Every safety cap of ``ocisquash.limits`` is enforced where it belongs, and says how to raise it.

Each test lowers one cap (``OCISQUASH_<NAME>`` in the environment, ``limits.scoped`` or
``--limit``), feeds an input just over it and checks the ``LimitExceeded`` names the cap, the env var
and the option; where cheap, the same input under the default (or a raised) cap is read fine, so the
check is not just "everything fails". The bombs section also runs real bombs against the default caps,
in-process and through the CLI (with its peak RSS): every decompression bomb is tested here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
import zlib
from pathlib import Path

import pytest
from fuzz import images as I
from layertar import f, inputs, layer
from untrusted import (
    assert_clean_error,
    assert_rss,
    cli,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    header,
    layout_dir,
    load_all,
    manifest_of,
    oci_tar,
    relink,
)

from ocisquash import limits, merge
from ocisquash.cli import main
from ocisquash.errors import LimitExceeded
from ocisquash.sources import open_source


def assert_cap(e: pytest.ExceptionInfo[LimitExceeded], name: str, phrase: str) -> None:
    msg = str(e.value)
    assert f"(cap {name})" in msg, msg
    assert phrase in msg, msg
    assert e.value.hint is not None
    assert f"--limit {name}=N" in e.value.hint and limits.env_name(name) + "=N" in e.value.hint, e.value.hint


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------------------------ JSON size

def test_max_json_env_var_dir_layout_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = I.write_dir(I.members_oci(), tmp_path / "lay")
    size = (root / "index.json").stat().st_size
    assert load_all(root) > 0
    monkeypatch.setenv("OCISQUASH_MAX_JSON", str(size - 1))
    limits.reset()
    with pytest.raises(LimitExceeded) as e:
        load_all(root)
    assert_cap(e, "max_json", "index.json")


def test_max_json_docker_config_member(tmp_path: Path) -> None:
    m = I.members_docker()
    cfg = json.loads(m["manifest.json"])[0]["Config"]
    p = write(tmp_path, "d.tar", I.tar_of(m))
    with limits.scoped({"max_json": len(m[cfg]) - 1}), pytest.raises(LimitExceeded) as e:
        load_all(p)
    assert_cap(e, "max_json", cfg)


def test_max_json_manifest_blob_by_descriptor_size(tmp_path: Path) -> None:
    m = I.members_oci()
    p = write(tmp_path, "o.tar", I.tar_of(m))
    man_size = json.loads(m["index.json"])["manifests"][0]["size"]
    assert man_size > len(m["index.json"])
    with limits.scoped({"max_json": max(man_size - 1, len(m["index.json"]))}), pytest.raises(LimitExceeded) as e:
        load_all(p)
    assert_cap(e, "max_json", "manifest")


def _big_config_docker(tmp_path: Path, pad: int) -> Path:
    m = I.members_docker()
    items = json.loads(m["manifest.json"])
    cfg = json.loads(m.pop(items[0]["Config"]))
    cfg["padding"] = "x" * pad
    m["big-config.json"] = I.jbytes(cfg)
    items[0]["Config"] = "big-config.json"
    m["manifest.json"] = I.jbytes(items)
    return write(tmp_path, "big.tar", I.tar_of(m))


def test_max_json_raised_above_the_default_is_honoured(tmp_path: Path) -> None:
    """Regression: load_json used a fixed 16 MiB cap, so raising max_json had no effect past it."""
    p = _big_config_docker(tmp_path, 17 << 20)
    with pytest.raises(LimitExceeded) as e:
        load_all(p)
    assert_cap(e, "max_json", "big-config.json")
    with limits.scoped({"max_json": 32 << 20}):
        assert load_all(p) > 0


# ------------------------------------------------------------------------------------------ index depth

def _nested(tmp_path: Path, depth: int) -> Path:
    """A layout whose image manifest sits under ``depth`` nested indexes."""
    m = I.members_oci()
    top = json.loads(m["index.json"])["manifests"][0]
    desc = {k: top[k] for k in ("mediaType", "digest", "size")}
    for _ in range(depth):
        idx = I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_INDEX, "manifests": [desc]})
        m[f"blobs/sha256/{I.sha(idx)[7:]}"] = idx
        desc = {"mediaType": I.OCI_INDEX, "digest": I.sha(idx), "size": len(idx)}
    desc["annotations"] = {I.REF_NAME: "latest"}
    m["index.json"] = I.jbytes({"schemaVersion": 2, "manifests": [desc]})
    return write(tmp_path, f"nested{depth}.tar", I.tar_of(m))


def test_max_index_depth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_all(_nested(tmp_path, 3)) > 0
    monkeypatch.setenv("OCISQUASH_MAX_INDEX_DEPTH", "2")
    limits.reset()
    assert load_all(_nested(tmp_path, 2)) > 0
    with pytest.raises(LimitExceeded) as e:
        load_all(_nested(tmp_path, 3))
    assert_cap(e, "max_index_depth", "nested deeper than 2")


def test_default_index_depth_stops_a_deep_chain(tmp_path: Path) -> None:
    with pytest.raises(LimitExceeded) as e:
        load_all(_nested(tmp_path, limits.Limits().max_index_depth + 1))
    assert_cap(e, "max_index_depth", "nested deeper")


# ------------------------------------------------------------------------------------------ images, layers

def test_max_images_oci(tmp_path: Path) -> None:
    m = I.members_oci()
    idx = json.loads(m["index.json"])
    entry = idx["manifests"][0]
    idx["manifests"] = [dict(entry, annotations={I.REF_NAME: f"t{i}"}) for i in range(3)]
    m["index.json"] = I.jbytes(idx)
    p = write(tmp_path, "o.tar", I.tar_of(m))
    with open_source(str(p)) as src:
        assert len(src.candidates) == 3
    with limits.scoped({"max_images": 2}), pytest.raises(LimitExceeded) as e:
        open_source(str(p))
    # the walk stops at the first manifest over the cap (an index bomb never finishes otherwise)
    assert_cap(e, "max_images", "more than 2 manifests")


def test_max_images_docker(tmp_path: Path) -> None:
    m = I.members_docker()
    items = json.loads(m["manifest.json"])
    m["manifest.json"] = I.jbytes([dict(items[0], RepoTags=[f"a:{i}"]) for i in range(3)])
    p = write(tmp_path, "d.tar", I.tar_of(m))
    with limits.scoped({"max_images": 2}), pytest.raises(LimitExceeded) as e:
        open_source(str(p))
    assert_cap(e, "max_images", "3 images")


def test_index_fan_out_is_capped(tmp_path: Path) -> None:
    """Regression: one child listed 40 times per level, 6 levels: 40^6 visits hung open_source."""
    m = I.members_oci()
    top = json.loads(m["index.json"])["manifests"][0]
    desc = {k: top[k] for k in ("mediaType", "digest", "size")}
    for _ in range(6):
        idx = I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_INDEX, "manifests": [desc] * 40})
        m[f"blobs/sha256/{I.sha(idx)[7:]}"] = idx
        desc = {"mediaType": I.OCI_INDEX, "digest": I.sha(idx), "size": len(idx)}
    m["index.json"] = I.jbytes({"schemaVersion": 2, "manifests": [desc]})
    p = tmp_path / "fan.tar"
    p.write_bytes(I.tar_of(m))
    with (limits.scoped({"max_images": 500}),
          pytest.raises(LimitExceeded, match=r"more than 500 manifests in all \(cap max_images\)")):
        open_source(str(p))


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_max_layers(tmp_path: Path, kind: str) -> None:
    m = I.members_oci() if kind == "oci" else I.members_docker()
    p = write(tmp_path, f"{kind}.tar", I.tar_of(m))
    with limits.scoped({"max_layers": 3}):
        assert load_all(p) > 0
    with limits.scoped({"max_layers": 2}), pytest.raises(LimitExceeded) as e:
        load_all(p)
    assert_cap(e, "max_layers", "3 layers")


def test_max_outer_members(tmp_path: Path) -> None:
    m = I.members_docker()
    p = write(tmp_path, "d.tar", I.tar_of(m))
    with limits.scoped({"max_outer_members": len(m)}):
        assert load_all(p) > 0
    with limits.scoped({"max_outer_members": len(m) - 1}), pytest.raises(LimitExceeded) as e:
        load_all(p)
    assert_cap(e, "max_outer_members", f"more than {len(m) - 1} members")


# ------------------------------------------------------------------------------------------ bombs

MIB = 1 << 20


def zero_layer_gzip(n_bytes: int) -> tuple[bytes, str]:
    """(gzip blob, diff ID) of a layer holding one file of ``n_bytes`` zeros, built in 1 MiB steps."""
    ti = tarfile.TarInfo("zeros")
    ti.size, ti.mode, ti.mtime = n_bytes, 0o644, I.MTIME
    head = ti.tobuf(tarfile.PAX_FORMAT)
    tail = b"\0" * (-n_bytes % 512) + b"\0" * 1024
    h = hashlib.sha256()
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()
    chunk = b"\0" * MIB
    h.update(head)
    out.write(z.compress(head))
    left = n_bytes
    while left:
        c = chunk[: min(left, MIB)]
        h.update(c)
        out.write(z.compress(c))
        left -= len(c)
    h.update(tail)
    out.write(z.compress(tail))
    out.write(z.flush())
    return out.getvalue(), "sha256:" + h.hexdigest()


def bomb_layout(tmp_path: Path, n_bytes: int) -> Path:
    """An OCI layout dir whose one gzip layer (correct digests and diff ID) expands to ``n_bytes``."""
    blob, diff_id = zero_layer_gzip(n_bytes)
    m: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', f"blobs/sha256/{I.sha(blob)[7:]}": blob}
    cfg = I.jbytes({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    m[f"blobs/sha256/{I.sha(cfg)[7:]}"] = cfg
    man = I.jbytes({"schemaVersion": 2, "mediaType": I.OCI_MANIFEST,
                    "config": {"mediaType": I.OCI_CONFIG, "digest": I.sha(cfg), "size": len(cfg)},
                    "layers": [{"mediaType": I.OCI_LAYER + "+gzip", "digest": I.sha(blob), "size": len(blob)}]})
    m[f"blobs/sha256/{I.sha(man)[7:]}"] = man
    m["index.json"] = I.jbytes({"schemaVersion": 2, "manifests": [
        {"mediaType": I.OCI_MANIFEST, "digest": I.sha(man), "size": len(man)}]})
    return I.write_dir(m, tmp_path / f"bomb{n_bytes}")


@pytest.fixture(scope="module")
def bomb_80m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bomb_layout(tmp_path_factory.mktemp("bomb"), 80 * MIB)


def test_max_ratio_stops_a_gzip_bomb(bomb_80m: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob_sizes = [p.stat().st_size for p in (bomb_80m / "blobs" / "sha256").iterdir()]
    assert max(blob_sizes) < 200_000  # a small file ...
    monkeypatch.setenv("OCISQUASH_MAX_RATIO", "100")
    limits.reset()
    with pytest.raises(LimitExceeded) as e:
        load_all(bomb_80m)  # ... that would decompress to 80 MiB
    assert_cap(e, "max_ratio", "a decompression bomb?")
    assert "more than 100 times its compressed size" in str(e.value)


def test_ratio_cap_waits_for_64_mib_and_default_passes(bomb_80m: Path, tmp_path: Path) -> None:
    """Small layers of zeros never trip the ratio, however low it is set; the default lets 80 MiB pass."""
    small = bomb_layout(tmp_path, 8 * MIB)
    with limits.scoped({"max_ratio": 2}):
        assert load_all(small) > 8 * MIB
    assert load_all(bomb_80m) > 80 * MIB


def test_max_layer_bytes(tmp_path: Path) -> None:
    lay = bomb_layout(tmp_path, 3 * MIB)
    with limits.scoped({"max_layer_bytes": 4 * MIB}):
        assert load_all(lay) > 3 * MIB
    with limits.scoped({"max_layer_bytes": 2 * MIB}), pytest.raises(LimitExceeded) as e:
        load_all(lay)
    assert_cap(e, "max_layer_bytes", f"decompresses to more than {2 * MIB} bytes")


def test_ratio_applies_to_a_compressed_outer_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker save | gzip`` is spooled decompressed to a temp file: a bomb there must stop too."""
    raw = I.tar_of({"manifest.json": b"[]", "zeros": bytes(70 * MIB)})
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    p = write(tmp_path, "outer.tar.gz", z.compress(raw) + z.flush())
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    with limits.scoped({"max_ratio": 50}), pytest.raises(LimitExceeded) as e:
        open_source(str(p))
    assert_cap(e, "max_ratio", "a decompression bomb?")
    assert list(spool.iterdir()) == []  # the half-written spool file is gone
    with pytest.raises(Exception, match="holds no images"), open_source(str(p)) as src:
        src.choose()
    assert list(spool.iterdir()) == []


def test_zstd_bomb(tmp_path: Path) -> None:
    """A few KB of zstd that would expand to 200 MiB: stopped at the default ratio, past 64 MiB."""
    ti_ = tarfile.TarInfo("z")
    ti_.size = 200 << 20
    head = ti_.tobuf(tarfile.PAX_FORMAT)
    import zstandard

    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [cobj.compress(head)]
    chunk = bytes(1 << 20)
    for _ in range(200):
        parts.append(cobj.compress(chunk))
    parts.append(cobj.compress(bytes(1024)))
    parts.append(cobj.flush())
    blob = b"".join(parts)
    assert len(blob) < 100_000

    def mutate(m: dict[str, bytes]) -> None:
        _, man = manifest_of(m)
        m[f"blobs/sha256/{I.sha(blob)[7:]}"] = blob
        man["layers"][0].update(digest=I.sha(blob), size=len(blob), mediaType=I.OCI_LAYER + "+zstd")
        relink(m, man)
    with pytest.raises(LimitExceeded, match="a decompression bomb"):
        load_all(oci_tar(tmp_path, mutate))


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


# ------------------------------------------------------------------------------------------ layer entries (merge)

def _plan(*tars: bytes) -> merge.MergePlan:
    return merge.plan(inputs(tars), 0)


def test_max_entries_per_layer() -> None:
    tar = layer(*(f(f"f{i}", b"") for i in range(5)))
    _plan(tar)
    with limits.scoped({"max_entries_per_layer": 4}), pytest.raises(LimitExceeded) as e:
        _plan(tar)
    assert_cap(e, "max_entries_per_layer", "too many tar entries")


@pytest.mark.parametrize("one_read", [False, True], ids=["plan", "stream"])
def test_max_paths_counts_every_layer(one_read: bool) -> None:
    """Each layer is under max_entries_per_layer, the three together are over max_paths."""
    tars = [layer(*(f(f"l{n}/f{i}", b"") for i in range(4))) for n in range(3)]
    _plan(*tars)
    with limits.scoped({"max_paths": 10}), pytest.raises(LimitExceeded) as e:
        if one_read:
            merge.stream(inputs(tars), 0, io.BytesIO())
        else:
            _plan(*tars)
    assert_cap(e, "max_paths", "entries in the layers merged")


def test_max_path() -> None:
    tar = layer(f("d/" + "n" * 300, b"x"))
    _plan(tar)
    with limits.scoped({"max_path": 200}), pytest.raises(LimitExceeded) as e:
        _plan(tar)
    assert_cap(e, "max_path", "too long")


def test_max_pax_header() -> None:
    tar = layer(f("big-pax", b"x", pax={"comment": "c" * 5000}))
    _plan(tar)
    with limits.scoped({"max_pax_header": 4096}), pytest.raises(LimitExceeded) as e:
        _plan(tar)
    assert_cap(e, "max_pax_header", "header of")


def test_max_pax_header_gnu_longname() -> None:
    tar = layer(f("g/" + "L" * 3000, b"x"), fmt=tarfile.GNU_FORMAT)
    _plan(tar)
    with limits.scoped({"max_pax_header": 1024}), pytest.raises(LimitExceeded) as e:
        _plan(tar)
    assert_cap(e, "max_pax_header", "header of")


# ------------------------------------------------------------------------------------------ the CLI

def test_cli_limit_option_and_env(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = write(tmp_path, "d.tar", I.tar_of(I.members_docker()))
    out = tmp_path / "out.tar"
    assert main(["convert", str(src), str(out), "--limit", "max_layers=2"]) == 1
    err = capsys.readouterr().err
    assert "(cap max_layers)" in err and "--limit max_layers=N" in err and "OCISQUASH_MAX_LAYERS=N" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["d.tar"]
    monkeypatch.setenv("OCISQUASH_MAX_LAYERS", "2")  # read afresh: the run above left no caps behind
    assert main(["convert", str(src), str(out)]) == 1
    assert "(cap max_layers)" in capsys.readouterr().err
    monkeypatch.delenv("OCISQUASH_MAX_LAYERS")
    assert main(["convert", str(src), str(out), "--limit", "layers=3"]) == 0
    assert out.is_file()


def test_cli_limit_lasts_one_run(tmp_path: Path) -> None:
    """``main`` puts the caps back when it returns: a ``--limit`` does not refuse the next run in the
    process, nor a library call after it."""
    src = write(tmp_path, "d.tar", I.tar_of(I.members_docker()))
    before = limits.current()
    assert main(["convert", str(src), str(tmp_path / "a.tar"), "--limit", "max_layers=2"]) == 1
    assert limits.current() == before
    assert load_all(src) > 0
    assert main(["convert", str(src), str(tmp_path / "b.tar")]) == 0


def test_scoped_puts_back_the_caps_before_it(tmp_path: Path) -> None:
    p = write(tmp_path, "d.tar", I.tar_of(I.members_docker()))
    before = limits.current()
    with limits.scoped({"max_layers": 7}) as outer:
        assert outer.max_layers == 7 and limits.current() is outer
        with pytest.raises(LimitExceeded), limits.scoped({"max_layers": 2}):
            load_all(p)  # the error leaves the inner block: its cap must go with it
        assert limits.current() is outer
        limits.configure({"max_images": 3})  # what --limit does inside main's scope
        assert limits.current().max_images == 3
    assert limits.current() == before


def test_cli_bad_limit_values(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                              tmp_path: Path) -> None:
    src = write(tmp_path, "d.tar", I.tar_of(I.members_docker()))
    assert main(["convert", str(src), str(tmp_path / "o.tar"), "--limit", "max_nonsense=3"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "o.tar"), "--limit", "max_json=0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    monkeypatch.setenv("OCISQUASH_MAX_JSON", "lots")
    limits.reset()
    assert main(["convert", str(src), str(tmp_path / "o.tar")]) == 2
    assert "OCISQUASH_MAX_JSON='lots': not a whole number" in capsys.readouterr().err
