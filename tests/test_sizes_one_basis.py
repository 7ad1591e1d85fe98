"""Sizes on one basis: a layer ocisquash compresses records its uncompressed size, so ``images`` and
``history`` compare a squashed image with its original without decompressing; ``validate`` checks the
record; the squash report names the new image's ID and manifest digest."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocisquash.goformat import human_size

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
KEY = "io.ocisquash.layer.uncompressed-size"


def ocisquash(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120)


def images_json(path: Path, *extra: str) -> dict[str, object]:
    p = ocisquash("images", str(path), "--json", *extra)
    assert p.returncode == 0, p.stderr
    (line,) = p.stdout.splitlines()
    return json.loads(line)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("cmd", "out_name"), [("squash", "sq.tar"), ("squash", "sq-oci"), ("convert", "cv.tar")])
def test_written_layers_list_their_uncompressed_size(cmd: str, out_name: str, tmp_path: Path) -> None:
    out = tmp_path / out_name
    p = ocisquash(cmd, str(SAMPLE), str(out), "--compression", "gzip", "-q")
    assert p.returncode == 0, p.stderr
    fast, exact = images_json(out), images_json(out, "--exact")
    assert fast["size_exact"] is True and fast["size"] == exact["size"]  # the recorded figure is the real one
    # SIZE is docker's basis (file contents), which needs the layers' headers: --exact reads them; a layer
    # squash wrote records docker's figure (io.ocisquash.layer.docker-size), so the table shows it without
    # reading the layer; convert's recompressed layers record only the tar size, shown marked *
    sizes = ocisquash("images", str(out), "--format", "{{.Size}}").stdout.split()
    exact_sizes = ocisquash("images", str(out), "--format", "{{.Size}}", "--exact").stdout.split()
    assert exact_sizes == [human_size(exact["docker_size"])] and "*" not in exact_sizes[0]  # type: ignore[arg-type]
    if cmd == "squash":
        assert sizes == exact_sizes and fast["docker_size"] == exact["docker_size"]
    else:
        assert sizes == [human_size(fast["size"]) + "*"]  # type: ignore[arg-type]
    before = images_json(SAMPLE)["size"]
    if cmd == "convert":
        assert fast["size"] == before  # the same layers, recompressed: the same uncompressed size
    else:
        assert isinstance(fast["size"], int) and isinstance(before, int) and fast["size"] < before
    assert ocisquash("validate", str(out)).returncode == 0


def test_validate_catches_a_false_record(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    assert ocisquash("squash", str(SAMPLE), str(out), "-q").returncode == 0
    index = json.loads((out / "index.json").read_text())
    mdesc = index["manifests"][0]
    old = out / "blobs" / "sha256" / mdesc["digest"][7:]
    manifest = json.loads(old.read_bytes())
    true_size = manifest["layers"][0]["annotations"][KEY]
    manifest["layers"][0]["annotations"][KEY] = "12345"
    data = json.dumps(manifest).encode()
    digest = hashlib.sha256(data).hexdigest()
    (out / "blobs" / "sha256" / digest).write_bytes(data)
    old.unlink()
    mdesc.update(digest="sha256:" + digest, size=len(data))
    (out / "index.json").write_text(json.dumps(index))
    assert images_json(out)["size"] == 12345  # listings believe the record (they read no layer)...
    p = ocisquash("validate", str(out))
    assert p.returncode == 1  # ...validate decompresses and says it is false
    assert f"is {true_size} bytes uncompressed, but its {KEY} annotation says 12345" in p.stdout


def test_squash_report_names_the_new_image(tmp_path: Path) -> None:
    out = tmp_path / "r.tar"
    p = ocisquash(str(SAMPLE), str(out))
    assert p.returncode == 0, p.stderr
    row = images_json(out, "--no-trunc")
    line = next(ln for ln in p.stderr.splitlines() if ln.startswith("image ID "))
    assert line == f"image ID {str(row['id'])[7:19]}, manifest {row['digest']}"
