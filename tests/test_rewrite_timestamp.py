"""``--rewrite-timestamp``: the new layer's times later than the timestamp set to it, so two builds of one
source squash to the same bytes; kept layers untouched; the dry run still predicts the bytes written.

The merge is tested on hand-made layers (every kind of entry, sub-second and atime/ctime PAX records);
the command on umoci-built images; the whole promise on two buildah builds of one Containerfile whose
source files' mtimes differ, unpacked by umoci (tests/oracle.py).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import oracle
import pytest
from conftest import check_tools, needs, skip_or_fail
from fixtures import CREATED, MTIME, BuiltImage, LayerBuilder, build_oci, oci_manifest
from layertar import d, f, fifo, hl, inputs, layer, sym, wh
from test_report_numbers import pax_layers
from test_squash import cli, decompress, ok, read_image

import ocisquash
from ocisquash import Compression, Cut, merge
from ocisquash.errors import UsageError

T = MTIME
WHEN = dt.datetime.fromtimestamp(T, dt.UTC)


def clamped(tars: list[bytes], keep: int, t: int | None) -> tuple[merge.MergePlan, bytes]:
    """The merged layer with ``clamp_mtime=t``, by ``plan`` + ``write`` and by ``stream``: the same bytes,
    as long as the plan said (the dry run's number)."""
    p = merge.plan(inputs(tars), keep, clamp_mtime=t)
    out = io.BytesIO()
    merge.write(p, inputs(tars), out)
    data = out.getvalue()
    assert p.out_tar_bytes() == len(data)
    streamed = io.BytesIO()
    sp, _ = merge.stream(inputs(tars), keep, streamed, clamp_mtime=t)
    assert streamed.getvalue() == data
    assert sp.layout.clamped == p.layout.clamped
    return p, data


def by_name(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


# ------------------------------------------------------------------------------------------------ merge

def test_times_before_at_and_after_t() -> None:
    tars = [layer(
        f("early", b"e", mtime=T - 1), f("at", b"a", mtime=T), f("late", b"l", mtime=T + 1),
        f("late-frac", b"lf", mtime=f"{T}.5"), f("early-frac", b"ef", mtime=f"{T - 1}.25"),
        f("at-frac-zero", b"z", mtime=f"{T}.000"), d("dir", mtime=T + 100), f("dir/in", b"i", mtime=T + 7),
    )]
    p, data = clamped(tars, 0, T)
    m = by_name(data)
    assert (m["early"].mtime, m["at"].mtime, m["late"].mtime, m["dir"].mtime, m["dir/in"].mtime) == \
        (T - 1, T, T, T, T)
    # a sub-second time later than T is T exactly: no PAX mtime record left
    assert m["late-frac"].mtime == T and "mtime" not in m["late-frac"].pax_headers
    # earlier ones (and one equal to T) keep their exact PAX text
    assert m["early-frac"].pax_headers["mtime"] == f"{T - 1}.25"
    assert m["at-frac-zero"].pax_headers["mtime"] == f"{T}.000"
    assert p.layout.clamped == 4
    # without the option nothing changes, and the dropped PAX record is what the sizes differ by
    p0, unclamped = clamped(tars, 0, None)
    assert p0.layout.clamped == 0
    assert by_name(unclamped)["late"].mtime == T + 1
    assert len(unclamped) > len(data)


def test_negative_sub_second_times_compare_as_times() -> None:
    # -5.3 is before -5, -4.5 after it
    tars = [layer(f("a", mtime="-5.3"), f("b", mtime="-4.5"), f("c", mtime="-5"))]
    _, data = clamped(tars, 0, -5)
    m = by_name(data)
    assert m["a"].pax_headers["mtime"] == "-5.3"
    assert m["b"].mtime == -5 and m["c"].mtime == -5


def test_atime_and_ctime_records_follow_the_mtime_rule() -> None:
    tars = [layer(f("x", b"x", mtime=T + 5, pax={"atime": f"{T + 9}.5", "ctime": f"{T - 2}.75"}))]
    _, data = clamped(tars, 0, T)
    x = by_name(data)["x"]
    assert x.mtime == T
    assert x.pax_headers["atime"] == str(T)
    assert x.pax_headers["ctime"] == f"{T - 2}.75"


def test_every_kind_of_entry_in_the_new_layer_onto_a_kept_one() -> None:
    kept = layer(d("etc", mtime=T + 50), f("etc/keep", b"k", mtime=T + 50), f("gone", b"g", mtime=T + 50))
    top = layer(
        d("etc/new", mtime=T + 60), sym("etc/new/ln", "../keep", mtime=T + 60),
        f("etc/new/file", b"new", mtime=T + 60), hl("etc/new/file-link", "etc/new/file"),
        hl("etc/new/to-kept", "etc/keep"), fifo("etc/new/p", mtime=T + 60), wh("gone"),
    )
    p, data = clamped([kept, top], 1, T)
    m = by_name(data)
    for name in ("etc/new", "etc/new/ln", "etc/new/file", "etc/new/file-link", "etc/new/p"):
        assert m[name].mtime == T, name
    # what only repeats a kept object keeps the kept metadata: etc (written as an ancestor, its own
    # metadata unchanged) and a hardlink to a kept file (its header carries the kept inode's)
    assert m["etc"].mtime == T + 50
    assert m["etc/new/to-kept"].mtime == T + 50 and m["etc/new/to-kept"].islnk()
    assert m[".wh.gone"].mtime == 0
    assert p.layout.clamped == 5
    # a whiteout's own time (0) follows the rule too, below the epoch
    p, data = clamped([kept, top], 1, -1)
    assert by_name(data)[".wh.gone"].mtime == -1
    assert p.layout.clamped == 6


# ------------------------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def two_layers(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    check_tools()
    base = LayerBuilder(mtime=T + 100)
    base.dir("usr").file("usr/base", b"base\n")
    top = LayerBuilder(mtime=T + 200)
    top.dir("app").file("app/x", b"x\n").symlink("app/l", "x")
    return build_oci(tmp_path_factory.mktemp("two") / "img.oci", "latest", [base, top])


def test_kept_layers_are_byte_identical_with_and_without(two_layers: BuiltImage, tmp_path: Path) -> None:
    _, man_in = oci_manifest(two_layers.path, "latest")
    kept_in = json.loads(man_in)["layers"][0]["digest"]
    new = []
    for flag in (False, True):
        out = tmp_path / f"out-{flag}"
        rep = ocisquash.squash_image(two_layers.ref, out, cut=Cut.from_layer(2), rewrite_timestamp=flag,
                                     timestamp=WHEN, format=None)
        manifest = json.loads(oci_manifest(out)[1])
        assert manifest["layers"][0]["digest"] == kept_in
        new.append(manifest["layers"][1]["digest"])
        assert rep.mtimes_clamped == (3 if flag else None)  # app, app/x, app/l
    assert new[0] != new[1]


def test_history_above_the_cut_clamped_and_the_comment_names_no_image(two_layers: BuiltImage, tmp_path: Path) -> None:
    earlier = dt.datetime.fromtimestamp(T - 100, dt.UTC)
    out = tmp_path / "out"
    ocisquash.squash_image(two_layers.ref, out, cut=Cut.from_layer(2), timestamp=earlier, rewrite_timestamp=True)
    history = json.loads(read_image(out).config_raw)["history"]
    # the kept layer's entry stays; the squashed one, later than the timestamp, gets it, as the new one has it
    assert [h["created"] for h in history] == [CREATED, "2023-11-14T22:11:40Z", "2023-11-14T22:11:40Z"]
    assert history[-1]["comment"].startswith("merge to layer 1 (sha256:")
    plain = tmp_path / "plain"
    ocisquash.squash_image(two_layers.ref, plain, cut=Cut.from_layer(2), timestamp=earlier)
    history = json.loads(read_image(plain).config_raw)["history"]
    assert [h["created"] for h in history] == [CREATED, CREATED, "2023-11-14T22:11:40Z"]
    assert history[-1]["comment"].startswith("merge sha256:")


def test_dry_run_predicts_the_bytes_written(tmp_path: Path) -> None:
    img = build_oci(tmp_path / "pax.oci", "latest", pax_layers())  # sub-second mtimes, every header kind
    for cut in (Cut.scratch(), Cut.from_layer(2)):
        dry = ocisquash.squash_image(img.ref, None, cut=cut, timestamp=WHEN, rewrite_timestamp=True)
        out = tmp_path / f"out-{cut.kind}"
        rep = ocisquash.squash_image(img.ref, out, cut=cut, timestamp=WHEN, rewrite_timestamp=True,
                                     compression=Compression.NONE)
        merged = read_image(out).layers[-1]
        assert decompress(merged) == merged
        assert dry.mtimes_clamped == rep.mtimes_clamped and rep.mtimes_clamped
        assert dry.bytes_after_uncompressed == rep.bytes_after_uncompressed
        kept = sum(len(decompress(b)) for b in read_image(out).layers[:-1])
        assert rep.bytes_after_uncompressed == kept + len(merged)
        # the clamp dropped the sub-second PAX record: MTIME + 0.123456 is later than MTIME
        assert b"mtime=" not in merged


def test_needs_a_timestamp(two_layers: BuiltImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = cli("squash", two_layers.ref, tmp_path / "o.tar", "--rewrite-timestamp")
    assert r.rc == 2 and "Traceback" not in r.stderr
    assert "--rewrite-timestamp" in r.stderr and "SOURCE_DATE_EPOCH" in r.stderr
    assert not (tmp_path / "o.tar").exists()
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    with pytest.raises(UsageError):
        ocisquash.squash_image(two_layers.ref, tmp_path / "o2.tar", rewrite_timestamp=True)
    with pytest.raises(UsageError):
        ocisquash.squash_image(two_layers.ref, None, rewrite_timestamp="yes")  # type: ignore[arg-type]


def test_source_date_epoch_is_the_time_and_the_report_counts(two_layers: BuiltImage, tmp_path: Path) -> None:
    by_env = ok(cli("squash", two_layers.ref, tmp_path / "env.tar", "--rewrite-timestamp", "--json",
                    env={"SOURCE_DATE_EPOCH": str(T)})).json()
    by_flag = ok(cli("squash", two_layers.ref, tmp_path / "flag.tar", "--rewrite-timestamp", "--timestamp", str(T),
                     "--json")).json()
    assert by_env["mtimes_clamped"] == by_flag["mtimes_clamped"] == 5  # usr, usr/base, app, app/x, app/l
    assert by_env["manifest"] == by_flag["manifest"]
    plain = ok(cli("squash", two_layers.ref, tmp_path / "plain.tar", "--timestamp", str(T), "--json")).json()
    assert plain["mtimes_clamped"] is None and plain["manifest"] != by_flag["manifest"]
    table = ok(cli("squash", two_layers.ref, "--dry-run", "--rewrite-timestamp", "--timestamp", str(T)))
    assert "set back the times of 5 entries of the new layer" in table.stderr
    helped = ok(cli("squash", "--help"))
    text = " ".join(helped.stdout.decode().replace("│", " ").split())
    assert "--rewrite-timestamp" in text and "kept layers are never changed" in text


# ------------------------------------------------------------------------------------ two buildah builds

CONTAINERFILE = "FROM scratch\nCOPY src/ /app/\nADD extra.txt /etc/extra.txt\n"


def _build(ctx: Path, store: Path, when: int, out: Path) -> None:
    """Build ``ctx`` with every source file's mtime ``when``, in a fresh store (no layer cache)."""
    for p in [*ctx.rglob("*"), ctx / "src"]:
        os.utime(p, (when, when), follow_symlinks=False)
    opts = ["--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs"]
    try:
        for argv in (["bud", "-q", "--isolation", "chroot", "-t", "repro", str(ctx)],
                     ["push", "-q", "repro", f"oci-archive:{out}:repro"]):
            p = subprocess.run(["buildah", *opts, *argv], capture_output=True, text=True, timeout=300, check=False)
            assert p.returncode == 0, f"buildah {argv[0]}: {p.stderr}"
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_two_builds_squash_to_the_same_image(tmp_path: Path) -> None:
    check_tools()
    problem = needs(("buildah",), "apt-get install buildah", root="(buildah's container store)")
    if problem:
        skip_or_fail(problem)
    ctx = tmp_path / "ctx"
    (ctx / "src" / "sub").mkdir(parents=True)
    (ctx / "src" / "a.txt").write_text("hello\n")
    (ctx / "src" / "sub" / "b.bin").write_bytes(bytes(range(256)) * 9)
    (ctx / "src" / "exe").write_text("#!/bin/sh\n")
    (ctx / "src" / "exe").chmod(0o755)
    (ctx / "src" / "link").symlink_to("a.txt")
    (ctx / "extra.txt").write_text("extra\n")
    (ctx / "Containerfile").write_text(CONTAINERFILE)
    builds = [tmp_path / "one.tar", tmp_path / "two.tar"]
    for i, (out, when) in enumerate(zip(builds, (T, T + 60), strict=True)):
        _build(ctx, tmp_path / f"store{i}", when, out)
    ins = [ocisquash.open(b) for b in builds]
    try:
        assert ins[0].image().manifest_digest != ins[1].image().manifest_digest
    finally:
        for s in ins:
            s.close()
    digests: dict[bool, list[str]] = {False: [], True: []}
    for flag in (False, True):
        for b in builds:
            out = tmp_path / f"{b.stem}-{flag}.tar"
            args = ["--rewrite-timestamp"] if flag else []
            rep = ok(cli("squash", b, out, "--format", "oci-archive", "--timestamp", "0", *args, "--json")).json()
            digests[flag].append(rep["manifest"])
    assert digests[True][0] == digests[True][1]
    assert digests[False][0] != digests[False][1]
    # the squash unpacks to the build with mtimes clamped (later than 0: every one) and nothing else changed
    original, squashed = oracle.snapshots([f"oci-archive:{builds[1]}:repro",
                                           f"oci-archive:{tmp_path / 'two-True.tar'}"], tmp_path)
    assert oracle.compare(original, squashed) == []
    later = [p for p, e in original.items() if p != "." and e.mtime_ns > 0]
    assert "app/a.txt" in later and "app/link" in later
    for path, e in squashed.items():
        if path != ".":  # the root is umoci's bundle directory, not the image's
            want = min(original[path].mtime_ns, 0)
            assert e.mtime_ns == want, (path, e.mtime_ns, want)
