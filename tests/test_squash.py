"""``ocisquash squash`` end to end (issue 3): every input and output form, every cut, checked with the oracle.

Each squash runs the real CLI in a subprocess. What the tests expect is computed here from the input and
output files themselves (tarfile, json, hashlib, gzip, zstandard; no ocisquash code): kept layers must be
the input's blobs byte for byte, the new diff ID must be the sha256 of the decompressed new layer, the
history must follow docker load's rule, and ``umoci unpack`` (tests/oracle.py) of the squashed image must
give exactly the original's tree. The squashes and unpacks of the matrix run once per module, two at a
time; the originals are unpacked once per trap build.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import skip_or_fail
from fixtures import BuiltImage, build_docker
from oracle import Snapshot, compare, skopeo, unpack, unpack_snapshot

pytestmark = pytest.mark.tools

TS = "1700000000"
TS_RFC = "2023-11-14T22:13:20Z"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"
GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def jbytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------------ running the CLI

@dataclass
class Run:
    argv: list[str]
    rc: int
    stdout: bytes
    stderr: str

    to_file: bool = False

    def json(self) -> dict[str, Any]:
        """The ``--json`` report: on stdout, or on stderr when stdout carried the image."""
        return json.loads(self.stderr if self.to_file else self.stdout.decode())  # type: ignore[no-any-return]


def cli(*args: str | os.PathLike[str], stdin: Path | None = None, stdout: Path | None = None,
        env: dict[str, str] | None = None) -> Run:
    """``python -m ocisquash ARGS``; stdin from a file, stdout to a file when given."""
    argv = [sys.executable, "-m", "ocisquash", *map(os.fspath, args)]
    e = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    e.update(env or {})
    e["NO_COLOR"] = "1"
    e["COLUMNS"] = "200"
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL  # noqa: SIM115
    fout = open(stdout, "wb") if stdout else subprocess.PIPE  # noqa: SIM115
    try:
        p = subprocess.run(argv, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=e, timeout=300)
    finally:
        for f in (fin, fout):
            if not isinstance(f, int):
                f.close()
    return Run(argv, p.returncode, p.stdout or b"", p.stderr.decode(errors="replace"), stdout is not None)


def cli_here(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> Run:
    """The same CLI (``ocisquash.cli.main``) in this process: no interpreter start, for file outputs only."""
    from ocisquash import limits
    from ocisquash.cli import main

    argv = list(map(os.fspath, args))
    saved_env, saved_term = dict(os.environ), signal.getsignal(signal.SIGTERM)
    os.environ.pop("SOURCE_DATE_EPOCH", None)
    os.environ.update({**(env or {}), "NO_COLOR": "1", "COLUMNS": "200"})
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_term)
        limits.reset()
    return Run(["ocisquash", "(in process)", *argv], rc, out.getvalue().encode(), err.getvalue())


def ok(r: Run) -> Run:
    assert r.rc == 0, f"{' '.join(r.argv)} exited {r.rc}:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r


# ------------------------------------------------------------------------------------------ reading images

@dataclass
class Read:
    """One image of a layout dir, layout tar or docker tar, read with plain tarfile/json."""

    kind: str  # "oci-dir", "oci" or "docker"
    config_raw: bytes
    layers: list[bytes]  # raw blobs, apply order
    manifest_raw: bytes | None = None
    docker_item: dict[str, Any] | None = None
    index: dict[str, Any] | None = None
    members: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_raw)  # type: ignore[no-any-return]

    @property
    def manifest(self) -> dict[str, Any] | None:
        return None if self.manifest_raw is None else json.loads(self.manifest_raw)

    @property
    def image_id(self) -> str:
        return sha(self.config_raw)


class _Files:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.files: dict[str, bytes] = {}
        self.links: dict[str, str] = {}
        self.members: list[str] = []
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.is_file():
                    self.files[p.relative_to(path).as_posix()] = p.read_bytes()
        else:
            with tarfile.open(path) as t:
                for m in t.getmembers():
                    name = m.name.removeprefix("./")
                    self.members.append(name)
                    if m.issym():
                        self.links[name] = os.path.normpath(os.path.join(os.path.dirname(name), m.linkname))
                    elif m.isfile():
                        self.files[name] = t.extractfile(m).read()  # type: ignore[union-attr]

    def get(self, name: str) -> bytes:
        name = name.removeprefix("./")
        for _ in range(8):
            if name in self.files:
                return self.files[name]
            name = self.links[name]
        raise KeyError(name)

    def blob(self, digest: str) -> bytes:
        alg, hexd = digest.split(":", 1)
        data = self.get(f"blobs/{alg}/{hexd}")
        assert sha(data) == digest, f"{self.path}: blob {digest} does not hash to its name"
        return data


def read_image(path: Path, tag: str | None = None) -> Read:
    """The image ``tag`` (ref.name, or a docker RepoTag) of ``path``, or its only image."""
    f = _Files(path)
    if "manifest.json" in f.files:
        items = json.loads(f.files["manifest.json"])
        if tag is not None:
            items = [i for i in items if any(t == tag or t.endswith("/" + tag) for t in i.get("RepoTags") or [])]
        assert len(items) == 1, f"{path}: {len(items)} manifest.json items for {tag!r}"
        item = items[0]
        cfg = f.get(item["Config"])
        layers = [f.get(n) for n in item["Layers"]]
        man = None
        if "index.json" in f.files:
            man = _pick_manifest(f, json.loads(f.files["index.json"]), tag, sha(cfg))
        return Read("docker", cfg, layers, man, item, json.loads(f.files.get("index.json", b"null")), f.members)
    index = json.loads(f.files["index.json"])
    man = _pick_manifest(f, index, tag, None)
    assert man is not None, f"{path}: no manifest for {tag!r}"
    m = json.loads(man)
    return Read("oci-dir" if path.is_dir() else "oci", f.blob(m["config"]["digest"]),
                [f.blob(x["digest"]) for x in m["layers"]], man, None, index, f.members)


def _pick_manifest(f: _Files, index: dict[str, Any], tag: str | None, config: str | None) -> bytes | None:
    entries = index.get("manifests") or []
    if tag is not None and config is None:
        entries = [e for e in entries if (e.get("annotations") or {}).get(REF_NAME) == tag]
    for e in entries:
        raw = f.blob(e["digest"])
        if e["mediaType"] in (OCI_INDEX, DOCKER_LIST):
            try:
                inner = _pick_manifest(f, json.loads(raw), None, config)
            except KeyError:
                continue
            if inner is not None:
                return inner
            continue
        m = json.loads(raw)
        if config is None or m["config"]["digest"] == config:
            if config is None:
                assert len(entries) == 1 or tag is not None, "several entries: name one"
            return raw
    return None


def decompress(blob: bytes) -> bytes:
    if blob.startswith(GZIP_MAGIC):
        return gzip.decompress(blob)
    if blob.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    return blob


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file (and symlink) under root: relative path -> content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = sha(p.read_bytes())
    return out


# ------------------------------------------------------------------------------------------ hand-made image

def plain_tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A plain layer: regular files (data) and directories (None), Go-style end (1024 zero bytes)."""
    buf = io.BytesIO()
    for name, data in entries:
        ti = tarfile.TarInfo(name)
        ti.mtime, ti.uname, ti.gname = 1700000000, "", ""
        if data is None:
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        else:
            ti.size, ti.mode = len(data), 0o644
        buf.write(ti.tobuf(tarfile.PAX_FORMAT))
        if data:
            buf.write(data + b"\0" * (-len(data) % 512))
    buf.write(b"\0" * 1024)
    return buf.getvalue()


