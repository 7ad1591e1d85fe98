"""Faults while writing: kills, signals, a full disk, bad destinations, and the input left untouched.

Outputs are written under ``.NAME.ocisquash-*`` beside the destination and renamed in when complete.
SIGTERM and Ctrl-C unwind and remove the temporary; SIGKILL cannot, so a ``.NAME.ocisquash-*`` file
(or, in an existing layout, ``blobs/sha256/.tmp-*``) may be left behind after ``kill -9``. Such
leftovers are never the output: the destination holds the old state or the complete new one, the
names are hidden and never match what a reader looks up, and a later run ignores them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import skip_or_fail
from fuzz import images as I

from ocisquash import limits
from ocisquash.cli import main
from ocisquash.sources import open_source

OLD = b"the previous output, which must survive an interrupted run\n"


@pytest.fixture(autouse=True)
def fresh_limits() -> Iterator[None]:
    limits.reset()
    yield
    limits.reset()


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or the file itself) -> sha256, symlinks by their target."""
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".ocisquash-" in p.name or p.name.startswith("ocisquash-"))


@pytest.fixture(scope="module")
def slow_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docker tar of 12 MiB of word salad: recompressing it with zstd -19 takes several seconds, so a
    test's signal, sent 0.3 s in, arrives first even on a loaded machine (3 MiB once finished first there).

    Not random bytes: zstd passes incompressible blocks through quickly (3 MiB of them took under a
    second on 2 cores), and a quiet machine then finished before the signal was sent."""
    rnd = random.Random(6)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(5000)]

    def text() -> bytes:
        return b" ".join(rnd.choice(words) for _ in range(1 << 20))[: 4 << 20]

    layers = [I.layer_tar({f"blob{i}": text()}) for i in range(3)]
    p = tmp_path_factory.mktemp("faults") / "in.docker.tar"
    p.write_bytes(I.tar_of(I.members_docker(layers)))
    return p


SLOW_ARGS = ["--compression", "zstd", "--level", "19"]


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored SIGINT ignored;
    # restore the default so the child sees Ctrl-C as it would in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ocisquash", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=_default_sigint)


# ``python -m ocisquash`` held inside its first write to the temporary output: it tells the test through
# one pipe, then blocks reading another that the test never writes to, until a signal arrives.
_HELD = """
import os, runpy, sys
from ocisquash.formats import commit
notify, hold = (int(fd) for fd in sys.argv.pop(1).split(","))
write = commit.GuardedWriter.write
def held(self, data):
    global notify
    n = write(self, data)
    if notify >= 0:
        os.write(notify, b"w")
        os.close(notify)
        notify = -1
        os.read(hold, 1)
    return n
