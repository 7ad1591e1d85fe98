"""The CLI run as a child process, with what the registry-trust tests bound: exit code, output, wall
time and peak RSS.

Peak RSS is read by GNU ``time`` around the child alone: ``getrusage(RUSAGE_CHILDREN)`` from pytest
would count every child of the session, and a child forked from pytest starts with pytest's pages.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TIME = "/usr/bin/time"
MAX_RSS_MB = 150  # issue 19: nothing a registry sends makes a run hold more


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float
    rss_mb: float


def run_cli(*args: str, limit: float = 90.0, env: dict[str, str] | None = None) -> Run:
    """``ocisquash ARGS`` as a child process: its exit code, output, wall time and peak RSS."""
    assert os.path.exists(TIME), f"needs GNU time at {TIME} (apt-get install time)"
    with tempfile.TemporaryDirectory() as d:
        rss = Path(d) / "rss"
        t0 = time.monotonic()
        p = subprocess.run([TIME, "-f", "%M", "-o", str(rss), sys.executable, "-m", "ocisquash", *args],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=limit, check=False,
                           env=env)
        seconds = time.monotonic() - t0
        return Run(p.returncode, p.stdout, p.stderr, seconds, int(rss.read_text().split()[-1]) / 1024)
