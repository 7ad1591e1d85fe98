"""Helpers of the tests that feed ocisquash untrusted input: the CLI in a child process with a timeout
and its peak RSS, a clean one-line error, the default caps for every test, and images built to lie.

Every ``cli`` case runs the real CLI in a child process with a timeout, so a hang fails the test instead
of hanging the suite, and the child's peak RSS is measured with ``os.wait4`` (its own rusage, not an
estimate). A test module takes ``fresh_limits`` by naming it at module level (it is autouse).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuzz import images as I
from fuzz.harness import read_all

from ocisquash import limits
from ocisquash.sources import open_source

RSS_CAP = 300 << 20  # bytes: the bound for every hostile case (issue 11)


@pytest.fixture(autouse=True)
def fresh_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for k in list(os.environ):
        if k.startswith("OCISQUASH_"):
            monkeypatch.delenv(k)
    limits.reset()
    yield
    limits.reset()


@dataclass
class Run:
    rc: int
    out: str
    err: str
    peak_rss: int  # bytes

    def error(self) -> str:
        return self.err


# The child's own rusage: a vforked child's ru_maxrss starts from the parent's high-water mark (Linux
# records the old mm's peak at exec), so the CLI runs as the grandchild of a small fresh interpreter,
# which reports the peak RSS of the CLI alone.
_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "ocisquash", *sys.argv[2:]])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(ru.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def cli(*args: str | os.PathLike[str] | bytes, timeout: float = 60, stdin: bytes | None = None,
        env: dict[str, str] | None = None) -> Run:
    """Run ``ocisquash ARGS`` as a child; fail (not hang) after ``timeout`` seconds; measure its peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as inp, \
            tempfile.NamedTemporaryFile("r") as rss:
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        e = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
        argv = [os.fsencode(a) if not isinstance(a, bytes) else a for a in args]
        p = subprocess.Popen([os.fsencode(sys.executable), b"-c", _WRAPPER.encode(), rss.name.encode(), *argv],
                             stdout=out, stderr=err, stdin=inp, env=e, start_new_session=True)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            pytest.fail(f"ocisquash {' '.join(map(str, args))} hung (killed after {timeout} s)")
        out.seek(0)
        err.seek(0)
        peak = int(rss.read() or 0)
        return Run(p.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"), peak)


def assert_clean_error(r: Run, phrase: str, rc: int = 1) -> None:
    """Exit ``rc`` with exactly one ``error:`` line naming ``phrase`` (a hint line may follow), no traceback."""
    assert r.rc == rc, (r.rc, r.err[-2000:])
    lines = r.err.strip("\n").split("\n")
    assert lines[0].startswith("error: "), r.err[-2000:]
    assert all(ln.startswith("hint: ") for ln in lines[1:]), r.err[-2000:]
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert phrase in r.err, r.err[-2000:]
    assert "\x1b" not in r.err


def assert_rss(r: Run, what: str) -> None:
    print(f"peak RSS {what}: {r.peak_rss / (1 << 20):.0f} MiB")
    assert r.peak_rss < RSS_CAP, f"{what}: peak RSS {r.peak_rss >> 20} MiB"


def layout_dir(tmp: Path, members: dict[str, bytes] | None = None) -> Path:
    return I.write_dir(I.members_oci() if members is None else members, tmp / "lay")


header = I.raw_header
pax_record = I.pax_record
pad = I.pad


def load_all(path: Path | str) -> int:
    """Open, choose the only image and read every layer to EOF (the convert path)."""
    with open_source(str(path)) as src:
        img = src.choose()
        img.check_consistent()
        return sum(read_all(ly.uncompressed()) for ly in img.layers)


def docker_with_config(tmp_path: Path, mutate: object) -> Path:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    cfg = json.loads(m.pop(item["Config"]))
    raw = mutate(cfg) if callable(mutate) else I.jbytes(cfg)
    if not isinstance(raw, bytes):
        raw = I.jbytes(raw)
    item["Config"] = "blobs/sha256/" + I.sha(raw)[7:]
    m[item["Config"]] = raw
    m["manifest.json"] = I.jbytes([item])
    p = tmp_path / "c.tar"
    p.write_bytes(I.tar_of(m))
    return p


def oci_tar(tmp_path: Path, mutate: Callable[[dict[str, bytes]], None], codec: str = "gzip") -> Path:
    m = I.members_oci(codec=codec)
    mutate(m)
    p = tmp_path / "o.tar"
    p.write_bytes(I.tar_of(m))
    return p


def manifest_of(m: dict[str, bytes]) -> tuple[str, dict]:  # type: ignore[type-arg]
    d = json.loads(m["index.json"])["manifests"][0]["digest"][7:]
    return f"blobs/sha256/{d}", json.loads(m[f"blobs/sha256/{d}"])


def relink(m: dict[str, bytes], man: dict) -> None:  # type: ignore[type-arg]
    raw = I.jbytes(man)
    m[f"blobs/sha256/{I.sha(raw)[7:]}"] = raw
    idx = json.loads(m["index.json"])
    idx["manifests"][0].update(digest=I.sha(raw), size=len(raw))
    m["index.json"] = I.jbytes(idx)


def layer_blob(m: dict[str, bytes], i: int = 0) -> str:
    return "blobs/sha256/" + manifest_of(m)[1]["layers"][i]["digest"][7:]


def swap_layer(m: dict[str, bytes], blob: bytes) -> None:
    """Put ``blob`` in place of layer 0 with a correct descriptor (the diff ID stays the old one)."""
    _, man = manifest_of(m)
    m[f"blobs/sha256/{I.sha(blob)[7:]}"] = blob
    man["layers"][0].update(digest=I.sha(blob), size=len(blob))
    relink(m, man)
