"""``gcpause.gc_paused`` and where ``images`` uses it: no cyclic collections while a listing loads its
images, the collector as it was afterwards (on, or off if the caller had turned it off)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from listing_inputs import Img, layer_tar, write_oci
from typer.testing import CliRunner

from ocisquash.cli import app
from ocisquash.formats import ocilayout
from ocisquash.gcpause import gc_paused


def test_paused_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError
    assert gc.isenabled()


def test_left_off_when_the_caller_had_turned_it_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_images_loads_with_the_collector_paused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = write_oci(tmp_path / "layout", [Img(["docker.io/acme/app:1"], "2023-01-01T00:00:00Z",
                                                  [layer_tar({"a": b"a"})])])
    seen: list[bool] = []
    real = ocilayout.load

    def load(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(ocilayout, "load", load)
    r = CliRunner().invoke(app, ["images", str(layout)])
    assert r.exit_code == 0, r.output
    assert "acme/app" in r.output
    assert seen == [False]
    assert gc.isenabled()