FULL_CONFIG: dict[str, Any] = {
    "User": "1000:1000", "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "Env": ["PATH=/bin", "A=b c"],
    "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Volumes": {"/data": {}}, "WorkingDir": "/srv",
    "Labels": {"org.example.x": "1", "empty": ""}, "StopSignal": "SIGTERM",
}
UNKNOWN_FIELD = {"x-ocisquash-test": {"nested": [1, 2, {"k": None}]}}
MANIFEST_ANNOTATIONS = {"org.opencontainers.image.source": "https://example.com/app", "org.example.note": "kept"}

# L1 a base file; L2 adds a, b, c of known sizes; L3 deletes a and b, overwrites c, adds d.
A_SIZE, B_SIZE, C_SIZE, C2_SIZE, D_SIZE = 1000, 2000, 3000, 500, 700


def drop_layers() -> list[bytes]:
    l1 = plain_tar([("etc/", None), ("etc/base", b"base\n")])
    l2 = plain_tar([("app/", None), ("app/a", b"a" * A_SIZE), ("app/b", b"b" * B_SIZE), ("app/c", b"c" * C_SIZE)])
    words = b"".join(b"line %d: the quick brown fox %d jumps over %x\n" % (i, i * i % 97, i * 31)
                     for i in range(3000))
    l3 = plain_tar([("app/", None), ("app/.wh.a", b""), ("app/.wh.b", b""), ("app/c", b"C" * C2_SIZE),
                    ("app/d", b"d" * D_SIZE), ("app/words", words)])
    return [l1, l2, l3]


def hand_layout(root: Path, layers: list[bytes], *, tag: str = "latest", gzip_layers: bool = True,
                config_patch: dict[str, Any] | None = None, diff_ids: list[str] | None = None,
                annotations: dict[str, str] | None = None) -> BuiltImage:
    """An OCI layout dir from plain layer tars: full config, history (with an empty_layer entry)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')

    def put(b: bytes) -> str:
        (blobs / sha(b)[7:]).write_bytes(b)
        return sha(b)

    history: list[dict[str, Any]] = [{"created": "2023-01-01T00:00:00Z", "created_by": "ENV A=b", "empty_layer": True}]
    history += [{"created": "2023-01-01T00:00:00Z", "created_by": f"RUN step {i + 1}"} for i in range(len(layers))]
    cfg: dict[str, Any] = {
        "created": "2023-01-01T00:00:00Z", "author": "tester", "architecture": "amd64", "os": "linux",
        "config": FULL_CONFIG, **UNKNOWN_FIELD,
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(x) for x in layers]}, "history": history,
    }
    cfg.update(config_patch or {})
    cfg_b = jbytes(cfg)
    descs = []
    for x in layers:
        blob = gzip.compress(x, mtime=0) if gzip_layers else x
        descs.append({"mediaType": OCI_LAYER + ("+gzip" if gzip_layers else ""), "digest": put(blob),
                      "size": len(blob)})
    man: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": OCI_CONFIG, "digest": put(cfg_b), "size": len(cfg_b)},
                           "layers": descs}
    if annotations:
        man["annotations"] = annotations
    mb = jbytes(man)
    entry = {"mediaType": OCI_MANIFEST, "digest": put(mb), "size": len(mb), "annotations": {REF_NAME: tag}}
    (root / "index.json").write_bytes(jbytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}))
    return BuiltImage(root, tag)


# ------------------------------------------------------------------------------------------ the matrix

@dataclass(frozen=True)
class Form:
    """An input form of a trap image: path, ``--image`` to pass, which build, piped on stdin or not."""

    path: Path
    image: str | None
    build: str  # "hand" (trap_oci's layers) or "umoci" (trap_umoci_oci's)
    stdin: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    form: str
    out: str  # "docker", "oci", "oci-dir", "stdout"
    cut: tuple[str, ...]  # CLI args; "@digest3"/"@diffid3" are filled in from the input
    keep: int
    parent: str | None = None  # a reference read_image understands, for the expected comment
    fmt_flag: bool = True


CASES = [
    # hand-made trap layers (5 layers; l2 = the first 2), every input form at least once
    Case("oci-docker-scratch", "oci", "docker", (), 0, fmt_flag=False),
    Case("oci-ocidir-parent", "oci", "oci-dir", ("--parent", "l2"), 2, parent="trap.oci:l2"),
    Case("plain-ocitar-from3", "plain", "oci", ("--from-layer", "3"), 2),
    Case("zstd-ocidir-from-2", "zstd", "oci-dir", ("--from-layer", "-2"), 3),
    Case("ocitar-docker-digest", "ocitar", "docker", ("--from-layer", "@digest3"), 2),
    Case("docker-ocitar-diffid", "docker", "oci", ("--from-layer", "@diffid3"), 2),
    Case("legacy-ocidir-parentfile", "legacy", "oci-dir", ("--parent", "@oci:l2"), 2, parent="trap.oci:l2"),
    Case("d25-stdout-scratch", "d25", "stdout", (), 0),
    Case("containerd-docker-from2", "containerd", "docker", ("--from-layer", "2"), 1),
    Case("stdin-ocitar-parentfile", "stdin", "oci", ("--parent", "@oci:l2"), 2, parent="trap.oci:l2"),
    # the umoci-built trap (4 layers; l2 = the first 2): every cut again
    Case("umoci-docker-scratch", "umoci", "docker", (), 0),
    Case("umoci-ocidir-parent", "umoci", "oci-dir", ("--parent", "l2"), 2, parent="trap-umoci.oci:l2"),
    Case("umoci-ocitar-from3", "umoci", "oci", ("--from-layer", "3"), 2),
    Case("umoci-stdout-from-2", "umoci", "stdout", ("--from-layer", "-2"), 2),
    Case("umoci-docker-digest", "umoci", "docker", ("--from-layer", "@digest3"), 2),
    Case("umocidocker-ocidir-diffid", "umoci-docker", "oci-dir", ("--from-layer", "@diffid3"), 2),
    Case("umocidocker-docker-parentfile", "umoci-docker", "docker", ("--parent", "@umoci:l2"), 2,
         parent="trap-umoci.oci:l2"),
]
CASE_IDS = [c.id for c in CASES]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("squash")


@pytest.fixture(scope="module")
def forms(trap_oci: BuiltImage, trap_umoci_oci: BuiltImage, trap_docker: BuiltImage, trap_docker_legacy: BuiltImage,
          trap_docker25: BuiltImage, trap_containerd: BuiltImage, trap_zstd_oci: BuiltImage,
          trap_plain_oci: BuiltImage, work: Path) -> dict[str, Form]:
    ocitar = work / "trap.oci.tar"
    with tarfile.open(ocitar, "w") as t:
        for p in sorted(trap_oci.path.rglob("*")):
            t.add(p, p.relative_to(trap_oci.path).as_posix(), recursive=False)
    umoci_docker = build_docker(trap_umoci_oci.path, "latest", work / "umoci.docker.tar", "ocisquash-test/umoci:1")
    return {
        "oci": Form(trap_oci.path, "latest", "hand"),
        "plain": Form(trap_plain_oci.path, None, "hand"),
        "zstd": Form(trap_zstd_oci.path, None, "hand"),
        "ocitar": Form(ocitar, "latest", "hand"),
        "docker": Form(trap_docker.path, None, "hand"),
        "legacy": Form(trap_docker_legacy.path, None, "hand"),
        "d25": Form(trap_docker25.path, None, "hand"),
        "containerd": Form(trap_containerd.path, None, "hand"),
        "stdin": Form(trap_docker.path, None, "hand", stdin=True),
        "umoci": Form(trap_umoci_oci.path, "latest", "umoci"),
        "umoci-docker": Form(umoci_docker.path, None, "umoci"),
    }


@pytest.fixture(scope="module")
def originals(trap_oci: BuiltImage, trap_umoci_oci: BuiltImage, work: Path) -> dict[str, Snapshot]:
    """The oracle's tree of each trap build, unpacked once."""
    refs = {"hand": trap_oci.ref, "umoci": trap_umoci_oci.ref}
    with ThreadPoolExecutor(2) as pool:
        snaps = dict(zip(refs, pool.map(lambda r: unpack_snapshot(r, work), refs.values()), strict=True))
    assert snaps["hand"]["app/dup"].sha256 == hashlib.sha256(b"second\n").hexdigest()  # a real tree
    return snaps


