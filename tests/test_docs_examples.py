"""The examples in README.md and docs/commands.md print what the commands print today.

Each ``$ ocisquash ...`` line in a fenced block is run from the project root (through bash, so a
redirection works) and its output (stdout and stderr) compared with the lines below it. Relative times
("3 years ago"), local-time stamps and runs of spaces are normalised: they change with the clock, not
with the code. Examples that write files (under /tmp) are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AGO = re.compile(r"(\d+ (years|months|weeks|days|hours|minutes|seconds)|About an? \w+|Less than a second) ago")
STAMP = re.compile(r'"CreatedAt":"[^"]*"')


def examples() -> list[tuple[str, str, str]]:
    out = []
    for doc in ("README.md", "docs/commands.md"):
        blocks: list[str] = []
        fence: list[str] | None = None
        for line in (ROOT / doc).read_text().splitlines():
            if line.lstrip().startswith("```"):
                if fence is None:
                    fence = []
                else:
                    blocks.append("\n".join(fence) + "\n")
                    fence = None
            elif fence is not None:
                fence.append(line)
        for block in blocks:
            parts = re.split(r"^\$ ", block, flags=re.M)
            for part in parts[1:]:
                cmd, _, expected = part.partition("\n")
                if cmd.startswith("ocisquash ") and "/tmp/" not in cmd:
                    out.append((doc, cmd, expected))
    return out


def norm(text: str) -> str:
    text = STAMP.sub('"CreatedAt":"<time>"', AGO.sub("<ago>", text))
    return "\n".join(re.sub(r" {2,}", "  ", ln.rstrip()) for ln in text.strip("\n").splitlines())


EXAMPLES = examples()


def test_there_are_examples() -> None:
    docs = {d for d, _, _ in EXAMPLES}
    assert docs == {"README.md", "docs/commands.md"} and len(EXAMPLES) >= 15


@pytest.mark.parametrize(("doc", "cmd", "expected"), EXAMPLES, ids=[f"{d}: {c}" for d, c, _ in EXAMPLES])
def test_example_prints_what_the_docs_say(doc: str, cmd: str, expected: str) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("DOCKER_DEFAULT_PLATFORM", None)
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert norm(p.stdout + p.stderr) == norm(expected), f"{doc}: {cmd}"
