"""What users pipe in and what loaders read back (issue 10, items 3-5), through the real CLI.

- A ``.tar`` (or standard output) is a ``docker save`` tarball in the Docker 25+ shape whatever the
  input's form, read by skopeo as ``docker-archive:`` and ``oci-archive:`` and by ``podman load``.
- An input that can be read once (standard input, a FIFO) is read once, by every command, and the
  temporary copy is gone after success, an error and SIGTERM. Every run has a timeout, so a second
  open of a FIFO (which waits for ever for a writer) fails the test instead of hanging it.
- ``--platform`` either finds exactly one image or says why not, in every command that takes it.

Expected values come from the input files themselves (tarfile, json, hashlib), not from ocisquash.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import skip_or_fail
from listing_inputs import write_members
from test_squash import decompress, drop_layers, hand_layout, jbytes, plain_tar, read_image, sha

TS = "1700000000"
HUNG = 60  # seconds: far more than any run here takes; a FIFO opened twice waits for ever


def run(*args: str | os.PathLike[str], data: bytes | None = None, env: dict[str, str] | None = None,
        stdout: Path | None = None, timeout: float = HUNG) -> subprocess.CompletedProcess[bytes]:
    """``python -m ocisquash ARGS``, ``data`` on a pipe as standard input; a hang is a failure."""
    argv = [sys.executable, "-m", "ocisquash", *map(os.fspath, args)]
    e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    e.pop("SOURCE_DATE_EPOCH", None)
    out = open(stdout, "wb") if stdout else subprocess.PIPE  # noqa: SIM115
    try:
        return subprocess.run(argv, input=data, stdin=None if data is not None else subprocess.DEVNULL,
                              stdout=out, stderr=subprocess.PIPE, env=e, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv[3:])} hung for {timeout}s (an input opened twice?)", pytrace=False)
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]


def ok(p: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, f"{' '.join(map(str, p.args[3:]))} exited {p.returncode}:\n{err}"
    assert "Traceback" not in err
    return p


def failed(p: subprocess.CompletedProcess[bytes]) -> str:
    """The one-line error of a run that must fail cleanly."""
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 1, f"exit {p.returncode}, expected 1:\n{err}"
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def feed_fifo(fifo: Path, data: bytes, *, stop_after: int | None = None) -> threading.Thread:
    """Write ``data`` (or its first ``stop_after`` bytes, then hold the pipe open) into ``fifo`` once a
    reader has it open. Opening without blocking: a writer waiting for a reader that never comes
    would hang the test itself."""
    held = threading.Event()

    def write() -> None:
        end = time.monotonic() + HUNG
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or time.monotonic() > end:
                    return
                time.sleep(0.01)
        os.set_blocking(fd, True)
        try:
            view = memoryview(data[:stop_after] if stop_after is not None else data)
            while view:
                view = view[os.write(fd, view):]
            if stop_after is not None:
                held.wait(HUNG)
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)

    t = threading.Thread(target=write, daemon=True)
    t.held = held  # type: ignore[attr-defined]
    t.start()
    return t


def make_fifo(path: Path, data: bytes, **kw: Any) -> Path:
    os.mkfifo(path)
    feed_fifo(path, data, **kw)
    return path


def tar_of_dir(src: Path, out: Path) -> Path:
    """An OCI layout tar: the layout directory's files, as ``skopeo copy … oci-archive:`` would hold them."""
    with tarfile.open(out, "w") as t:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                t.add(p, p.relative_to(src).as_posix())
    return out


