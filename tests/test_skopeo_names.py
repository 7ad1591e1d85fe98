"""OUT as ``oci:DIR:REF`` / ``oci-archive:FILE:REF``: REF is the layout's ref.name itself, as skopeo writes and
reads it, so skopeo finds ocisquash's output under the same reference; ``--tag`` keeps docker's convention."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from listing_inputs import Img, layer_tar, write_oci

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD = "io.containerd.image.name"


def ocisquash(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def skopeo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def index_of(path: Path) -> dict:  # type: ignore[type-arg]
    if path.is_dir():
        return json.loads((path / "index.json").read_text())  # type: ignore[no-any-return]
    with tarfile.open(path) as t:
        f = t.extractfile("index.json")
        assert f is not None
        return json.loads(f.read())  # type: ignore[no-any-return]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    img = Img(["docker.io/acme/app:1"], "2023-01-01T00:00:00Z", [layer_tar({"a": b"a" * 100}),
                                                                layer_tar({"b": b"b" * 200})])
    write_oci(tmp_path / "in", [img])
    return tmp_path


@pytest.mark.parametrize(("out", "path", "ref"), [
    ("oci:lay:sq", "lay", "sq"),
    ("oci-archive:a.tar:sq", "a.tar", "sq"),
    ("oci:lay:example.com/app:1", "lay", "example.com/app:1"),
    ("oci-archive:a.tar:localhost:5000/team/app:v2.1", "a.tar", "localhost:5000/team/app:v2.1"),
])
def test_skopeo_reads_back_the_reference_written(app: Path, out: str, path: str, ref: str,
                                                 require_tools: None) -> None:
    p = ocisquash("in", out, "-q", cwd=app)
    assert p.returncode == 0, p.stderr
    (entry,) = index_of(app / path)["manifests"]
    assert entry["annotations"] == {REF_NAME: ref}  # as skopeo writes it: no io.containerd.image.name
    transport = out.split(":", 1)[0]
    sk = skopeo("inspect", f"{transport}:{path}:{ref}", cwd=app)
    assert sk.returncode == 0, sk.stderr
    assert json.loads(sk.stdout)["Digest"] == entry["digest"]  # the same image
    # skopeo copies it out under the same reference, and ocisquash reads skopeo's copy under it too
    sk = skopeo("copy", "-q", f"{transport}:{path}:{ref}", f"oci:back:{ref}", cwd=app)
    assert sk.returncode == 0, sk.stderr
    (back,) = index_of(app / "back")["manifests"]
    assert back["digest"] == entry["digest"] and back["annotations"] == {REF_NAME: ref}
    p = ocisquash("history", f"oci:back:{ref}", "-q", "--no-trunc", cwd=app)
    assert p.returncode == 0, p.stderr
    # images lists it by its ref.name: a bare one as a layout tag, a reference as repository and tag
    p = ocisquash("images", path, "--format", "{{.Repository}} {{.Tag}}", cwd=app)
    want = "<none> sq" if ref == "sq" else " ".join(ref.rsplit(":", 1))
    assert p.returncode == 0 and p.stdout == want + "\n", (p.stdout, p.stderr)


def test_a_second_ref_beside_and_the_same_ref_replaced(app: Path, require_tools: None) -> None:
    assert ocisquash("in", "oci:lay:sq", "-q", cwd=app).returncode == 0
    assert ocisquash("in", "oci:lay:other", "-q", "--from-layer", "-1", cwd=app).returncode == 0
    assert sorted(e["annotations"][REF_NAME] for e in index_of(app / "lay")["manifests"]) == ["other", "sq"]
    assert ocisquash("in", "oci:lay:sq", "-q", "--from-layer", "-1", cwd=app).returncode == 0
    names = [e["annotations"][REF_NAME] for e in index_of(app / "lay")["manifests"]]
    assert sorted(names) == ["other", "sq"]  # the new sq took the old one's entry
    for ref in ("sq", "other"):
        assert skopeo("inspect", f"oci:lay:{ref}", cwd=app).returncode == 0


def test_tag_keeps_dockers_convention(app: Path, require_tools: None) -> None:
    p = ocisquash("in", "oci:lay", "--tag", "app:2", "-q", cwd=app)
    assert p.returncode == 0, p.stderr
    (entry,) = index_of(app / "lay")["manifests"]
    assert entry["annotations"] == {CONTAINERD: "docker.io/library/app:2", REF_NAME: "2"}
    assert skopeo("inspect", "oci:lay:2", cwd=app).returncode == 0
    # both: the REF verbatim, and --tag's name as docker writes it
    p = ocisquash("in", "oci:both:sq", "--tag", "acme/app:3", "-q", cwd=app)
    assert p.returncode == 0, p.stderr
    anns = sorted((e["annotations"] for e in index_of(app / "both")["manifests"]), key=lambda a: a[REF_NAME])
    assert anns == [{CONTAINERD: "docker.io/acme/app:3", REF_NAME: "3"}, {REF_NAME: "sq"}]


@pytest.mark.parametrize("ref", ["bad name", "-lead", "a//b", "trail.", "ü"])
def test_a_ref_outside_the_grammar_is_a_usage_error(app: Path, ref: str) -> None:
    p = ocisquash("in", f"oci:lay:{ref}", "-q", cwd=app)
    assert p.returncode == 2 and "not a valid OCI ref.name" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2 and not (app / "lay").exists()


def test_the_readme_example_runs(tmp_path: Path, require_tools: None) -> None:
    """README's skopeo-references block, line by line, on an app.tar named app:1.0."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme[readme.index("- **skopeo's references**"):]
    block = block[block.index("```sh") + 5:]
    lines = [ln.strip() for ln in block[:block.index("```")].strip().splitlines()]
    assert len(lines) >= 4 and any(ln.startswith("skopeo inspect oci:app-oci:sq") for ln in lines)
    p = ocisquash("convert", str(root / "testdata" / "sample.docker.tar"), "docker-archive:app.tar:app:1.0", "-q",
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for line in lines:
        cmd = line.replace("ocisquash ", f"{sys.executable} -m ocisquash ", 1) if line.startswith("ocisquash ") \
            else line
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, (line, r.stderr)
    assert index_of(tmp_path / "copy")["manifests"][0]["annotations"] == {REF_NAME: "example.com/app:flat"}
