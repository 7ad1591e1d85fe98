"""ocisquash.listing's pure logic: Go's times (goformat), sizes, globs, filter parsing, selection on hand-built
summaries."""

from __future__ import annotations

import pytest

from ocisquash import goformat
from ocisquash.digest import Digest
from ocisquash.errors import UsageError
from ocisquash.listing import history, images, sizes


def test_parse_time_ns_keeps_nanoseconds_and_offsets() -> None:
    a = goformat.parse_time_ns("2023-01-02T00:00:00.123456789Z")
    b = goformat.parse_time_ns("2023-01-02T00:00:00.12345679Z")
    assert a is not None and b is not None and b - a == 1
    assert goformat.parse_time_ns("2023-01-02T02:00:00+02:00") == goformat.parse_time_ns("2023-01-02T00:00:00Z")
    assert goformat.parse_time_ns("1970-01-01T00:00:01Z") == 1_000_000_000
    assert goformat.parse_time_ns("0001-01-01T00:00:00Z") is None  # Go's zero time
    assert goformat.parse_time_ns("yesterday") is None and goformat.parse_time_ns(None) is None


@pytest.mark.parametrize(("secs", "text"), [
    (0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (59 * 60, "59 minutes"), (3600, "About an hour"), (47 * 3600, "47 hours"), (3 * 86400, "3 days"),
    (22 * 86400, "3 weeks"), (90 * 86400, "3 months"), (3 * 365 * 86400, "3 years"),
])
def test_human_duration_like_go_units(secs: float, text: str) -> None:
    assert goformat.human_duration(secs) == text


@pytest.mark.parametrize(("n", "text"), [
    (0, "0B"), (999, "999B"), (1000, "1kB"), (1234, "1.23kB"), (61440, "61.4kB"), (7_800_000, "7.8MB"),
    (999_999, "1MB"), (1_230_000_000, "1.23GB"),
])
def test_human_size_like_go_units(n: int, text: str) -> None:
    assert goformat.human_size(n) == text


@pytest.mark.parametrize(("pat", "text", "ok"), [
    ("acme/*", "acme/app", True), ("*", "acme/app", False), ("*:latest", "busybox:latest", True),
    ("a?me", "acme", True), ("a?me", "a/me", False), ("[a-c]cme", "acme", True), ("[^a]cme", "acme", False),
    ("a\\*", "a*", True), ("a\\*", "ab", False),
])
def test_go_glob(pat: str, text: str, ok: bool) -> None:
    assert bool(images.go_glob(pat).match(text)) is ok


@pytest.mark.parametrize("bad", ["[abc", "a\\", "dangling=maybe", "nokey", "until=1h", "Label"])
def test_bad_filters(bad: str) -> None:
    items = [bad if "=" in bad or bad in ("nokey", "Label") else f"reference={bad}"]
    with pytest.raises(UsageError):
        images.Filters.parse(items)


def test_dangling_true_and_false_together_means_true() -> None:  # moby: ExactMatch("true") wins
    f = images.Filters.parse(["dangling=false", "dangling=true"])
    assert f.get("dangling") == ["false", "true"]
    base = _img(None, "2023-01-01T00:00:00Z", ["b"])  # untagged, with a child: intermediate, not dangling
    app = _img("acme/app:1", "2023-01-02T00:00:00Z", ["b", "a"])  # tagged
    head = _img(None, "2023-01-03T00:00:00Z", ["c"])  # untagged head: the one dangling image
    imgs = [base, app, head]
    images.count_children(imgs)

    def shown(*flt: str) -> list[tuple[str, str, Digest]]:
        return [(r.repository, r.tag, r.image.image_id) for r in images.select(imgs, images.Filters.parse(flt))]

    both = shown("dangling=false", "dangling=true")
    assert both == shown("dangling=true") == [(sizes.NONE, sizes.NONE, head.image_id)]
    assert shown("dangling=true", "dangling=false") == both  # order does not matter
    assert shown("dangling=false") == [("acme/app", "1", app.image_id)]  # the control: false alone differs


def _img(name: str | None, created: str | None, layers: list[str], **labels: str) -> images.ImageSummary:
    diffs = [Digest.of(x.encode()) for x in layers]
    from ocisquash.digest import chain_ids

    return images.ImageSummary(
        names=[name] if name else [], image_id=Digest.of(f"{name}{created}{layers}".encode()), manifest_digest=None,
        created=created, created_ns=goformat.parse_time_ns(created), labels=labels, platform=None,
        layers=[sizes.LayerSize(d, c, 100, 100, True) for d, c in zip(diffs, chain_ids(diffs), strict=True)])


def test_select_and_shared_sizes_on_summaries() -> None:
    base = _img(None, "2023-01-01T00:00:00Z", ["b"])
    app = _img("acme/app:1", "2023-01-03T00:00:00Z", ["b", "a"], tier="web")
    dup = _img("acme/dup:1", "2023-01-03T00:00:00Z", ["b", "a", "b"])  # the same diff ID twice: chains differ
    none_created = _img("x/y:1", None, ["z"])
    imgs = [base, app, dup, none_created]
    images.count_children(imgs)
    images.shared_sizes(imgs)
    assert base.children == 2 and app.children == 1 and dup.children == 0
    assert (app.shared_size, app.unique_size) == (200, 0)
    assert (dup.shared_size, dup.unique_size) == (200, 100)
    rows = images.select(imgs, images.Filters.parse([]))
    assert [r.repository for r in rows] == ["acme/app", "acme/dup", "x/y"]  # no creation time: oldest
    assert [r.repository for r in images.select(imgs, images.Filters.parse([]), all_images=True)][-2:] == [
        "<none>", "x/y"]

    def resolve(ref: str) -> Digest:
        return next(i.image_id for i in imgs if ref in i.names)

    rows = images.select(imgs, images.Filters.parse(["since=acme/app:1"]), resolve=resolve)
    assert rows == []  # equal creation time is not "since"
    with pytest.raises(UsageError):
        images.select(imgs, images.Filters.parse(["since=acme/app:1"]))


def test_tags_drop_bare_duplicate_of_full_name() -> None:
    s = _img("docker.io/acme/app:1.0", None, ["a"])
    s.names.append("1.0")
    s.names.append("other")
    assert s.tags() == [("acme/app", "1.0"), ("<none>", "other")]


def test_ellipsis() -> None:
    assert history.ellipsis("a\tb", 5) == "a b"
    assert history.ellipsis("abcdefgh", 5) == "abcd…"
