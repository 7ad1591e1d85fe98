"""Output safety: nothing the user has is lost, and writing an output never hangs.

- OUT that resolves to an input (same path, hardlink, symlink, a path inside an input layout) is
  refused with exit 2 before anything is read or written; OUT == the input layout directory adds to it.
- Two writers of one layout run one after the other (``index.json.lock``): no tag is lost.
- A blob already in the output layout is relied on only if its size and digest are right.
- A name never takes another repository's entry that has the same tag.
- A failed write into an existing layout removes the blobs it added, and only those.
- A FIFO, socket or device where a layout has a file is a clear error, never a blocking ``open()``.

Every child runs with a timeout that fails the test instead of hanging the suite.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
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
from ocisquash.formats.commit import LOCK_NAME
from ocisquash.formats.ocilayout import OciDirSink

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
TIMEOUT = 60


@pytest.fixture(autouse=True)
def fresh_limits() -> Iterator[None]:
    limits.reset()
    yield
    limits.reset()


def run(*args: str | os.PathLike[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "ocisquash", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ocisquash {' '.join(map(str, args))} hung for {timeout}s", pytrace=False)


def error_of(r: subprocess.CompletedProcess[str]) -> str:
    """The one error line (a hint line may follow); never a traceback."""
    lines = r.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), r.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every entry under ``root`` (or the file itself): bytes of files, targets of symlinks, dirs by name."""
    if not root.is_dir():
        return {".": root.read_bytes()}
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (b"-> " + os.readlink(p).encode()) if p.is_symlink() else p.read_bytes() if p.is_file() else b"/"
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def two_image_tar(path: Path) -> Path:
    """A docker tar holding ``a:1`` (three layers) and ``b:1`` (one layer)."""
    m1 = I.members_docker(repo_tag="a:1")
    m2 = I.members_docker(layers=[I.layer_tar({"b": b"only in b\n"})], repo_tag="b:1")
    items = json.loads(m1["manifest.json"]) + json.loads(m2["manifest.json"])
    path.write_bytes(I.tar_of({**m1, **m2, "manifest.json": json.dumps(items).encode()}))
    return path


def index_names(layout: Path) -> list[tuple[str | None, str | None]]:
    idx = json.loads((layout / "index.json").read_bytes())
    return [((e.get("annotations") or {}).get(CONTAINERD_NAME), (e.get("annotations") or {}).get(REF_NAME))
            for e in idx["manifests"]]


def blobs(layout: Path) -> list[str]:
    return sorted(os.listdir(layout / "blobs" / "sha256"))


def assert_blobs_whole(layout: Path) -> None:
    for name in blobs(layout):
        assert sha((layout / "blobs" / "sha256" / name).read_bytes()) == name, f"blob {name} is not its digest"


@pytest.fixture
def two_tar(tmp_path: Path) -> Path:
    return two_image_tar(tmp_path / "two.tar")


@pytest.fixture
def layout(tmp_path: Path, two_tar: Path) -> Path:
    """An OCI layout directory holding ``a:1``."""
    lay = tmp_path / "lay"
    r = run("convert", two_tar, lay, "--image", "a:1", "-q")
    assert r.returncode == 0, r.stderr
    return lay


# ------------------------------------------------------------------------------------------ OUT is IN

def test_out_is_in_squash_same_path(two_tar: Path) -> None:
    before = two_tar.read_bytes()
    r = run(two_tar, two_tar, "--image", "a:1")
    assert r.returncode == 2
    assert "is the input IN" in error_of(r)
    assert two_tar.read_bytes() == before
    assert sorted(p.name for p in two_tar.parent.iterdir()) == ["two.tar"], "a temporary was left"


@pytest.mark.parametrize("command", ["squash", "convert"])
@pytest.mark.parametrize("alias", ["hardlink", "symlink", "dotdot", "symlinked-dir"])
def test_out_is_another_name_for_in(command: str, alias: str, two_tar: Path, tmp_path: Path) -> None:
    before = two_tar.read_bytes()
    if alias == "hardlink":
        out = tmp_path / "hard.tar"
        os.link(two_tar, out)
    elif alias == "symlink":
        out = tmp_path / "soft.tar"
        out.symlink_to(two_tar)
    elif alias == "dotdot":
        (tmp_path / "sub").mkdir()
        out = tmp_path / "sub" / ".." / "two.tar"
    else:
        (tmp_path / "alias").symlink_to(tmp_path)
        out = tmp_path / "alias" / "two.tar"
    r = run(command, two_tar, out, "--image", "a:1")
    assert r.returncode == 2, r.stderr
    assert "is the input IN" in error_of(r)
    assert two_tar.read_bytes() == before