@dataclass
class Done:
    case: Case
    inp: Read
    run: Run
    out_path: Path
    oracle_ref: str
    args: list[str]


def _resolve_cut(cut: tuple[str, ...], inp: Read, images: Path) -> list[str]:
    out = []
    for a in cut:
        if a == "@digest3":
            assert inp.manifest is not None
            d = inp.manifest["layers"][2]["digest"]
            assert d != inp.config["rootfs"]["diff_ids"][2], "a digest cut needs a compressed layer"
            out.append(d)
        elif a == "@diffid3":
            out.append(inp.config["rootfs"]["diff_ids"][2])
        elif a == "@oci:l2":
            out.append(f"{images / 'trap.oci'}:l2")
        elif a == "@umoci:l2":
            out.append(f"{images / 'trap-umoci.oci'}:l2")
        else:
            out.append(a)
    return out


def _run_case(c: Case, form: Form, images: Path, work: Path) -> Done:
    inp = read_image(form.path, form.image)
    args = ["squash", "-" if form.stdin else str(form.path)]
    if c.out == "stdout":
        out_path = work / f"{c.id}.stdout.tar"
        args.append("-")
    else:
        suffix = {"docker": ".tar", "oci": ".oci.tar", "oci-dir": ".oci"}[c.out]
        out_path = work / f"{c.id}{suffix}"
        args.append(str(out_path))
        if c.fmt_flag:
            args += ["--format", c.out]
    if form.image:
        args += ["--image", form.image]
    args += [*_resolve_cut(c.cut, inp, images), "--timestamp", TS, "--json"]
    r = cli(*args, stdin=form.path if form.stdin else None, stdout=out_path if c.out == "stdout" else None)
    return Done(c, inp, r, out_path, str(out_path), args)


@pytest.fixture(scope="module")
def matrix(forms: dict[str, Form], originals: dict[str, Snapshot], work: Path
           ) -> dict[str, tuple[Done, Snapshot | Exception]]:
    """Every case squashed, and its output unpacked by the oracle (two at a time)."""
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda c: _run_case(c, forms[c.form], forms["oci"].path.parent, work), CASES))

    def snap(d: Done) -> Snapshot | Exception:
        if d.run.rc != 0:
            return RuntimeError(f"squash failed: {d.run.stderr}")
        try:
            return unpack_snapshot(d.oracle_ref, work)
        except Exception as e:  # reported by the test of this case
            return e

    with ThreadPoolExecutor(2) as pool:
        snaps = list(pool.map(snap, done))
    return {d.case.id: (d, s) for d, s in zip(done, snaps, strict=True)}


@pytest.mark.parametrize("cid", CASE_IDS)
def test_oracle_same_tree(cid: str, matrix: dict[str, tuple[Done, Snapshot | Exception]],
                          originals: dict[str, Snapshot], forms: dict[str, Form]) -> None:
    d, snap = matrix[cid]
    ok(d.run)
    if isinstance(snap, Exception):
        raise snap
    diffs = compare(originals[forms[d.case.form].build], snap, mtime=True)
    assert not diffs, f"{' '.join(d.args)}: rootfs differs from the original:\n" + "\n".join(diffs[:60])


