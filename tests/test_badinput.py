"""Bad input: every case gets one clean error line naming the file and the problem, exit 1, no traceback,
no output or temp file left behind, and an untouched input; through the CLI and through the library.

Inputs are built by hand here (tarfile, json, hashlib; no ocisquash code and no external tools), so this
file runs anywhere. The CLI cases run concurrently once per module (a CLI start costs about a second).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ocisquash import errors
from ocisquash.convert import convert

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


# ------------------------------------------------------------------------------------ hand-made images

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jbytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A small plain layer (Go-style: just the 1024-byte end marker after the entries)."""
    buf = io.BytesIO()
    for name, data in files.items():
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 1700000000
        buf.write(ti.tobuf(tarfile.PAX_FORMAT))
        buf.write(data + b"\0" * (-len(data) % 512))
    buf.write(b"\0" * 1024)
    return buf.getvalue()


@dataclass
class HandImage:
    """One image as blobs: plain layers, a config, a manifest; ``config_obj``/``manifest_obj`` are editable
    before ``blobs()`` serialises them (pass ``raw_config``/``raw_manifest`` for exact bytes)."""

    layers: list[bytes] = field(default_factory=lambda: [layer_tar({"etc/a": b"a\n"}),
                                                         layer_tar({"etc/b": b"b\n"})])
    config_patch: dict[str, Any] = field(default_factory=dict)
    raw_config: bytes | None = None
    raw_manifest: bytes | None = None
    manifest_type: str = OCI_MANIFEST

    def config_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
            "config": {"Env": ["PATH=/bin"], "Labels": None},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(x) for x in self.layers]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(self.layers))],
        }
        obj.update(self.config_patch)
        return obj

    def config_bytes(self) -> bytes:
        return self.raw_config if self.raw_config is not None else jbytes(self.config_obj())

    def manifest_bytes(self) -> bytes:
        if self.raw_manifest is not None:
            return self.raw_manifest
        cfg = self.config_bytes()
        return jbytes({
            "schemaVersion": 2, "mediaType": self.manifest_type,
            "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + sha(cfg), "size": len(cfg)},
            "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:" + sha(x), "size": len(x)} for x in self.layers],
        })

    def descriptor(self, **annotations: str) -> dict[str, Any]:
        m = self.manifest_bytes()
        d: dict[str, Any] = {"mediaType": self.manifest_type, "digest": "sha256:" + sha(m), "size": len(m)}
        if annotations:
            d["annotations"] = annotations
        return d

    def blobs(self) -> dict[str, bytes]:
        out = {sha(x): x for x in self.layers}
        out[sha(self.config_bytes())] = self.config_bytes()
        out[sha(self.manifest_bytes())] = self.manifest_bytes()
        return out


def index_of(entries: list[dict[str, Any]]) -> bytes:
    return jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})


def layout_files(img: HandImage, tag: str = "latest", *, extra_blobs: dict[str, bytes] | None = None,
                 index: bytes | None = None) -> dict[str, bytes]:
    """The files of an OCI layout holding ``img`` as ``tag``."""
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
             "index.json": index if index is not None else index_of([img.descriptor(**{REF_NAME: tag})])}
    for h, data in {**img.blobs(), **(extra_blobs or {})}.items():
        files[f"blobs/sha256/{h}"] = data
    return files


def docker_files(img: HandImage, repo_tag: str = "acme/app:1.0", *, layer_paths: list[str] | None = None,
                 layout: bool = True) -> dict[str, bytes]:
    """A Docker 25+ style ``docker save`` tar's files: the OCI layout plus ``manifest.json``."""
    files = layout_files(img, repo_tag.rsplit(":", 1)[1]) if layout else {
        f"blobs/sha256/{h}": b for h, b in img.blobs().items()}
    cfg = img.config_bytes()
    files["manifest.json"] = jbytes([{
        "Config": f"blobs/sha256/{sha(cfg)}", "RepoTags": [repo_tag],
        "Layers": layer_paths if layer_paths is not None else [f"blobs/sha256/{sha(x)}" for x in img.layers]}])
    return files


