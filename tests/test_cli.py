"""The CLI end to end: images/ls, history, analyze, validate, and the conventions every command shares.

Inputs are built by hand (tests/listing_inputs.py); expected sizes come from the blob files themselves.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from listing_inputs import Img, layer_tar, sha, write_docker, write_oci
from typer.testing import CliRunner, Result

from ocisquash.cli import app, main
from ocisquash.errors import NotFound, UsageError

T1 = "2023-01-01T00:00:00Z"
T2 = "2023-01-02T00:00:00.123456789Z"
T2_PLUS_1NS = "2023-01-02T00:00:00.12345679Z"
T3 = "2023-01-03T00:00:00Z"
T4 = "2023-01-04T00:00:00Z"

BASE = layer_tar({"etc/os-release": b"base\n" * 100})
APP = layer_tar({"app/bin": b"a" * 5000})
DB = layer_tar({"db/bin": b"d" * 7000})
BB = layer_tar({"bin/busybox": b"b" * 3000})
OTHER = layer_tar({"x": b"x" * 10})
NANO = layer_tar({"n": b"n"})

runner = CliRunner()


def images() -> dict[str, Img]:
    return {
        "A": Img(["docker.io/acme/app:1.0", "docker.io/acme/app:latest"], T3, [BASE, APP],
                 {"tier": "web", "version": "1"}),
        "B": Img(["docker.io/acme/db:2"], T2, [BASE, DB], {"tier": "db"}),
        "C": Img(["docker.io/library/busybox:latest"], T2, [BB]),
        "G": Img(["docker.io/other/nano:1"], T2_PLUS_1NS, [NANO]),
        "D": Img([], T1, [BASE]),   # untagged parent of A and B: intermediate
        "E": Img([], T4, [OTHER]),  # untagged head: dangling
    }


@pytest.fixture
def oci(tmp_path: Path) -> tuple[Path, dict[str, Img]]:
    imgs = images()
    return write_oci(tmp_path / "layout", list(imgs.values())), imgs


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ids(out: str) -> list[str]:
    return out.split()


def rows(out: str) -> list[list[str]]:
    """Data rows of a table: columns split on runs of 3+ spaces."""
    import re
    lines = [ln for ln in out.splitlines() if ln.strip()]
    return [re.split(r"\s{3,}", ln.strip()) for ln in lines[1:]]


def q(path: Path, *flt: str, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["images", str(path), "-q", *extra]
    for f in flt:
        args += ["-f", f]
    r = run(*args)
    assert r.exit_code == 0, r.output
    return ids(r.stdout)


def short(img: Img) -> str:
    return img.id[7:19]


# ------------------------------------------------------------------------------ images: table and order


def test_images_table_newest_first_and_none(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    r = run("images", str(path))
    assert r.exit_code == 0, r.output
    got = rows(r.stdout)
    assert r.stdout.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert [(x[0], x[1], x[2]) for x in got] == [
        ("<none>", "<none>", short(im["E"])),
        ("acme/app", "1.0", short(im["A"])),
        ("acme/app", "latest", short(im["A"])),
        ("other/nano", "1", short(im["G"])),
        ("acme/db", "2", short(im["B"])),
        ("busybox", "latest", short(im["C"])),
    ]


def test_ls_alias_and_all_shows_intermediate(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    assert run("ls", str(path), "-q").stdout == run("images", str(path), "-q").stdout
    assert short(im["D"]) not in q(path)
    assert q(path, extra=("-a",))[-1] == short(im["D"])  # oldest, last


def test_no_trunc_and_digests(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    assert q(path, extra=("--no-trunc",))[1] == im["A"].id
    r = run("images", str(path), "--digests")
    index = json.loads((path / "index.json").read_text())
    a_digest = next(m["digest"] for m in index["manifests"]
                    if m.get("annotations", {}).get("io.containerd.image.name") == "docker.io/acme/app:1.0")
    assert a_digest in r.stdout
    assert "DIGEST" in r.stdout.splitlines()[0]


def test_created_is_human(tmp_path: Path) -> None:
    three_weeks = (datetime.now(UTC) - timedelta(days=22)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = write_oci(tmp_path / "l", [Img(["docker.io/library/x:1"], three_weeks, [OTHER]),
                                      Img(["docker.io/library/y:1"], None, [NANO])])
    got = {x[0]: x[3] for x in rows(run("images", str(path)).stdout)}
    assert got == {"x": "3 weeks ago", "y": "N/A"}


# ------------------------------------------------------------------------------ images: filters


def test_dangling(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    assert q(path, "dangling=true") == [short(im["E"])]  # D has children: not a head
    assert q(path, "dangling=true", extra=("-a",)) == [short(im["E"])]
    got = q(path, "dangling=false", extra=("-a",))
    assert short(im["E"]) not in got and short(im["D"]) not in got
    assert set(got) == {short(im[k]) for k in "ABCG"}


KEYS = "hint: keys: before, dangling, label, platform, reference, since"


@pytest.mark.parametrize(("bad", "hint"), [("dangling=maybe", "hint: use dangling=true or dangling=false"),
                                           ("dangling=TRUE", "hint: use dangling=true or dangling=false"),
                                           ("colour=red", KEYS), ("label", KEYS), ("reference=[a", None)])
def test_bad_filters_are_usage_errors(oci: tuple[Path, dict[str, Img]], bad: str, hint: str | None,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A filter that cannot be read is a usage error; one with an unknown key, or a value out of its
    choices, has a hint listing them."""
    path, _ = oci
    r = run("images", str(path), "-f", bad)  # the bare app raises; main() renders it and exits 2
    assert isinstance(r.exception, UsageError), r.exception
    capsys.readouterr()
    assert main(["images", str(path), "-f", bad]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error: ") and "filter" in lines[0], lines
    if hint is not None:
        assert lines[1:] == [hint], lines


def test_label_with_and_without_value(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    assert set(q(path, "label=tier")) == {short(im["A"]), short(im["B"])}
    assert q(path, "label=tier=db") == [short(im["B"])]
    assert q(path, "label=tier=") == []  # a value that must be empty
    assert set(q(path, "label=tier", "label=version")) == {short(im["A"])}  # labels AND (moby MatchKVList)
    assert q(path, "label=tier=db", "label=version") == []
    assert q(path, "label=nope") == []


def test_before_since_exclude_equal_times(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    # B and C were created at the same nanosecond; G one nanosecond later.
    assert q(path, "before=acme/db:2") == []  # only D is older, and it is intermediate
    assert q(path, "before=acme/db:2", extra=("-a",)) == [short(im["D"])]
    assert q(path, "before=busybox") == []  # C's twin B is not "before" C
    assert q(path, "since=acme/db:2") == [short(im["E"]), short(im["A"]), short(im["A"]), short(im["G"])]
    assert q(path, "since=busybox:latest") == q(path, "since=acme/db:2")
    assert q(path, "since=other/nano:1") == [short(im["E"]), short(im["A"]), short(im["A"])]
    # by image ID prefix; several befores take the earliest, several sinces the latest
    assert q(path, f"before={short(im['E'])}", f"before={short(im['A'])}") == [
        short(im["G"]), short(im["B"]), short(im["C"])]
    assert q(path, "since=acme/db:2", "since=acme/app:1.0") == [short(im["E"])]
    assert q(path, "since=acme/db:2", "before=acme/app:1.0") == [short(im["G"])]


def test_before_unknown_image_fails(oci: tuple[Path, dict[str, Img]], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = oci
    r = run("images", str(path), "-f", "before=nope:1")
    assert isinstance(r.exception, NotFound)
    capsys.readouterr()
    assert main(["images", str(path), "-f", "before=nope:1"]) == 1
    err = capsys.readouterr().err
    assert "no image matches 'nope:1'" in err and "\nhint: images here: " in err and "acme/app:1.0" in err, err


def test_reference_globs(oci: tuple[Path, dict[str, Img]]) -> None:
    path, _im = oci

    def refs(*flt: str) -> list[tuple[str, str]]:
        args = ["images", str(path)]
        for f in flt:
            args += ["-f", f]
        return [(x[0], x[1]) for x in rows(run(*args).stdout)]

    assert refs("reference=acme/*") == [("acme/app", "1.0"), ("acme/app", "latest"), ("acme/db", "2")]
    assert refs("reference=busybox") == [("busybox", "latest")]  # no tag: repository name
    assert refs("reference=acme/app:1.*") == [("acme/app", "1.0")]  # with a tag: name:tag; other tag hidden
    assert refs("reference=*:latest") == [("busybox", "latest")]  # * never crosses '/'
    assert refs("reference=*/*:latest") == [("acme/app", "latest")]
    assert refs("reference=app") == []  # the familiar name is acme/app
    assert refs("reference=acme/db", "reference=busybox") == [("acme/db", "2"), ("busybox", "latest")]  # OR
    assert refs("reference=acme/*", "label=tier=db") == [("acme/db", "2")]  # AND across keys
    assert refs("reference=acme/*", "since=acme/db:2") == [("acme/app", "1.0"), ("acme/app", "latest")]
    assert refs("reference=*", "dangling=true") == []  # untagged images never match a reference
    assert refs("reference=a?me/d[a-c]") == [("acme/db", "2")]
    assert refs("reference=acme/[^a]*") == [("acme/db", "2")]


# ------------------------------------------------------------------------------ images: sizes and json


def blob_size(layout: Path, b: bytes) -> int:
    return (layout / "blobs" / "sha256" / sha(b)[7:]).stat().st_size


def test_sizes_shared_unique_json(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    r = run("images", str(path), "--json", "-a")
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    by_id = {o["id"]: o for o in objs}
    a = by_id[im["A"].id]
    base, app_ = blob_size(path, BASE), blob_size(path, APP)
    assert base == len(BASE)
    assert a["size"] == base + app_ and a["size_exact"] is True
    assert (a["shared_size"], a["unique_size"]) == (base, app_)  # BASE also in B and D
    d = by_id[im["D"].id]
    assert (d["shared_size"], d["unique_size"]) == (base, 0)
    e = by_id[im["E"].id]
    assert (e["shared_size"], e["unique_size"]) == (0, len(OTHER))
    assert a["repository"] == "acme/app" and a["labels"] == {"tier": "web", "version": "1"}
    assert len(objs) == 7  # one per row: A twice


def test_sizes_columns(oci: tuple[Path, dict[str, Img]]) -> None:
    path, _im = oci
    r = run("images", str(path), "-s", "-f", "reference=acme/db")
    head = r.stdout.splitlines()[0]
    assert "SHARED SIZE" in head and "UNIQUE SIZE" in head
    row = rows(r.stdout)[0]
    base, db = len(BASE), len(DB)  # without --exact, no layer is read: the tar sizes, marked * (not docker's)
    assert row[-3:] == [f"{(base + db) / 1000:.3g}kB*", f"{base / 1000:.3g}kB*", f"{db / 1000:.3g}kB*"]
    # with --exact, docker's figures: the files' bytes (500 and 7000)
    row = rows(run("images", str(path), "-s", "-f", "reference=acme/db", "--exact").stdout)[0]
    assert row[-3:] == ["7.5kB", "500B", "7kB"]


def test_compressed_sizes_and_exact(tmp_path: Path) -> None:
    img = Img(["docker.io/library/z:1"], T1, [BASE, APP], gzip=True)
    path = write_oci(tmp_path / "gz", [img])
    stored = sum(blob_size(path, b) for b in img.blobs)
    assert stored == sum(len(gzip.compress(x, mtime=0)) for x in (BASE, APP))
    o = json.loads(run("images", str(path), "--json").stdout)
    assert (o["size"], o["size_exact"]) == (stored, False)
    assert rows(run("images", str(path)).stdout)[0][-1].endswith("*")  # marked: compressed size
    o = json.loads(run("images", str(path), "--json", "--exact").stdout)
    assert (o["size"], o["size_exact"]) == (len(BASE) + len(APP), True)


def test_docker_tarball_listing(tmp_path: Path) -> None:
    imgs = images()
    path = write_docker(tmp_path / "save.tar", [imgs["A"], imgs["C"], imgs["E"]])
    got = [(x[0], x[1], x[2]) for x in rows(run("images", str(path)).stdout)]
    assert got == [("<none>", "<none>", short(imgs["E"])), ("acme/app", "1.0", short(imgs["A"])),
                   ("acme/app", "latest", short(imgs["A"])), ("busybox", "latest", short(imgs["C"]))]
    o = [json.loads(x) for x in run("images", str(path), "--json").stdout.splitlines()]
    assert o[1]["size"] == len(BASE) + len(APP)


def test_bad_format_option(oci: tuple[Path, dict[str, Img]], capsys: pytest.CaptureFixture[str]) -> None:
    """As docs/commands.md shows it: the fields there are, and a hint that names are case-sensitive."""
    path, _ = oci
    assert main(["images", str(path), "--format", "{{.Nope}}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: --format '{{.Nope}}': no field 'Nope'; valid fields: ID, Repository, Tag, Digest, "
                     "CreatedSince, CreatedAt, Size, SharedSize, UniqueSize, Containers, VirtualSize, Platform",
                     "hint: field names are case-sensitive, as in docker: {{.ID}}, {{.Repository}}"], lines


# ------------------------------------------------------------------------------ history


HIST = [
    {"created": T1, "created_by": "/bin/sh -c #(nop) ADD file:0123456789abcdef in / ", "comment": "base"},
    {"created": T2, "created_by": "/bin/sh -c #(nop)  ENV A=1", "empty_layer": True},
    {"created": T3, "created_by": "RUN make\tinstall", "comment": "build"},
    {"created": T4, "created_by": "/bin/sh -c #(nop)  CMD [\"app\"]", "empty_layer": True},
]


@pytest.fixture
def hist(tmp_path: Path) -> tuple[Path, Img]:
    img = Img(["docker.io/acme/h:1"], T4, [BASE, APP], history=HIST)
    return write_oci(tmp_path / "h", [img, Img(["docker.io/acme/other:1"], T1, [OTHER])]), img


def test_history_table(hist: tuple[Path, Img]) -> None:
    path, img = hist
    r = run("history", str(path), "--image", "acme/h:1")
    assert r.exit_code == 0, r.output
    got = rows(r.stdout)
    assert [x[0] for x in got] == [short(img), "<missing>", "<missing>", "<missing>"]
    sizes = [x[3] if len(x) > 3 else "" for x in got]
    assert sizes[0] == "0B" and sizes[2] == "0B"
    assert sizes[1] == "5kB" and sizes[3] == "500B"  # docker's: the files' bytes, not the tars' lengths
    assert got[3][2] == "/bin/sh -c #(nop) ADD file:0123456789abcdef …"  # 45 characters
    assert len(got[3][2]) == 45
    assert got[1][2] == "RUN make install" and got[1][4] == "build"


def test_history_no_trunc_quiet_json(hist: tuple[Path, Img]) -> None:
    path, img = hist
    r = run("history", str(path), "-i", "acme/h:1", "--no-trunc")
    assert img.id in r.stdout and HIST[0]["created_by"].strip() in r.stdout
    assert run("history", str(path), "-i", "acme/h:1", "-q").stdout.split() == [short(img)] + ["<missing>"] * 3
    objs = [json.loads(x) for x in run("history", str(path), "-i", "acme/h:1", "--json").stdout.splitlines()]
    assert [o["size"] for o in objs] == [0, len(APP), 0, len(BASE)]
    assert [o["empty_layer"] for o in objs] == [True, False, True, False]
    assert [o["layer"] for o in objs] == [None, 1, None, 0]
    assert objs[0]["id"] == img.id and objs[1]["created"] == T3


def test_history_needs_a_choice(hist: tuple[Path, Img], capsys: pytest.CaptureFixture[str]) -> None:
    """Two images and no --image: an error whose hint lists both to choose from; an --image that matches
    none: a hint listing the images there are (README: "an error listing both")."""
    path, _ = hist
    for argv, error, hint in [([], "holds 2 images; say which", "hint: use --image with one of: "),
                              (["-i", "nope:1"], "no image matches 'nope:1'", "hint: images here: ")]:
        assert main(["history", str(path), *argv]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and error in lines[0], lines
        assert lines[1].startswith(hint), lines
        # each choice by its names and short ID
        assert re.search(r"docker\.io/acme/h:1, 1 \([0-9a-f]{12}\); docker\.io/acme/other:1, 1 \([0-9a-f]{12}\)$",
                         lines[1]), lines


def test_history_without_history(tmp_path: Path) -> None:
    path = write_oci(tmp_path / "n", [Img(["docker.io/a/b:1"], T1, [BASE, APP])])
    objs = [json.loads(x) for x in run("history", str(path), "--json").stdout.splitlines()]
    assert [o["size"] for o in objs] == [len(APP), len(BASE)]


# ------------------------------------------------------------------------------ conventions, subprocess


def sub(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # FORCE_COLOR from the outer environment must not leak in; one the test passes must get through.
    e = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, env=e,
                          timeout=120)


def test_subprocess_images_and_history(oci: tuple[Path, dict[str, Img]]) -> None:
    path, im = oci
    p = sub("images", str(path), "-f", "label=tier=db", "-q")
    assert (p.returncode, p.stdout, p.stderr) == (0, short(im["B"]) + "\n", "")
    p = sub("history", str(path), "-i", "acme/app:1.0", "-q")
    assert p.returncode == 0 and p.stdout.split()[0] == short(im["A"])
    p = sub("images", str(path))
    assert "\x1b[" not in p.stdout  # no colour when piped
    p = sub("images", str(path), "-f", "dangling=maybe")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "dangling" in p.stderr


@pytest.mark.parametrize("cmd", ["images", "ls", "history", "analyze", "validate", "squash", "convert"])
def test_every_command_has_help_with_example(cmd: str) -> None:
    r = run(cmd, "--help")
    assert r.exit_code == 0
    assert "Example" in r.stdout


@pytest.mark.parametrize("cmd", ["images", "history", "analyze", "validate", "squash", "convert"])
def test_missing_input_is_one_red_line(cmd: str, tmp_path: Path) -> None:
    args = [cmd, str(tmp_path / "nope.tar")] + ([str(tmp_path / "o.tar")] if cmd in ("squash", "convert") else [])
    p = sub(*args)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and "nope.tar" in lines[0]
    p = sub("--debug", *args)
    assert p.returncode == 1 and "Traceback" in p.stderr


@pytest.mark.parametrize("args", [
    ["images"], ["history", "x", "--bogus"], ["images", "x", "-f"], ["images", "x", "--format"], ["--bogus"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    p = sub(*args)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr


def test_version() -> None:
    p = sub("--version")
    assert p.returncode == 0 and p.stdout.startswith("ocisquash ")
    assert run("--version").exit_code == 0


def colours(text: str) -> set[str]:
    """The colour parameters of the SGR escapes in ``text`` (bold, dim and reset are not colours)."""
    import re

    out = set()
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        for p in params.split(";"):
            if p and (30 <= int(p) <= 49 or 90 <= int(p) <= 107):
                out.add(p)
    return out


def test_no_color_env(oci: tuple[Path, dict[str, Img]]) -> None:
    path, _ = oci
    # FORCE_COLOR makes rich colour a pipe: the control, where the red "error:" shows ...
    p = sub("images", str(path), "-f", "dangling=maybe", env={"FORCE_COLOR": "1"})
    assert p.returncode == 2 and "31" in colours(p.stderr), repr(p.stderr)
    # ... and NO_COLOR takes the colour away even so (no-color.org: bold may stay)
    p = sub("images", str(path), "-f", "dangling=maybe", env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    assert p.returncode == 2 and "error:" in p.stderr and not colours(p.stderr), repr(p.stderr)
    p = sub("images", str(path), "-f", "dangling=maybe", env={"TERM": "xterm"})
    assert p.returncode == 2 and "\x1b[" not in p.stderr  # stderr is a pipe here


@pytest.mark.parametrize("flags", [(), ("--sizes",), ("-a", "--digests")])
def test_images_opens_no_layer(flags: tuple[str, ...], oci: tuple[Path, dict[str, Img]],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    # listing reads JSON only: every file the command opens is recorded, at the os.open/open level
    # (below any reader of ocisquash's), and no layer blob may be among them.
    path, im = oci
    opened: list[str] = []
    real_os_open, real_open = os.open, open

    def os_open(p: Any, *a: Any, **kw: Any) -> int:
        # a name relative to a directory descriptor (DirTree opens blobs so) resolved against that directory
        where = kw.get("dir_fd")
        opened.append(os.path.realpath(p if where is None else os.path.join(os.readlink(f"/proc/self/fd/{where}"), p)))
        return real_os_open(p, *a, **kw)

    def builtin_open(p: Any, *a: Any, **kw: Any) -> Any:
        if isinstance(p, str | bytes | os.PathLike):
            opened.append(os.path.realpath(p))
        return real_open(p, *a, **kw)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr("builtins.open", builtin_open)
    r = run("images", str(path), *flags)
    monkeypatch.undo()
    assert r.exit_code == 0, r.output

    def blob(b: bytes) -> str:
        return os.path.realpath(path / "blobs" / "sha256" / sha(b)[7:])

    layers = {blob(b) for img in im.values() for b in img.blobs}
    configs = {blob(img.config) for img in im.values()}
    assert configs <= set(opened), "the recorder missed the configs: it would miss layer reads too"
    assert not layers & set(opened), f"images read {len(layers & set(opened))} layer blob(s)"


# ------------------------------------------------------------------------------ analyze


def _whiteout_layer(files: dict[str, bytes], whiteouts: list[str]) -> bytes:
    return layer_tar({**{w: b"" for w in whiteouts}, **files})


def test_analyze_counts_each_hidden_copy(tmp_path: Path) -> None:
    l1 = layer_tar({"a": b"1" * 100, "b": b"2" * 200, "keep": b"k" * 7})
    l2 = _whiteout_layer({"a": b"3" * 300}, [".wh.b"])
    l3 = layer_tar({"a": b"4" * 50})
    path = write_oci(tmp_path / "an", [Img(["docker.io/acme/an:1"], T1, [l1, l2, l3], gzip=True)])
    r = run("analyze", str(path), "--json")
    assert r.exit_code == 0, r.output
    o = json.loads(r.stdout)
    assert [ly["bytes_added"] for ly in o["layers"]] == [307, 300, 50]
    assert [ly["hidden_bytes"] for ly in o["layers"]] == [300, 300, 0]
    assert [ly["hidden_files"] for ly in o["layers"]] == [2, 1, 0]
    assert [ly["tar_size"] for ly in o["layers"]] == [len(l1), len(l2), len(l3)]
    assert (o["dropped_files"], o["dropped_bytes"], o["bytes_added"]) == (3, 600, 657)
    assert [ly["layer"] for ly in o["layers"]] == [1, 2, 3]  # numbered from 1, as the table numbers them
    assert [(h["path"], h["size"], h["layer"]) for h in o["largest_hidden"]] == [("a", 300, 2), ("b", 200, 1),
                                                                                   ("a", 100, 1)]
    text = run("analyze", str(path), "--top", "1").stdout
    bars = [ln.split()[-1] for ln in text.splitlines()[2:5]]
    assert bars == ["." * 20, "." * 20, "#" * 20]  # 7 of 307 bytes visible rounds to no '#'
    hidden_rows = [ln.split() for ln in text.splitlines() if ln.split()[:1] in (["a"], ["b"]) and "squash" not in ln]
    assert hidden_rows == [["a", "300B", "2"]]  # --top 1
    assert "wasted 600B: the 3 hidden files a squash drops" in text and text.count("\n") > 5


def test_analyze_subprocess_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_oci(tmp_path / "an", [Img(["docker.io/acme/an:1"], T1, [BASE, APP])])
    p = sub("analyze", str(path))
    assert p.returncode == 0 and p.stderr == ""  # no progress bar when stderr is not a terminal
    assert main(["analyze", str(path), "--image", "nope:2"]) == 1
    err = capsys.readouterr().err
    assert "no image matches 'nope:2'" in err, err
    assert re.search(r"^hint: images here: docker\.io/acme/an:1, 1 \([0-9a-f]{12}\)$", err, re.M), err
    assert main(["analyze", str(path), "--top", "-1"]) == 2


# ------------------------------------------------------------------------------ validate


def test_validate_clean_inputs(oci: tuple[Path, dict[str, Img]], tmp_path: Path) -> None:
    path, _ = oci
    assert main(["validate", str(path)]) == 0
    o = json.loads(run("validate", str(path), "--json").stdout)
    assert o["ok"] is True and o["findings"] == []
    a = next(i for i in o["images"] if "acme/app:1.0" in i["name"])
    assert a["chain_ids"][0] == sha(BASE)
    import hashlib
    assert a["chain_ids"][1] == "sha256:" + hashlib.sha256(f"{sha(BASE)} {sha(APP)}".encode()).hexdigest()
    d = write_docker(tmp_path / "d.tar", [Img(["acme/x:1"], T1, [BASE, APP], gzip=True)])
    p = sub("validate", str(d))
    assert p.returncode == 0, p.stdout + p.stderr


def test_validate_reports_every_mismatch(tmp_path: Path) -> None:
    img = Img(["docker.io/acme/bad:1"], T1, [BASE, APP, DB], gzip=True)
    path = write_oci(tmp_path / "bad", [img])
    blobs = path / "blobs" / "sha256"
    # 1: same size, other bytes (digest mismatch, gzip still fine? no: garbage)
    p1 = blobs / sha(img.blobs[0])[7:]
    p1.write_bytes(gzip.compress(layer_tar({"other": b"x" * 3}), mtime=0)[: p1.stat().st_size].ljust(
        p1.stat().st_size, b"\0"))
    # 2: truncated
    p2 = blobs / sha(img.blobs[2])[7:]
    p2.write_bytes(p2.read_bytes()[:-10])
    r = run("validate", str(path), "--json")
    assert r.exit_code == 1
    o = json.loads(r.stdout)
    where = {f["where"] for f in o["findings"]}
    assert f"blobs/sha256/{p1.name}" in where and f"blobs/sha256/{p2.name}" in where
    msgs = " ".join(f["message"] for f in o["findings"])
    assert "bytes; its descriptor says" in msgs and "hashes to" in msgs
    p = sub("validate", str(path))
    assert p.returncode == 1 and p.stdout.count("mismatch:") == len(o["findings"]) >= 3
    assert "Traceback" not in p.stderr


def test_validate_diff_id_mismatch_in_docker_tar(tmp_path: Path) -> None:
    img = Img(["acme/x:1"], T1, [BASE, APP])
    d = write_docker(tmp_path / "d.tar", [img])
    import tarfile
    with tarfile.open(d) as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers()}  # type: ignore[union-attr]
    members["0-1/layer.tar"] = DB  # another layer where APP should be
    out = tmp_path / "d2.tar"
    import io
    with tarfile.open(out, "w") as t:
        for n, b in members.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            t.addfile(ti, io.BytesIO(b))
    o = json.loads(run("validate", str(out), "--json").stdout)
    assert o["ok"] is False
    assert any("diff ID" in f["message"] and f["where"] == "0-1/layer.tar" for f in o["findings"])
    assert any("chain ID" in f["message"] for f in o["findings"])


SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"


def _on_a_terminal(tmp_path: Path, *args: str) -> str:
    """Run ocisquash with stdout and stderr on a pseudo-terminal (util-linux `script`), return what it drew."""
    import shlex
    import shutil

    if shutil.which("script") is None:
        pytest.fail("util-linux `script` is needed to give ocisquash a terminal")
    cmd = shlex.join([sys.executable, "-m", "ocisquash", *args])
    log = tmp_path / "tty.log"
    r = subprocess.run(["script", "-qec", cmd, str(log)], capture_output=True, timeout=120,
                       env={**os.environ, "TERM": "xterm", "COLUMNS": "100"})
    assert r.returncode == 0, r.stdout
    return log.read_bytes().decode("utf-8", "replace")


def test_progress_shows_on_a_terminal_only_without_quiet(tmp_path: Path) -> None:
    drawn = _on_a_terminal(tmp_path, str(SAMPLE), str(tmp_path / "a.tar"))
    assert "squashing" in drawn
    quiet = _on_a_terminal(tmp_path, str(SAMPLE), str(tmp_path / "b.tar"), "-q")
    assert "squashing" not in quiet and "reading layers" not in quiet
    piped = subprocess.run([sys.executable, "-m", "ocisquash", str(SAMPLE), str(tmp_path / "c.tar")],
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "squashing" not in piped.stderr and "\x1b[" not in piped.stderr


def test_main_restores_the_callers_sigterm_handler(tmp_path: Path) -> None:
    # main() turns SIGTERM into SystemExit for its own run only; a program calling it keeps its handler.
    import signal

    def mine(signum: int, frame: object) -> None:
        pass

    before = signal.signal(signal.SIGTERM, mine)
    try:
        main(["--version"])
        assert signal.getsignal(signal.SIGTERM) is mine
        assert main(["images", str(tmp_path / "missing")]) != 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)
