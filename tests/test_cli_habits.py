"""Command-line habits: typos, click's usage errors as one line, global flags anywhere, -V, completion,
--level without --compression, one meaning for -f, exit codes documented. All through the real command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
README = Path(__file__).resolve().parent.parent / "README.md"


def sub(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, **(env or {})}
    e.pop("FORCE_COLOR", None)
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=e)


def one_error(p: subprocess.CompletedProcess[str], code: int) -> list[str]:
    """The error and hint lines, after checking the exit code and that nothing else was printed."""
    assert p.returncode == code, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0].startswith("error: ") and all(ln.startswith("hint: ") for ln in lines[1:]), p.stderr
    assert len(lines) <= 2 and "Traceback" not in p.stderr and "Usage:" not in p.stderr
    return lines


def test_mistyped_command_suggests_the_command(tmp_path: Path) -> None:
    lines = one_error(sub("imags", "x.tar", cwd=tmp_path), 2)
    assert lines[0] == "error: no such command 'imags' — did you mean 'images'?"
    assert one_error(sub("histroy", cwd=tmp_path), 2)[0].endswith("did you mean 'history'?")
    (tmp_path / "imags").write_bytes(SAMPLE.read_bytes())  # a file of that name is an input, not a typo
    p = sub("imags", "out.tar", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize(("args", "message", "hint"), [
    (["images"], "error: missing argument 'PATH'", "hint: see 'ocisquash images --help'"),
    (["images", "x", "--digets"], "error: no such option: --digets", "hint: see 'ocisquash images --help'"),
    (["--bogus"], "error: no such option: --bogus", "hint: see 'ocisquash --help'"),
    (["analyze", "x", "--top", "many"], "error: invalid value for '--top'", "hint: see 'ocisquash analyze --help'"),
])
def test_click_usage_errors_are_one_line_and_a_hint(args: list[str], message: str, hint: str) -> None:
    lines = one_error(sub(*args), 2)
    assert lines[0].startswith(message) and lines[1] == hint


def test_debug_and_quiet_before_or_after_the_command(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.tar")
    for args in (["--debug", "images", missing], ["images", missing, "--debug"], ["images", "--debug", missing]):
        p = sub(*args)
        assert p.returncode == 1 and "Traceback" in p.stderr, args
    for args in (["-q", "images", str(SAMPLE)], ["images", str(SAMPLE), "-q"]):
        p = sub(*args)
        assert (p.returncode, p.stdout) == (0, "e7b1df641d63\n"), args
    p = sub("-q", str(SAMPLE), str(tmp_path / "o.tar"))  # before the implicit squash command too
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    p = sub("images", "--", "--debug")  # after --, --debug is a file name
    assert p.returncode == 1 and "Traceback" not in p.stderr and "--debug" in p.stderr


def test_version_short_and_long() -> None:
    for flag in ("-V", "--version"):
        p = sub(flag)
        assert p.returncode == 0 and p.stdout.startswith("ocisquash 0.")


def test_bash_completion_completes_commands_and_options() -> None:
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to test its completion")
    p = sub("completion", "bash")
    assert p.returncode == 0 and "_OCISQUASH_COMPLETE" in p.stdout
    bindir = str(Path(sys.executable).parent)
    shim = Path(bindir) / "ocisquash"
    if not shim.exists():
        pytest.fail(f"{shim} is missing: install the project (make venv)")
    script = (p.stdout + "\nCOMP_WORDS=(ocisquash ima); COMP_CWORD=1; _ocisquash_completion ocisquash;"
              ' echo "${COMPREPLY[@]}"; COMP_WORDS=(ocisquash images --dig); COMP_CWORD=2;'
              ' _ocisquash_completion ocisquash; echo "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")})
    assert r.stdout.splitlines() == ["images", "--digests"], r.stderr
    for shell in ("zsh", "fish"):
        assert sub("completion", shell).returncode == 0
    assert one_error(sub("completion", "tcsh"), 2)[0] == "error: no completion for shell 'tcsh'"


@pytest.mark.parametrize("cmd", ["squash", "convert"])
def test_level_needs_compression(cmd: str, tmp_path: Path) -> None:
    out = tmp_path / "o.tar"
    lines = one_error(sub(cmd, str(SAMPLE), str(out), "--level", "1"), 2)
    assert "--level needs --compression" in lines[0]
    assert not out.exists()
    assert sub(cmd, str(SAMPLE), str(out), "--level", "1", "--compression", "gzip", "-q").returncode == 0


@pytest.mark.parametrize("cmd", ["squash", "convert"])
def test_f_means_filter_or_nothing(cmd: str, tmp_path: Path) -> None:
    lines = one_error(sub(cmd, str(SAMPLE), str(tmp_path / "o.tar"), "-f", "docker"), 2)
    assert lines[0] == "error: no such option: -f"


def test_exit_codes_documented() -> None:
    helptext = sub("--help").stdout
    readme = README.read_text()
    for text in (helptext, readme):
        for code, word in (("70", "internal error"), ("130", "interrupted"), ("2", "usage error")):
            assert code in text and word in text
    p = sub(str(SAMPLE), "/dev/null/x.tar", env={"OCISQUASH_DEBUG": "0"})
    assert p.returncode == 1  # an unwritable output is an operation that failed, not a bug


def test_a_bug_exits_70_with_one_line_and_the_report_hint() -> None:
    code = ("import sys; import ocisquash.listing.images as l\n"
            "def boom(*a, **k): raise ZeroDivisionError('simulated bug')\n"
            "l.summarize = boom\n"
            "from ocisquash.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "images", str(SAMPLE)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 70
    assert p.stderr.splitlines() == ["error: internal error: ZeroDivisionError: simulated bug",
                                     "hint: this is a bug in ocisquash; run again with --debug and report the "
                                     "traceback"]
