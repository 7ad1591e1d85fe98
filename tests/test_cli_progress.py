"""Progress that informs: bytes done of total, throughput and time left, on stderr, only on a terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tty80 import on_terminal

from ocisquash.cli.common import progress_text

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"


def test_progress_figures() -> None:
    assert progress_text("bytes", 12_300_000, 45_600_000, 8_100_000) == "12.3MB / 45.6MB  8.1MB/s  ETA 0:04"
    assert progress_text("bytes", 45_600_000, 45_600_000, 8_100_000) == "45.6MB / 45.6MB  8.1MB/s"
    assert progress_text("bytes", 3_000_000_000, 9_000_000_000, 1_000_000) == "3GB / 9GB  1MB/s  ETA 1:40:00"
    assert progress_text("bytes", 5_000, None, 1_000) == "5kB  1kB/s"  # no total known: no ETA
    assert progress_text("bytes", 0, None, None) == ""
    assert progress_text("items", 3, 7, 0.5) == "3/7"


def test_validate_squash_convert_show_bytes_of_total_on_a_terminal(tmp_path: Path) -> None:
    out, rc = on_terminal("validate", str(SAMPLE))
    assert rc == 0, out
    assert "validating" in out and "62.3kB / 62.3kB" in out  # the blobs manifest.json names, read once each
    out, rc = on_terminal(str(SAMPLE), str(tmp_path / "a.tar"))
    assert rc == 0, out
    assert "squashing" in out and "61.4kB / 61.4kB" in out
    for args in ([str(tmp_path / "c.tar"), "--compression", "zstd"], [str(tmp_path / "c-oci")]):
        out, rc = on_terminal("convert", str(SAMPLE), *args)  # recompressed, or copied: each blob read once
        assert rc == 0, out
        assert "61.4kB / 61.4kB" in out
    out, rc = on_terminal("validate", str(SAMPLE), "-q")
    assert rc == 0 and "validating" not in out and "kB / " not in out


def test_no_progress_when_piped(tmp_path: Path) -> None:
    for args in (["validate", str(SAMPLE)], [str(SAMPLE), str(tmp_path / "b.tar")]):
        p = subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert " / " not in p.stderr and "\x1b[" not in p.stderr and "\r" not in p.stderr
