"""skopeo's references as IN and OUT (docker-archive:, oci:, oci-archive:, and FILE:REF), and --format
names that do not clash with skopeo's. skopeo itself reads what ocisquash writes under those names."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from listing_inputs import Img, layer_tar, write_oci

from ocisquash import transports
from ocisquash.errors import UsageError

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
T1 = "2023-01-01T00:00:00Z"


def ocisquash(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.tar").write_bytes(b"")
    (tmp_path / "odd:name.tar").write_bytes(b"")
    P = transports.parse
    assert P("docker-archive:a.tar") == transports.Ref("a.tar", None, "docker")
    assert P("docker-archive:a.tar:app:1.0") == transports.Ref("a.tar", "app:1.0", "docker")
    assert P("oci:dir:latest") == transports.Ref("dir", "latest", "oci-dir")
    assert P("oci-archive:x.tar:acme/app:2") == transports.Ref("x.tar", "acme/app:2", "oci")
    assert P("a.tar:app:1.0") == transports.Ref("a.tar", "app:1.0")  # FILE:REF where FILE exists
    assert P("a.tar:app:1.0", file_ref=False) == transports.Ref("a.tar:app:1.0")
    assert P("odd:name.tar") == transports.Ref("odd:name.tar")  # a path that exists is a path
    assert P("-") == transports.Ref("-") and P("new.tar") == transports.Ref("new.tar")
    for bad in ("oci:", "docker-archive:a.tar:@0"):
        with pytest.raises(UsageError):
            P(bad)
    assert [transports.format_name(f) for f in ("docker-archive", "docker", "oci-archive", "oci", "oci-dir",
                                                "oci-layout")] == ["docker", "docker", "oci", "oci", "oci-dir",
                                                                   "oci-dir"]


def test_skopeo_references_in_and_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_tools: None) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.tar").write_bytes(SAMPLE.read_bytes())
    p = ocisquash("squash", "docker-archive:s.tar:ocisquash/sample:latest", "oci:lay:app:1.0", "-q")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "lay" / "index.json").exists()
    # Written as skopeo does: REF is the ref.name itself, which is what skopeo's oci:DIR:REF reads back.
    sk = subprocess.run(["skopeo", "inspect", "oci:lay:app:1.0"], capture_output=True, text=True, timeout=120)
    assert sk.returncode == 0, sk.stderr
    p = ocisquash("convert", "oci:lay:app:1.0", "oci-archive:x.tar:app:2.0", "-q")
    assert p.returncode == 0, p.stderr
    sk = subprocess.run(["skopeo", "inspect", "oci-archive:x.tar:app:2.0"], capture_output=True, text=True,
                        timeout=120)
    assert sk.returncode == 0, sk.stderr
    assert ocisquash("images", "x.tar", "--format", "{{.Repository}}:{{.Tag}}").stdout == "app:2.0\n"
    p = ocisquash("convert", "oci-archive:x.tar", "docker-archive:d.tar:app:3.0", "-q")
    assert p.returncode == 0, p.stderr
    assert json.loads(ocisquash("images", "d.tar", "--json").stdout)["tag"] == "3.0"
    # skopeo's own output reads back under its own reference
    sk = subprocess.run(["skopeo", "copy", "-q", "docker-archive:s.tar", "oci:sk:mytag"], capture_output=True,
                        text=True, timeout=120)
    assert sk.returncode == 0, sk.stderr
    listed = ocisquash("images", "sk", "-q").stdout.split()
    assert len(listed) == 1 and ocisquash("history", "oci:sk:mytag", "-q").stdout.split()[0] == listed[0]


def _two_images(tmp_path: Path) -> tuple[Path, Img, Img]:
    good = Img(["docker.io/acme/good:1"], T1, [layer_tar({"g": b"g" * 100})])
    bad = Img(["docker.io/acme/bad:1"], T1, [layer_tar({"b": b"b" * 100})])
    path = write_oci(tmp_path / "two", [good, bad])
    blob = path / "blobs" / "sha256" / hashlib.sha256(bad.blobs[0]).hexdigest()
    blob.write_bytes(blob.read_bytes()[:-1] + b"X")  # one layer of 'bad' no longer matches its digest
    return path, good, bad


def test_listing_commands_take_a_reference(tmp_path: Path) -> None:
    path, good, _ = _two_images(tmp_path)
    for ref in (f"oci:{path}:acme/good:1", f"{path}:acme/good:1"):
        p = ocisquash("history", ref, "-q")
        assert (p.returncode, p.stdout.split()) == (0, [good.id[7:19]]), p.stderr
        p = ocisquash("analyze", ref, "--format", "json")
        assert p.returncode == 0 and json.loads(p.stdout)["id"] == good.id
        assert ocisquash("images", ref, "-q").stdout.split() == [good.id[7:19]]
    assert ocisquash("history", str(path)).returncode == 1  # two images: which one?
    p = ocisquash("validate", f"oci:{path}:acme/good:1")
    assert p.returncode == 0, p.stdout  # the image named is sound...
    p = ocisquash("validate", f"oci:{path}:acme/bad:1")
    assert p.returncode == 1 and "mismatch" in p.stdout  # ...the other is not
    assert ocisquash("validate", str(path)).returncode == 1
    p = ocisquash("history", f"oci:{path}:acme/good:1", "--image", "acme/bad:1")
    assert p.returncode == 2 and "give one" in p.stderr
    # skopeo's transports that ocisquash does not read: a usage error, not a missing file
    for cmd in ("images", "history", "validate", "squash"):
        p = ocisquash(cmd, "docker-daemon:acme/good:1", *(["out.tar"] if cmd == "squash" else []), cwd=tmp_path)
        assert p.returncode == 2 and "does not read skopeo's docker-daemon: transport" in p.stderr, p.stderr
        assert not (tmp_path / "out.tar").exists()


def test_format_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for fmt, kind in (("docker-archive", "manifest.json"), ("oci-archive", "index.json"), ("oci-dir", None),
                      ("docker", "manifest.json")):
        out = tmp_path / f"out-{fmt}"
        p = ocisquash("convert", str(SAMPLE), str(out), "--format", fmt, "-q")
        assert p.returncode == 0, p.stderr
        if kind is None:
            assert (out / "index.json").is_file()
        else:
            names = subprocess.run(["tar", "tf", str(out)], capture_output=True, text=True).stdout.split()
            assert kind in names and ("manifest.json" in names) == (fmt.startswith("docker"))
    p = ocisquash("convert", str(SAMPLE), "o.tar", "--format", "oci", "-q")  # the old name: still the tar
    assert p.returncode == 0 and (tmp_path / "o.tar").is_file()
    p = ocisquash("convert", str(SAMPLE), "oci:o2", "--format", "docker-archive")
    assert p.returncode == 2 and "give one" in p.stderr
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("out", ["oci:{d}/lay:", "oci-archive:{d}/a.tar:"])
def test_an_empty_name_after_the_path_is_a_usage_error(out: str, tmp_path: Path) -> None:
    """``oci:DIR:`` names no image: refused, not read as ``oci:DIR`` (which would name it after the input)."""
    dest = out.format(d=tmp_path)
    before = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    p = ocisquash(str(SAMPLE), dest)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines()[0] == f"error: {dest!r}: an empty name after the path", p.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() == before