def write_dir(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


Member = tuple[str, bytes] | tuple[str, str, str]  # (name, data) or (name, "symlink"|"hardlink", target)


def write_tar(path: Path, files: dict[str, bytes] | list[Member]) -> Path:
    """A tar of regular files (and, from a list, ``(name, 'symlink'|'hardlink', target)`` members)."""
    members: list[Member] = list(files.items()) if isinstance(files, dict) else list(files)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for m in members:
            ti = tarfile.TarInfo(m[0])
            ti.mtime = 1700000000
            if len(m) == 3:
                ti.type = tarfile.SYMTYPE if m[1] == "symlink" else tarfile.LNKTYPE
                ti.linkname = m[2]
                t.addfile(ti)
            else:
                ti.size = len(m[1])
                t.addfile(ti, io.BytesIO(m[1]))
    return path


def file_hash(path: Path) -> str:
    """A hash of a file or of a whole directory tree (names, link targets, contents)."""
    h = hashlib.sha256()
    if path.is_dir() and not path.is_symlink():
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode() + b"\0")
            if p.is_symlink():
                h.update(b"L" + os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ the bad inputs

@dataclass
class Case:
    """A bad input: where it is, what to pass, which error class, and a word the message must hold."""

    input: Path
    error: type[errors.OcisquashError]
    words: tuple[str, ...]
    args: tuple[str, ...] = ()
    fmt: str = "docker"


def _flip_last_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))


