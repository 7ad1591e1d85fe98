"""What ocisquash prints cannot drive the terminal: control characters escaped, markup shown as text."""

from __future__ import annotations

import json
from pathlib import Path

from fuzz import images as I
from untrusted import (
    cli,
    docker_with_config,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
)

NASTY = "a\nb\x1b[31mred\x1b]0;title\x07\x9bc\r"


def _one_line_no_controls(text: str) -> None:
    for line in text.splitlines():
        assert "\x1b" not in line and "\x07" not in line and "\x9b" not in line and "\r" not in line, repr(line)


def test_control_characters_in_an_error(tmp_path: Path) -> None:
    p = tmp_path / "in.tar"
    p.write_bytes(I.tar_of(I.members_docker()))
    r = cli("squash", p, tmp_path / "o.tar", "--image", NASTY)
    assert r.rc == 1
    assert r.err.startswith("error: ")
    assert len([ln for ln in r.err.splitlines() if not ln.startswith("hint: ")]) == 1, r.err
    _one_line_no_controls(r.err)
    assert "\\x1b" in r.err


def test_control_characters_in_names_and_history(tmp_path: Path) -> None:
    def hist(cfg: dict) -> bytes:  # type: ignore[type-arg]
        for h in cfg["history"]:
            h["created_by"] = NASTY
            h["comment"] = NASTY
        cfg["config"]["Labels"] = {NASTY: NASTY}
        return I.jbytes(cfg)

    p = docker_with_config(tmp_path, hist)
    for args in (["history", p], ["history", "--no-trunc", p], ["images", p], ["analyze", p]):
        r = cli(*args)
        assert r.rc == 0, r.err
        _one_line_no_controls(r.out)
        assert "\\x1b" in r.out or args[0] in ("images", "analyze")
    member = tmp_path / "m.tar"
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    m["manifest.json"] = I.jbytes([{**item, "RepoTags": ["x:" + NASTY]}])
    member.write_bytes(I.tar_of(m))
    r = cli("images", member)
    _one_line_no_controls(r.out + r.err)
    for args, key in ((["--json"], "tag"), (["--format", "json"], "Tag"), (["--format", "{{json .}}"], "Tag")):
        r = cli("images", *args, member)
        assert r.rc == 0
        assert "\x9b" not in r.out and "\x1b" not in r.out
        assert json.loads(r.out.splitlines()[0])[key].endswith("\x9bc\r")


def test_markup_in_names_is_not_interpreted(tmp_path: Path) -> None:
    m = I.members_docker()
    item = json.loads(m["manifest.json"])[0]
    m["manifest.json"] = I.jbytes([{**item, "RepoTags": ["x:[bold]y"]}])
    p = tmp_path / "m.tar"
    p.write_bytes(I.tar_of(m))
    r = cli("images", p)
    assert "[bold]y" in r.out, r.out
