"""Option values out of range or not text: a usage error naming the option, no traceback, no output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz import images as I
from untrusted import (
    assert_clean_error,
    cli,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
)


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "99999999999999999999"])
def test_timestamp_out_of_range(tmp_path: Path, ts: str) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    assert_clean_error(cli("squash", p, tmp_path / "o.tar", "-t", "x:1", "--timestamp", ts), "--timestamp", rc=2)


@pytest.mark.parametrize("value", ["1" + "0" * 20, str(1 << 63)])
def test_limit_value_out_of_range(tmp_path: Path, value: str) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    assert_clean_error(cli("images", p, "--limit", f"max_json={value}"), "max_json", rc=2)
    r = cli("images", p, env={"OCISQUASH_MAX_JSON": value})
    assert_clean_error(r, "OCISQUASH_MAX_JSON", rc=2)


def test_message_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    args = [os.fsencode(a) for a in ("squash", str(p), str(tmp_path / "o.tar"), "-t", "x:1", "--message")]
    r = subprocess.run([os.fsencode(sys.executable), b"-m", b"ocisquash", *args, b"caf\xe9"],
                       capture_output=True, timeout=60)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, err
    assert err.startswith("error: ") and "--message" in err and "Traceback" not in err
    assert not (tmp_path / "o.tar").exists()


@pytest.mark.parametrize("n", [238, 300])
def test_repository_name_over_255(tmp_path: Path, n: int) -> None:
    """Docker counts the normalised name: docker.io/library/ (18) + 238 is 256, one too many."""
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    name = "a" * n + ":1"
    assert_clean_error(cli("squash", p, tmp_path / "o.tar", "-t", name), "255", rc=2)
    assert not (tmp_path / "o.tar").exists()


def test_repository_name_of_255_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    r = cli("squash", p, tmp_path / "o.tar", "-t", "a" * 237 + ":1")
    assert r.rc == 0, r.err
