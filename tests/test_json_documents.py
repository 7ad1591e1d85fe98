"""JSON documents with values no parser should choke on: deep nesting, lone surrogates, sizes out of range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz import images as I
from untrusted import (
    assert_clean_error,
    cli,
    docker_with_config,
    fresh_limits,  # noqa: F401  (an autouse fixture: each test starts from the default caps)
    layout_dir,
)


def test_deeply_nested_config(tmp_path: Path) -> None:
    def nest(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg["deep"] = None
        return I.jbytes(cfg).replace(b'"deep":null', b'"deep":' + b"[" * 800 + b"]" * 800)

    p = docker_with_config(tmp_path, nest)
    for args in (["squash", p, tmp_path / "o.tar", "-t", "x:1"], ["images", p], ["history", p]):
        assert_clean_error(cli(*args), "nested")


def test_lone_surrogate_in_a_label(tmp_path: Path) -> None:
    def label(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg["config"]["Labels"] = {"a": "SURR"}
        return I.jbytes(cfg).replace(b"SURR", b"\\ud800")

    p = docker_with_config(tmp_path, label)
    for args in (["squash", p, tmp_path / "o.tar", "-t", "x:1"], ["images", p, "--format", "json"]):
        assert_clean_error(cli(*args), "surrogate")
    r = cli("validate", p)  # validate reports it as a finding, and goes on
    assert r.rc == 1 and "lone surrogate (\\ud800)" in r.out and "Traceback" not in r.err, r.out + r.err


def test_valid_surrogate_pair_is_fine(tmp_path: Path) -> None:
    def label(cfg: dict) -> bytes:  # type: ignore[type-arg]
        cfg["config"]["Labels"] = {"a": "SURR"}
        return I.jbytes(cfg).replace(b"SURR", b"\\ud83d\\ude00")

    p = docker_with_config(tmp_path, label)
    r = cli("images", p, "--format", "json")
    assert r.rc == 0, r.err


@pytest.mark.parametrize("size", ["1" + "0" * 400, str(1 << 63), "-1"])
def test_layer_size_out_of_range(tmp_path: Path, size: str) -> None:
    m = I.members_oci()
    idx = json.loads(m["index.json"])
    man = m.pop("blobs/sha256/" + idx["manifests"][0]["digest"][7:])
    obj = json.loads(man)
    obj["layers"][0]["size"] = 12345
    mb = I.jbytes(obj).replace(b"12345", size.encode())
    m["blobs/sha256/" + I.sha(mb)[7:]] = mb
    idx["manifests"][0].update(digest=I.sha(mb), size=len(mb))
    m["index.json"] = I.jbytes(idx)
    lay = layout_dir(tmp_path, m)
    for args in (["images", "-s", lay], ["history", lay]):
        assert_clean_error(cli(*args), "size")