def expected_history(orig: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The original entries with every non-empty one above the first ``keep`` marked empty_layer."""
    out, seen = [], 0
    for h in orig:
        h = dict(h)
        if h.get("empty_layer") is not True:
            seen += 1
            if seen > keep:
                h["empty_layer"] = True
        out.append(h)
    return out


def check_new_image(inp: Read, out: Read, keep: int, *, comment: str | Callable[[str], bool],
                    created: str = TS_RFC, codec: str = "gzip", docker_types: bool = False) -> None:
    """Issue 3's rules for a squashed image ``out`` of ``inp`` keeping ``keep`` layers."""
    cfg, icfg = out.config, inp.config
    # kept layers: the parent's blobs, byte for byte; then one new layer
    assert len(out.layers) == keep + 1
    assert out.layers[:keep] == inp.layers[:keep]
    new_tar = decompress(out.layers[-1])
    assert new_tar[257:262] == b"ustar" or len(new_tar) == 1024, "the new layer is not a tar"
    diff_ids = cfg["rootfs"]["diff_ids"]
    assert diff_ids == [*icfg["rootfs"]["diff_ids"][:keep], sha(new_tar)]
    assert cfg["rootfs"]["type"] == "layers"
    # compression of the new layer, by magic bytes
    magic = {"gzip": GZIP_MAGIC, "zstd": ZSTD_MAGIC}.get(codec)
    if magic is None:
        assert out.layers[-1] == new_tar
    else:
        assert out.layers[-1].startswith(magic), f"new layer is not {codec}: {out.layers[-1][:4].hex()}"
    # every other config field kept
    assert {k: v for k, v in cfg.items() if k not in ("rootfs", "history", "created")} == \
        {k: v for k, v in icfg.items() if k not in ("rootfs", "history", "created")}
    assert cfg["created"] == created
    # history: squashed range empty, one new entry, docker load's count rule
    hist = cfg.get("history")
    if not icfg.get("history"):
        assert not hist
    else:
        assert hist[:-1] == expected_history(icfg["history"], keep)
        last = hist[-1]
        assert last.get("empty_layer") is not True and last["created"] == created
        if callable(comment):
            assert comment(last["comment"]), last["comment"]
        else:
            assert last["comment"] == comment
        assert sum(1 for h in hist if h.get("empty_layer") is not True) == len(diff_ids)
    # the manifest, when there is one, describes exactly these blobs
    man = out.manifest
    if out.kind != "docker":
        assert man is not None
    if man is not None:
        assert man["config"]["digest"] == sha(out.config_raw) and man["config"]["size"] == len(out.config_raw)
        assert [x["digest"] for x in man["layers"]] == [sha(b) for b in out.layers]
        assert [x["size"] for x in man["layers"]] == [len(b) for b in out.layers]
        types = [x["mediaType"] for x in man["layers"]]
        if docker_types:
            assert man["mediaType"] == DOCKER_MANIFEST
            assert types[-1] == {"gzip": DOCKER_LAYER_GZIP, "zstd": OCI_LAYER + "+zstd",
                                 "none": "application/vnd.docker.image.rootfs.diff.tar"}[codec]
        else:
            assert man["mediaType"] == OCI_MANIFEST and man["config"]["mediaType"] == OCI_CONFIG
            assert all(t.startswith("application/vnd.oci.image.layer.v1.tar") for t in types), types
            assert types[-1] == OCI_LAYER + {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[codec]
        if inp.manifest is not None and inp.manifest.get("annotations"):
            assert man.get("annotations") == inp.manifest["annotations"]
    if out.kind == "docker":
        item = out.docker_item
        assert item is not None and len(item["Layers"]) == len(diff_ids)
        assert man is not None, "a docker tar from ocisquash carries the OCI layout too"


@pytest.mark.parametrize("cid", CASE_IDS)
def test_new_image(cid: str, matrix: dict[str, tuple[Done, Snapshot | Exception]], forms: dict[str, Form]) -> None:
    d, _ = matrix[cid]
    ok(d.run)
    out = read_image(d.out_path)
    assert out.kind == {"stdout": "docker", "oci-dir": "oci-dir"}.get(d.case.out, d.case.out)
    docker_types = out.kind == "docker" and d.inp.manifest is not None and \
        d.inp.manifest.get("mediaType") == DOCKER_MANIFEST
    assert docker_types == (d.case.form == "containerd" and out.kind == "docker")
    if d.case.keep == 0:
        comment: str | Callable[[str], bool] = f"create new from {d.inp.image_id}"
    elif d.case.parent is not None:
        parent = read_image(forms["oci"].path.parent / d.case.parent.split(":")[0], d.case.parent.split(":")[1])
        comment = f"merge {d.inp.image_id} to {parent.image_id}"
    else:
        comment = lambda c: c.startswith(f"merge {d.inp.image_id} to ")  # noqa: E731
    check_new_image(d.inp, out, d.case.keep, comment=comment, docker_types=docker_types)
    if out.docker_item is not None and d.inp.docker_item is not None:  # names carried over, familiar form
        want = [t.removeprefix("docker.io/") for t in d.inp.docker_item.get("RepoTags") or []]
        assert want and out.docker_item["RepoTags"] == want
    rep = d.run.json()
    assert rep["layers_before"] == len(d.inp.layers) and rep["layers_after"] == d.case.keep + 1
    assert rep["kept_layers"] == d.case.keep and rep["squashed"] is True
    assert rep["diff_id"] == out.config["rootfs"]["diff_ids"][-1]
    assert rep["config"] == out.image_id
    assert rep["manifest"] == sha(out.manifest_raw or b"")
    # compressed sizes only where every layer is stored compressed (not a docker save tarball's)
    packed_in, packed_out = (all(decompress(b) != b for b in x.layers) for x in (d.inp, out))
    assert rep["bytes_before_compressed"] == (sum(len(b) for b in d.inp.layers) if packed_in else None)
    assert rep["bytes_before_uncompressed"] == sum(len(decompress(b)) for b in d.inp.layers)
    assert rep["bytes_after_compressed"] == (sum(len(b) for b in out.layers) if packed_out else None)
    assert rep["bytes_after_uncompressed"] == sum(len(decompress(b)) for b in out.layers)


# ------------------------------------------------------------------------------------------ the hand-made image

def run_all(jobs: dict[str, tuple[list[str | os.PathLike[str]], dict[str, Any]]]) -> dict[str, Run]:
    """Run several CLI invocations in this process, one after the other: name -> (args, keywords)."""
    return {k: cli_here(*a, **kw) for k, (a, kw) in jobs.items()}


@pytest.fixture(scope="module")
def hand(work: Path) -> BuiltImage:
    """Three layers with known drops, a full config with an unknown field, manifest annotations."""
    return hand_layout(work / "hand.oci", drop_layers(), annotations=MANIFEST_ANNOTATIONS)


@pytest.fixture(scope="module")
def hand_runs(hand: BuiltImage, work: Path) -> dict[str, tuple[Run, Path]]:
    out = work / "hand-out"
    out.mkdir()
    h = str(hand.path)
    jobs: dict[str, tuple[list[str | os.PathLike[str]], dict[str, Any]]] = {}
    for codec in ("gzip", "zstd", "none"):
        for fmt, suffix in (("oci-dir", ".oci"), ("docker", ".tar")):
            jobs[f"{codec}-{fmt}"] = (["squash", h, out / f"{codec}{suffix}", "--format", fmt, "--from-layer", "2",
                                       "--compression", codec, "--timestamp", TS, "--json"], {})
    for codec, level in (("gzip", "0"), ("gzip", "3"), ("zstd", "1"), ("zstd", "19")):
        jobs[f"level-{codec}-{level}"] = (["squash", h, out / f"l-{codec}-{level}.tar", "--compression", codec,
                                           "--level", level, "--timestamp", TS], {})
    jobs["message"] = (["squash", h, out / "msg.tar", "-m", "flattened for release", "--timestamp", TS], {})
    jobs["epoch"] = (["squash", h, out / "epoch.tar"], {"env": {"SOURCE_DATE_EPOCH": "1234567890"}})
    jobs["flag-beats-epoch"] = (["squash", h, out / "flag.tar", "--timestamp", "2020-02-02T02:02:02Z"],
                                {"env": {"SOURCE_DATE_EPOCH": "1234567890"}})
    jobs["now"] = (["squash", h, out / "now.tar"], {})
    for cut, args in (("scratch", []), ("from2", ["--from-layer", "2"]), ("from3", ["--from-layer", "3"]),
                      ("top", ["--from-layer", "-1"])):
        jobs[f"report-{cut}"] = (["squash", h, out / f"r-{cut}.tar", *args, "--timestamp", TS, "--json"], {})
        jobs[f"dry-{cut}"] = (["squash", h, "--dry-run", *args, "--json"], {})
    t0 = time.time()
    runs = run_all(jobs)
    runs["now"].stdout = str(t0).encode()  # when the runs started, for the "now" check
    paths = {k: Path(str(a[2])) for k, (a, _) in jobs.items() if not k.startswith("dry")}
    return {k: (r, paths.get(k, out / "none")) for k, r in runs.items()}


@pytest.mark.parametrize("codec", ["gzip", "zstd", "none"])
@pytest.mark.parametrize("fmt", ["oci-dir", "docker"])
def test_config_kept_and_compression(codec: str, fmt: str, hand: BuiltImage,
                                     hand_runs: dict[str, tuple[Run, Path]]) -> None:
    r, path = hand_runs[f"{codec}-{fmt}"]
    ok(r)
    inp, out = read_image(hand.path, "latest"), read_image(path)
    assert out.kind == fmt
    check_new_image(inp, out, 1, comment=lambda c: c.startswith(f"merge {inp.image_id} to "), codec=codec)
    assert out.config["config"] == FULL_CONFIG
    assert out.config["x-ocisquash-test"] == UNKNOWN_FIELD["x-ocisquash-test"]
    assert out.manifest is not None and out.manifest["annotations"] == MANIFEST_ANNOTATIONS
    new = out.manifest["layers"][-1]
    if codec == "none":
        assert new["digest"] == out.config["rootfs"]["diff_ids"][-1]
    assert r.json()["diff_id"] == out.config["rootfs"]["diff_ids"][-1]


def test_compression_level(hand_runs: dict[str, tuple[Run, Path]]) -> None:
    new = {}
    for k in ("gzip-0", "gzip-3", "zstd-1", "zstd-19"):
        r, p = hand_runs[f"level-{k}"]
        ok(r)
        out = read_image(p)
        new[k] = out.layers[-1]
        assert out.config["rootfs"]["diff_ids"][-1] == sha(decompress(new[k]))
    assert new["gzip-0"].startswith(GZIP_MAGIC) and new["zstd-1"].startswith(ZSTD_MAGIC)
    assert decompress(new["gzip-0"]) == decompress(new["gzip-3"]) == decompress(new["zstd-19"])
    assert len(new["gzip-3"]) < len(new["gzip-0"]), "--level ignored for gzip"
    assert len(new["zstd-19"]) < len(new["zstd-1"]), "--level ignored for zstd"


def test_message_and_created(hand: BuiltImage, hand_runs: dict[str, tuple[Run, Path]]) -> None:
    inp = read_image(hand.path, "latest")
    for k in ("message", "epoch", "flag-beats-epoch", "now"):
        ok(hand_runs[k][0])
    msg = read_image(hand_runs["message"][1])
    check_new_image(inp, msg, 0, comment="flattened for release")
    check_new_image(inp, read_image(hand_runs["epoch"][1]), 0, comment=f"create new from {inp.image_id}",
                    created="2009-02-13T23:31:30Z")
    check_new_image(inp, read_image(hand_runs["flag-beats-epoch"][1]), 0, comment=f"create new from {inp.image_id}",
                    created="2020-02-02T02:02:02Z")
    now = read_image(hand_runs["now"][1]).config["created"]
    t = datetime.fromisoformat(now.replace("Z", "+00:00"))
    started = float(hand_runs["now"][0].stdout)
    assert started - 1 <= t.timestamp() <= time.time() + 1, now
    assert t.tzinfo is not None and t.utcoffset() == UTC.utcoffset(None)


def test_report_counts_dropped_files(hand: BuiltImage, hand_runs: dict[str, tuple[Run, Path]]) -> None:
    """L2 adds a, b, c; L3 deletes a and b and overwrites c: 3 files, A+B+C bytes hidden."""
    inp = read_image(hand.path, "latest")
    tars = [decompress(b) for b in inp.layers]
    dropped = {"scratch": (3, A_SIZE + B_SIZE + C_SIZE), "from2": (3, A_SIZE + B_SIZE + C_SIZE)}
    keep = {"scratch": 0, "from2": 1}
    for cut, (files, nbytes) in dropped.items():
        r, path = hand_runs[f"report-{cut}"]
        rep = ok(r).json()
        out = read_image(path)
        assert (rep["files_dropped"], rep["bytes_dropped"]) == (files, nbytes), (cut, rep)
        assert rep["layers_before"] == 3 and rep["layers_after"] == keep[cut] + 1 == len(out.layers)
        assert rep["kept_layers"] == keep[cut] and rep["squashed"] is True and rep["dry_run"] is False
        assert rep["bytes_before_uncompressed"] == sum(map(len, tars))
        assert rep["bytes_before_compressed"] == sum(map(len, inp.layers))
        assert rep["bytes_after_compressed"] == sum(map(len, out.layers))
        assert rep["bytes_after_uncompressed"] == sum(len(decompress(b)) for b in out.layers)
        assert rep["diff_id"] == out.config["rootfs"]["diff_ids"][-1] == sha(decompress(out.layers[-1]))
        assert rep["manifest"] == sha(out.manifest_raw or b"") and rep["config"] == out.image_id
        assert rep["output"] == str(path) and rep["image"] == "latest"
        # the dry run predicts the same figures, and wrote nothing
        dry = ok(hand_runs[f"dry-{cut}"][0]).json()
        assert dry["dry_run"] is True and dry["manifest"] is None and dry["output"] is None
        for k in ("layers_before", "layers_after", "kept_layers", "files_dropped", "bytes_dropped",
                  "bytes_before_uncompressed", "bytes_before_compressed"):
            assert dry[k] == rep[k], k
        # after = kept tars + the merged tar, sized by the writer's own header rule: exact
        assert dry["bytes_after_uncompressed"] == rep["bytes_after_uncompressed"]


def test_dry_run_writes_nothing(hand: BuiltImage, tmp_path: Path) -> None:
    before = tree_hashes(hand.path)
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    for dest in ("x.tar", "x.oci"):
        r = ok(cli("squash", hand.path, out_dir / dest, "--dry-run", env={"TMPDIR": str(out_dir)}))
        assert "dry run" in r.stderr and "layers" in r.stderr and "3" in r.stderr
        assert r.stdout == b""
    r = ok(cli("squash", hand.path, "-", "--dry-run", "--json", env={"TMPDIR": str(out_dir)}))
    assert json.loads(r.stdout)["dry_run"] is True
    assert list(out_dir.iterdir()) == []
    assert tree_hashes(hand.path) == before


def _manifest_digests(r: Read) -> list[str]:
    assert r.index is not None
    return [e["digest"] for e in r.index["manifests"]]


@pytest.mark.parametrize("cut", ["from3", "top"])
def test_one_layer_above_the_cut_is_squashed_like_moby(cut: str, hand: BuiltImage,
                                                       hand_runs: dict[str, tuple[Run, Path]]) -> None:
    """One layer above the cut (--from-layer 3 or -1 of 3 layers): moby's SquashImage(id, parent) still
    writes that layer again (its diff against the parent) in a new image with the squash history."""
    r, path = hand_runs[f"report-{cut}"]
    rep = ok(r).json()
    inp, out = read_image(hand.path, "latest"), read_image(path)
    check_new_image(inp, out, 2, comment=lambda c: c.startswith(f"merge {inp.image_id} to layer 2 "))
    assert rep["squashed"] is True and not rep["note"]
    assert rep["layers_after"] == rep["layers_before"] == 3 and rep["kept_layers"] == 2
    assert rep["config"] == out.image_id != inp.image_id
    assert _manifest_digests(out) == [rep["manifest"]] != _manifest_digests(inp)
    # the squashed layer's history entry is now empty_layer, and the new entry carries the layer
    assert out.config["history"][-2] == {**inp.config["history"][-1], "empty_layer": True}
    dry = ok(hand_runs[f"dry-{cut}"][0]).json()
    assert dry["squashed"] is True and dry["layers_after"] == 3 and not dry["note"]


def test_one_layer_above_a_parent_image(hand: BuiltImage, tmp_path: Path) -> None:
    """--parent whose layers are all but the top one: the daemon's ``merge <image> to <parent>``."""
    base = hand_layout(tmp_path / "base.oci", drop_layers()[:2])
    ok(cli_here("squash", hand.path, tmp_path / "out.oci", "--parent", f"{base.path}:latest", "--timestamp", TS))
    inp, out, parent = read_image(hand.path, "latest"), read_image(tmp_path / "out.oci"), read_image(base.path)
    assert inp.layers[:2] == parent.layers
    check_new_image(inp, out, 2, comment=f"merge {inp.image_id} to {parent.image_id}")


def test_single_layer_image_is_squashed_to_scratch(tmp_path: Path) -> None:
    """A one-layer image squashed to scratch: a new image ``create new from <id>``, as moby writes."""
    img = hand_layout(tmp_path / "one.oci", [plain_tar([("etc/", None), ("etc/one", b"1\n")])])
    r = ok(cli_here("squash", img.path, tmp_path / "out.oci", "--timestamp", TS))
    assert "nothing to squash" not in r.stderr
    inp, out = read_image(img.path, "latest"), read_image(tmp_path / "out.oci", "latest")
    check_new_image(inp, out, 0, comment=f"create new from {inp.image_id}")
    assert out.config["rootfs"]["diff_ids"] == [sha(decompress(out.layers[0]))]


def test_no_layer_above_the_parent_is_written_unchanged(hand: BuiltImage, tmp_path: Path) -> None:
    """The image as its own parent: nothing to squash, the image copied as it is, with a note."""
    r = ok(cli_here("squash", hand.path, tmp_path / "out.oci", "--parent", "latest", "--timestamp", TS, "--json"))
    rep = r.json()
    inp, out = read_image(hand.path, "latest"), read_image(tmp_path / "out.oci")
    assert rep["squashed"] is False and "nothing to squash: no layers above the cut" in (rep["note"] or "")
    assert rep["layers_after"] == rep["layers_before"] == 3
    assert out.config_raw == inp.config_raw and out.layers == inp.layers
    assert out.manifest_raw == inp.manifest_raw
    assert _manifest_digests(out) == [sha(inp.manifest_raw or b"")] == [rep["manifest"]]


# ------------------------------------------------------------------------------------------ reproducible

def test_reproducible(trap_oci: BuiltImage, trap_docker: BuiltImage, tmp_path: Path) -> None:
    """Same input, flags and time: byte-identical tars, identical layout dirs."""
    jobs: dict[str, tuple[list[str | os.PathLike[str]], dict[str, Any]]] = {}
    for i in (1, 2):
        jobs[f"docker{i}"] = (["squash", trap_oci.path, tmp_path / f"d{i}.tar", "--image", "latest",
                               "--parent", "l2", "--timestamp", TS], {})
        jobs[f"oci{i}"] = (["squash", trap_docker.path, tmp_path / f"o{i}.tar", "--format", "oci", "-c", "zstd"],
                           {"env": {"SOURCE_DATE_EPOCH": TS}})
        jobs[f"dir{i}"] = (["squash", trap_oci.path, tmp_path / f"dir{i}", "--image", "latest", "--timestamp", TS,
                            "--from-layer", "-3"], {})
    # Each run in its own process with its own hash seed: a set's order that leaks into the output
    # differs between processes, never between two runs in one.
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda job: cli(*job[1][0], env={**job[1][1].get("env", {}),
                                                               "PYTHONHASHSEED": job[0][-1]}), jobs.items()))
    for r in done:
        ok(r)
    for a, b in (("d1.tar", "d2.tar"), ("o1.tar", "o2.tar")):
        assert (tmp_path / a).read_bytes() == (tmp_path / b).read_bytes(), f"{a} and {b} differ"
    h1, h2 = tree_hashes(tmp_path / "dir1"), tree_hashes(tmp_path / "dir2")
    assert h1 == h2 and "index.json" in h1 and len([k for k in h1 if k.startswith("blobs/")]) == 5


