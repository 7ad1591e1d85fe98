"""``--platform all`` squashes the platforms at once, and writes what one after another writes.

The same two-platform index (``test_platform_all_auto.layout``) is squashed in this process with one
core (the platforms one after another, as before) and with two (one thread each): an OCI layout directory
(whose blob writes are safe from threads) and an OCI layout tar (one stream: each platform is staged and
appended in order) must hold the same bytes, file for file. A platform that fails fails the run with the
error the sequential run gives (the first failing platform's), and nothing is left at OUT or beside it.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import check_tools
from platforms import platform_manifests
from test_platform_all_auto import AMD, layout
from test_squash import Run, cli_here

import ocisquash.cores
from ocisquash import squash

FORMATS = {"oci-dir": "out", "oci-archive": "out.tar"}


def run(monkeypatch: pytest.MonkeyPatch, cores: int, lay: Path, out: Path, fmt: str) -> tuple[Run, set[str]]:
    """Squash every platform of ``lay:app`` into ``out`` as if the machine had ``cores`` cores; the run and
    the names of the threads that squashed a platform, each with whether it shared the machine (``cores``)."""
    out.parent.mkdir(exist_ok=True)
    threads: set[str] = set()
    one: Callable[..., Any] = squash._squash_one

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.add(f"{threading.current_thread().name} shares={not ocisquash.cores.may_fork()}")
        return one(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ocisquash.cores, "available", lambda: cores)
        m.setattr(squash, "_squash_one", spy)
        r = cli_here("squash", lay, out, "--image", "app", "--platform", "all", "--parent", "auto", "--format", fmt,
                     "--timestamp", "0", "--json", "-q")
    return r, threads


def files(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_cores_write_the_bytes_one_writes(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_tools()
    lay = layout(tmp_path, annotate=True)
    seq, seq_threads = run(monkeypatch, 1, lay, tmp_path / "one" / FORMATS[fmt], fmt)
    par, par_threads = run(monkeypatch, 2, lay, tmp_path / "two" / FORMATS[fmt], fmt)
    assert seq.rc == 0 and par.rc == 0, seq.stderr + par.stderr
    # one after another, a platform has the machine to itself; at once, each shares it
    assert seq_threads == {"MainThread shares=False"}
    assert len(par_threads) == 2 and all(t.startswith("ocisquash-platform") and t.endswith("shares=True")
                                         for t in par_threads)
    a, b = seq.json(), par.json()
    assert a["manifest"] == b["manifest"] and a["manifest"] is not None
    assert [p["manifest"] for p in a["platforms"]] == [p["manifest"] for p in b["platforms"]]
    assert files(tmp_path / "one" / FORMATS[fmt]) == files(tmp_path / "two" / FORMATS[fmt])
    assert [p["kept_layers"] for p in b["platforms"]] == [1, 1]
    # nothing staged is left beside the output
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [FORMATS[fmt]]


@pytest.mark.parametrize("fails", [False, True], ids=["adds", "fails"])
def test_two_cores_add_to_an_existing_layout_as_one_does(fails: bool, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # OUT is a copy of IN: it holds the kept layers already (each thread checks them, none rewrites them)
    # and takes the new blobs and the index under its lock; a failed run leaves it as it was
    check_tools()
    lay = layout(tmp_path, annotate=True)
    if fails:
        corrupt_top_layer(lay, "linux/arm64")
    got = []
    for cores in (1, 2):
        dest = tmp_path / str(cores) / "out"
        shutil.copytree(lay, dest)
        before = files(dest)
        r, _ = run(monkeypatch, cores, lay, dest, "oci-dir")
        assert r.rc == (1 if fails else 0), r.stderr
        after = files(dest)
        assert (after == before) is fails
        assert set(before) <= set(after) and all(after[k] == v for k, v in before.items() if k != "index.json")
        got.append(after)
    assert got[0] == got[1]


def corrupt_top_layer(lay: Path, plat: str) -> str:
    """Flip a byte of ``plat``'s top app layer (same size: only its digest check can tell); its digest."""
    top = platform_manifests(lay, "app")[plat]["layers"][-1]["digest"]
    p = lay / "blobs" / "sha256" / top.split(":", 1)[1]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    return top  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [("linux/arm64",), (AMD, "linux/arm64")], ids=["second", "both"])
def test_a_failing_platform_fails_the_run_as_one_after_another_does(
        fmt: str, bad: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    check_tools()
    lay = layout(tmp_path, annotate=True)
    digests = [corrupt_top_layer(lay, p) for p in bad]
    errors = []
    for cores in (1, 2):
        where = tmp_path / str(cores)
        r, _ = run(monkeypatch, cores, lay, where / FORMATS[fmt], fmt)
        assert r.rc == 1 and "Traceback" not in r.stderr
        errors.append(r.stderr)
        assert list(where.iterdir()) == []  # no output, no temporary, no staged blobs
    assert errors[0] == errors[1]
    assert digests[0].split(":", 1)[1][:12] in errors[0]  # the first failing platform's error
