"""A FIFO, socket or device where a file should be: refused without a blocking read, never a hang."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from fuzz import images as I
from untrusted import (
    assert_clean_error,
    cli,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    layout_dir,
)

SPECIALS = ["fifo", "socket", "chardev"]


def make_special(path: Path, kind: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        short = tempfile.mkdtemp(dir="/tmp")  # AF_UNIX paths are at most 107 bytes: bind short, then move
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(short, "s"))
        s.close()
        os.rename(os.path.join(short, "s"), path)
        os.rmdir(short)
    else:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: never ends


@pytest.mark.parametrize("kind", SPECIALS)
@pytest.mark.parametrize("where", ["oci-layout", "index.json", "manifest", "config", "layer"])
@pytest.mark.parametrize("cmd", ["images", "squash", "validate"])
def test_special_file_in_layout_dir(tmp_path: Path, kind: str, where: str, cmd: str) -> None:
    m = I.members_oci()
    man = json.loads(m["index.json"])["manifests"][0]["digest"][7:]
    man_obj = json.loads(m[f"blobs/sha256/{man}"])
    name = {"oci-layout": "oci-layout", "index.json": "index.json", "manifest": f"blobs/sha256/{man}",
            "config": "blobs/sha256/" + man_obj["config"]["digest"][7:],
            "layer": "blobs/sha256/" + man_obj["layers"][0]["digest"][7:]}[where]
    lay = layout_dir(tmp_path, m)
    make_special(lay / name, kind)
    args = {"images": ["images", lay], "squash": ["squash", lay, tmp_path / "out.tar", "-t", "x:1"],
            "validate": ["validate", lay]}[cmd]
    r = cli(*args, timeout=30)
    what = {"fifo": "a FIFO", "socket": "a socket", "chardev": "a character device"}[kind]
    if cmd == "validate" and r.rc == 1 and not r.err:
        assert what in r.out and "not a regular file" in r.out, r.out  # a finding, reported as a mismatch
    elif cmd == "images" and where == "layer":
        assert r.rc == 0  # listing reads JSON only; the planted layer is never opened
    else:
        assert_clean_error(r, f"{what}, not a regular file")
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("type_", [b"6", b"3", b"4"])
@pytest.mark.parametrize("target", ["manifest.json", "config", "layer"])
def test_special_member_in_outer_tar(tmp_path: Path, type_: bytes, target: str) -> None:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    name = {"manifest.json": "manifest.json", "config": item["Config"], "layer": item["Layers"][0]}[target]
    pairs: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for k, v in m.items():
        ti = tarfile.TarInfo(k)
        ti.mode, ti.mtime = 0o644, I.MTIME
        if k == name:
            ti.type = type_
            pairs.append((ti, None))
        else:
            pairs.append((ti, v))
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(pairs))
    what = {b"6": "FIFO", b"3": "character device", b"4": "block device"}[type_]
    r = cli("squash", p, tmp_path / "out.tar", "-t", "x:1", timeout=30)
    assert_clean_error(r, f"is a {what}, not a regular file")


@pytest.mark.parametrize("cmd", ["images", "validate", "squash"])
def test_device_as_input(tmp_path: Path, cmd: str) -> None:
    dev = tmp_path / "zero"
    make_special(dev, "chardev")
    args = ["squash", dev, tmp_path / "o.tar"] if cmd == "squash" else [cmd, dev]
    assert_clean_error(cli(*args, timeout=30), "is a character device, not an image file")
