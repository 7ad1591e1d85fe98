"""The merge's hot modules compiled with mypyc (setup.py), and the pure-Python fallback.

CI builds the venv with ``pip install -e`` (``make venv``), which compiles them: these tests make a
silent fallback to the pure-Python modules fail there, and ``make pytest-pure`` runs the merge's
tests again on the pure-Python modules (``OCISQUASH_EXPECT_PURE=1``), which users without a C
compiler get.
"""

from __future__ import annotations

import ast
import importlib
import os
import pickle
import re
import tomllib
from pathlib import Path

import pytest

from ocisquash import merge
from ocisquash.merge.records import HiddenFile, LayerStats, MergeLimits, Meta, WriteStats
from ocisquash.merge.tarread import Hdr

ROOT = Path(__file__).resolve().parent.parent


def hot_modules() -> list[str]:
    """``HOT`` in setup.py, read without running the build."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "HOT":
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple)
            return ["ocisquash." + m.replace("/", ".") for m in value]
    raise AssertionError("setup.py has no HOT")


def compiled(module: str) -> bool:
    path = importlib.import_module(module).__file__
    assert path is not None
    return path.endswith(".so")


def test_the_hot_modules_are_the_merges_and_exist() -> None:
    mods = hot_modules()
    assert "ocisquash.merge.tree" in mods and "ocisquash.merge.tarread" in mods
    # the tar codec the layer reader and writer call for every header runs compiled with them
    assert "ocisquash.tar.header" in mods and "ocisquash.tar.encode" in mods
    for m in mods:
        assert (ROOT / (m.replace(".", "/") + ".py")).is_file(), m


def test_the_merge_runs_compiled_in_ci_and_pure_when_asked() -> None:
    states = {m: compiled(m) for m in hot_modules()}
    assert len(set(states.values())) == 1, f"some hot modules compiled, some not (a stale build?): {states}"
    if os.environ.get("OCISQUASH_EXPECT_PURE"):
        assert not any(states.values()), f"OCISQUASH_EXPECT_PURE is set but compiled modules were imported: {states}"
    elif os.environ.get("CI"):
        # make venv compiles them; a silent fallback (no compiler, no mypy) would hide here otherwise
        assert all(states.values()), f"CI is set but the merge runs pure-Python: {states}"


def test_compiled_modules_are_built_from_the_current_source() -> None:
    # An editable install imports the extension module before the .py beside it: an edit to the .py
    # would not run until the next build (make venv rebuilds when a merge source changes).
    for m in hot_modules():
        mod = importlib.import_module(m)
        assert mod.__file__ is not None
        if mod.__file__.endswith(".so"):
            src = Path(mod.__file__).with_name(m.rsplit(".", 1)[1] + ".py")
            assert os.path.getmtime(mod.__file__) >= os.path.getmtime(src), f"{m}: stale build, run make venv"


def test_mypy_builds_as_the_version_the_tests_pin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    build = [r for r in project["build-system"]["requires"] if r.startswith("mypy")]
    pin = re.search(r"^mypy==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert pin and build == [f"mypy=={pin.group(1)}"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(VENV\)/\.installed: .*setup\.py .*ocisquash/merge/", makefile, re.M)


def test_merge_records_pickle_as_the_workers_send_them() -> None:
    # Worker processes send headers and errors pickled; native classes must round-trip.
    meta = Meta(0o755, 1, 2, "u", "g", "1.5", (("SCHILY.xattr.a", "b"),))
    back = pickle.loads(pickle.dumps(meta, pickle.HIGHEST_PROTOCOL))
    assert back == meta and back is not meta and back.fields() == meta.fields() and hash(back) == hash(meta)
    for obj in (HiddenFile(3, "a/b", 1), LayerStats(1, "l", False, entries=4), WriteStats(5, 6, 7, 1),
                MergeLimits(max_path=9)):
        assert pickle.loads(pickle.dumps(obj)) == obj
    h = Hdr("a", "0", 3, "", meta, (0, 0))
    assert (h.name, h.type, h.size, h.meta) == ("a", "0", 3, meta)


def test_native_records_refuse_unknown_attributes() -> None:
    # What the merge relies on: a misspelt field is an error, compiled or not (slots in pure Python).
    meta = Meta(0o644, 0, 0, "", "", 0, None)
    with pytest.raises(AttributeError):
        meta.nope = 1  # type: ignore[attr-defined]
    assert getattr(meta, "nope", None) is None
    assert merge.LARGEST_HIDDEN == 20
