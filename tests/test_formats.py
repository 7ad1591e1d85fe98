"""Round trips in every direction, checked by real tools: ``skopeo inspect``/``copy`` accept the output, the
oracle (umoci unpack) shows the same root filesystem as the input, and docker outputs are consistent for
both of ``docker load``'s paths (docs/formats.md §6.5). Also naming, adding to a layout, choosing an image,
byte-exact pass-through and deterministic output.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import skip_or_fail
from fixtures import REF_NAME, BuiltImage, oci_manifest
from oracle import Snapshot, compare, skopeo, skopeo_inspect, unpack_snapshot

from ocisquash import errors
from ocisquash.apitypes import OutputFormat
from ocisquash.codecs import parse as parse_codec
from ocisquash.convert import convert

CONTAINERD_NAME = "io.containerd.image.name"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lib(src: Path, out: Path, *args: str) -> dict[str, Any]:
    """The library's ``convert`` with CLI-style options (in-process: a CLI start costs about a second)."""
    pairs = list(zip(args[::2], args[1::2], strict=True))
    opts = dict(pairs)
    fmt, codec = opts.get("--format"), opts.get("--compression")  # parsed once, as the CLI parses them
    return convert(str(src), str(out), image=opts.get("--image"), fmt=None if fmt is None else OutputFormat(fmt),
                   compression=None if codec is None else parse_codec(codec), platform=opts.get("--platform"),
                   tags=[v for k, v in pairs if k == "--tag"])


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``python -m ocisquash convert -q ARGS``; fails the test on a non-zero exit."""
    p = subprocess.run([sys.executable, "-m", "ocisquash", "convert", "-q", *args], input=stdin,
                       capture_output=True, timeout=120)
    assert p.returncode == 0, f"convert {' '.join(args)} exited {p.returncode}: {p.stderr.decode()}"
    return p


def read_members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    assert len(names) == len(set(names)), f"{path}: repeated member names"
    return {m.name: m for m in members}


def tar_file(path: Path, name: str) -> bytes:
    with tarfile.open(path) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()


def check_docker_tar(path: Path) -> dict[str, Any]:
    """Both loaders' views of a docker tar agree: every member a regular file, every blob hashes to its name,
    ``manifest.json`` and ``index.json`` name the same config and layers. Returns the parsed documents."""
    members = read_members(path)
    assert all(m.isreg() for m in members.values()), [m.name for m in members.values() if not m.isreg()]
    for name in members:
        if name.startswith("blobs/sha256/"):
            assert sha(tar_file(path, name)) == name.rsplit("/", 1)[1], f"{name} does not hash to its name"
    assert json.loads(tar_file(path, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    items = json.loads(tar_file(path, "manifest.json"))
    index = json.loads(tar_file(path, "index.json"))
    assert len(items) == 1
    item = items[0]
    config = json.loads(tar_file(path, item["Config"]))
    assert len(item["Layers"]) == len(config["rootfs"]["diff_ids"])
    for layer_path, diff_id in zip(item["Layers"], config["rootfs"]["diff_ids"], strict=True):
        data = tar_file(path, layer_path)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif data[:4] == b"\x28\xb5\x2f\xfd":
            data = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True).read()
        assert "sha256:" + sha(data) == diff_id
    assert index["manifests"], "index.json lists nothing"
    for entry in index["manifests"]:
        man = json.loads(tar_file(path, "blobs/sha256/" + entry["digest"].split(":")[1]))
        assert entry["size"] == members["blobs/sha256/" + entry["digest"].split(":")[1]].size
        assert "blobs/sha256/" + man["config"]["digest"].split(":")[1] == item["Config"]
        assert ["blobs/sha256/" + ly["digest"].split(":")[1] for ly in man["layers"]] == item["Layers"]
        assert man["config"]["size"] == members[item["Config"]].size
    return {"items": items, "index": index, "config": config}


def layer_codecs(layout: Path) -> set[str]:
    """The media types of the layers of a layout directory's (only) image."""
    manifest, _ = oci_manifest(layout)
    return {ly["mediaType"] for ly in manifest["layers"]}


# ------------------------------------------------------------------------------------------ inputs

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("formats")


