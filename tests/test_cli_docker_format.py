"""Listings as docker prints them: whole cells on an 80-column terminal, and docker's ``--format``.

Terminal tests run the real command in a pseudo-terminal of 80 columns (python's ``pty``); the others run
it as a subprocess with stdout piped, as a script would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from listing_inputs import Img, layer_tar, write_oci
from tty80 import on_terminal

from ocisquash import goformat
from ocisquash.errors import UsageError

LONG_REPO = "registry.example.com/some-team/a-rather-long-repository-name"
LONG_CMD = "/bin/sh -c apt-get update && apt-get install -y --no-install-recommends build-essential curl"
T1, T2 = "2023-01-01T00:00:00Z", "2023-01-02T00:00:00Z"
BIG = layer_tar({"big": b"b" * 10_800})
# a layer's SIZE is docker's: its files' bytes (10,800), not its tar's length (more, for headers and padding),
# with docker's 3 significant digits
BIG_SIZE = "10.8kB"
# images reads no layer without --exact: the tar's length, marked * as not docker's figure
TAR_SIZE = f"{len(BIG) / 1000:.3g}kB*"
assert TAR_SIZE != BIG_SIZE + "*"


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def wide(tmp_path: Path) -> tuple[Path, Img]:
    hist = [{"created": T1, "created_by": LONG_CMD},
            {"created": T2, "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": True}]
    img = Img([f"{LONG_REPO}:1.0"], T2, [BIG], history=hist)
    return write_oci(tmp_path / "wide", [img]), img


def columns(header: str, names: list[str]) -> list[int]:
    return [header.index(n) for n in names]


def cells(line: str, starts: list[int]) -> list[str]:
    return [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]


def test_images_prints_whole_cells_on_80_columns(wide: tuple[Path, Img]) -> None:
    path, img = wide
    out, rc = on_terminal("images", str(path), "--no-trunc", "--digests", "-s")
    assert rc == 0, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    names = ["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE"]
    starts = columns(lines[0], names)
    assert len(lines[1]) > 80  # wider than the terminal: printed whole, the terminal wraps it
    row = cells(lines[1], starts)
    assert row[0] == LONG_REPO and row[1] == "1.0" and row[3] == img.id
    assert row[2].startswith("sha256:") and len(row[2]) == 71
    assert row[5] == TAR_SIZE and row[6] == "0B*" and row[7] == TAR_SIZE


def test_history_prints_whole_cells_on_80_columns(wide: tuple[Path, Img]) -> None:
    path, _ = wide
    out, rc = on_terminal("history", str(path), "--no-trunc")
    assert rc == 0, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    starts = columns(lines[0], ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"])
    assert cells(lines[2], starts)[2:4] == [LONG_CMD, BIG_SIZE]
    out, rc = on_terminal("history", str(path))
    lines = [ln for ln in out.splitlines() if ln.strip()]
    starts = columns(lines[0], ["IMAGE", "CREATED", "CREATED BY", "SIZE"])
    assert cells(lines[2], starts)[2:4] == [LONG_CMD[:44] + "…", BIG_SIZE]  # docker's 45-character cut


def test_analyze_headers_whole_on_80_columns(wide: tuple[Path, Img]) -> None:
    path, _ = wide
    out, rc = on_terminal("analyze", str(path), "-q")
    assert rc == 0, out
    header = next(ln for ln in out.splitlines() if "DIGEST" in ln)
    assert header.split()[:2] == ["LAYER", "DIGEST"] and "HIDDEN LATER" in header


def test_no_trailing_spaces_when_piped(wide: tuple[Path, Img]) -> None:
    path, _ = wide
    for args in (["history", str(path)], ["images", str(path), "-s"], ["analyze", str(path)]):
        p = piped(*args)
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("\n") >= 2
        assert all(ln == ln.rstrip() for ln in p.stdout.splitlines()), args
        assert "\x1b[" not in p.stdout


# ------------------------------------------------------------------------------ --format


IMAGE_KEYS = {"Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository", "SharedSize", "Size", "Tag",
              "UniqueSize", "VirtualSize"}
HISTORY_KEYS = {"Comment", "CreatedAt", "CreatedBy", "CreatedSince", "ID", "Size"}


def test_images_format_json_has_dockers_keys(wide: tuple[Path, Img]) -> None:
    path, img = wide
    p = piped("images", str(path), "--format", "json")
    assert p.returncode == 0, p.stderr
    (line,) = p.stdout.splitlines()
    o = json.loads(line)
    assert set(o) == IMAGE_KEYS
    assert (o["Repository"], o["Tag"], o["ID"], o["Size"]) == (LONG_REPO, "1.0", img.id[7:19], TAR_SIZE)
    exact = json.loads(piped("images", str(path), "--format", "json", "--exact").stdout)
    assert (exact["Size"], exact["SharedSize"], exact["UniqueSize"]) == (BIG_SIZE, "0B", BIG_SIZE)
    assert o["CreatedAt"].startswith("2023-01-02 00:00:00 ") and o["Containers"] == "N/A"
    assert line == piped("images", str(path), "--format", "{{json .}}").stdout.strip()
    assert json.loads(piped("images", str(path), "--format", "json", "--no-trunc").stdout)["ID"] == img.id


def test_images_go_templates(wide: tuple[Path, Img]) -> None:
    path, img = wide
    assert piped("images", str(path), "--format", "{{.Repository}}:{{.Tag}}").stdout == f"{LONG_REPO}:1.0\n"
    p = piped("images", str(path), "--format", r"table {{.ID}}\t{{.Size}}")
    assert p.stdout.splitlines() == ["IMAGE ID       SIZE", f"{img.id[7:19]}   {TAR_SIZE}"]
    p = piped("images", str(path), "--format", r"{{.ID}}\t{{json .Tag}}")
    assert p.stdout == f'{img.id[7:19]}\t"1.0"\n'
    p = piped("images", str(path), "--format", "table")
    assert p.stdout.split()[:5] == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED"]


def test_history_format_json_and_template(wide: tuple[Path, Img]) -> None:
    path, img = wide
    p = piped("history", str(path), "--format", "json")
    objs = [json.loads(x) for x in p.stdout.splitlines()]
    assert [set(o) for o in objs] == [HISTORY_KEYS, HISTORY_KEYS]
    assert [o["ID"] for o in objs] == [img.id[7:19], "<missing>"]
    assert objs[1]["CreatedAt"] == T1 and objs[1]["Size"] == BIG_SIZE and objs[0]["Size"] == "0B"
    assert '"ID":"\\u003cmissing\\u003e"' in p.stdout  # Go's encoding/json escapes <, > and & as docker's does
    p = piped("history", str(path), "--format", "table {{.CreatedBy}}\t{{.Size}}", "--no-trunc")
    assert p.stdout.splitlines()[0].split() == ["CREATED", "BY", "SIZE"]
    assert p.stdout.splitlines()[2] == f"{LONG_CMD}   {BIG_SIZE}"


@pytest.mark.parametrize(("cmd", "fmt", "needle"), [
    ("images", "{{.Nope}}", "valid fields: ID, Repository, Tag, Digest"),
    ("history", "table {{.Tag}}", "valid fields: ID, CreatedSince, CreatedAt, CreatedBy, Size, Comment"),
    ("images", "{{if .Tag}}x{{end}}", "supported: {{.Field}}"),
    ("images", "{{.ID", "unclosed"),
])
def test_bad_templates_are_usage_errors(wide: tuple[Path, Img], cmd: str, fmt: str, needle: str) -> None:
    path, _ = wide
    p = piped(cmd, str(path), "--format", fmt)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and needle in p.stderr and "Traceback" not in p.stderr


def test_hostile_text_is_escaped_in_tables_and_templates(tmp_path: Path) -> None:
    hist = [{"created": T1, "created_by": "RUN evil\x1b]0;pwned\x07\rhidden\u202e", "comment": "a\nb"}]
    path = write_oci(tmp_path / "evil", [Img(["docker.io/acme/evil:1"], T1, [BIG], history=hist)])
    for args in (["--no-trunc"], ["--format", "{{.CreatedBy}} {{.Comment}}"]):
        p = piped("history", str(path), *args)
        assert p.returncode == 0, p.stderr
        assert not set(p.stdout) & {"\x1b", "\x07", "\r", "\u202e"}
        assert "RUN evil\\x1b]0;pwned\\x07\\rhidden\\u202e" in p.stdout and "a\\nb" in p.stdout
    o = json.loads(piped("history", str(path), "--format", "json").stdout)
    assert o["CreatedBy"] == hist[0]["created_by"] and o["Comment"] == "a\nb"  # JSON keeps the data exact


def _multi(tmp_path: Path) -> Path:
    imgs = [Img(["docker.io/acme/multi:1"], T1, [layer_tar({"a": b"1"})]),
            Img(["docker.io/acme/multi:1"], T2, [layer_tar({"a": b"22"})])]
    path = write_oci(tmp_path / "multi", imgs)
    index = json.loads((path / "index.json").read_text())
    index["manifests"][0]["platform"] = {"os": "linux", "architecture": "amd64"}
    index["manifests"][1]["platform"] = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    (path / "index.json").write_text(json.dumps(index))
    return path


def test_platform_column_and_filter(tmp_path: Path, wide: tuple[Path, Img]) -> None:
    path = _multi(tmp_path)
    p = piped("images", str(path))
    lines = p.stdout.splitlines()
    starts = columns(lines[0], ["REPOSITORY", "TAG", "IMAGE ID", "PLATFORM", "CREATED"])
    assert [cells(ln, starts)[3] for ln in lines[1:]] == ["linux/arm64/v8", "linux/amd64"]
    p = piped("images", str(path), "-f", "platform=linux/arm64", "--format", "json")
    (o,) = [json.loads(x) for x in p.stdout.splitlines()]
    assert o["Platform"] == "linux/arm64/v8"
    assert piped("images", str(path), "-f", "platform=linux/amd64", "--format", "{{.Platform}}").stdout == \
        "linux/amd64\n"
    bad = piped("images", str(path), "-f", "platform=linux")
    assert bad.returncode == 2 and "expected os/arch or os/arch/variant" in bad.stderr, bad.stderr
    assert "hint: e.g. -f platform=linux/arm64" in bad.stderr, bad.stderr
    one = piped("images", str(wide[0]))
    assert "PLATFORM" not in one.stdout  # a single-platform input has no PLATFORM column, no Platform key
    assert "Platform" not in json.loads(piped("images", str(wide[0]), "--format", "json").stdout)


# ------------------------------------------------------------------------------ the template engine itself


FIELDS = ["ID", "Size", "Tag"]


def render(fmt: str, row: dict[str, str]) -> list[str]:
    lines: list[str] = []
    goformat.write(goformat.parse(fmt, FIELDS, default_table="table {{.ID}}"), [row],
                   {"ID": "IMAGE ID", "Size": "SIZE", "Tag": "TAG"}, lines.append)
    return lines


def test_template_subset() -> None:
    row = {"ID": "abc", "Size": "1kB", "Tag": "a&b"}
    assert render("{{.ID}}:{{ .Tag }}", row) == ["abc:a&b"]
    assert render("{{json .Tag}}", row) == ['"a\\u0026b"']
    assert render("{{json .}}", row) == ['{"ID":"abc","Size":"1kB","Tag":"a\\u0026b"}']
    assert render("json", row) == render("{{json .}}", row)
    assert render("{{.ID}}  {{- .Size -}}  !", row) == ["abc1kB!"]
    assert render(r"{{.ID}}\n{{.Size}}", row) == ["abc\n1kB"]
    assert render(r"table {{.ID}}\t{{.Size}}", row) == ["IMAGE ID   SIZE", "abc        1kB"]
    assert render("table", row) == ["IMAGE ID", "abc"]


def test_align_like_tabwriter() -> None:
    assert goformat.align([["A", "B", "C"], ["long-cell-x", "", ""]]) == ["A             B         C",
                                                                         "long-cell-x"]
    assert goformat.align([["N", "X"], ["123", "7"]], right=(0, 1), min_width=0) == ["  N   X", "123   7"]
    assert goformat.align([["界界", "x"], ["ab", "y"]], min_width=0) == ["界界   x", "ab     y"]


@pytest.mark.parametrize("fmt", ["{{.Nope}}", "{{range .}}{{end}}", "{{.ID | upper}}", "{{", "{{json}}"])
def test_template_errors(fmt: str) -> None:
    with pytest.raises(UsageError):
        goformat.parse(fmt, FIELDS, default_table="table {{.ID}}")


def test_printable() -> None:
    assert goformat.printable("plain ünïcode 界") == "plain ünïcode 界"
    assert goformat.printable("a\tb\x00\x7f\x9b\u202ez") == "a\\tb\\x00\\x7f\\x9b\\u202ez"


def _file_a(docker_tar: Path) -> bytes:
    """File ``a`` of the top layer of a docker save tarball (the two platforms' images differ there)."""
    import io
    import tarfile

    with tarfile.open(docker_tar) as t:
        item = json.loads(t.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        blob = t.extractfile(item["Layers"][-1]).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as layer:
        return layer.extractfile("a").read()  # type: ignore[union-attr]


@pytest.mark.parametrize("cmd", ["squash", "convert"])
def test_squash_and_convert_default_to_the_host_platform(tmp_path: Path, cmd: str) -> None:
    """Without --platform, a multi-platform image is squashed (converted) for the default platform, as
    docker and podman pick it, with a note; its parent (none here) would be taken for the same one."""
    path = _multi(tmp_path)
    for plat in ("linux/arm64", "linux/amd64"):
        out = tmp_path / f"{cmd}-{plat.replace('/', '-')}.tar"
        p = subprocess.run([sys.executable, "-m", "ocisquash", cmd, str(path), str(out)], capture_output=True,
                           text=True, timeout=120, env={**os.environ, "DOCKER_DEFAULT_PLATFORM": plat})
        assert p.returncode == 0, p.stderr
        assert f"note: the image is multi-platform: using {plat} (the default platform)" in p.stderr
        assert _file_a(out) == {"linux/amd64": b"1", "linux/arm64": b"22"}[plat]
    p = subprocess.run([sys.executable, "-m", "ocisquash", cmd, str(path), str(tmp_path / "no.tar")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DOCKER_DEFAULT_PLATFORM": "linux/s390x"})
    assert p.returncode == 1 and "multi-platform; choose one with --platform" in p.stderr
    assert "hint: platforms: linux/amd64, linux/arm64" in p.stderr, p.stderr  # the choices there are
    assert not (tmp_path / "no.tar").exists()


def test_history_and_analyze_default_to_the_host_platform(tmp_path: Path) -> None:
    path = _multi(tmp_path)
    ids = {}
    for plat in ("linux/amd64", "linux/arm64"):
        p = piped("history", str(path), "--platform", plat, "-q")
        assert p.returncode == 0, p.stderr
        ids[plat] = p.stdout.split()[0]
    assert ids["linux/amd64"] != ids["linux/arm64"]
    env = {**os.environ, "DOCKER_DEFAULT_PLATFORM": "linux/arm64"}
    for cmd in ("history", "analyze"):
        p = subprocess.run([sys.executable, "-m", "ocisquash", cmd, str(path), "-q"], capture_output=True,
                           text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stderr
        assert "note: the image is multi-platform: using linux/arm64 (the default platform)" in p.stderr
    p = subprocess.run([sys.executable, "-m", "ocisquash", "history", str(path), "-q"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "DOCKER_DEFAULT_PLATFORM": ""})
    host = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}.get(os.uname().machine)
    if host is not None:  # this machine's own platform, as docker picks it
        assert p.returncode == 0 and p.stdout.split()[0] == ids[host] and host in p.stderr
    p = subprocess.run([sys.executable, "-m", "ocisquash", "history", str(path)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "DOCKER_DEFAULT_PLATFORM": "linux/s390x"})
    assert p.returncode == 1 and "multi-platform; choose one with --platform" in p.stderr  # no such platform here
    assert "hint: platforms: linux/amd64, linux/arm64" in p.stderr, p.stderr
