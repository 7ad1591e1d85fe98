"""The ``--format`` template parser: linear time on pathological strings, same result as before on every input.

The parser once matched actions with the regular expression ``_OLD_ACTION`` below, which backtracks
cubically over a ``{{`` followed by a run of spaces and no ``}}`` (a 2 KB string took 47 s). It is kept here
as the model the scanner must agree with.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from listing_inputs import Img, layer_tar, write_oci

from ocisquash import goformat
from ocisquash.errors import UsageError

FIELDS = ["ID", "Size", "Tag"]
_OLD_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def model_split(source: str) -> list[tuple[str, bool, str, bool]] | None:
    """The old regex's view of ``source``: (text before, ``{{-``, body, ``-}}``) per action; None if a
    ``{{`` is left unclosed."""
    out = []
    pos = 0
    for m in _OLD_ACTION.finditer(source):
        out.append((source[pos:m.start()], bool(m.group(1)), m.group(2), bool(m.group(3))))
        pos = m.end()
    return None if "{{" in source[pos:] else out


def new_split(source: str) -> list[tuple[str, bool, str, bool]] | None:
    out = []
    pos = 0
    try:
        for start, end, left, body, right in goformat._actions(source, source):
            out.append((source[pos:start], left, body, right))
            pos = end
    except UsageError:
        return None
    return out


PIECES = st.sampled_from(["{{", "}}", "{", "}", "-", " ", "\t", "\n", ".ID", ".Tag", "json", ".", "x", "é"])


@settings(max_examples=600, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
def test_scanner_agrees_with_the_old_regex(source: str) -> None:
    assert new_split(source) == model_split(source)


def outcome(fmt: str) -> object:
    try:
        return goformat.parse(fmt, FIELDS, default_table="table {{.ID}}")
    except UsageError as e:
        return ("error", str(e))


def old_parse(fmt: str) -> object:
    """The parse before the scanner: the same code with the regex's matches."""
    saved = goformat._actions

    def regex_actions(source: str, f: str) -> Iterator[tuple[int, int, bool, str, bool]]:
        pos = 0
        for m in _OLD_ACTION.finditer(source):
            yield m.start(), m.end(), bool(m.group(1)), m.group(2), bool(m.group(3))
            pos = m.end()
        if "{{" in source[pos:]:
            raise UsageError(f"--format {f!r}: unclosed action '{{{{'")

    goformat._actions = regex_actions  # type: ignore[assignment]
    try:
        return outcome(fmt)
    finally:
        goformat._actions = saved  # type: ignore[assignment]


@pytest.mark.parametrize("fmt", [
    "{{.ID}}:{{ .Tag }}", "{{json .Tag}}", "{{json .}}", "json", "{{.ID}}  {{- .Size -}}  !", r"{{.ID}}\n{{.Size}}",
    r"table {{.ID}}\t{{.Size}}", "table", "{{-.ID-}}", "{{--}}", "{{ - }}", "{{{.ID}}}", "{{.ID}}}}", "a{{",
    "{{.Nope}}", "{{range .}}{{end}}", "{{.ID | upper}}", "{{", "{{json}}", "{{}}", "x {{- .ID}} {{.Tag -}} y",
])
def test_templates_parse_as_before(fmt: str) -> None:
    new, old = outcome(fmt), old_parse(fmt)
    if isinstance(old, tuple):
        assert isinstance(new, tuple) and new[0] == "error"
        # the same reason (what follows the quoted format, which the new message may shorten)
        assert new[1].rsplit("': ", 1)[-1] == old[1].rsplit("': ", 1)[-1], (new, old)
    else:
        assert new == old


def shapes(n: int) -> dict[str, str]:
    """Strings of about ``n`` characters shaped to make a backtracking action regex slow."""
    return {
        "open-then-spaces": "{{" + " " * (n - 2),
        "open-spaces-then-text": "{{" + " " * (n - 3) + "x",
        "many-opens": "{{" * (n // 2),
        "opens-and-spaces": "{{ " * (n // 3),
        "dashes-and-spaces": "{{-" + " -" * (n // 2 - 2),
        "braces": "{" * n,
        "closes": "}}" * (n // 2),
        "tabs-escaped": "{{" + "\\t" * (n // 2 - 1),
        "quotes-backslashes": "{{json \"" + "\\\"" * (n // 2 - 5) + "}}",
        "nearly-closed": "{{ .ID }" * (n // 8),
        "many-actions": "{{.ID}}" * (n // 7),
    }


@pytest.mark.parametrize("size", [4096, 65536])
def test_pathological_formats_are_fast(size: int) -> None:
    for name, fmt in shapes(size).items():
        t = time.perf_counter()
        try:
            tmpl = goformat.parse(fmt, FIELDS, default_table="table {{.ID}}")
        except UsageError as e:
            assert "\n" not in str(e) and len(str(e)) < 400, name  # one line, not the whole format echoed
        else:
            goformat.write(tmpl, [{"ID": "i", "Size": "s", "Tag": "t"}], {}, lambda line: None)
        assert time.perf_counter() - t < 2.0, (name, size)


def test_pathological_format_through_the_cli(tmp_path: Path) -> None:
    """A 64 KB unclosed action given to ``images``: a usage error (exit 2) in seconds, not minutes."""
    layout = write_oci(tmp_path / "l", [Img(["app:1"], "2023-01-01T00:00:00Z", [layer_tar({"a": b"a"})])])
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ocisquash", "images", str(layout), "--format",
                        "{{" + " " * 65534], capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - t < 10
    assert r.returncode == 2
    assert "unclosed action" in r.stderr
    assert r.stdout == ""
