"""``history`` and ``images`` SIZE on docker's basis: a layer's file contents, each inode once (moby's overlay2
``directory.Size`` of the unpacked layer), not its tar's bytes; ocisquash's ``--json`` keeps the tar size and
adds ``docker_size``. Checked by hand-counted layers and, once, against ``docker history`` of the loaded image.
"""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import skip_or_fail
from hypothesis import given, settings
from hypothesis import strategies as st
from listing_inputs import Img, write_docker, write_oci

from ocisquash import dockersize, tarheader
from ocisquash.goformat import human_size

T = "2023-01-01T00:00:00Z"
LONG = "app/" + "deep-directory-name/" * 6 + "module.py"  # over 100 bytes: a PAX header in the tar
BIG = 3_000_000 + 17


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo,
                                                                                                  bytes]:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mtime, ti.linkname = kind, 1700000000, link
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    return ti, data


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return buf.getvalue()


# (layer tar, the size docker shows for it, counted by hand)
LAYERS: list[tuple[bytes, int]] = [
    # a base: dirs (0), files, a symlink (its target's length: 12), an empty file (0)
    (tar_of([member("etc/", tarfile.DIRTYPE), member("etc/os-release", data=b"x" * 1000),
             member("bin/", tarfile.DIRTYPE), member("bin/sh", data=b"s" * 5000),
             member("bin/bash", tarfile.SYMTYPE, link="/bin/sh.real"), member("etc/empty"),
             member("secret", data=b"k" * 700)]), 1000 + 5000 + 12 + 700),
    # COPY app: small files, one under a PAX long name; two hardlinks to one of them (counted once)
    (tar_of([member("app/", tarfile.DIRTYPE), member("app/main.py", data=b"print(1)\n" * 100),
             member(LONG, data=b"m" * 2345), member("app/a-link", tarfile.LNKTYPE, link="app/main.py"),
             member("app/b-link", tarfile.LNKTYPE, link="app/main.py")]), 900 + 2345),
    # a big file; a deleted file (a whiteout: 0); an opaque directory (0)
    (tar_of([member("data/", tarfile.DIRTYPE), member("data/blob.bin", data=b"\0" * BIG),
             member(".wh.secret"), member("etc/", tarfile.DIRTYPE), member("etc/.wh..wh..opq"),
             member("etc/os-release", data=b"y" * 10)]), BIG + 10),
    # a file that replaces one of the base layer's: counted in full again, as docker copies nothing up
    (tar_of([member("bin/", tarfile.DIRTYPE), member("bin/sh", data=b"t" * 4321)]), 4321),
]
# docker load refuses a layer that names one path twice, so this one is checked by hand only: the last
# entry of a path wins, and a file replacing a directory the layer made takes what was below it
TWICE = (tar_of([member("twice", data=b"1" * 50), member("twice", data=b"2" * 70), member("gone/", tarfile.DIRTYPE),
                 member("gone/inner", data=b"i" * 400), member("gone", data=b"g" * 3)]), 70 + 3)
HISTORY = [{"created": T, "created_by": w} for w in ("base files", "COPY app /app", "RUN big && rm secret",
                                                   "RUN replace sh")]
HISTORY.insert(3, {"created": T, "created_by": "ENV A=1", "empty_layer": True})