commit.GuardedWriter.write = held
runpy.run_module("ocisquash", run_name="__main__", alter_sys=True)
"""


@contextlib.contextmanager
def held_mid_write(*args: str, timeout: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """``ocisquash ARGS``, provably mid-write when the block starts: it has written into its temporary
    output and is blocked there, before the output is complete (the wait for it is bounded by
    ``timeout``). A signal the block sends arrives at that known point, whatever the machine's speed."""
    notify_r, notify_w = os.pipe()
    hold_r, hold_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", _HELD, f"{notify_w},{hold_r}", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_default_sigint,
                            pass_fds=(notify_w, hold_r))
    os.close(notify_w)
    os.close(hold_r)
    try:
        ready, _, _ = select.select([notify_r], [], [], timeout)
        if not ready or os.read(notify_r, 1) != b"w":
            proc.kill()
            proc.wait()
            raise AssertionError(f"no write into the output was reached: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        yield proc
    finally:
        os.close(notify_r)
        os.close(hold_w)  # a process still held sees the end of the pipe and carries on
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_temp(proc: subprocess.Popen[bytes], d: Path, timeout: float = 30) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        names = temps(d)
        if names:
            return names[0]
        if proc.poll() is not None:
            raise AssertionError(f"finished before a temp file was seen: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.005)
    proc.kill()
    raise AssertionError("no temporary output appeared")


@pytest.fixture(scope="module")
def reference_out(slow_input: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The complete output of an uninterrupted run (the output is deterministic)."""
    out = tmp_path_factory.mktemp("ref") / "out.tar"
    subprocess.run([sys.executable, "-m", "ocisquash", "convert", str(slow_input), str(out), *SLOW_ARGS],
                   check=True, capture_output=True)
    return out.read_bytes()


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_old_or_new(slow_input: Path, reference_out: bytes, tmp_path: Path) -> None:
    rnd = random.Random(1234)
    in_before = tree_hashes(slow_input)
    outcomes = set()
    # the first kill lands while the process is held inside a write to its temporary (the old output
    # must then survive); the others at random times, where the old or the complete new one may be found
    for delay in [None, *(rnd.uniform(0.05, 1.0) for _ in range(2))]:
        d = tmp_path / ("held" if delay is None else f"k{delay:.3f}")
        d.mkdir()
        out = d / "out.tar"
        out.write_bytes(OLD)
        args = ("convert", str(slow_input), str(out), *SLOW_ARGS)
        if delay is None:
            with held_mid_write(*args) as proc:
                assert temps(d)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            assert out.read_bytes() == OLD
        else:
            proc = run_cli(*args)
            wait_for_temp(proc, d)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        got = out.read_bytes()
        assert got in (OLD, reference_out), f"after kill -9 at +{delay or 0:.2f}s: a partial output"
        outcomes.add("old" if got == OLD else "new")
        for name in temps(d):  # kill -9 cannot clean up: leftovers are hidden, distinct names
            assert name.startswith(".out.tar.ocisquash-"), name
        # a later run ignores the leftovers and replaces the destination whole
        assert main(["convert", str(slow_input), str(out), *SLOW_ARGS[:2]]) == 0
        with open_source(str(out)) as src:
            assert len(src.choose().layers) == 3
    assert "old" in outcomes
    assert tree_hashes(slow_input) == in_before


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)])
@pytest.mark.parametrize("fmt", ["docker", "oci-dir"])
def test_sigterm_and_ctrl_c_remove_the_temporary(big_input: Path, tmp_path: Path, sig: int, code: int,
                                                 fmt: str) -> None:
    out = tmp_path / ("out.tar" if fmt == "docker" else "layout")
    if fmt == "docker":
        out.write_bytes(OLD)
    with held_mid_write("convert", str(big_input), str(out), "--format", fmt) as proc:
        assert temps(tmp_path)  # mid-write: the temporary is there
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code, proc.stderr.read()  # type: ignore[union-attr]
    assert temps(tmp_path) == []
    if fmt == "docker":
        assert out.read_bytes() == OLD
    else:
        assert not out.exists()
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"ocisquash-out-*{proc.pid}*"))


def test_sigterm_during_squash(tmp_path: Path) -> None:
    rnd = random.Random(7)
    layers = [I.layer_tar({"a": rnd.randbytes(3 << 19)}), I.layer_tar({"b": rnd.randbytes(3 << 19)})]
    src = tmp_path / "src" / "in.tar"
    src.parent.mkdir()
    src.write_bytes(I.tar_of(I.members_docker(layers)))
    before = tree_hashes(src)
    d = tmp_path / "o"
    d.mkdir()
    with held_mid_write("squash", str(src), str(d / "sq.tar")) as proc:
        assert temps(d)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM, proc.stderr.read()  # type: ignore[union-attr]
    assert os.listdir(d) == []
    assert tree_hashes(src) == before


def test_leftover_blob_temp_in_a_layout_is_ignored(tmp_path: Path) -> None:
    """What kill -9 can leave inside an existing layout output: a hidden ``.tmp-*`` blob; harmless."""
    lay = I.write_dir(I.members_oci(), tmp_path / "lay")
    (lay / "blobs" / "sha256" / ".tmp-abc123").write_bytes(b"half a blob")
    src = tmp_path / "in.tar"
    src.write_bytes(I.tar_of(I.members_docker(repo_tag="other/app:2")))
    assert main(["convert", str(src), str(lay)]) == 0
    with open_source(str(lay)) as s:
        assert any(n.endswith("other/app:2") for c in s.candidates for n in c.names)
        for c in s.candidates:
            c.load()


# ------------------------------------------------------------------------------------------ full disk

@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        skip_or_fail("mounting a 1 MiB tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {r.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("big") / "big.docker.tar"
    p.write_bytes(I.tar_of(I.members_docker([I.layer_tar({"big": random.Random(3).randbytes(3 << 20)})])))
    return p


@pytest.mark.parametrize(("cmd", "fmt"), [("convert", "docker"), ("convert", "oci-dir"), ("squash", "oci")])
def test_full_disk_is_one_clear_error(small_fs: Path, big_input: Path, cmd: str, fmt: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = small_fs / "out"
    assert main([cmd, str(big_input), str(out), "--format", fmt]) == 1
    err = capsys.readouterr().err
    assert "cannot write the output: no space left on device" in err, err
    assert "internal error" not in err and len(err.strip().splitlines()) == 2  # the error and its hint
    assert os.listdir(small_fs) == []


def test_read_only_fs(tmp_path: Path, big_input: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0:
        skip_or_fail("mounting a read-only tmpfs needs root")
    d = tmp_path / "ro"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)]).returncode != 0:
        skip_or_fail("cannot mount a tmpfs here")
    try:
        for fmt in ("docker", "oci-dir"):
            assert main(["convert", str(big_input), str(d / "out"), "--format", fmt]) == 1
            assert "out: cannot write the output: read-only file system" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_unwritable_dir(tmp_path: Path, big_input: Path) -> None:
    """EACCES: root ignores directory modes, so as root run the CLI without CAP_DAC_OVERRIDE."""
    d = tmp_path / "locked"
    d.mkdir(mode=0o555)
    pre = []
    if os.geteuid() == 0:
        pre = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
        if subprocess.run(["setpriv", *pre[1:], "true"], capture_output=True).returncode != 0:
            skip_or_fail("setpriv cannot drop CAP_DAC_OVERRIDE here, and root writes anywhere")
    r = subprocess.run([*pre, sys.executable, "-m", "ocisquash", "convert", str(big_input), str(d / "o.tar")],
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "o.tar: cannot write the output: permission denied" in r.stderr
    assert os.listdir(d) == []


# ------------------------------------------------------------------------------------------ bad destinations

def test_missing_parent(tmp_path: Path, big_input: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("docker", "oci-dir"):
        assert main(["convert", str(big_input), str(tmp_path / "no" / "such" / "out"), "--format", fmt]) == 1
        assert "does not exist" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


def test_destination_symlink_is_refused(tmp_path: Path, big_input: Path, capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(OLD)
    for name, fmt in (("link.tar", "docker"), ("linkdir", "oci-dir")):
        link = tmp_path / name
        link.symlink_to(victim)
        assert main(["convert", str(big_input), str(link), "--format", fmt]) == 1
        assert "is a symlink; refusing to write through it" in capsys.readouterr().err
        assert link.is_symlink() and victim.read_bytes() == OLD
    dangling = tmp_path / "dangling.tar"
    dangling.symlink_to(tmp_path / "created-through-link")
    assert main(["convert", str(big_input), str(dangling)]) == 1
    assert not (tmp_path / "created-through-link").exists()


def test_existing_layout_with_symlinked_blobs_is_refused(tmp_path: Path, big_input: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lay = I.write_dir({"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                       "index.json": b'{"schemaVersion":2,"manifests":[]}'}, tmp_path / "lay")
    (lay / "blobs").symlink_to(elsewhere)
    assert main(["convert", str(big_input), str(lay)]) == 1
    assert "blobs: is a symlink; refusing to write through it" in capsys.readouterr().err
    assert os.listdir(elsewhere) == []


def test_tar_destination_that_is_a_directory(tmp_path: Path, big_input: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.tar").mkdir()
    assert main(["convert", str(big_input), str(tmp_path / "d.tar"), "--format", "docker"]) == 1
    assert "is a directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the input

def test_input_untouched_and_same_layout_update_only_adds(tmp_path: Path) -> None:
    lay = I.write_dir(I.members_oci(), tmp_path / "lay")
    before = tree_hashes(lay)
    tar = tmp_path / "in.tar"
    tar.write_bytes(I.tar_of(I.members_docker()))
    tar_before = tree_hashes(tar)
    assert main(["squash", str(lay), str(lay)]) == 0
    after = tree_hashes(lay)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == {"index.json"}  # every old blob byte-identical, only the index replaced
    assert not [k for k in after if ".ocisquash-" in k or "/.tmp-" in k]
    with open_source(str(lay)) as s:
        names = sorted(n for c in s.candidates for n in c.names)
        assert names == ["latest", "latest-squashed"]
        for c in s.candidates:
            c.load()
    assert main(["convert", str(tar), str(tmp_path / "o.tar")]) == 0
    assert main(["squash", str(tar), str(tmp_path / "s.tar")]) == 0
    assert tree_hashes(tar) == tar_before