# ------------------------------------------------------------------------------------------ into the same layout

@pytest.mark.parametrize("tag", [None, "flat"])
def test_squash_into_the_same_layout(tag: str | None, trap_oci: BuiltImage, originals: dict[str, Snapshot],
                                     tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(trap_oci.path, layout, symlinks=True)
    before = tree_hashes(layout)
    index_before = json.loads((layout / "index.json").read_bytes())
    args = ["squash", layout, layout, "--image", "latest", "--parent", "l2", "--timestamp", TS, "--json"]
    rep = ok(cli_here(*args, *(["--tag", tag] if tag else []))).json()
    after = tree_hashes(layout)
    new_tag = tag or "latest-squashed"
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == {"index.json"}, f"old files changed: {changed}"
    added = set(after) - set(before)
    assert added and all(k.startswith("blobs/sha256/") and not k.split("/")[-1].startswith(".") for k in added)
    for k in added:  # content-addressed, complete
        assert sha((layout / k).read_bytes()) == "sha256:" + k.split("/")[-1]
    index = json.loads((layout / "index.json").read_bytes())
    assert index["manifests"][: len(index_before["manifests"])] == index_before["manifests"]
    new = index["manifests"][len(index_before["manifests"]):]
    assert [e["annotations"][REF_NAME] for e in new] == [new_tag] and new[0]["digest"] == rep["manifest"]
    inp, out = read_image(trap_oci.path, "latest"), read_image(layout, new_tag)
    check_new_image(inp, out, 2, comment=f"merge {inp.image_id} to {read_image(trap_oci.path, 'l2').image_id}")
    assert read_image(layout, "latest").manifest_raw == inp.manifest_raw
    snaps = [unpack_snapshot(f"{layout}:{t}", tmp_path) for t in ("latest", new_tag)]
    for s in snaps:
        assert compare(originals["hand"], s) == []


# ------------------------------------------------------------------------------------------ real loaders

@pytest.mark.parametrize("cid", ["oci-docker-scratch", "containerd-docker-from2", "docker-ocitar-diffid",
                                 "oci-ocidir-parent", "umoci-stdout-from-2"])
def test_skopeo_accepts(cid: str, matrix: dict[str, tuple[Done, Snapshot | Exception]], tmp_path: Path) -> None:
    d, _ = matrix[cid]
    ok(d.run)
    out = read_image(d.out_path)
    transport = {"docker": "docker-archive", "oci": "oci-archive", "oci-dir": "oci"}[out.kind]
    ref = f"{transport}:{d.out_path}"
    info = json.loads(skopeo("inspect", ref).stdout)
    assert info["Layers"] == [sha(b) for b in out.layers] or out.kind == "docker"
    assert len(info["Layers"]) == d.case.keep + 1
    cfg = json.loads(skopeo("inspect", "--config", ref).stdout)
    assert cfg["rootfs"]["diff_ids"] == out.config["rootfs"]["diff_ids"]
    skopeo("copy", "-q", ref, f"oci:{tmp_path / 'copy'}:x")
    skopeo("copy", "-q", ref, f"docker-archive:{tmp_path / 'copy.tar'}:x/y:z")


def podman_problem() -> str | None:
    return None if shutil.which("podman") else "podman not installed"


@pytest.mark.parametrize("cid", ["oci-docker-scratch", "containerd-docker-from2", "umoci-stdout-from-2"])
def test_podman_loads_docker_tar(cid: str, matrix: dict[str, tuple[Done, Snapshot | Exception]],
                                 request: pytest.FixtureRequest) -> None:
    """podman pull docker-archive: applies every layer and checks each diff ID: the nearest docker load."""
    problem = podman_problem()
    if problem:
        skip_or_fail(problem)
    d, _ = matrix[cid]
    ok(d.run)
    out = read_image(d.out_path)
    store = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))  # podman wants a runroot under 50 chars
    request.addfinalizer(lambda: shutil.rmtree(store, ignore_errors=True))
    base = ["podman", "--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs"]
    p = subprocess.run([*base, "pull", "-q", f"docker-archive:{d.out_path}"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    image_id = p.stdout.strip().splitlines()[-1]
    assert "sha256:" + image_id == out.image_id
    p = subprocess.run([*base, "image", "inspect", image_id], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)[0]
    assert info["RootFS"]["Layers"] == out.config["rootfs"]["diff_ids"]
    assert info["Config"].get("Cmd") == ["/bin/tool"] and info["Config"].get("WorkingDir") == "/app"


# ------------------------------------------------------------------------------------------ bad input

def _tar_entry(name: str, type_: bytes = tarfile.REGTYPE, data: bytes = b"", linkname: str = "") -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.linkname = type_, 0o644, 1700000000, linkname
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    return ti.tobuf(tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512)


def raw_layer(*entries: bytes) -> bytes:
    return b"".join(entries) + b"\0" * 1024


BASE_LAYER = plain_tar([("app/", None), ("app/x", b"x\n"), ("app/y", b"y\n")])


@dataclass(frozen=True)
class Bad:
    layers: tuple[bytes, ...] = ()
    args: tuple[str, ...] = ()
    rc: int = 1
    words: tuple[str, ...] = ()  # what the error line must mention
    wrong_diff_id: bool = False
    out: str = "out.tar"


BAD = {
    "parent-not-prefix": Bad(args=("--parent", "@other"), words=("parent", "prefix")),
    "from-layer-out-of-range": Bad(args=("--from-layer", "9"), rc=2, words=("--from-layer", "9")),
    "from-layer-zero": Bad(args=("--from-layer", "0"), rc=2, words=("--from-layer",)),
    "from-layer-too-low": Bad(args=("--from-layer", "-4"), rc=2, words=("--from-layer",), out="out.oci"),
    "from-layer-unknown-digest": Bad(args=("--from-layer", "sha256:" + "ab" * 32), rc=2, words=("abab",)),
    "parent-and-from-layer": Bad(args=("--parent", "@other", "--from-layer", "2"), rc=2,
                                 words=("--parent", "--from-layer")),
    "entry-escapes-root": Bad(layers=(raw_layer(_tar_entry("../x", data=b"evil\n")),), words=("..",)),
    "entry-escapes-deep": Bad(layers=(raw_layer(_tar_entry("app/../../etc/x", data=b"evil\n")),), words=("..",),
                              out="out.oci"),
    "whiteout-dot": Bad(layers=(raw_layer(_tar_entry("app/.wh..")),), words=(".wh.",)),
    "whiteout-dotdot": Bad(layers=(raw_layer(_tar_entry("app/.wh...")),), words=(".wh.",), out="out.oci"),
    "hardlink-to-nothing": Bad(layers=(raw_layer(_tar_entry("app/l", tarfile.LNKTYPE, linkname="nowhere/f")),),
                               words=("nowhere/f",)),
    "wrong-diff-id": Bad(wrong_diff_id=True, words=("diff ID",)),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Run, Path, Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("bad")
    other = hand_layout(root / "other.oci", [plain_tar([("other", b"not a prefix\n")])])

    def one(name: str, b: Bad) -> tuple[Run, Path, Path, dict[str, str]]:
        top = b.layers or (plain_tar([("app/", None), ("app/z", b"z\n")]),)
        layers = [BASE_LAYER, plain_tar([("app/", None), ("app/y", b"y2\n")]), *top]
        diff_ids = [sha(x) for x in layers]
        if b.wrong_diff_id:
            diff_ids[1] = sha(layers[1] + b"\0" * 512)  # the blob is fine; the config lies about its tar
        img = hand_layout(root / f"{name}.oci", layers, diff_ids=diff_ids)
        outdir = root / f"{name}-out"
        outdir.mkdir()
        args = [str(other.path) + ":latest" if a == "@other" else a for a in b.args]
        before = tree_hashes(img.path)
        r = cli("squash", img.path, outdir / b.out, *args, "--timestamp", TS, env={"TMPDIR": str(outdir)})
        return r, img.path, outdir, before

    with ThreadPoolExecutor(2) as pool:
        futs = {k: pool.submit(one, k, b) for k, b in BAD.items()}
        return {k: f.result() for k, f in futs.items()}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_one_clean_error(name: str, bad_runs: dict[str, tuple[Run, Path, Path, dict[str, str]]]) -> None:
    r, img, outdir, before = bad_runs[name]
    b = BAD[name]
    assert r.rc == b.rc, f"exit {r.rc}, expected {b.rc}:\n{r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert all(ln.startswith(("error:", "hint:")) for ln in lines), r.stderr
    for w in b.words:
        assert w.lower() in errors[0].lower(), f"{w!r} not in {errors[0]!r}"
    assert r.stdout == b""
    assert list(outdir.iterdir()) == [], "output or temporary files left behind"
    assert tree_hashes(img) == before, "input changed"


def test_bad_input_cases_are_good_without_the_fault(tmp_path: Path) -> None:
    """The same image without the bad layer squashes fine: the failures above come from the fault."""
    layers = [BASE_LAYER, plain_tar([("app/", None), ("app/y", b"y2\n")]),
              plain_tar([("app/", None), ("app/z", b"z\n")])]
    img = hand_layout(tmp_path / "good.oci", layers)
    ok(cli_here("squash", img.path, tmp_path / "out.tar", "--from-layer", "2", "--timestamp", TS))
    inp, out = read_image(img.path, "latest"), read_image(tmp_path / "out.tar")
    check_new_image(inp, out, 1, comment=lambda c: c.startswith("merge "))


SAMPLE_TAR = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar.zst"])
def test_compressed_tarball_output_by_name(suffix: str, tmp_path: Path, require_tools: None) -> None:
    # OUT.tar.gz / OUT.tar.zst: the whole docker tarball compressed, as `docker save | gzip` gives.
    out = tmp_path / f"out{suffix}"
    ok(cli_here(str(SAMPLE_TAR), str(out), "--timestamp", "0"))
    data = out.read_bytes()
    if suffix == ".tar.zst":
        assert data[:4] == b"\x28\xb5\x2f\xfd"
        plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True).read()
    else:
        assert data[:2] == b"\x1f\x8b"
        plain = gzip.decompress(data)
    (tmp_path / "plain.tar").write_bytes(plain)
    # the same bytes as the uncompressed output, and a docker archive skopeo reads
    ok(cli_here(str(SAMPLE_TAR), str(tmp_path / "ref.tar"), "--timestamp", "0"))
    assert plain == (tmp_path / "ref.tar").read_bytes()
    skopeo("--insecure-policy", "inspect", f"docker-archive:{tmp_path / 'plain.tar'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "plain.tar", "ref.tar"])
    listed = ok(cli_here("images", str(out), "-q"))
    assert listed.stdout.strip()


# ------------------------------------------------------------------------------------- one read

@pytest.mark.parametrize("fmt", ["oci-dir", "docker"])
def test_a_wrong_guess_of_the_one_read_merge_costs_nothing(fmt: str, tmp_path: Path) -> None:
    """The top layer names app/c twice. The one-read merge keeps the first body as it passes and
    learns from the second that it was wrong: the merged layer must hold the second body only, and
    the output nothing but the blobs its image names."""
    l1 = plain_tar([("app/", None), ("app/a", b"a" * 1000)])
    l2 = plain_tar([("app/c", b"first " * 300), ("app/c", b"second"), ("app/d", b"d")])
    img = hand_layout(tmp_path / "dup.oci", [l1, l2])
    out = tmp_path / ("out.oci" if fmt == "oci-dir" else "out.tar")
    r = ok(cli_here("squash", img.path, out, "--format", fmt, "--timestamp", TS, "--json"))
    result = read_image(out)
    assert len(result.layers) == 1
    with tarfile.open(fileobj=io.BytesIO(decompress(result.layers[0]))) as merged:
        assert [m.name for m in merged if m.isreg()] == ["app/a", "app/c", "app/d"]
        assert merged.extractfile("app/c").read() == b"second"  # type: ignore[union-attr]
    assert r.json()["diff_id"] == sha(decompress(result.layers[0]))
    wanted = {sha(result.config_raw)[7:], sha(result.layers[0])[7:]}
    if result.manifest_raw is not None:
        wanted.add(sha(result.manifest_raw)[7:])
    if fmt == "oci-dir":
        blobs = [p.name for p in (out / "blobs" / "sha256").iterdir()]
    else:
        with tarfile.open(out) as t:
            names = t.getnames()
        assert len(names) == len(set(names))
        blobs = [n.rpartition("/")[2] for n in names if n.startswith("blobs/")]
    assert sorted(blobs) == sorted(wanted)
    orig, squashed = (unpack_snapshot(ref, tmp_path) for ref in (img.path, out))
    assert compare(orig, squashed) == []


@pytest.mark.parametrize("cut", [[], ["--from-layer", "2"]])
def test_directory_and_root_mtimes_survive_the_squash(cut: list[str], tmp_path: Path) -> None:
    """Unpacking a layer changes a directory's mtime when an entry is made in it; every directory's
    own entry (written before its contents) must leave it as unpacking the original gives, the root's
    included, which no layer here names."""
    l1 = plain_tar([("etc/", None), ("etc/base", b"base\n")])
    l2 = plain_tar([("app/", None), ("app/sub/", None), ("app/sub/a", b"a" * 700), ("top", b"t")])
    l3 = plain_tar([("app/", None), ("app/sub/", None), ("app/sub/b", b"b"), ("etc/", None), ("etc/.wh.base", b"")])
    img = hand_layout(tmp_path / "in.oci", [l1, l2, l3])
    out = tmp_path / "out.oci"
    ok(cli_here("squash", img.path, out, *cut, "--tag", "latest", "--timestamp", TS))

    def mtimes(ref: Path) -> dict[str, int]:
        rootfs = unpack(f"{ref}:latest", tmp_path / f"bundle-{ref.name}")
        return {str(p.relative_to(rootfs)): p.lstat().st_mtime_ns for p in [rootfs, *rootfs.rglob("*")]
                if p.is_dir() and not p.is_symlink()}

    before, after = mtimes(img.path), mtimes(out)
    assert set(before) == {".", "app", "app/sub", "etc"}
    assert after == before