def docker_tar(out: Path, images: dict[str, list[bytes]], arch: str = "amd64") -> Path:
    """A ``docker save`` tarball of several images (name:tag -> plain layers), as ``docker save a b`` gives."""
    members: dict[str, bytes] = {}
    items = []
    for i, (tag, layers) in enumerate(images.items()):
        history = [{"created": "2023-01-01T00:00:00Z", "created_by": f"RUN {tag} {n}"} for n in range(len(layers))]
        cfg = jbytes({"architecture": arch, "os": "linux", "created": f"2023-01-0{i + 1}T00:00:00Z",
                      "config": {"Cmd": ["/bin/sh"]}, "history": history,
                      "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}})
        for b in (cfg, *layers):
            members[f"blobs/sha256/{sha(b)[7:]}"] = b
        items.append({"Config": f"blobs/sha256/{sha(cfg)[7:]}", "RepoTags": [tag],
                      "Layers": [f"blobs/sha256/{sha(x)[7:]}" for x in layers]})
    members["manifest.json"] = json.dumps(items).encode()
    return write_members(out, members)


def leftovers(*dirs: Path, keep: tuple[str, ...] = ()) -> list[str]:
    """Files in ``dirs`` other than ``keep``: a temporary copy of an input, or a half-written output."""
    return sorted(f"{d.name}/{n}" for d in dirs for n in os.listdir(d) if n not in keep)


# ------------------------------------------------------------------------------------------ inputs

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("io")


@pytest.fixture(scope="module")
def layout(work: Path) -> Path:
    """An OCI layout dir of three gzip layers (tag ``latest``, linux/amd64)."""
    return hand_layout(work / "app.oci", drop_layers()).path


@pytest.fixture(scope="module")
def oci_tar(layout: Path, work: Path) -> Path:
    return tar_of_dir(layout, work / "app.oci.tar")


@pytest.fixture(scope="module")
def app_and_base(work: Path) -> Path:
    """``docker save app base``: app is base (two layers) plus one more."""
    layers = drop_layers()
    return docker_tar(work / "app-base.tar", {"acme/app:1": layers, "acme/base:1": layers[:2]})


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An output directory and an empty TMPDIR, to look for leftovers in."""
    out, tmp = tmp_path / "out", tmp_path / "tmpdir"
    out.mkdir()
    tmp.mkdir()
    return out, tmp


# ------------------------------------------------------------------------------------------ item 3: .tar is docker save

def check_docker_save_tar(path: Path, tags: list[str]) -> dict[str, Any]:
    """``manifest.json`` (what docker load reads) and the OCI layout (what containerd reads) agree."""
    with tarfile.open(path) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert "manifest.json" in files, f"{path}: no manifest.json, so docker load cannot read it"
    (item,) = json.loads(files["manifest.json"])
    assert set(item) >= {"Config", "RepoTags", "Layers"}
    cfg_raw = files[item["Config"]]
    cfg = json.loads(cfg_raw)
    assert item["RepoTags"] == tags
    assert [sha(decompress(files[n])) for n in item["Layers"]] == cfg["rootfs"]["diff_ids"]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    man = json.loads(files["blobs/sha256/" + entry["digest"][7:]])
    assert man["config"]["digest"] == sha(cfg_raw)
    assert [files["blobs/sha256/" + x["digest"][7:]] for x in man["layers"]] == [files[n] for n in item["Layers"]]
    return cfg


def skopeo_reads(path: Path) -> None:
    if shutil.which("skopeo") is None:
        skip_or_fail("needs skopeo")
    for transport in ("docker-archive", "oci-archive"):
        p = subprocess.run(["skopeo", "inspect", "--config", f"{transport}:{path}"], capture_output=True, timeout=120)
        assert p.returncode == 0, f"skopeo inspect {transport}: {p.stderr.decode()}"
        assert json.loads(p.stdout)["rootfs"]["diff_ids"] == read_image(path).config["rootfs"]["diff_ids"]


@pytest.mark.parametrize("form", ["oci-tar", "oci-dir", "oci-tar-stdin"])
@pytest.mark.parametrize("out_name", ["out.tar", "-"])
def test_squash_tar_output_is_a_docker_save_tarball(form: str, out_name: str, layout: Path, oci_tar: Path,
                                                    tmp_path: Path) -> None:
    src = {"oci-tar": oci_tar, "oci-dir": layout, "oci-tar-stdin": "-"}[form]
    data = oci_tar.read_bytes() if form == "oci-tar-stdin" else None
    out = tmp_path / "out.tar"
    ok(run("squash", src, "-" if out_name == "-" else out, "--tag", "app:squashed", "--timestamp", TS, data=data,
           stdout=out if out_name == "-" else None))
    cfg = check_docker_save_tar(out, ["app:squashed"])
    assert len(cfg["rootfs"]["diff_ids"]) == 1
    skopeo_reads(out)


@pytest.mark.parametrize("form", ["oci-tar", "oci-dir"])
def test_convert_tar_output_is_a_docker_save_tarball(form: str, layout: Path, oci_tar: Path, tmp_path: Path) -> None:
    out = tmp_path / "conv.tar"
    ok(run("convert", oci_tar if form == "oci-tar" else layout, out, "--tag", "app:1"))
    cfg = check_docker_save_tar(out, ["app:1"])
    assert cfg == read_image(layout, "latest").config
    skopeo_reads(out)


@pytest.mark.parametrize("cmd", ["squash", "convert"])
def test_names_of_a_docker25_layout_entry_give_one_image(cmd: str, layout: Path, tmp_path: Path) -> None:
    """An index entry named both ways (``io.containerd.image.name`` and its tag as ref.name, as Docker
    25+ and containerd write) is one name: one index entry and one RepoTag, no --tag needed."""
    src = tmp_path / "named.oci"
    shutil.copytree(layout, src)
    index = json.loads((src / "index.json").read_bytes())
    index["manifests"][0]["annotations"] = {"io.containerd.image.name": "docker.io/acme/app:1.2",
                                            "org.opencontainers.image.ref.name": "1.2"}
    (src / "index.json").write_bytes(jbytes(index))
    out = tmp_path / "out.tar"
    ok(run(cmd, src, out))
    check_docker_save_tar(out, ["acme/app:1.2"])
    skopeo_reads(out)


def test_format_oci_still_gives_a_pure_oci_tar(oci_tar: Path, tmp_path: Path) -> None:
    for cmd in ("squash", "convert"):
        out = tmp_path / f"{cmd}.tar"
        ok(run(cmd, oci_tar, out, "--format", "oci"))
        with tarfile.open(out) as t:
            names = t.getnames()
        assert "index.json" in names and "manifest.json" not in names


def test_podman_loads_the_tar_of_an_oci_input(oci_tar: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if shutil.which("podman") is None:
        skip_or_fail("needs podman")
    out = tmp_path / "out.tar"
    ok(run(oci_tar, out, "--tag", "app:squashed", "--timestamp", TS))
    store = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))  # podman wants a short runroot path
    request.addfinalizer(lambda: shutil.rmtree(store, ignore_errors=True))
    base = ["podman", "--root", str(store / "root"), "--runroot", str(store / "run"), "--storage-driver", "vfs"]
    p = subprocess.run([*base, "load", "-i", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*base, "image", "inspect", "localhost/app:squashed"], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        p = subprocess.run([*base, "image", "inspect", "app:squashed"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)[0]
    assert info["RootFS"]["Layers"] == read_image(out).config["rootfs"]["diff_ids"]
    assert "sha256:" + info["Id"] == read_image(out).image_id


# ------------------------------------------------------------------------------------------ item 4: read once

def test_stdin_with_a_parent_from_the_same_stream(app_and_base: Path, dirs: tuple[Path, Path]) -> None:
    """``docker save app base | ocisquash - - --image app --parent base``: the stream is read once."""
    out_dir, tmp = dirs
    out = out_dir / "out.tar"
    ok(run("squash", "-", "-", "--image", "acme/app:1", "--parent", "acme/base:1", "--timestamp", TS,
           data=app_and_base.read_bytes(), stdout=out, env={"TMPDIR": str(tmp)}))
    app, base, res = read_image(app_and_base, "acme/app:1"), read_image(app_and_base, "acme/base:1"), read_image(out)
    assert res.config["rootfs"]["diff_ids"][:2] == base.config["rootfs"]["diff_ids"]
    assert len(res.layers) == 3 and res.layers[:2] == base.layers
    assert res.config["history"][-1]["comment"] == f"merge {app.image_id} to {base.image_id}"
    assert leftovers(out_dir, tmp, keep=("out.tar",)) == []


@pytest.mark.parametrize("cmd", ["squash", "convert", "images", "history", "analyze", "validate"])
def test_a_fifo_input_is_opened_once(cmd: str, app_and_base: Path, dirs: tuple[Path, Path], tmp_path: Path) -> None:
    out_dir, tmp = dirs
    fifo = make_fifo(tmp_path / "in.fifo", app_and_base.read_bytes())
    args: list[str | os.PathLike[str]] = [cmd, fifo]
    if cmd in ("squash", "convert"):
        args += [out_dir / "out.tar", "--image", "acme/app:1"]
    elif cmd in ("history", "analyze"):
        args += ["--image", "acme/app:1"]
    p = ok(run(*args, env={"TMPDIR": str(tmp)}))
    if cmd == "images":
        assert "acme/app" in p.stdout.decode() and "acme/base" in p.stdout.decode()
    if cmd in ("squash", "convert"):
        assert read_image(out_dir / "out.tar").config["rootfs"]["diff_ids"]
    assert leftovers(out_dir, tmp, keep=("out.tar",)) == []


def test_a_fifo_squash_onto_a_parent_in_it(app_and_base: Path, dirs: tuple[Path, Path], tmp_path: Path) -> None:
    out_dir, tmp = dirs
    fifo = make_fifo(tmp_path / "in.fifo", app_and_base.read_bytes())
    ok(run("squash", fifo, out_dir / "out.tar", "--image", "acme/app:1", "--parent", "acme/base:1",
           env={"TMPDIR": str(tmp)}))
    assert len(read_image(out_dir / "out.tar").layers) == 3
    assert leftovers(out_dir, tmp, keep=("out.tar",)) == []


@pytest.mark.parametrize("fault", ["no-such-image", "spool-cap", "not-a-tar"])
def test_no_temporary_copy_left_after_an_error(fault: str, app_and_base: Path, dirs: tuple[Path, Path]) -> None:
    out_dir, tmp = dirs
    data = b"\x00garbage" * 1000 if fault == "not-a-tar" else app_and_base.read_bytes()
    extra = ["--limit", "max_spool=4096"] if fault == "spool-cap" else []
    image = "nope:1" if fault == "no-such-image" else "acme/app:1"
    err = failed(run("squash", "-", out_dir / "out.tar", "--image", image, *extra, data=data,
                     env={"TMPDIR": str(tmp)}))
    if fault == "spool-cap":
        assert "max_spool" in err and "--limit max_spool=N" in err
    assert leftovers(out_dir, tmp) == []


def _spool_fds(pid: int, where: Path) -> list[str]:
    """What the process holds open under ``where`` named like a spool (an unlinked file reads "… (deleted)")."""
    out = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(f"{where}/.ocisquash-input-"):
                    out.append(target)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_while_reading_a_pipe_leaves_nothing(app_and_base: Path, dirs: tuple[Path, Path],
                                                      tmp_path: Path, sig: signal.Signals) -> None:
    """Half the stream sent, the pipe held open: the copy lies beside the output, already unlinked, so
    even SIGKILL, which no handler sees, leaves nothing behind (a killed run once left 40 GB)."""
    out_dir, tmp = dirs
    data = app_and_base.read_bytes()
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = feed_fifo(fifo, data, stop_after=len(data) // 2)
    e = {**os.environ, "TMPDIR": str(tmp), "NO_COLOR": "1"}
    p = subprocess.Popen([sys.executable, "-m", "ocisquash", "squash", str(fifo), str(out_dir / "out.tar")],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        end = time.monotonic() + HUNG
        while not (held := _spool_fds(p.pid, out_dir)):
            assert p.poll() is None, p.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < end, "no temporary copy appeared beside the output"
            time.sleep(0.02)
        assert all(t.endswith(" (deleted)") for t in held), held
        assert leftovers(out_dir, tmp) == [], "the copy has no name while it is written"
        p.send_signal(sig)
        rc = p.wait(timeout=HUNG)
    finally:
        writer.held.set()  # type: ignore[attr-defined]
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc != 0
    assert "Traceback" not in p.stderr.read().decode()  # type: ignore[union-attr]
    assert leftovers(out_dir, tmp) == []


# ------------------------------------------------------------------------------------------ item 5: --platform

PLATFORM_CMDS = ["squash", "convert", "history", "analyze"]


def _platform_args(cmd: str, src: Path, out_dir: Path) -> list[str | os.PathLike[str]]:
    return [cmd, src, out_dir / "out.tar"] if cmd in ("squash", "convert") else [cmd, src]


@pytest.mark.parametrize("form", ["oci-dir", "docker"])
@pytest.mark.parametrize("cmd", PLATFORM_CMDS)
def test_platform_not_in_a_single_platform_input(cmd: str, form: str, layout: Path, app_and_base: Path,
                                                 dirs: tuple[Path, Path]) -> None:
    """linux/arm64 asked of an amd64-only input: an error naming what is there, and no output."""
    out_dir, _ = dirs
    src = layout if form == "oci-dir" else app_and_base
    extra = ["--image", "acme/app:1"] if form == "docker" else []
    err = failed(run(*_platform_args(cmd, src, out_dir), *extra, "--platform", "linux/arm64"))
    assert "no image for platform linux/arm64" in err and "linux/amd64" in err
    assert leftovers(out_dir) == []
    # the platform it is for is accepted, with or without the variant-less form
    ok(run(*_platform_args(cmd, src, out_dir), *extra, "--platform", "linux/amd64"))


@pytest.fixture(scope="module")
def two_amd64(work: Path) -> Path:
    """One layout, two different linux/amd64 images tagged ``a`` and ``b``."""
    root = work / "two.oci"
    a = hand_layout(work / "a.oci", drop_layers(), tag="a")
    b = hand_layout(work / "b.oci", [plain_tar([("etc/", None), ("etc/b", b"b\n")])], tag="b")
    shutil.copytree(a.path, root)
    for blob in (b.path / "blobs" / "sha256").iterdir():
        shutil.copy(blob, root / "blobs" / "sha256" / blob.name)
    index = json.loads((root / "index.json").read_bytes())
    index["manifests"] += json.loads((b.path / "index.json").read_bytes())["manifests"]
    (root / "index.json").write_bytes(jbytes(index))
    return root


@pytest.mark.parametrize("cmd", PLATFORM_CMDS)
def test_platform_alone_is_ambiguous_among_same_platform_images(cmd: str, two_amd64: Path,
                                                                dirs: tuple[Path, Path]) -> None:
    out_dir, _ = dirs
    err = failed(run(*_platform_args(cmd, two_amd64, out_dir), "--platform", "linux/amd64"))
    assert "2 images for platform linux/amd64" in err and "--image" in err
    assert leftovers(out_dir) == []
    # --image narrows it to one
    p = ok(run(*_platform_args(cmd, two_amd64, out_dir), "--platform", "linux/amd64", "--image", "b"))
    b = read_image(two_amd64, "b")
    if cmd == "history":
        assert p.stdout.decode().count("RUN step") == 1  # b has one layer, a three
    elif cmd == "analyze":
        assert ": 1 layers" in p.stdout.decode()
    elif cmd == "convert":
        assert read_image(out_dir / "out.tar").config == b.config
    else:
        assert read_image(out_dir / "out.tar").config["history"][-1]["comment"] == f"create new from {b.image_id}"


def test_a_terminal_is_not_read_as_input() -> None:
    """``ocisquash images -`` typed at a prompt: a usage error, not a wait for a tarball typed in."""
    master, slave = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "ocisquash", "images", "-"], stdin=slave, capture_output=True,
                           env={**os.environ, "NO_COLOR": "1"}, timeout=HUNG)
    finally:
        os.close(master)
        os.close(slave)
    assert p.returncode == 2 and "from a terminal" in p.stderr.decode()
