"""``images`` on layouts of many images: the children count in one pass gives what comparing every pair gave.

The model is the rule as it was first written (quadratic): an image's children are the other images whose
chain IDs start with all of its own, and hold more. Layouts are generated (hypothesis) with parent/child
chains, images sharing layers and creation times, untagged intermediate and dangling images, and the
listing compared row for row, with ``-a`` and the ``before``/``since``/``dangling`` filters.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from listing_inputs import Img, layer_tar, write_oci

from ocisquash import api
from ocisquash.listing.images import ImageSummary
from ocisquash.listing.sizes import NONE

POOL = [layer_tar({f"f{i}": f"layer {i}".encode()}) for i in range(6)]
T0 = 1_700_000_000


def model_children(images: list[ImageSummary]) -> list[int]:
    out = []
    for img in images:
        chain = img.chain_ids
        out.append(sum(1 for o in images if len(o.chain_ids) > len(chain) and o.chain_ids[:len(chain)] == chain))
    return out


def created(t: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + t))


# one image: (parent: an earlier image's number or None, a pool layer or None for no new layer, tagged, time)
IMAGE = st.tuples(st.integers(0, 1000) | st.none(), st.integers(0, len(POOL) - 1) | st.none(), st.booleans(),
                  st.integers(0, 6))


def build(tmp: Path, spec: list[tuple[int | None, int | None, bool, int]]) -> Path:
    layers: list[list[int]] = []
    imgs = []
    for i, (parent, layer, tagged, t) in enumerate(spec):
        base = layers[parent % i] if parent is not None and i else []
        chain = [*base, *([] if layer is None else [layer])]
        layers.append(chain)
        # the history differs per image, so every image has its own config (and ID) whatever its layers
        imgs.append(Img([f"repo{i % 3}:t{i}"] if tagged else [], created(t), [POOL[j] for j in chain],
                        history=[{"created": created(t), "created_by": f"image {i}"}]))
    return write_oci(tmp, imgs)


FILTERS: list[list[str]] = [[], ["dangling=true"], ["dangling=false"], ["before=repo0:t0"], ["since=repo0:t0"],
                            ["since=repo0:t0", "dangling=true"]]


def listed(layout: Path) -> list[tuple[str, list[tuple[str, str, str]], list[tuple[str, str, str]]]]:
    """For every filter and -a: the rows with the one-pass children and with the model's."""
    out = []
    with api.open(str(layout)) as src:
        summaries = src.images()
        for flt in FILTERS:
            if any("repo0:t0" in f for f in flt) and not any("repo0:t0" in s.names for s in summaries):
                continue
            for all_images in (False, True):
                got = src.rows(summaries, api.parse_filters(flt), all_images=all_images)
                saved = [s.children for s in summaries]
                for s, n in zip(summaries, model_children(summaries), strict=True):
                    s.children = n
                want = src.rows(summaries, api.parse_filters(flt), all_images=all_images)
                for s, n in zip(summaries, saved, strict=True):
                    s.children = n
                out.append((f"{flt} -a={all_images}", [(r.repository, r.tag, str(r.image.image_id)) for r in got],
                            [(r.repository, r.tag, str(r.image.image_id)) for r in want]))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(IMAGE, min_size=1, max_size=25).map(lambda s: [(None, *s[0][1:]), *s[1:]]))
def test_children_match_the_pairwise_rule(tmp_path_factory, spec) -> None:  # type: ignore[no-untyped-def]
    layout = build(tmp_path_factory.mktemp("l"), spec)
    with api.open(str(layout)) as src:
        summaries = src.images()
    assert [s.children for s in summaries] == model_children(summaries)
    for what, got, want in listed(layout):
        assert got == want, what


def test_a_few_hundred_images_through_the_cli(tmp_path: Path) -> None:
    """300 images in chains up to 5 deep: the CLI's rows equal the model's, with -a and each filter."""
    rng = random.Random(7)
    spec: list[tuple[int | None, int | None, bool, int]] = [(None, 0, True, 0)]
    for i in range(1, 300):
        spec.append((rng.randrange(i) if rng.random() < 0.7 else None, rng.choice([*range(len(POOL)), None]),
                     rng.random() < 0.5, rng.randrange(40)))
    layout = build(tmp_path / "l", spec)
    checks = listed(layout)
    assert any(got and got != [r for r in got if r[0] != NONE] for _, got, _ in checks)  # untagged rows shown
    for what, got, want in checks:
        assert got == want, what
    with api.open(str(layout)) as src:
        summaries = src.images()
        model = dict(zip((s.image_id for s in summaries), model_children(summaries), strict=True))
        assert max(model.values()) > 1 and min(model.values()) == 0
        for flt in (["dangling=true"], ["since=repo0:t0"]):
            want_ids = [r.image.image_id.short() for r in src.rows(summaries, api.parse_filters(flt),
                                                                    all_images=True)]
            r = subprocess.run([sys.executable, "-m", "ocisquash", "images", str(layout), "-a", "-q",
                                *(x for f in flt for x in ("-f", f))], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            assert r.stdout.split() == want_ids