@pytest.fixture(scope="module")
def inputs(trap_oci: BuiltImage, trap_docker: BuiltImage, trap_docker_legacy: BuiltImage,
           trap_docker25: BuiltImage, trap_containerd: BuiltImage, trap_zstd_oci: BuiltImage,
           trap_plain_oci: BuiltImage, work: Path) -> dict[str, tuple[Path, list[str]]]:
    """Every input form of the trap image: (path, extra convert args)."""
    raw = trap_docker.path.read_bytes()
    (work / "trap.docker.tar.gz").write_bytes(gzip.compress(raw, mtime=0))
    (work / "trap.docker.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (work / "trap.docker.tar.xz").write_bytes(lzma.compress(raw))
    oci_tar = work / "trap.oci.tar"
    skopeo("copy", "-q", f"oci:{trap_oci.path}:latest", f"oci-archive:{oci_tar}:latest")
    return {
        "oci-dir": (trap_oci.path, ["--image", "latest"]),
        "oci-dir-zstd": (trap_zstd_oci.path, []),
        "oci-dir-plain": (trap_plain_oci.path, []),
        "oci-tar": (oci_tar, []),
        "skopeo-docker": (trap_docker.path, []),
        "legacy-docker": (trap_docker_legacy.path, []),
        "docker25": (trap_docker25.path, []),
        "containerd": (trap_containerd.path, []),
        "docker-gzip": (work / "trap.docker.tar.gz", []),
        "docker-zstd": (work / "trap.docker.tar.zst", []),
        "docker-xz": (work / "trap.docker.tar.xz", []),
    }


@pytest.fixture(scope="module")
def reference(trap_oci: BuiltImage, work: Path) -> Snapshot:
    """The trap image's root filesystem, unpacked once by umoci from the input layout."""
    return unpack_snapshot(trap_oci.ref, work / "ref")


def assert_rootfs(out_ref: str, reference: Snapshot, tmp: Path) -> None:
    diffs = compare(reference, unpack_snapshot(out_ref, tmp))
    assert diffs == [], "rootfs differs from the input's:\n" + "\n".join(diffs[:40])


def skopeo_accepts(out: Path, fmt: str) -> None:
    """``skopeo inspect`` reads the output through every transport that fits it."""
    if fmt == "oci-dir":
        skopeo_inspect(f"oci:{out}")
        return
    skopeo_inspect(f"oci-archive:{out}")  # a docker output is an OCI layout tar as well
    if fmt == "docker":
        skopeo_inspect(f"docker-archive:{out}")


INPUT_NAMES = ["oci-dir", "oci-dir-zstd", "oci-dir-plain", "oci-tar", "skopeo-docker", "legacy-docker",
               "docker25", "containerd", "docker-gzip", "docker-zstd", "docker-xz"]


@pytest.mark.parametrize("fmt", ["docker", "oci", "oci-dir"])
@pytest.mark.parametrize("name", INPUT_NAMES)
def test_round_trip(name: str, fmt: str, inputs: dict[str, tuple[Path, list[str]]], reference: Snapshot,
                    tmp_path: Path) -> None:
    src, extra = inputs[name]
    out = tmp_path / ("out" if fmt == "oci-dir" else "out.tar")
    lib(src, out, "--format", fmt, *extra)
    skopeo_accepts(out, fmt)
    if fmt == "docker":
        docs = check_docker_tar(out)
        assert docs["items"][0]["RepoTags"] == ([] if name.startswith("oci") else ["ocisquash-test/trap:latest"])
    assert_rootfs(str(out), reference, tmp_path)


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("fmt", ["docker", "oci-dir"])
def test_compression_option(codec: str, fmt: str, inputs: dict[str, tuple[Path, list[str]]],
                            reference: Snapshot, tmp_path: Path) -> None:
    src, extra = inputs["docker25"]  # plain layers in: every codec is a real recompression
    out = tmp_path / ("out" if fmt == "oci-dir" else "out.tar")
    lib(src, out, "--format", fmt, "--compression", codec, *extra)
    magic = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
    if fmt == "oci-dir":
        want = OCI_LAYER + {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[codec]
        assert layer_codecs(out) == {want}
        manifest, _ = oci_manifest(out)
        for ly in manifest["layers"]:
            blob = (out / "blobs/sha256" / ly["digest"].split(":")[1]).read_bytes()
            assert blob.startswith(magic[codec]) if codec in magic else blob[257:262] == b"ustar" or not any(blob)
    else:
        docs = check_docker_tar(out)
        for p in docs["items"][0]["Layers"]:
            head = tar_file(out, p)[:512]
            assert head.startswith(magic[codec]) if codec in magic else head[257:262] == b"ustar" or not any(head)
    skopeo_accepts(out, fmt)
    assert_rootfs(str(out), reference, tmp_path)


def test_stdin_and_stdout(inputs: dict[str, tuple[Path, list[str]]], reference: Snapshot, tmp_path: Path) -> None:
    """``-`` in and ``-`` out, with a compressed stream on stdin; stdout equals the file output byte for byte."""
    src, _ = inputs["docker-gzip"]
    p = cli("-", "-", stdin=src.read_bytes())
    (tmp_path / "piped.tar").write_bytes(p.stdout)
    cli(str(src), str(tmp_path / "file.tar"))
    assert p.stdout == (tmp_path / "file.tar").read_bytes()
    check_docker_tar(tmp_path / "piped.tar")
    q = cli("-", "-", "--format", "oci", stdin=inputs["oci-tar"][0].read_bytes())
    (tmp_path / "piped-oci.tar").write_bytes(q.stdout)
    skopeo_inspect(f"oci-archive:{tmp_path / 'piped-oci.tar'}")
    assert_rootfs(str(tmp_path / "piped.tar"), reference, tmp_path)
    assert_rootfs(str(tmp_path / "piped-oci.tar"), reference, tmp_path)


def test_skopeo_copy_reads_outputs(inputs: dict[str, tuple[Path, list[str]]], tmp_path: Path) -> None:
    src, _ = inputs["containerd"]
    lib(src, tmp_path / "d.tar")
    lib(src, tmp_path / "o.tar", "--format", "oci")
    lib(src, tmp_path / "dir", "--format", "oci-dir")
    skopeo("copy", "-q", f"docker-archive:{tmp_path / 'd.tar'}", f"oci:{tmp_path / 'c1'}:x")
    skopeo("copy", "-q", f"oci-archive:{tmp_path / 'd.tar'}", f"oci:{tmp_path / 'c2'}:x")
    skopeo("copy", "-q", f"oci-archive:{tmp_path / 'o.tar'}", f"oci:{tmp_path / 'c3'}:x")
    skopeo("copy", "-q", f"oci:{tmp_path / 'dir'}", f"docker-archive:{tmp_path / 'c4.tar'}:a/b:c")
    configs = {sha(json.dumps(skopeo_inspect(f"oci:{tmp_path / c}:x", config=True), sort_keys=True).encode())
               for c in ("c1", "c2", "c3")}
    assert len(configs) == 1


def test_sample_demo_commands(sample_docker: BuiltImage, tmp_path: Path) -> None:
    """README's demo: ``ocisquash convert testdata/sample.docker.tar /tmp/x/`` and back again."""
    out_dir = tmp_path / "x"
    cli(str(sample_docker.path), str(out_dir) + "/")
    skopeo_inspect(f"oci:{out_dir}")
    cli(str(out_dir), str(tmp_path / "back.tar"), "--tag", "sample:again")
    docs = check_docker_tar(tmp_path / "back.tar")
    assert docs["items"][0]["RepoTags"] == ["sample:again"]
    s = [unpack_snapshot(r, tmp_path) for r in (str(sample_docker.path), str(out_dir), str(tmp_path / "back.tar"))]
    assert compare(s[0], s[1]) == [] and compare(s[0], s[2]) == []


def _podman(root: Path, run: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "--root", str(root / "root"), "--runroot", run, "--storage-driver", "vfs",
                           *args], capture_output=True, text=True, timeout=300)


def test_podman_pulls_docker_output(sample_docker: BuiltImage, tmp_path: Path, require_tools: None) -> None:
    """``podman pull docker-archive:`` (the nearest real loader here) loads our docker output, with its tag."""
    if shutil.which("podman") is None:
        skip_or_fail("needs podman (apt-get install -y podman)")
    out = tmp_path / "s.tar"
    cli(str(sample_docker.path), str(out), "--tag", "acme/app:1.2", "--compression", "gzip")
    cfg = json.loads(tar_file(out, "manifest.json"))[0]["Config"].rsplit("/", 1)[1]
    run = tempfile.mkdtemp(prefix="ocisq-pm-")  # podman wants a runroot path under 50 characters
    try:
        p = _podman(tmp_path, run, "pull", f"docker-archive:{out}")
        assert p.returncode == 0, p.stderr
        q = _podman(tmp_path, run, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "--no-trunc")
    finally:
        shutil.rmtree(run, ignore_errors=True)
    assert q.returncode == 0, q.stderr
    assert f"localhost/acme/app:1.2 sha256:{cfg}" in q.stdout.splitlines(), q.stdout


# ------------------------------------------------------------------------------------------ naming

def test_tag_naming(sample_docker: BuiltImage, tmp_path: Path) -> None:
    out = tmp_path / "t.tar"
    cli(str(sample_docker.path), str(out), "--tag", "acme/app:1.2", "--tag", "busybox",
        "--tag", "registry.example.com:5000/team/tool:v3")
    docs = check_docker_tar(out)
    assert docs["items"][0]["RepoTags"] == ["acme/app:1.2", "busybox:latest", "registry.example.com:5000/team/tool:v3"]
    names = [(e["annotations"][CONTAINERD_NAME], e["annotations"][REF_NAME]) for e in docs["index"]["manifests"]]
    assert names == [("docker.io/acme/app:1.2", "1.2"), ("docker.io/library/busybox:latest", "latest"),
                     ("registry.example.com:5000/team/tool:v3", "v3")]
    assert len({e["digest"] for e in docs["index"]["manifests"]}) == 1
    skopeo_inspect(f"docker-archive:{out}:acme/app:1.2")
    skopeo_inspect(f"oci-archive:{out}:1.2")


def test_names_kept_without_tag(inputs: dict[str, tuple[Path, list[str]]], tmp_path: Path) -> None:
    """A skopeo archive's fully qualified RepoTags come out familiar in manifest.json and full in index.json."""
    lib(inputs["skopeo-docker"][0], tmp_path / "o.tar")
    docs = check_docker_tar(tmp_path / "o.tar")
    assert docs["items"][0]["RepoTags"] == ["ocisquash-test/trap:latest"]
    assert [e["annotations"] for e in docs["index"]["manifests"]] == [
        {CONTAINERD_NAME: "docker.io/ocisquash-test/trap:latest", REF_NAME: "latest"}]


def test_add_to_existing_layout(inputs: dict[str, tuple[Path, list[str]]], sample_docker: BuiltImage,
                                tmp_path: Path) -> None:
    lay = tmp_path / "lay"
    lib(sample_docker.path, lay, "--format", "oci-dir", "--tag", "acme/sample:1")
    first_index = json.loads((lay / "index.json").read_bytes())
    blobs_before = set(os.listdir(lay / "blobs/sha256"))
    ino = (lay / "index.json").stat().st_ino
    lib(inputs["oci-dir"][0], lay, "--format", "oci-dir", "--image", "latest", "--tag", "acme/trap:2")
    index = json.loads((lay / "index.json").read_bytes())
    assert index["manifests"][0] == first_index["manifests"][0], "the old entry was changed or moved"
    assert [e["annotations"][REF_NAME] for e in index["manifests"]] == ["1", "2"]
    assert blobs_before <= set(os.listdir(lay / "blobs/sha256"))
    assert (lay / "index.json").stat().st_ino != ino, "index.json was rewritten in place, not replaced"
    assert sorted(p.name for p in lay.iterdir()) == ["blobs", "index.json", "oci-layout"]
    assert not [n for n in os.listdir(lay / "blobs/sha256") if n.startswith(".")], "temp files left"
    skopeo_inspect(f"oci:{lay}:1")
    skopeo_inspect(f"oci:{lay}:2")
    # the same image again under a third tag: no new blob, one more entry
    blobs = set(os.listdir(lay / "blobs/sha256"))
    lib(sample_docker.path, lay, "--format", "oci-dir", "--tag", "acme/sample:3")
    assert set(os.listdir(lay / "blobs/sha256")) == blobs
    index = json.loads((lay / "index.json").read_bytes())
    assert [e["annotations"][REF_NAME] for e in index["manifests"]] == ["1", "2", "3"]
    assert index["manifests"][0]["digest"] == index["manifests"][2]["digest"]
    # re-using a tag replaces that entry only
    lib(inputs["oci-dir"][0], lay, "--format", "oci-dir", "--image", "l2", "--tag", "acme/sample:1")
    index = json.loads((lay / "index.json").read_bytes())
    assert sorted(e["annotations"][REF_NAME] for e in index["manifests"]) == ["1", "2", "3"]


# ------------------------------------------------------------------------------------------ choosing

def _manifest_of(path: Path, tag: str) -> tuple[str, str]:
    """(manifest digest, config digest) of a layout's entry."""
    man, raw = oci_manifest(path, tag)
    return "sha256:" + sha(raw), man["config"]["digest"]


def test_choose_image(inputs: dict[str, tuple[Path, list[str]]], tmp_path: Path) -> None:
    lay = inputs["oci-dir"][0]
    l2_manifest, l2_config = _manifest_of(lay, "l2")
    latest_manifest, latest_config = _manifest_of(lay, "latest")
    for i, ref in enumerate(["l2", l2_manifest, l2_config[7:19], l2_config]):
        res = convert(str(lay), str(tmp_path / f"o{i}"), image=ref, fmt="oci-dir")
        assert (res["manifest"], res["config"]) == (l2_manifest, l2_config), ref
    res = convert(str(lay), str(tmp_path / "latest"), image=latest_manifest[:19], fmt="oci-dir")
    assert res["config"] == latest_config
    with pytest.raises(errors.Ambiguous) as ei:
        convert(str(lay), str(tmp_path / "none"), fmt="oci-dir")
    assert "l2" in (ei.value.hint or "") and "latest" in (ei.value.hint or "")
    with pytest.raises(errors.NotFound):
        convert(str(lay), str(tmp_path / "none"), image="deadbeef", fmt="oci-dir")
    # in a docker tar: the only one, by familiar and by full name
    tar = inputs["docker25"][0]
    for ref in (None, "ocisquash-test/trap:latest", "docker.io/ocisquash-test/trap:latest", "ocisquash-test/trap"):
        assert convert(str(tar), str(tmp_path / "d.tar"), image=ref)["config"] == latest_config
    with pytest.raises(errors.NotFound):
        convert(str(tar), str(tmp_path / "d.tar"), image="other/trap:latest")
    assert not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def multi_platform(trap_oci: BuiltImage, work: Path) -> Path:
    """A layout whose one entry is an index: linux/amd64 (trap latest), linux/arm64/v8 (trap l2), an attestation."""
    lay = work / "multi"
    shutil.copytree(trap_oci.path, lay)
    index = json.loads((lay / "index.json").read_bytes())
    by_tag = {e["annotations"][REF_NAME]: e for e in index["manifests"]}
    amd = {k: v for k, v in by_tag["latest"].items() if k != "annotations"}
    arm = {k: v for k, v in by_tag["l2"].items() if k != "annotations"}
    amd["platform"] = {"architecture": "amd64", "os": "linux"}
    arm["platform"] = {"architecture": "arm64", "os": "linux", "variant": "v8"}
    att = {**amd, "platform": {"architecture": "unknown", "os": "unknown"},
           "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
    nested = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [amd, arm, att]}).encode()
    (lay / "blobs/sha256" / sha(nested)).write_bytes(nested)
    (lay / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + sha(nested),
         "size": len(nested), "annotations": {REF_NAME: "multi"}}]}))
    return lay