def build_cases(tmp: Path) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    img = HandImage()
    lay = img.layers

    def d(name: str) -> Path:
        return tmp / name

    # truncated tar: the outer tar ends inside a member
    full = write_tar(d("full.tar"), docker_files(img))
    data = full.read_bytes()
    cut = data.index(lay[1][:100]) + 300
    d("truncated.tar").write_bytes(data[:cut])
    cases["truncated-tar"] = Case(d("truncated.tar"), errors.FormatError, ("truncated",))
    # truncated gzip of a good tar
    gz = gzip.compress(data, mtime=0)
    d("truncated.tar.gz").write_bytes(gz[: len(gz) // 2])
    cases["truncated-gzip"] = Case(d("truncated.tar.gz"), errors.FormatError, ("gzip",))

    # blob digest mismatch: a layer's bytes changed, same size (OCI dir)
    root = write_dir(d("digest-mismatch"), layout_files(img))
    _flip_last_byte(root / "blobs/sha256" / sha(lay[1]))
    cases["blob-digest-mismatch"] = Case(root, errors.DigestMismatch, ("sha256:",))
    # size mismatch: the layer is longer than its descriptor says
    root = write_dir(d("size-mismatch"), layout_files(img))
    with open(root / "blobs/sha256" / sha(lay[0]), "ab") as f:
        f.write(b"\0" * 512)
    cases["size-mismatch"] = Case(root, errors.DigestMismatch, ("size",))
    # diff ID mismatch: the config promises another diff ID for layer 2 (docker tar, layer names claim nothing)
    bad = HandImage(config_patch={"rootfs": {"type": "layers", "diff_ids": [
        "sha256:" + sha(lay[0]), "sha256:" + sha(b"something else")]}})
    files = docker_files(bad, layout=False, layer_paths=["l0.tar", "l1.tar"])
    files = {k: v for k, v in files.items() if sha(v) not in (sha(lay[0]), sha(lay[1]))}
    files.update({"l0.tar": lay[0], "l1.tar": lay[1]})
    cases["diff-id-mismatch"] = Case(write_tar(d("diffid.tar"), files), errors.DigestMismatch, ("diff ID",))
    # missing blob: a layer is gone from the layout
    root = write_dir(d("missing-blob"), layout_files(img))
    (root / "blobs/sha256" / sha(lay[1])).unlink()
    cases["missing-blob"] = Case(root, errors.MissingBlob, ("missing",))
    # malformed JSON in index.json; a duplicate key in the config
    root = write_dir(d("malformed-json"), layout_files(img))
    (root / "index.json").write_bytes(b'{"schemaVersion":2,"manifests":[')
    cases["malformed-json"] = Case(root, errors.FormatError, ("index.json", "JSON"))
    dup = HandImage(raw_config=jbytes(HandImage().config_obj())[:-1] + b',"os":"windows"}')
    cases["duplicate-key"] = Case(write_dir(d("dupkey"), layout_files(dup)), errors.FormatError,
                                  ("duplicate", "'os'"))
    # manifest.json's layer count differs from diff_ids
    files = docker_files(img, layout=False)
    items = json.loads(files["manifest.json"])
    items[0]["Layers"] = items[0]["Layers"][:1]
    files["manifest.json"] = jbytes(items)
    cases["layer-count"] = Case(write_tar(d("count.tar"), files), errors.FormatError, ("layers", "diff IDs"))

    # member names: absolute, with '..', repeated
    good = docker_files(img)
    for key, name in (("absolute", "/etc/passwd"), ("dotdot", "blobs/../../evil")):
        cases[f"member-{key}"] = Case(write_tar(d(f"member-{key}.tar"), [*good.items(), (name, b"x")]),
                                      errors.UnsafePath, (repr(name),))
    cases["member-repeated"] = Case(
        write_tar(d("member-repeated.tar"), [*good.items(), ("./manifest.json", good["manifest.json"])]),
        errors.UnsafePath, ("twice",))

    # symlinked blob in a layout dir (pointing at a real copy outside it) and in a tar (pointing outside)
    root = write_dir(d("symlink-blob"), layout_files(img))
    outside = d("outside-layer")
    outside.write_bytes(lay[1])
    blob = root / "blobs/sha256" / sha(lay[1])
    blob.unlink()
    blob.symlink_to(outside)
    cases["symlinked-blob-dir"] = Case(root, errors.UnsafePath, ("symlink",))
    members: list[Member] = [(k, v) for k, v in layout_files(img).items() if sha(v) != sha(lay[1])]
    members.append((f"blobs/sha256/{sha(lay[1])}", "symlink", "/tmp/outside-layer"))
    cases["symlinked-blob-tar"] = Case(write_tar(d("symlink-blob.tar"), members), errors.UnsafePath,
                                       ("symlink", "absolute"))
    # a chain of symlinks inside the tar whose last hop leaves the archive
    members = [(k, v) for k, v in docker_files(img, layout=False).items() if sha(v) != sha(lay[1])]
    members += [(f"blobs/sha256/{sha(lay[1])}", "symlink", "../hop1"), ("blobs/hop1", "symlink", "../../../x")]
    cases["symlink-chain-escape"] = Case(write_tar(d("symlink-chain.tar"), members), errors.UnsafePath,
                                         ("leaving the archive",))
    # blob paths from invalid digests
    for key, digest in (("dotdot", "sha256:../../etc/passwd"), ("upper", "sha256:" + sha(lay[1]).upper())):
        raw = jbytes({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + sha(img.config_bytes()),
                                 "size": len(img.config_bytes())},
                      "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:" + sha(lay[0]), "size": len(lay[0])},
                                 {"mediaType": OCI_LAYER, "digest": digest, "size": len(lay[1])}]})
        cases[f"digest-{key}"] = Case(write_dir(d(f"digest-{key}"), layout_files(HandImage(raw_manifest=raw))),
                                      errors.FormatError, ("not a valid", "digest"))
    # nested index cycle: A -> B -> A (B cannot hash to its name: content addressing forbids real cycles)
    a_hex = "a" * 64
    b_obj = index_of([{"mediaType": OCI_INDEX, "digest": "sha256:" + a_hex, "size": 0}])
    a_obj = index_of([{"mediaType": OCI_INDEX, "digest": "sha256:" + sha(b_obj), "size": len(b_obj)}])
    b_obj = index_of([{"mediaType": OCI_INDEX, "digest": "sha256:" + sha(a_obj), "size": len(a_obj)}])
    files = layout_files(img, index=index_of([{"mediaType": OCI_INDEX, "digest": "sha256:" + sha(a_obj),
                                               "size": len(a_obj)}]))
    files[f"blobs/sha256/{sha(a_obj)}"] = a_obj
    files[f"blobs/sha256/{json.loads(a_obj)['manifests'][0]['digest'][7:]}"] = b_obj
    cases["index-cycle"] = Case(write_dir(d("cycle"), files), errors.DigestMismatch, ("sha256:",))
    # nested indexes deeper than the cap (each one valid)
    desc = img.descriptor()
    extra: dict[str, bytes] = {}
    for _ in range(12):
        raw = index_of([desc])
        extra[sha(raw)] = raw
        desc = {"mediaType": OCI_INDEX, "digest": "sha256:" + sha(raw), "size": len(raw)}
    files = layout_files(img, index=index_of([{**desc, "annotations": {REF_NAME: "deep"}}]), extra_blobs=extra)
    cases["index-too-deep"] = Case(write_dir(d("deep"), files), errors.LimitExceeded, ("nested",))

    # names: nothing matches; several match
    cases["name-no-match"] = Case(write_dir(d("nomatch"), layout_files(img)), errors.NotFound,
                                  ("nope:1",), ("--image", "nope:1"))
    other = HandImage(layers=[layer_tar({"x": b"other\n"})])
    idx = index_of([img.descriptor(**{REF_NAME: "latest", CONTAINERD_NAME: "docker.io/acme/one:latest"}),
                    other.descriptor(**{REF_NAME: "latest", CONTAINERD_NAME: "docker.io/acme/two:latest"})])
    files = layout_files(img, index=idx, extra_blobs=other.blobs())
    cases["name-ambiguous"] = Case(write_dir(d("ambiguous"), files), errors.Ambiguous, ("latest", "2 images"),
                                   ("--image", "latest"))
    # schema 1: by media type in index.json, and by schemaVersion in a blob with an OCI type
    s1 = jbytes({"schemaVersion": 1, "name": "acme/app", "tag": "1", "fsLayers": [], "history": []})
    files = layout_files(img, index=index_of([{"mediaType": SCHEMA1, "digest": "sha256:" + sha(s1),
                                               "size": len(s1)}]), extra_blobs={sha(s1): s1})
    cases["schema1-type"] = Case(write_dir(d("schema1-type"), files), errors.FormatError, ("schema 1",))
    files = layout_files(HandImage(raw_manifest=s1))
    cases["schema1-blob"] = Case(write_dir(d("schema1-blob"), files), errors.FormatError, ("schema 1",))
    # unknown rootfs.type
    odd = HandImage(config_patch={"rootfs": {"type": "zfs-snapshots", "diff_ids": [
        "sha256:" + sha(x) for x in lay]}})
    cases["rootfs-type"] = Case(write_dir(d("rootfs-type"), layout_files(odd)), errors.FormatError,
                                ("rootfs.type", "zfs-snapshots"))
    return cases


