"""The API the CLI goes through: the parsers it uses for its strings, and the progress callbacks, the
filters and the per-image reads it gained so that ``images``, ``history``, ``analyze``, ``validate``,
``squash`` and ``convert`` need nothing else. Each check compares with the command's own output."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ocisquash
from ocisquash import Compression, Cut
from ocisquash.api import parse_filters

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
TS = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocisquash", *args], capture_output=True, text=True, check=False)


def test_compression_parse_names_and_refusals() -> None:
    assert Compression.parse("zstd") is Compression.ZSTD
    with pytest.raises(ocisquash.UsageError, match="unknown compression 'lz5'"):
        Compression.parse("lz5")
    with pytest.raises(ocisquash.UsageError, match="writes gzip, zstd or none, not"):
        Compression.parse("xz")  # a codec ocisquash reads but does not write


def test_check_level_speaks_the_command_lines_words() -> None:
    assert Compression.GZIP.check_level(None) is None
    assert Compression.ZSTD.check_level(19) == 19
    with pytest.raises(ocisquash.UsageError) as e:
        Compression.GZIP.check_level(10)
    assert str(e.value) == "--level 10 is out of range for gzip: 0 to 9"


def test_the_apis_level_check_is_the_same_table_in_its_own_words(tmp_path: Path) -> None:
    """One range check (the codec table's) for both: the API names the option as its caller spelt it."""
    sample = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
    for codec, bad, range_ in ((Compression.GZIP, 10, "0 to 9"), (Compression.ZSTD, 20, "1 to 19")):
        with pytest.raises(ocisquash.UsageError) as e:
            ocisquash.squash_image(sample, tmp_path / "o.tar", compression=codec, level=bad)
        assert str(e.value) == f"level={bad} is out of range for {codec.value}: {range_}"
    assert not (tmp_path / "o.tar").exists()


def test_cut_parse_both_is_refused_and_one_is_kept_as_spelt() -> None:
    with pytest.raises(ocisquash.UsageError, match="not both"):
        Cut.parse("base", "2")
    assert Cut.parse() == Cut.scratch()
    assert Cut.parse(from_layer="-1").spec == "-1"
    assert Cut.parse(parent="x.tar:base").kind == "parent"


def test_cut_parse_gives_typed_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # parsed once, here: the squash takes a position as an int and a parent as (path, reference)
    assert Cut.parse(from_layer=" -1 ").layer == -1 and Cut.parse(from_layer="2").layer == 2
    assert Cut.parse(from_layer="sha256:abc").layer == "sha256:abc"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.tar").write_bytes(b"")
    assert (Cut.parse(parent="x.tar:base").parent_path, Cut.parse(parent="x.tar:base").parent_ref) == ("x.tar", "base")
    assert (Cut.parse(parent="x.tar").parent_path, Cut.parse(parent="x.tar").parent_ref) == ("x.tar", None)
    assert (Cut.parse(parent="y.tar:base").parent_path, Cut.parse(parent="y.tar:base").parent_ref) == (None,
                                                                                                      "y.tar:base")
    reg = Cut.parse(parent="docker://reg.example/base:1")
    assert (reg.parent_path, reg.parent_ref) == ("docker://reg.example/base:1", None)


def test_cut_parse_squashes_like_from_layer(tmp_path: Path) -> None:
    a = ocisquash.squash_image(SAMPLE, tmp_path / "a.tar", cut=Cut.parse(from_layer="2"), timestamp=TS)
    b = ocisquash.squash_image(SAMPLE, tmp_path / "b.tar", cut=Cut.from_layer(2), timestamp=TS)
    assert (a.kept_layers, a.layers_after) == (b.kept_layers, b.layers_after) == (1, 2)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_convert_progress_counts_every_layer_byte(tmp_path: Path) -> None:
    phases: list[tuple[str, int | None]] = []
    got: list[int] = []
    report = ocisquash.convert_image(SAMPLE, tmp_path / "o", format=ocisquash.OutputFormat.OCI_DIR,
                                     on_phase=lambda d, n: phases.append((d, n)), on_bytes=got.append)
    assert len(phases) == 1 and phases[0][0] == "converting"
    assert sum(got) == phases[0][1] and sum(got) > 0
    cli_json = json.loads(cli("convert", str(SAMPLE), str(tmp_path / "o2"), "--format", "oci-dir", "--json").stdout)
    cli_json.pop("seconds")
    assert report.to_json() == {**cli_json, "output": str(tmp_path / "o")}


def test_validate_progress_and_one_image() -> None:
    seen: list[int] = []
    total: list[int | None] = []
    with ocisquash.open(SAMPLE) as src:
        res = src.validate(image="ocisquash/sample", on_phase=lambda d, n: total.append(n), on_bytes=seen.append)
        with pytest.raises(ocisquash.NotFound):
            src.validate(image="nosuch:1")
    assert res.ok and total and sum(seen) == total[0]


def test_history_and_analyze_match_the_commands() -> None:
    with ocisquash.open(SAMPLE) as src:
        img = src.image(default_platform=True)
        rows = img.history()
        analysis = img.analyze(top=3)
    assert img.note is None
    cli_rows = [json.loads(line) for line in cli("history", str(SAMPLE), "--json").stdout.splitlines()]
    assert [r.created_by for r in rows] == [r["created_by"] for r in cli_rows]
    cli_analysis = json.loads(cli("analyze", str(SAMPLE), "--json", "--top", "3").stdout)
    assert len(analysis.layers) == len(cli_analysis["layers"]) == 3


def test_rows_filters_and_image_scope() -> None:
    with pytest.raises(ocisquash.UsageError):
        parse_filters(["colour=blue"])
    with ocisquash.open(SAMPLE) as src:
        summaries = src.images()
        assert len(src.rows(summaries, parse_filters(["dangling=false"]))) == 1
        assert src.rows(summaries, parse_filters(["dangling=true"])) == []
        assert len(src.rows(summaries, image="ocisquash/sample:latest")) == 1


def test_limits_hold_for_the_block_only() -> None:
    with ocisquash.safety_limits({"max_json": 16}), pytest.raises(ocisquash.LimitExceeded):
        ocisquash.open(SAMPLE)
    with ocisquash.open(SAMPLE) as src:  # the default cap is back
        assert len(src.images()) == 1
    with pytest.raises(ocisquash.UsageError, match="no cap named"), ocisquash.safety_limits({"json": 1}):
        pass
    with pytest.raises(ocisquash.UsageError, match="positive int"), ocisquash.safety_limits({"max_json": 0}):
        pass


def test_registry_access_is_restored_after_a_cli_run_too() -> None:
    from ocisquash import registry
    from ocisquash.cli import main

    before = registry.current()
    access = ocisquash.api.RegistryAccess(creds="u:p", tls_verify=False)
    with ocisquash.api.registry_access(access):
        assert registry.current().tls_verify is False and registry.current().auth.creds == "u:p"
    assert registry.current() == before
    assert main(["images", str(SAMPLE), "-q", "--tls-verify", "false", "--creds", "a:b"]) == 0
    assert registry.current() == before  # one run's options do not carry over to the next