def test_standard_streams_that_are_the_input(two_tar: Path, tmp_path: Path) -> None:
    """``ocisquash - app.tar < app.tar`` and ``ocisquash app.tar - >> app.tar``: the same file, through a
    standard stream. A pipe is never an input's file."""
    before = two_tar.read_bytes()
    cmd = [sys.executable, "-m", "ocisquash"]
    with open(two_tar, "rb") as stdin:
        r = subprocess.run([*cmd, "-", str(two_tar), "--image", "a:1"], stdin=stdin, capture_output=True,
                           text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and "is the input IN (standard input)" in error_of(r)
    with open(two_tar, "ab") as stdout:
        r = subprocess.run([*cmd, "convert", str(two_tar), "-", "--image", "a:1"], stdout=stdout,
                           stderr=subprocess.PIPE, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "standard output: is the input IN" in error_of(r)
    assert two_tar.read_bytes() == before
    r = subprocess.run([*cmd, "-", str(tmp_path / "o.tar"), "--image", "a:1", "-q"], input=before,
                       capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("command", ["squash", "convert"])
@pytest.mark.parametrize("inside", ["new.tar", "index.json", "blob", "blobs/sha256", "sub/new-layout"])
def test_out_inside_the_input_layout(command: str, inside: str, layout: Path) -> None:
    before = tree_bytes(layout)
    target = layout / ("blobs/sha256/" + blobs(layout)[0] if inside == "blob" else inside)
    r = run(command, layout, target, "--format", "oci" if inside != "sub/new-layout" else "oci-dir")
    assert r.returncode == 2, r.stderr
    assert "is inside the input layout IN" in error_of(r)
    assert tree_bytes(layout) == before


def test_parent_file_as_out(two_tar: Path, tmp_path: Path) -> None:
    """``--parent FILE:REF`` is an input too: OUT may not be it (here through a hardlink)."""
    parent = tmp_path / "parent.tar"
    parent.write_bytes(I.tar_of(I.members_docker(layers=I.default_layers()[:1], repo_tag="base:1")))
    before = parent.read_bytes()
    os.link(parent, tmp_path / "out.tar")
    r = run("squash", two_tar, tmp_path / "out.tar", "--image", "a:1", "--parent", f"{parent}:base:1")
    assert r.returncode == 2, r.stderr
    assert "is the input --parent" in error_of(r)
    assert parent.read_bytes() == before
    r = run("squash", two_tar, parent, "--image", "a:1", "--parent", str(parent))
    assert r.returncode == 2 and "is the input --parent" in error_of(r)
    assert parent.read_bytes() == before
    # a separate OUT works, and the parent's layer is kept
    r = run("squash", two_tar, tmp_path / "ok.tar", "--image", "a:1", "--parent", f"{parent}:base:1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kept_layers"] == 1


def test_out_is_the_input_layout_adds_to_it(layout: Path) -> None:
    """The documented exception: OUT == the input layout directory adds the image beside the original."""
    before = tree_bytes(layout)
    r = run("squash", layout, layout, "-t", "flat", "--timestamp", "0")
    assert r.returncode == 0, r.stderr
    after = tree_bytes(layout)
    assert {k: v for k, v in after.items() if k in before and k != "index.json"} == \
        {k: v for k, v in before.items() if k != "index.json"}
    assert index_names(layout) == [("docker.io/library/a:1", "1"), (None, "flat")]


# ------------------------------------------------------------------------------------------ two writers

def run_together(argvs: list[list[str]], what: str) -> None:
    """``ocisquash ARGV`` for each of ``argvs``, all started at once; each must succeed, none may hang."""
    procs = [subprocess.Popen([sys.executable, "-m", "ocisquash", *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) for argv in argvs]
    for p in procs:
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{what} hung", pytrace=False)
        assert p.returncode == 0, err


def test_two_writers_one_layout_lose_no_tag(layout: Path, two_tar: Path) -> None:
    """20 rounds of two writers started together into one layout: every tag of every round is there."""
    want = {("docker.io/library/a:1", "1")}
    for i in range(20):
        run_together([["convert", str(two_tar), str(layout), "--image", img, "-t", tag, "-q"]
                      for img, tag in (("a:1", f"x:one-{i}"), ("b:1", f"y:two-{i}"))], f"round {i}: a writer")
        want |= {(f"docker.io/library/x:one-{i}", f"one-{i}"), (f"docker.io/library/y:two-{i}", f"two-{i}")}
        names = index_names(layout)
        assert set(names) == want, f"round {i}: lost {want - set(names)}"
        assert len(names) == len(want)
    assert sorted(os.listdir(layout)) == ["blobs", "index.json", "oci-layout"], "lock or temporary left behind"
    assert_blobs_whole(layout)
    r = run("validate", layout)
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_squashes_into_their_own_layout(layout: Path) -> None:
    """Two squashes of a layout into itself at once (IN == OUT for both): both results are kept."""
    for i in range(3):
        run_together([["squash", str(layout), str(layout), "--image", "a:1", "-t", f"{t}{i}", "-q", "--timestamp",
                       str(i)] for t in ("left", "right")], f"round {i}: a squash")
    refs = sorted(r for _, r in index_names(layout))
    assert refs == ["1", *sorted(f"{t}{i}" for t in ("left", "right") for i in range(3))]
    assert_blobs_whole(layout)


def test_writer_waits_for_the_lock(layout: Path, two_tar: Path, tmp_path: Path) -> None:
    lock_path = layout / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        p = subprocess.Popen([sys.executable, "-m", "ocisquash", "convert", str(two_tar), str(layout), "--image", "b:1",
                              "-t", "waited:1", "-q"], stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while b"waiting for another writer" not in err_path.read_bytes():
            assert p.poll() is None, f"finished without waiting for the lock: {err_path.read_text()}"
            assert time.monotonic() < deadline, "never said it was waiting"
            time.sleep(0.05)
        time.sleep(0.3)
        assert p.poll() is None, "went on while another writer held the lock"
        assert ("docker.io/library/waited:1", "1") not in index_names(layout)
    finally:
        os.close(fd)  # releases the lock (the name stays: the waiter takes this very file)
    try:
        assert p.wait(timeout=TIMEOUT) == 0, err_path.read_text()
    except subprocess.TimeoutExpired:
        p.kill()
        pytest.fail("the writer did not finish after the lock was released", pytrace=False)
    assert ("docker.io/library/waited:1", "1") in index_names(layout)
    assert not lock_path.exists(), "the lock file was left behind"


def test_stale_lock_file_does_not_block(layout: Path, two_tar: Path) -> None:
    """A lock file left by a writer killed with SIGKILL (the kernel dropped its lock) is taken and removed."""
    (layout / LOCK_NAME).write_bytes(b"")
    r = run("convert", two_tar, layout, "--image", "b:1", "-t", "after-kill:1", timeout=30)
    assert r.returncode == 0, r.stderr
    assert "waiting" not in r.stderr
    assert ("docker.io/library/after-kill:1", "1") in index_names(layout)
    assert not (layout / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ existing blobs

@pytest.mark.parametrize("junk", ["same-size", "other-size", "symlink"])
def test_existing_junk_blob_is_replaced(junk: str, two_tar: Path, tmp_path: Path) -> None:
    """The output layout holds junk under digests this run writes: each is checked and rewritten."""
    lay = tmp_path / "out"
    r = run("convert", two_tar, lay, "--image", "b:1", "-q")
    assert r.returncode == 0, r.stderr
    members = I.members_docker(repo_tag="a:1")
    targets = [n.rsplit("/", 1)[1] for n in members if n.startswith("blobs/")]  # a:1's layers and config
    assert len(targets) == 4
    for name in targets:
        p = lay / "blobs" / "sha256" / name
        size = len(members[f"blobs/sha256/{name}"])
        if junk == "same-size":
            p.write_bytes(b"J" * size)
        elif junk == "other-size":
            p.write_bytes(b"junk")
        else:
            (tmp_path / "elsewhere").write_bytes(b"J" * size)
            p.symlink_to(tmp_path / "elsewhere")
    r = run("convert", two_tar, lay, "--image", "a:1", "-q")
    assert r.returncode == 0, r.stderr
    assert_blobs_whole(lay)
    for name in targets:
        assert not (lay / "blobs" / "sha256" / name).is_symlink()
    r = run("validate", lay)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("squash", lay, tmp_path / "again.tar", "--image", "a:1")
    assert r.returncode == 0, r.stderr


def test_existing_good_blob_is_kept_in_place(layout: Path, two_tar: Path) -> None:
    """A blob that is right is relied on, not rewritten (its inode stays)."""
    inodes = {n: (layout / "blobs" / "sha256" / n).stat().st_ino for n in blobs(layout)}
    r = run("convert", two_tar, layout, "--image", "a:1", "-t", "again:1", "-q")
    assert r.returncode == 0, r.stderr
    assert {n: (layout / "blobs" / "sha256" / n).stat().st_ino for n in blobs(layout)} == inodes


# ------------------------------------------------------------------------------------------ naming

def test_same_tag_other_repository_is_kept(layout: Path, two_tar: Path, tmp_path: Path) -> None:
    r = run("convert", two_tar, layout, "--image", "b:1", "-t", "h2/a:1", "-q")
    assert r.returncode == 0, r.stderr
    r = run("squash", two_tar, layout, "--image", "a:1", "-t", "h2/b:1", "-q", "--timestamp", "0", "--json")
    assert r.returncode == 0, r.stderr
    squashed = json.loads(r.stdout)["manifest"]
    assert index_names(layout) == [("docker.io/library/a:1", "1"), ("docker.io/h2/a:1", "1"),
                                   ("docker.io/h2/b:1", "1")]
    # each is selectable by its full name, and is the image written under it
    digests = {}
    for name in ("h2/a:1", "h2/b:1", "a:1"):
        r = run("convert", layout, tmp_path / f"{name.replace('/', '_')}.tar", "--image", name, "--json")
        assert r.returncode == 0, r.stderr
        digests[name] = json.loads(r.stdout)["manifest"]
        assert json.loads(r.stdout)["tags"] == ["docker.io/" + ("library/" if "/" not in name else "") + name]
    assert digests["h2/b:1"] == squashed
    assert len(set(digests.values())) == 3
    # `images` lists all three under their full names, no bare "1" row
    r = run("images", layout, "--json")
    assert r.returncode == 0, r.stderr
    rows = sorted((o["repository"], o["tag"]) for o in map(json.loads, r.stdout.splitlines()))
    assert rows == [("a", "1"), ("h2/a", "1"), ("h2/b", "1")]
    # the bare tag names three images: ambiguous, and the error lists them
    r = run("convert", layout, tmp_path / "x.tar", "--image", "1")
    assert r.returncode == 1
    line = error_of(r)
    assert "matches 3 images" in line and "docker.io/h2/a:1" in r.stderr and "docker.io/h2/b:1" in r.stderr
    # a name takes its own entry only: h2/a:1 again moves that one tag
    r = run("convert", two_tar, layout, "--image", "a:1", "-t", "h2/a:1", "-q")
    assert r.returncode == 0, r.stderr
    assert sorted(index_names(layout)) == [("docker.io/h2/a:1", "1"), ("docker.io/h2/b:1", "1"),
                                           ("docker.io/library/a:1", "1")]


def test_bare_and_verbatim_names(layout: Path, two_tar: Path) -> None:
    """A bare layout tag takes only a bare entry of that tag; skopeo's verbatim ``app:1`` ref.name is the
    full name ``docker.io/library/app:1``."""
    idx = json.loads((layout / "index.json").read_bytes())
    entry = idx["manifests"][0]
    idx["manifests"] += [dict(entry, annotations={REF_NAME: "flat"}), dict(entry, annotations={REF_NAME: "app:1"})]
    (layout / "index.json").write_text(json.dumps(idx))
    r = run("squash", layout, layout, "--image", "a:1", "-t", "flat", "-t", "app:1", "-q", "--timestamp", "0")
    assert r.returncode == 0, r.stderr
    assert index_names(layout) == [("docker.io/library/a:1", "1"), (None, "flat"), ("docker.io/library/app:1", "1")]


def test_output_names_are_the_full_names(layout: Path, two_tar: Path, tmp_path: Path) -> None:
    """An image named ``docker.io/library/a:1`` with ref.name ``1`` carries one name into an output, not two."""
    r = run("convert", layout, tmp_path / "o.tar", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tags"] == ["docker.io/library/a:1"]


def test_skopeo_with_a_shared_ref_name(layout: Path, two_tar: Path, require_tools: None) -> None:
    """What skopeo does with two entries sharing ref.name ``1``: ``oci:DIR:1`` takes the first in index
    order, so it keeps naming the image that had the tag first (ocisquash appends new entries)."""
    first = json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"]
    r = run("convert", two_tar, layout, "--image", "b:1", "-t", "h2/b:1", "-q")
    assert r.returncode == 0, r.stderr
    second = json.loads((layout / "index.json").read_bytes())["manifests"][1]["digest"]
    assert first != second
    p = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{layout}:1"], capture_output=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert "sha256:" + sha(p.stdout) == first


# ------------------------------------------------------------------------------------------ failed writes

def corrupt_last_layer(tmp_path: Path) -> Path:
    """A docker tar whose first layer is the one the fixture layout already holds, whose second is new,
    and whose last layer's bytes no longer match its digest (found only when it is read)."""
    base = I.default_layers()
    layers = [base[0], I.layer_tar({"new/file": b"new in this image\n"}, dirs=["new"]),
              I.layer_tar({"last/file": b"L" * 4000}, dirs=["last"])]
    members = I.members_docker(layers, repo_tag="broken:1")
    last = f"blobs/sha256/{sha(layers[2])}"
    data = bytearray(members[last])
    data[-2000] ^= 0xFF  # inside the file's contents: the tar still parses
    members[last] = bytes(data)
    p = tmp_path / "broken.tar"
    p.write_bytes(I.tar_of(members))
    return p


@pytest.mark.parametrize("command", [["convert"], ["squash", "--from-layer", "3"], ["squash"]])
def test_failed_write_removes_only_what_it_added(command: list[str], layout: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    broken = corrupt_last_layer(tmp_path)
    before = tree_bytes(layout)
    blobs_before = blobs(layout)
    shared = sha(I.default_layers()[0])
    assert shared in blobs(layout)
    seen: list[list[str]] = []
    real = OciDirSink.put_stream

    def spy(self: OciDirSink, produce):  # type: ignore[no-untyped-def]
        out = real(self, produce)
        seen.append(blobs(layout))
        return out

    monkeypatch.setattr(OciDirSink, "put_stream", spy)
    rc = main([command[0], str(broken), str(layout), *command[1:], "-q"])
    assert rc == 1
    if command != ["squash"]:  # a full squash fails in its only layer, before any blob is complete
        assert any(set(s) - set(blobs_before) for s in seen), "nothing was added before the failure"
    assert tree_bytes(layout) == before, "the failed run left or removed files"
    assert shared in blobs(layout)


def test_broken_index_fails_before_writing(layout: Path, two_tar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An output layout whose index.json is not an index fails when it is opened, before any blob is written."""
    (layout / "index.json").write_bytes(b'{"schemaVersion":2}')
    before = tree_bytes(layout)
    wrote: list[object] = []
    monkeypatch.setattr(OciDirSink, "put_stream", lambda self, produce: wrote.append(produce))
    assert main(["convert", str(two_tar), str(layout), "--image", "b:1", "-q"]) == 1
    assert wrote == []
    assert tree_bytes(layout) == before


def test_failed_write_keeps_a_blob_that_was_there(layout: Path, tmp_path: Path) -> None:
    """A blob the run would have added but that existed already (even unreferenced) stays after a failure."""
    broken = corrupt_last_layer(tmp_path)
    new_layer = I.layer_tar({"new/file": b"new in this image\n"}, dirs=["new"])
    (layout / "blobs" / "sha256" / sha(new_layer)).write_bytes(new_layer)
    before = tree_bytes(layout)
    assert main(["convert", str(broken), str(layout), "-q"]) == 1
    assert tree_bytes(layout) == before


# ------------------------------------------------------------------------------------------ no hangs

def _special(path: Path, kind: str) -> socket.socket | None:
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        return None
    if kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        return s
    assert kind == "device"
    if os.geteuid() != 0:
        skip_or_fail("making a device node needs root")
    os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # a character device (/dev/null's numbers)
    return None


@pytest.mark.parametrize(("where", "kind"), [
    ("index.json", "fifo"), ("index.json", "socket"), ("index.json", "device"), ("oci-layout", "fifo"),
    ("blob", "fifo"), ("blob", "device"), (LOCK_NAME, "fifo"), ("blobs/sha256", "fifo"),
])
def test_special_file_in_the_output_layout(where: str, kind: str, layout: Path, two_tar: Path) -> None:
    """A FIFO, socket or device named as OUT's index.json, oci-layout, lock or a blob it writes: a clear
    error at once (an open() of a FIFO would block for ever), and the layout left as it was."""
    b_layer = I.layer_tar({"b": b"only in b\n"})  # b:1's layer, which this run writes
    target = layout / (f"blobs/sha256/{sha(b_layer)}" if where == "blob" else where)
    if where == "blobs/sha256":
        for n in blobs(layout):
            (target / n).unlink()
        target.rmdir()
    s = _special(target, kind)
    try:
        before = sorted(str(p.relative_to(layout)) for p in layout.rglob("*"))
        t0 = time.monotonic()
        r = run("convert", two_tar, layout, "--image", "b:1", "-t", "c:1", timeout=30)
        assert r.returncode == 1, r.stderr
        line = error_of(r)
        name = {"fifo": "a FIFO", "socket": "a socket", "device": "a character device"}[kind]
        assert f"is {name}, not" in line, line
        assert time.monotonic() - t0 < 30
        assert sorted(str(p.relative_to(layout)) for p in layout.rglob("*")) == before
    finally:
        if s is not None:
            s.close()