CASE_NAMES = [
    "truncated-tar", "truncated-gzip", "blob-digest-mismatch", "size-mismatch", "diff-id-mismatch",
    "missing-blob", "malformed-json", "duplicate-key", "layer-count", "member-absolute", "member-dotdot",
    "member-repeated", "symlinked-blob-dir", "symlinked-blob-tar", "symlink-chain-escape", "digest-dotdot",
    "digest-upper", "index-cycle", "index-too-deep", "name-no-match", "name-ambiguous", "schema1-type",
    "schema1-blob", "rootfs-type",
]


@dataclass
class CliRun:
    case: Case
    rc: int
    stderr: str
    stdout: bytes
    hash_before: str
    hash_after: str
    out_dir: Path
    tmp_dir: Path


def _run_cli(name: str, case: Case, base: Path) -> CliRun:
    out_dir = base / "out" / name
    tmp_dir = base / "tmpdir" / name
    out_dir.mkdir(parents=True)
    tmp_dir.mkdir(parents=True)
    before = file_hash(case.input)
    dest = out_dir / ("img" if case.fmt == "oci-dir" else "img.tar")
    env = {**os.environ, "TMPDIR": str(tmp_dir), "NO_COLOR": "1", "COLUMNS": "400"}
    env.pop("OCISQUASH_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "ocisquash", "convert", str(case.input), str(dest), "--format",
                        case.fmt, *case.args], capture_output=True, env=env, timeout=120)
    return CliRun(case, p.returncode, p.stderr.decode(errors="replace"), p.stdout, before, file_hash(case.input),
                  out_dir, tmp_dir)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    return build_cases(tmp_path_factory.mktemp("bad-inputs"))


