"""``heap.tune``: the CLI keeps freed buffers for reuse, so a squash stops refaulting fresh pages.

The check is the effect, counted by the kernel: the same squash, run through the CLI in a child, takes
far fewer minor page faults with the tuning than with it skipped (a ``MALLOC_*`` variable in the
environment, the user's own setting, turns it off), and writes the same bytes.
"""

from __future__ import annotations

import os
import random
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import check_tools
from fixtures import LayerBuilder, build_oci

from ocisquash import heap

# glibc's own no-op value: perturbation off, as by default
SKIP = {"MALLOC_PERTURB_": "0"}


def test_tune_applies_on_glibc_and_leaves_a_users_settings_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(k)
    assert heap.tune() is (sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.tune() is False


def _layer(seed: int, files: int) -> LayerBuilder:
    rng = random.Random(seed)
    words = [rng.randbytes(12) for _ in range(256)] + [b"the ", b"and ", b"data "] * 40
    b = LayerBuilder()
    for i in range(files):
        b.file(f"data/{seed}/f{i}", b"".join(rng.choices(words, k=(3 << 20) // 8)))
    return b


def _faults(args: list[str], env: dict[str, str]) -> int:
    """Minor page faults of ``ocisquash ARGS`` in a child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    p = subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=300,
                       env={**{k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}, **env})
    assert p.returncode == 0, p.stderr
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before


def _squash(image: Path, out: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """Minor page faults of streaming ``image`` through a squash (those of starting up and opening the
    image, ``images``, taken off), and the output."""
    start = _faults(["images", str(image)], env)
    run = _faults(["squash", str(image), str(out), "-q", "--format", "oci-archive", "--timestamp", "0"], env)
    return run - start, out.read_bytes()


def test_a_tuned_squash_takes_fewer_page_faults_and_writes_the_same_bytes(tmp_path: Path) -> None:
    check_tools()
    image = build_oci(tmp_path / "in", "latest", [_layer(s, 12) for s in range(4)]).path  # 150 MB of files
    tuned, a = _squash(image, tmp_path / "a.tar", {})
    untuned, b = _squash(image, tmp_path / "b.tar", SKIP)
    assert a == b
    assert tuned * 2 < untuned, (tuned, untuned)
