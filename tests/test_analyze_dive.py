"""``analyze`` as dive reports it: efficiency and wasted bytes (a duplicated path's copies counted once,
unlike dive before its issue #684), per-layer created_by, ``--ci`` rules, ``--top`` past 20, JSON layers
numbered from 1. Expected figures are worked out by hand from the layers below."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from layertar import d, f, hl, layer, opq, wh
from listing_inputs import Img, layer_tar, write_oci

import ocisquash as ocisquash_api

T1 = "2023-01-01T00:00:00Z"
L1 = layer_tar({"a": b"1" * 100, "b": b"2" * 200, "keep": b"k" * 7, "d/x": b"x" * 40, "d/y": b"y" * 60,
                "o/p": b"p" * 5})
L2 = layer_tar({"a": b"3" * 300, ".wh.b": b"", ".wh.d": b"", "o/.wh..wh..opq": b"", "o/q": b"q" * 9})
L3 = layer_tar({"a": b"4" * 50})
HISTORY = [{"created": T1, "created_by": "ADD rootfs.tar /"},
           {"created": T1, "created_by": "ENV X=1", "empty_layer": True},
           {"created": T1, "created_by": "RUN rm -rf /b /d && make"},
           {"created": T1, "created_by": "RUN make again"}]
# Copies per path: a 100+300+50 (keep 50: waste 400); b 200 + its whiteout 200 (waste 200); d/x 40+40 and
# d/y 60+60 (the whiteout of d deletes both: waste 40 and 60); o/p 5+5 (the opaque o deletes it: 5); keep 7
# and o/q 9 once. All copies: 1076 bytes; smallest copies: 371; user layers (2 and 3) add 309 + 50 bytes.
EFFICIENCY = 371 / 1076
WASTED = 705
USER = 359


def ocisquash(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return write_oci(tmp_path / "an", [Img(["docker.io/acme/an:1"], T1, [L1, L2, L3], gzip=True, history=HISTORY)])


def test_efficiency_and_wasted_bytes_count_each_path_once(image: Path) -> None:
    p = ocisquash("analyze", str(image), "--format", "json")
    assert p.returncode == 0, p.stderr
    o = json.loads(p.stdout)
    assert o["efficiency"] == pytest.approx(EFFICIENCY)
    # here dive's waste is the squash's: each duplicated path's last copy is its smallest
    assert (o["wasted_bytes"], o["dive_wasted_bytes"], o["user_bytes"]) == (WASTED, WASTED, USER)
    assert o["wasted_files"] == 6 and o["dropped_bytes"] == WASTED
    assert o["user_wasted_percent"] == pytest.approx(WASTED / USER)
    assert [(x["path"], x["count"], x["total_bytes"], x["dive_wasted_bytes"]) for x in o["inefficiencies"]] == [
        ("a", 3, 450, 400), ("b", 2, 400, 200), ("d/y", 2, 120, 60), ("d/x", 2, 80, 40), ("o/p", 2, 10, 5)]
    assert [ly["layer"] for ly in o["layers"]] == [1, 2, 3]
    assert [ly["created_by"] for ly in o["layers"]] == ["ADD rootfs.tar /", "RUN rm -rf /b /d && make",
                                                        "RUN make again"]
    assert [ly["tar_size"] for ly in o["layers"]] == [len(L1), len(L2), len(L3)]
    assert json.loads(ocisquash("analyze", str(image), "--json").stdout) == o


def test_table_shows_created_by_and_efficiency(image: Path) -> None:
    p = ocisquash("analyze", str(image))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    header = lines[1]
    assert header.split()[:4] == ["LAYER", "DIGEST", "SIZE", "ADDS"] and "CREATED BY" in header
    col = header.index("CREATED BY")
    assert [ln[col:].split("  ")[0] for ln in lines[2:5]] == ["ADD rootfs.tar /", "RUN rm -rf /b /d && make",
                                                                 "RUN make again"]
    assert "wasted 705B: the 6 hidden files a squash drops, of 771B file contents (66B remain)\n" in p.stdout
    # dive's wasted is the same here, so not repeated; its user wasted passes 100%, and the output says why
    assert f"dive's figures: efficiency {EFFICIENCY:.2%}; user wasted {WASTED / USER:.2%} of 359B\n" in p.stdout
    assert "dive counts every copy of a path, in the first layer too" in p.stdout
    dup = lines[lines.index(next(ln for ln in lines if ln.split()[:3] == ["COUNT", "DIVE", "WASTED"])) + 1:]
    assert dup[0].split() == ["3", "400B", "450B", "a"]


def test_ci_rules_fail_with_one_line_each(image: Path) -> None:
    p = ocisquash("analyze", str(image), "--ci", "-q")
    assert p.returncode == 1 and p.stdout == ""  # --ci -q: the verdict only
    assert p.stderr.splitlines() == [  # dive's defaults: efficiency >= 0.9, user wasted <= 0.1
        f"fail: lowest-efficiency: dive's image efficiency {EFFICIENCY:.4f} is below 0.9",
        f"fail: highest-user-wasted-percent: dive's user wasted {WASTED / USER:.4f} of the user layers' bytes, "
        "more than 0.1"]
    p = ocisquash("analyze", str(image), "--highest-wasted-bytes", "700B", "--lowest-efficiency", "0.3",
                  "--highest-user-wasted-percent", "disabled")  # a rule given means --ci
    assert p.returncode == 1
    assert p.stderr.splitlines() == ["fail: highest-wasted-bytes: 705B (705 bytes) wasted (what a squash drops), "
                                     "more than 700B"]
    p = ocisquash("analyze", str(image), "--ci", "-q", "--lowest-efficiency", "0.3", "--highest-user-wasted-percent",
                  "disabled")
    assert p.returncode == 0 and p.stdout == ""
    assert p.stderr.splitlines() == ["ci: pass (lowest-efficiency, highest-wasted-bytes, highest-user-wasted-percent)"]
    p = ocisquash("analyze", str(image), "--ci", "--lowest-efficiency", "0.3", "--highest-wasted-bytes", "1kB",
                  "--highest-user-wasted-percent", "2")
    assert p.returncode == 2  # a percent is a fraction from 0 to 1, as dive's
    p = ocisquash("analyze", str(image), "--ci", "--lowest-efficiency", "0.3", "--highest-wasted-bytes", "1kB",
                  "--highest-user-wasted-percent", "disabled", "--format", "json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ci"] == {"lowest_efficiency": 0.3, "highest_wasted_bytes": 1000,
                                          "highest_user_wasted_percent": None, "broken": []}
    assert p.stderr.startswith("ci: pass")


@pytest.mark.parametrize("args", [["--lowest-efficiency", "high"], ["--highest-wasted-bytes", "lots"],
                                  ["--format", "yaml"]])
def test_bad_rule_values_are_usage_errors(image: Path, args: list[str]) -> None:
    p = ocisquash("analyze", str(image), *args)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr


def test_top_is_not_capped_at_20(tmp_path: Path) -> None:
    files = {f"f{i:02}": b"v" * (i + 1) for i in range(30)}
    path = write_oci(tmp_path / "many", [Img(["docker.io/acme/many:1"], T1, [layer_tar(files), layer_tar(files)])])
    o = json.loads(ocisquash("analyze", str(path), "--top", "25", "--format", "json").stdout)
    assert len(o["inefficiencies"]) == 25 and o["inefficiencies"][0]["path"] == "f29"
    text = ocisquash("analyze", str(path), "--top", "25").stdout
    assert sum(1 for ln in text.splitlines() if ln.split()[:1] == ["2"] and ln.split()[-1].startswith("f")) == 25


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_count_as_one_path_in_every_tar_format(tmp_path: Path, fmt: int) -> None:
    # 119 characters: ustar's prefix field, GNU's L record, PAX's path record
    long_dir = "/".join(["deep-directory-name"] * 6)

    def layer(size: int) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            for name, data in [(f"{long_dir}/f", b"y" * size), ("a/file", b"x" * 3)]:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime = len(data), 1700000000
                t.addfile(ti, io.BytesIO(data))
        return buf.getvalue()

    path = write_oci(tmp_path / "long", [Img(["docker.io/acme/long:1"], T1, [layer(1025), layer(700)])])
    o = json.loads(ocisquash("analyze", str(path), "--format", "json").stdout)
    assert o["inefficiencies"][0] == {"path": f"{long_dir}/f", "count": 2, "total_bytes": 1725,
                                      "dive_wasted_bytes": 1025}
    assert o["wasted_bytes"] == 1028 and o["user_bytes"] == 703


def test_analyze_reads_each_layer_once(image: Path) -> None:
    # dive's figures come from the plan's read of the headers: a second read of every layer (as before)
    # doubled the time of an analyze
    with ocisquash_api.open(image) as src:
        img = src.image()
        inner = img._inner  # its layers. openers are counted
        opened: list[str] = []
        for ly in inner.layers:
            def counted(fn: Any = ly.opener, what: str = ly.what) -> Any:
                opened.append(what)
                return fn()
            ly.opener = counted
        res = img.analyze(top=5)
    assert sorted(opened) == sorted(ly.what for ly in inner.layers)  # each layer once
    assert res.efficiency.score == pytest.approx(EFFICIENCY) and res.efficiency.wasted_bytes == WASTED


# ------------------------------------------------------------------------------------- one definition of waste

# A hardlink keeps a deleted or overwritten path's file alive: dive counts the path's copies as waste, a
# squash keeps the file (it drops only what no name reaches any more). Dropped by a squash: c's 50 and
# 500 bytes (overwritten twice) and o/p's 70 (under the opaque o): 620. dive's copies: a 1000 + its
# whiteout 1000 (waste 1000), c 50+500+20 (550), o/p 70+70 (70), big 3000+10 (3000): 4620.
HL1 = layer(f("a", b"A" * 1000), hl("b", "a"), f("c", b"c" * 50), d("o"), f("o/p", b"p" * 70), f("big", b"G" * 3000))
HL2 = layer(wh("a"), f("c", b"C" * 500), opq("o"), f("o/q", b"q" * 9), hl("big2", "big"))
HL3 = layer(f("c", b"3" * 20), hl("c2", "b"), f("big", b"g" * 10))
SQUASH_DROPS = 620
DIVE_WASTED = 4620


def test_analyze_wasted_is_what_a_squash_drops(tmp_path: Path) -> None:
    path = write_oci(tmp_path / "hl", [Img(["docker.io/acme/hl:1"], T1, [HL1, HL2, HL3], gzip=True)])
    o = json.loads(ocisquash("analyze", str(path), "--json").stdout)
    dry = ocisquash("squash", str(path), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    dropped = json.loads(dry.stdout)["bytes_dropped"]
    assert o["wasted_bytes"] == dropped == SQUASH_DROPS
    assert o["dive_wasted_bytes"] == DIVE_WASTED
    table = ocisquash("analyze", str(path)).stdout
    assert f"wasted 620B: the {o['wasted_files']} hidden files a squash drops" in table
    # dive's wasted differs, so it is shown beside, labelled as dive's
    assert "dive's figures: efficiency" in table and "; wasted 4.62kB (each duplicated path's copies" in table
    p = ocisquash("analyze", str(path), "--highest-wasted-bytes", "600B", "--lowest-efficiency", "disabled",
                  "--highest-user-wasted-percent", "disabled", "-q")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == ["fail: highest-wasted-bytes: 620B (620 bytes) wasted (what a squash drops), "
                                     "more than 600B"]