def ocisquash(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_diff_size_counts_as_overlay2_does() -> None:
    for data, want in [*LAYERS, TWICE]:
        assert dockersize.diff_size(tarheader.headers(io.BytesIO(data), "t", stream=True)) == want  # type: ignore[arg-type]
        assert want < len(data)  # never the tar's length


@pytest.fixture
def docker_tar(tmp_path: Path) -> Path:
    return write_docker(tmp_path / "app.tar", [Img(["acme/sizes:1"], T, [d for d, _ in LAYERS], history=HISTORY)])


def test_history_and_images_show_dockers_basis(docker_tar: Path, tmp_path: Path) -> None:
    want = [human_size(n) for _, n in reversed(LAYERS)]
    want.insert(1, "0B")  # the ENV entry, newest but one
    p = ocisquash("history", docker_tar, "--format", "{{.Size}}")
    assert p.returncode == 0 and p.stdout.split() == want, p.stderr
    p = ocisquash("history", docker_tar, "--json")
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    layered = [r for r in rows if not r["empty_layer"]]
    assert [r["docker_size"] for r in layered] == [n for _, n in reversed(LAYERS)]
    assert [r["size"] for r in layered] == [len(d) for d, _ in reversed(LAYERS)]  # the tar size, as before
    total, tar_total = sum(n for _, n in LAYERS), sum(len(d) for d, _ in LAYERS)
    # images reads the headers only with --exact; else the tar size, marked * as not docker's figure
    p = ocisquash("images", docker_tar, "--format", "{{.Size}} {{.UniqueSize}}", "-s", "--exact")
    assert p.stdout.split() == [human_size(total)] * 2, p.stderr
    p = ocisquash("images", docker_tar, "--format", "{{.Size}}")
    assert p.stdout.split() == [human_size(tar_total) + "*"], p.stderr
    (line,) = ocisquash("images", docker_tar, "--json", "--exact").stdout.splitlines()
    got = json.loads(line)
    assert (got["docker_size"], got["size"]) == (total, tar_total)
    (line,) = ocisquash("images", docker_tar, "--json").stdout.splitlines()
    assert (json.loads(line)["docker_size"], json.loads(line)["size"]) == (None, tar_total)
    # compressed layers: docker's basis needs their headers, so only with --exact; else the * figure
    layout = write_oci(tmp_path / "gz", [Img(["acme/sizes:1"], T, [d for d, _ in LAYERS], history=HISTORY,
                                             gzip=True)])
    p = ocisquash("history", layout, "--format", "{{.Size}}")
    assert p.returncode == 0 and len(p.stdout.split()) == len(want), p.stderr
    assert all(s.endswith("*") for s in p.stdout.split() if s != "0B"), p.stdout
    p = ocisquash("history", layout, "--format", "{{.Size}}", "--exact")
    assert p.stdout.split() == want
    assert ocisquash("images", layout, "--format", "{{.Size}}", "--exact").stdout.split() == [human_size(total)]


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_squashed_layer_carries_dockers_figure(docker_tar: Path, tmp_path: Path, compression: str) -> None:
    """The layer ocisquash writes records docker's figure (``io.ocisquash.layer.docker-size``), so ``images``
    and ``history`` show docker's basis without reading it: the same figure ``--exact`` reads from its headers,
    and the one counted by hand for the squashed tree (the opaque ``etc`` keeps only its new os-release, the
    secret is gone, ``bin/sh`` is the replacement; the hardlinks add nothing)."""
    want = 10 + 4321 + 12 + BIG + 900 + 2345
    for cut, out in (([], tmp_path / "flat"), (["--from-layer", "3"], tmp_path / "onto")):
        p = ocisquash(docker_tar, out, "--compression", compression, "-q", *cut)
        assert p.returncode == 0, p.stderr
        index = json.loads((out / "index.json").read_text())
        manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
        recorded = manifest["layers"][-1]["annotations"]["io.ocisquash.layer.docker-size"]
        exact = ocisquash("history", out, "--format", "{{.Size}}", "--exact").stdout.split()
        shown = ocisquash("history", out, "--format", "{{.Size}}").stdout.split()
        # history lists every entry (the squash's own plus the squashed range's, empty): one more than before
        assert len(shown) == len(HISTORY) + 1 and shown == exact, (shown, exact)
        if not cut:
            assert int(recorded) == want
            assert shown[0] == human_size(want)
        size = ocisquash("images", out, "--format", "{{.Size}}").stdout.split()
        if not cut:  # images reads no layer: the kept layers (not written by ocisquash) keep their * there
            assert size == ocisquash("images", out, "--format", "{{.Size}}", "--exact").stdout.split()
            assert size == [human_size(want)]


@pytest.mark.slow
@pytest.mark.tools
def test_docker_history_shows_the_same_sizes(docker_tar: Path) -> None:
    """``docker load`` the image into a private dockerd (overlay2), then compare its history and images SIZE."""
    from realclients import start_or_skip

    rc = start_or_skip()
    try:
        driver = rc.docker("info", "--format", "{{.Driver}}").stdout.strip()
        if driver != "overlay2":  # vfs counts another way (the tar headers' sizes): not what users see
            skip_or_fail(f"dockerd runs on {driver} here, not overlay2")
        rc.docker("load", "-i", str(docker_tar))
        theirs = rc.docker("history", "--format", "{{.Size}}", "acme/sizes:1").stdout.split()
        ours = ocisquash("history", docker_tar, "--format", "{{.Size}}").stdout.split()
        assert ours == theirs
        theirs = rc.docker("images", "--format", "{{.Size}}", "acme/sizes:1").stdout.split()
        assert ocisquash("images", docker_tar, "--format", "{{.Size}}", "--exact").stdout.split() == theirs
    finally:
        rc.stop()


def walked_size(root: Path) -> int:
    """moby's ``pkg/directory.Size``: lstat every entry, skip directories and empty ones, each inode once."""
    import os

    seen: set[int] = set()
    total = 0
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode) or st.st_size == 0 or st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            total += st.st_size
    return total


NAMES = st.sampled_from(["a", "b", "c", "d/e", "d/f", "g/h/i", "long-" + "n" * 120])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["file", "symlink", "hardlink", "dir"]), NAMES, st.integers(0, 3000),
                          st.text("xyz/", min_size=1, max_size=40)), max_size=12))
def test_diff_size_equals_the_unpacked_tree(entries: list[tuple[str, str, int, str]]) -> None:
    """Unpacked by tarfile into a directory and walked as moby walks it, the same figure: on layers with one
    entry per path (docker refuses others), hardlinks to earlier files, symlinks of any target."""
    import tempfile

    members: list[tuple[tarfile.TarInfo, bytes]] = []
    used: set[str] = set()
    files: list[str] = []
    for kind, name, size, target in entries:
        if any(name == u or name.startswith(u + "/") or u.startswith(name + "/") for u in used):
            continue  # one entry per path, and nothing below a file
        used.add(name)
        if kind == "file":
            members.append(member(name, data=b"z" * size))
            files.append(name)
        elif kind == "symlink":
            members.append(member(name, tarfile.SYMTYPE, link=target))
        elif kind == "hardlink" and files:
            members.append(member(name, tarfile.LNKTYPE, link=files[size % len(files)]))
        else:
            members.append(member(name + "/", tarfile.DIRTYPE))
    data = tar_of(members)
    with tempfile.TemporaryDirectory() as d:
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            t.extractall(d, filter="tar")
        want = walked_size(Path(d))
    got = dockersize.diff_size(tarheader.headers(io.BytesIO(data), "t", stream=True))  # type: ignore[arg-type]
    assert got == want
