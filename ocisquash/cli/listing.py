"""``images`` (``ls``), ``history``, ``analyze`` and ``validate``: looking inside an input.

Rendering only: the figures come from ``ocisquash.listing``. Tables go to stdout (plain, wide columns
when stdout is not a terminal, so scripts can cut them); progress and errors go to stderr.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from ocisquash.cli import app, common

# ocisquash.listing, ocisquash.sources (~15 ms to import), rich (~50 ms) and json load in the functions that use them,
# not here, for start-up time: registering these commands must not cost every other command their import.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ocisquash import listing

SIZE_HELP = (
    "SIZE is the sum of the image's layers: the tar size of a layer stored uncompressed, and the stored "
    "(compressed) blob size of a compressed layer, since listing reads only JSON documents; --exact "
    "decompresses compressed layers to count their uncompressed tar bytes (slower: reads every layer). "
    "Docker shows the unpacked size on disk, which is close to the uncompressed tar size."
)


def _table_console() -> Console:
    from rich.console import Console

    c = common.out_console()
    if not c.is_terminal:
        c = Console(no_color=True, highlight=False, width=100_000)
    return c


def _table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    from rich.table import Table

    t = Table(box=None, show_header=True, header_style="bold", pad_edge=False, padding=(0, 3, 0, 0))
    for col in columns:
        t.add_column(col, justify="right" if col in right else "left", no_wrap=True, overflow="fold")
    return t


def _check_format(fmt: str) -> str:
    f = fmt.lower()
    if f not in ("table", "json"):
        from ocisquash.errors import UsageError

        raise UsageError(f"--format {fmt!r}: expected 'table' or 'json'")
    return f


def _emit_json_lines(objs: list[dict[str, Any]]) -> None:

    for o in objs:
        sys.stdout.write(common.json_line(o) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------- images

IMAGES_HELP = (
    "List the images an input holds, like docker images.\n\n"
    "One row per name; untagged images show <none>; newest first. Filters (-f, repeatable) as in Docker: "
    "dangling=true|false, label=KEY, label=KEY=VALUE, before=REF, since=REF, reference=GLOB. Different "
    "keys must all match; several reference globs match if any does; several labels must all match; "
    "before/since exclude images created at exactly the same time. A glob is matched against NAME:TAG, "
    "then against NAME alone, and * never crosses '/'.\n\n"
    f"{SIZE_HELP} --sizes adds SHARED SIZE (layers, by chain ID, that other images of the input also use) "
    "and UNIQUE SIZE (the rest), like docker system df -v.\n\n"
    "Examples:\n\n"
    "  ocisquash images app.tar\n\n"
    "  ocisquash ls layout/ -f dangling=true -q\n\n"
    "  ocisquash images app.tar -f 'reference=acme/*' -f label=org.opencontainers.image.version --sizes\n\n"
    "  ocisquash images app.tar --format json | jq .size"
)


def images(
    path: str = common.PATH_ARG,
    all_images: bool = typer.Option(False, "--all", "-a", help="Show intermediate images too (untagged images "
                                                              "other images of the input are built on)."),
    digests: bool = typer.Option(False, "--digests", help="Show manifest digests."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Don't truncate output (full image IDs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only show image IDs."),
    filters: list[str] | None = typer.Option(None, "--filter", "-f", metavar="KEY=VALUE",
                                             help="Filter output (see above; repeatable)."),
    sizes: bool = typer.Option(False, "--sizes", "-s", help="Add SHARED SIZE and UNIQUE SIZE columns."),
    exact: bool = typer.Option(False, "--exact", help="Decompress compressed layers for exact uncompressed "
                                                      "sizes (reads every layer)."),
    fmt: str = typer.Option("table", "--format", help="table, or json: one JSON object per line."),
    limit: list[str] | None = common.LIMIT_OPTION,
) -> None:
    from ocisquash import listing
    from ocisquash.sources import open_source

    common.apply_limits(limit)
    fmt = _check_format(fmt)
    flt = listing.Filters.parse(filters)
    with open_source(path) as src:
        with common.progress(quiet or not exact) as prog:
            prog.phase("reading images", len(src.candidates))
            summaries = listing.summarize(src.candidates, exact=exact, on_image=lambda: prog.advance(1))

        def resolve(ref: str) -> Any:
            cand = src.choose_candidate(ref)
            return cand.image_id

        rows = listing.select(summaries, flt, all_images=all_images, resolve=resolve)
    now = time.time()
    if fmt == "json":
        _emit_json_lines([r.to_json(now) for r in rows])
        return
    if quiet:
        for r in rows:
            sys.stdout.write((str(r.image.image_id) if no_trunc else r.image.image_id.short()) + "\n")
        return
    cols = ["REPOSITORY", "TAG"] + (["DIGEST"] if digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    if sizes:
        cols += ["SHARED SIZE", "UNIQUE SIZE"]
    t = _table(*cols)
    for r in rows:
        img = r.image
        cells = [r.repository, r.tag]
        if digests:
            cells.append(str(img.manifest_digest) if img.manifest_digest else listing.NONE)
        cells += [str(img.image_id) if no_trunc else img.image_id.short(), listing.since_text(img.created_ns, now),
                  _size(img.size, img.size_exact)]
        if sizes:
            cells += [_size(img.shared_size or 0, img.size_exact), _size(img.unique_size or 0, img.size_exact)]
        t.add_row(*map(common.cell, cells))
    _table_console().print(t)


def _size(n: int, exact: bool) -> str:
    from ocisquash import listing

    return listing.human_size(n) if exact else listing.human_size(n) + "*"


app.command("images", help=IMAGES_HELP)(images)
app.command("ls", help="List images (alias of images).\n\n" + IMAGES_HELP.split("\n\n", 1)[1])(images)


# ---------------------------------------------------------------------------------------------- history

HISTORY_HELP = (
    "Show an image's history, like docker history.\n\n"
    "One row per history entry, newest first; entries that made no layer show size 0. The top row shows "
    "the image ID, the others <missing> (as Docker does for loaded images).\n\n"
    f"{SIZE_HELP}\n\n"
    "Examples:\n\n"
    "  ocisquash history app.tar\n\n"
    "  ocisquash history layout/ --image app:1.0 --platform linux/arm64 --no-trunc\n\n"
    "  ocisquash history app.tar --format json | jq -r .created_by"
)


@app.command("history", help=HISTORY_HELP)
def history(
    path: str = common.IMAGE_ARG,
    image: str | None = common.IMAGE_OPTION,
    platform: str | None = common.PLATFORM_OPTION,
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Don't truncate output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only show image IDs."),
    exact: bool = typer.Option(False, "--exact", help="Decompress compressed layers for exact sizes."),
    fmt: str = typer.Option("table", "--format", help="table, or json: one JSON object per line."),
    limit: list[str] | None = common.LIMIT_OPTION,
) -> None:
    from ocisquash import listing
    from ocisquash.sources import open_source

    common.apply_limits(limit)
    fmt = _check_format(fmt)
    with open_source(path) as src:
        img = src.choose(image, platform)
        rows = listing.history(img, exact=exact)
    now = time.time()
    if fmt == "json":
        _emit_json_lines([r.to_json(now) for r in rows])
        return

    def ident(r: listing.HistoryRow) -> str:
        if r.id == listing.MISSING or no_trunc:
            return r.id
        return r.id.split(":", 1)[-1][:12]

    if quiet:
        for r in rows:
            sys.stdout.write(ident(r) + "\n")
        return
    t = _table("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")
    for r in rows:
        t.add_row(*map(common.cell, (
            ident(r), listing.since_text(r.created_ns, now),
            r.created_by.replace("\t", " ") if no_trunc else listing.ellipsis(r.created_by, 45),
            _size(r.size, r.size_exact), r.comment)))
    _table_console().print(t)


# ---------------------------------------------------------------------------------------------- analyze

ANALYZE_HELP = (
    "Show what each layer adds and how much of it later layers hide.\n\n"
    "Per layer: the file bytes it adds, and the bytes of those files that a later layer overwrites or deletes "
    "(a file overwritten twice counts once per hidden copy; a file still visible is not waste). The bar shows "
    "# for bytes still visible and . for hidden bytes. The total is what squashing to one layer saves in "
    "uncompressed file contents. Reads layer headers only (contents are skipped).\n\n"
    "Examples:\n\n"
    "  ocisquash analyze app.tar\n\n"
    "  ocisquash analyze layout/ --image app:1.0 --top 20 --json"
)


@app.command("analyze", help=ANALYZE_HELP)
def analyze(
    path: str = common.IMAGE_ARG,
    image: str | None = common.IMAGE_OPTION,
    platform: str | None = common.PLATFORM_OPTION,
    top: int = typer.Option(10, "--top", min=0, max=20, help="How many of the largest hidden files to list (<= 20)."),
    json_out: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    limit: list[str] | None = common.LIMIT_OPTION,
) -> None:
    from ocisquash import listing
    from ocisquash.sources import open_source

    common.apply_limits(limit)
    with open_source(path) as src:
        img = src.choose(image, platform)
        with common.progress(quiet) as prog:
            prog.phase("reading layer headers", len(img.layers))
            res = listing.analyze(img, top=top, on_layer=lambda i: prog.advance(1))
    if json_out:
        common.print_json(res.to_json())
        return
    t = _table("LAYER", "DIGEST", "ENTRIES", "ADDS", "HIDDEN LATER", "", right=("ENTRIES", "ADDS", "HIDDEN LATER"))
    for ly in res.layers:
        t.add_row(*map(common.cell, (
            str(ly.index + 1), (ly.digest or "-").split(":", 1)[-1][:12], str(ly.entries),
            listing.human_size(ly.bytes_added), f"{listing.human_size(ly.hidden_bytes)} ({ly.hidden_files} files)",
            ly.bar())))
    c = _table_console()
    c.print(f"{_esc(res.image)} ({res.image_id.short()}): {len(res.layers)} layers")
    c.print(t)
    if res.largest_hidden:
        h = _table("LARGEST HIDDEN FILES", "SIZE", "LAYER", right=("SIZE", "LAYER"))
        for p, size, layer in res.largest_hidden:
            h.add_row(*map(common.cell, (p, listing.human_size(size), str(layer + 1))))
        c.print()
        c.print(h)
    c.print()
    remain = listing.human_size(res.bytes_added - res.wasted_bytes)
    c.print(f"a squash would drop {res.wasted_files} hidden files: {listing.human_size(res.wasted_bytes)} of "
            f"{listing.human_size(res.bytes_added)} file contents ({remain} remain)")


# ---------------------------------------------------------------------------------------------- validate

VALIDATE_HELP = (
    "Check every image of an input: recompute each blob's size and digest, decompress every layer and "
    "compare its diff ID, compute chain IDs, and check that every blob hashes to its own name.\n\n"
    "Reports every mismatch, not just the first. Exit status 0: clean; 1: mismatches found.\n\n"
    "Examples:\n\n"
    "  ocisquash validate app.tar\n\n"
    "  ocisquash validate layout/ --json | jq .findings"
)


@app.command("validate", help=VALIDATE_HELP)
def validate(
    path: str = common.PATH_ARG,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary; only the exit status "
                                                            "and the findings."),
    limit: list[str] | None = common.LIMIT_OPTION,
) -> None:
    from ocisquash import listing
    from ocisquash.sources import open_source

    common.apply_limits(limit)
    with open_source(path) as src, common.progress(quiet) as prog:
        prog.phase("validating", listing.total_bytes(src))
        res = listing.validate(src, on_bytes=prog.advance)
    if json_out:
        common.print_json(res.to_json())
    else:
        c = _table_console()
        for f in res.findings:
            c.print(f"[red]mismatch:[/] {_esc(f.where)}: {_esc(f.message)}")
        if not quiet:
            state = "[green]ok[/]" if res.ok else f"[red]{len(res.findings)} problem(s)[/]"
            c.print(f"{_esc(res.label)}: {len(res.images)} image(s), {res.blobs_checked} blobs, "
                    f"{listing.human_size(res.bytes_read)} read: {state}")
    if not res.ok:
        raise typer.Exit(1)


def _esc(text: str) -> str:
    return common.safe(text)