@pytest.fixture(scope="module")
def cli_runs(cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    base = tmp_path_factory.mktemp("bad-cli")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {n: pool.submit(_run_cli, n, c, base) for n, c in cases.items()}
        return {n: f.result() for n, f in futures.items()}


def test_every_case_is_listed(cases: dict[str, Case]) -> None:
    assert sorted(cases) == sorted(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_one_line_error(name: str, cli_runs: dict[str, CliRun]) -> None:
    r = cli_runs[name]
    assert r.rc == 1, f"exit {r.rc}, stderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert 1 <= len(lines) <= 2, r.stderr
    assert lines[0].startswith("error: "), r.stderr
    assert "internal error" not in lines[0], r.stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), r.stderr
    label = str(r.case.input)
    assert label in lines[0] or os.path.basename(label) in lines[0], f"the message does not name the file: {lines[0]}"
    for w in r.case.words:
        assert w.lower() in lines[0].lower(), f"{w!r} not in: {lines[0]}"
    assert r.stdout == b""


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_leaves_nothing_and_input_untouched(name: str, cli_runs: dict[str, CliRun]) -> None:
    r = cli_runs[name]
    assert r.hash_after == r.hash_before, "the input changed"
    assert sorted(os.listdir(r.out_dir)) == [], "output or temp files left in the output's directory"
    assert sorted(os.listdir(r.tmp_dir)) == [], "temp files left in TMPDIR"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_library_error_class(name: str, cases: dict[str, Case], tmp_path: Path) -> None:
    case = cases[name]
    before = file_hash(case.input)
    args = dict(zip(case.args[::2], case.args[1::2], strict=True))
    with pytest.raises(errors.OcisquashError) as ei:
        convert(str(case.input), str(tmp_path / "out.tar"), fmt=case.fmt, image=args.get("--image"))
    assert type(ei.value) is case.error, f"{type(ei.value).__name__}: {ei.value}"
    assert file_hash(case.input) == before
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fmt", ["docker", "oci", "oci-dir"])
def test_late_failure_leaves_no_output(fmt: str, cases: dict[str, Case], tmp_path: Path) -> None:
    """A layer failing after others were written (the last layer is corrupt): every output format cleans up."""
    case = cases["blob-digest-mismatch"]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(errors.DigestMismatch):
        convert(str(case.input), str(out / "x"), fmt=fmt)
    assert os.listdir(out) == []


def test_existing_layout_untouched_on_failure(cases: dict[str, Case], tmp_path: Path) -> None:
    """Adding a bad image to an existing layout keeps its index.json and leaves no stray blobs or temps."""
    good = write_dir(tmp_path / "good", layout_files(HandImage()))
    dest = tmp_path / "dest"
    convert(str(good), str(dest), fmt="oci-dir")
    before = file_hash(dest)
    with pytest.raises(errors.DigestMismatch):
        convert(str(cases["blob-digest-mismatch"].input), str(dest), fmt="oci-dir")
    assert file_hash(dest) == before


def test_good_hand_image_converts(tmp_path: Path) -> None:
    """The hand-made base of every case above is itself fine (so each case fails for its own reason)."""
    img = HandImage()
    src_dir = write_dir(tmp_path / "dir", layout_files(img))
    src_tar = write_tar(tmp_path / "d.tar", docker_files(img))
    for src in (src_dir, src_tar):
        out = tmp_path / f"out-{src.name}.tar"
        res = convert(str(src), str(out), fmt="docker")
        assert res["config"] == "sha256:" + sha(img.config_bytes())
        with tarfile.open(out) as t:
            assert "manifest.json" in t.getnames()


def test_symlinked_layout_root_parts(tmp_path: Path) -> None:
    """A blobs/ directory that is a symlink is refused too (O_NOFOLLOW guards only the last component)."""
    real = write_dir(tmp_path / "real", layout_files(HandImage()))
    lay = tmp_path / "lay"
    lay.mkdir()
    for n in ("oci-layout", "index.json"):
        shutil.copy(real / n, lay / n)
    (lay / "blobs").symlink_to(real / "blobs")
    with pytest.raises(errors.UnsafePath):
        convert(str(lay), str(tmp_path / "o.tar"), fmt="docker")