def test_platform_choice(multi_platform: Path, trap_oci: BuiltImage, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, l2_config = _manifest_of(trap_oci.path, "l2")
    _, latest_config = _manifest_of(trap_oci.path, "latest")
    assert convert(str(multi_platform), str(tmp_path / "a"), platform="linux/arm64")["config"] == l2_config
    assert convert(str(multi_platform), str(tmp_path / "b"), platform="linux/arm64/v8")["config"] == l2_config
    assert convert(str(multi_platform), str(tmp_path / "c"), platform="linux/amd64",
                   image="multi")["config"] == latest_config
    # no --platform: the default platform (issue 13: as docker and podman pick it) ...
    monkeypatch.setenv("DOCKER_DEFAULT_PLATFORM", "linux/arm64")
    res = convert(str(multi_platform), str(tmp_path / "f"))
    assert res["config"] == l2_config and "using linux/arm64" in res["note"]
    # ... and when the default is not there, the choice is the user's, with every platform listed
    monkeypatch.setenv("DOCKER_DEFAULT_PLATFORM", "linux/s390x")
    with pytest.raises(errors.Ambiguous) as ei:
        convert(str(multi_platform), str(tmp_path / "d"))
    assert "--platform" in str(ei.value)
    assert "linux/amd64" in (ei.value.hint or "") and "linux/arm64/v8" in (ei.value.hint or "")
    assert "unknown" not in (ei.value.hint or ""), "the attestation manifest was offered as a platform"
    with pytest.raises(errors.NotFound) as nf:
        convert(str(multi_platform), str(tmp_path / "e"), platform="linux/s390x")
    assert "linux/amd64" in (nf.value.hint or "") and "linux/arm64/v8" in (nf.value.hint or "")
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c", "f"]


def test_containerd_missing_platform(trap_containerd: BuiltImage, tmp_path: Path) -> None:
    """The containerd export's OCI side: arm64 was never pulled (blob missing), the host platform is there."""
    lay = tmp_path / "lay"
    with tarfile.open(trap_containerd.path) as t:
        t.extractall(lay, filter="data")
    (lay / "manifest.json").unlink()
    res = convert(str(lay), str(tmp_path / "o.tar"))
    assert convert(str(lay), str(tmp_path / "p.tar"), platform="linux/amd64")["config"] == res["config"]
    with pytest.raises(errors.NotFound):
        convert(str(lay), str(tmp_path / "q.tar"), platform="linux/arm64")
    assert not (tmp_path / "q.tar").exists()


# ------------------------------------------------------------------------------------------ bytes

@pytest.mark.parametrize("name,fmt", [("oci-dir", "oci-dir"), ("oci-dir", "oci"), ("docker25", "docker"),
                                      ("docker25", "oci-dir"), ("containerd", "docker"),
                                      ("oci-dir-zstd", "oci-dir"), ("oci-dir-plain", "docker")])
def test_pass_through_keeps_bytes(name: str, fmt: str, inputs: dict[str, tuple[Path, list[str]]],
                                  tmp_path: Path) -> None:
    """Nothing changes, so the manifest and config bytes (and so their digests) are the input's."""
    src, extra = inputs[name]
    if src.is_dir():
        _, man_raw = oci_manifest(src, "latest") if name == "oci-dir" else oci_manifest(src)
        man = json.loads(man_raw)
    else:
        items = json.loads(tar_file(src, "manifest.json"))
        index = json.loads(tar_file(src, "index.json"))
        digest = index["manifests"][0]["digest"].split(":")[1]
        man_raw = tar_file(src, f"blobs/sha256/{digest}")
        man = json.loads(man_raw)
        if man.get("mediaType", "").endswith("index.v1+json"):
            digest = man["manifests"][0]["digest"].split(":")[1]
            man_raw = tar_file(src, f"blobs/sha256/{digest}")
            man = json.loads(man_raw)
        assert items[0]["Config"].endswith(man["config"]["digest"].split(":")[1])
    out = tmp_path / ("o" if fmt == "oci-dir" else "o.tar")
    res = convert(str(src), str(out), fmt=fmt, image=extra[1] if extra else None)
    assert res["manifest"] == "sha256:" + sha(man_raw)
    assert res["config"] == man["config"]["digest"]
    assert res["layers"] == [ly["digest"] for ly in man["layers"]]


def test_image_id_kept_from_plain_docker_archive(inputs: dict[str, tuple[Path, list[str]]], tmp_path: Path) -> None:
    """A skopeo/legacy archive has no manifest: the config (image ID) and layer bytes still pass through."""
    for name in ("skopeo-docker", "legacy-docker"):
        src = inputs[name][0]
        item = json.loads(tar_file(src, "manifest.json"))[0]
        cfg = tar_file(src, item["Config"])
        res = convert(str(src), str(tmp_path / f"{name}.tar"))
        assert res["config"] == "sha256:" + sha(cfg)
        diff_ids = json.loads(cfg)["rootfs"]["diff_ids"]
        assert res["layers"] == diff_ids  # plain layers in, plain layers out: digest == diff ID


@pytest.mark.parametrize("name,args", [("oci-dir", ["--format", "docker"]), ("docker-zstd", ["--format", "oci"]),
                                       ("docker25", ["--compression", "gzip"]),
                                       ("skopeo-docker", ["--compression", "zstd"])])
def test_deterministic(name: str, args: list[str], inputs: dict[str, tuple[Path, list[str]]],
                       tmp_path: Path) -> None:
    src, extra = inputs[name]
    # Two processes with different hash seeds: a set's order that leaks into the output differs between
    # processes, never between two runs in one.
    procs = [subprocess.Popen([sys.executable, "-m", "ocisquash", "convert", "-q", str(src), str(tmp_path / f"{i}.tar"),
                               *args, *extra], stderr=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": str(i)})
             for i in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
