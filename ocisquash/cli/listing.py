"""``images`` (``ls``), ``history``, ``analyze`` and ``validate``: looking inside an input.

Rendering only: the figures come through the public API (``ocisquash.api``: ``Source.images``/``rows``,
``Image.history``/``analyze``, ``Source.validate``).
Tables go to stdout (plain, wide columns when stdout is not a terminal, so scripts can cut them); progress
and errors go to stderr.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import typer

from ocisquash.cli import app, common
from ocisquash.gcpause import gc_paused

if TYPE_CHECKING:
    from ocisquash.listing import analyze as listing_analyze
    from ocisquash.listing import images as listing_images

# ocisquash.listing, ocisquash.sources (~15 ms to import), rich (~50 ms) and json load in the functions that use them,
# not here, for start-up time: registering these commands must not cost every other command their import.
SIZE_HELP = (
    "SIZE is docker's figure (what docker history and docker images show after docker load: the layers' file "
    "contents, each inode once, not their tar bytes), read from the layers' tar headers: history reads them "
    "in place for layers stored uncompressed; images only with --exact; --exact also decompresses compressed "
    "layers to read theirs (reads every layer). Without its headers a layer's SIZE is its uncompressed tar "
    "size recorded by ocisquash, or its stored (compressed) size, marked *. "
    "--json keeps the tar size (size) and adds docker_size."
)


def _emit_lines(lines: Iterable[str], *, bold_first: bool = False) -> None:
    """Print finished lines to stdout as they come; a header row is bold only on a colour terminal."""
    out = sys.stdout
    bold = bold_first and out.isatty() and "NO_COLOR" not in os.environ
    for line in lines:
        out.write(f"\x1b[1m{line}\x1b[0m\n" if bold else line + "\n")
        bold = False
    out.flush()


def _emit_json_lines(objs: list[dict[str, Any]]) -> None:

    for o in objs:
        sys.stdout.write(common.json_line(o) + "\n")
    sys.stdout.flush()


def _render(fmt: str, default_table: str, fields: list[str], headers: dict[str, str],
            rows: Iterable[dict[str, str]], optional: tuple[str, ...] = ()) -> None:
    from ocisquash import goformat

    tmpl = goformat.parse(fmt, fields, default_table=default_table)
    _emit_lines(goformat.lines(tmpl, rows, headers, optional), bold_first=tmpl.table)


# ---------------------------------------------------------------------------------------------- images

IMAGES_FORMAT_HELP = (
    "table (the default), json (one object per line, docker's keys), or a Go template such as "
    "'{{.Repository}}:{{.Tag}}' or 'table {{.ID}}\\t{{.Size}}'. Fields: ID, Repository, Tag, Digest, "
    "CreatedSince, CreatedAt, Size, SharedSize, UniqueSize, Containers, VirtualSize."
)



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
    "  ocisquash images app.tar --format json | jq -r .Size"
)


@common.run_options
@gc_paused()  # the listing keeps every document it parses, none in a cycle; its rows are made and dropped
def images(
    path: common.PathArg,
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
    fmt: str = typer.Option("table", "--format", metavar="FORMAT", help=IMAGES_FORMAT_HELP),
    json_out: bool = typer.Option(False, "--json", help="ocisquash's own JSON, one object per line, sizes in "
                                                        "bytes (see docs/commands.md)."),
) -> None:
    from ocisquash import api, goformat
    from ocisquash.listing import images as listing_images

    trunc = not no_trunc
    if quiet and fmt.strip() == goformat.TABLE:
        fmt = "{{.ID}}"  # docker: -q is the ID template, unless --format asks for something else
    tmpl_fields = list(listing_images.IMAGE_HEADERS)
    goformat.parse(fmt, tmpl_fields, default_table="")  # a bad template fails before any input is read
    flt = api.parse_filters(filters or [])
    with api.open(path) as src:
        with common.progress(quiet or not exact) as prog:
            summaries = src.images(exact=exact, on_phase=lambda what, n: prog.phase(what, n, unit="items"),
                                   on_image=lambda: prog.advance(1))
        rows = src.rows(summaries, flt, all_images=all_images)  # IN named an image (src.ref): its rows only
    now = time.time()
    if json_out:
        _emit_json_lines([r.to_json(now) for r in rows])
        return
    # A PLATFORM column (and a Platform key in JSON) only when the input holds more than one platform.
    multi = len({s.platform for s in summaries}) > 1

    def docker_row(r: listing_images.Row) -> dict[str, str]:
        d = r.fields(now, trunc=trunc)
        if not multi:
            d["Platform"] = ""
        return d

    # one row's fields at a time: 20,000 rows of docker's twelve fields held at once took 25 MB
    docker_rows = map(docker_row, rows)
    default = "table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if digests else "") + "{{.ID}}\t" + \
        ("{{.Platform}}\t" if multi else "") + "{{.CreatedSince}}\t{{.Size}}" + \
        ("\t{{.SharedSize}}\t{{.UniqueSize}}" if sizes else "")
    if fmt.strip() != goformat.TABLE and digests:
        tmpl = goformat.parse(fmt, tmpl_fields, default_table=default)
        if tmpl.table and not tmpl.uses("Digest"):
            fmt += "\t{{.Digest}}"  # docker adds the digest column to a table template with --digests
    _render(fmt, default, tmpl_fields, listing_images.IMAGE_HEADERS, docker_rows, optional=("Platform",))


app.command("images", help=IMAGES_HELP)(images)
app.command("ls", help="List images (alias of images).\n\n" + IMAGES_HELP.split("\n\n", 1)[1])(images)


# ---------------------------------------------------------------------------------------------- history

HISTORY_FORMAT_HELP = (
    "table (the default), json (one object per line, docker's keys), or a Go template such as "
    "'{{.ID}}\\t{{.CreatedBy}}'. Fields: ID, CreatedSince, CreatedAt, CreatedBy, Size, Comment."
)



HISTORY_HELP = (
    "Show an image's history, like docker history.\n\n"
    "One row per history entry, newest first; entries that made no layer show size 0. The top row shows "
    "the image ID, the others <missing> (as Docker does for loaded images).\n\n"
    f"{SIZE_HELP}\n\n"
    "Examples:\n\n"
    "  ocisquash history app.tar\n\n"
    "  ocisquash history layout/ --image app:1.0 --platform linux/arm64 --no-trunc\n\n"
    "  ocisquash history app.tar --format json | jq -r .CreatedBy"
)


@app.command("history", help=HISTORY_HELP)
@common.run_options
def history(
    path: common.ImageArg,
    image: common.ImageOption = None,
    platform: common.PlatformOption = None,
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Don't truncate output."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only show image IDs."),
    exact: bool = typer.Option(False, "--exact", help="Decompress compressed layers for exact sizes."),
    fmt: str = typer.Option("table", "--format", metavar="FORMAT", help=HISTORY_FORMAT_HELP),
    json_out: bool = typer.Option(False, "--json", help="ocisquash's own JSON, one object per line, sizes in "
                                                        "bytes (see docs/commands.md)."),
) -> None:
    from ocisquash import api, goformat
    from ocisquash.listing import history as listing_history

    default = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    if quiet and fmt.strip() == goformat.TABLE:
        fmt = "{{.ID}}"
    fields = list(listing_history.HISTORY_HEADERS)
    goformat.parse(fmt, fields, default_table=default)  # a bad template fails before any input is read
    with api.open(path) as src:
        img = src.image(image, platform=platform, default_platform=True)
        if img.note:
            common.note(img.note)
        rows = img.history(exact=exact)
    now = time.time()
    if json_out:
        _emit_json_lines([r.to_json(now) for r in rows])
        return
    _render(fmt, default, fields, listing_history.HISTORY_HEADERS, [r.fields(now, trunc=not no_trunc) for r in rows])


# ---------------------------------------------------------------------------------------------- analyze

ANALYZE_HELP = (
    "Show what each layer adds and how much of it later layers hide, with dive's efficiency figures.\n\n"
    "Per layer: its size (uncompressed tar), the file bytes it adds, the bytes of those files that a later "
    "layer overwrites or deletes, the history entry that made it, and a bar (# still visible, . hidden). "
    "Wasted bytes are what a squash drops (the files no name reaches any more: overwritten, deleted, or under "
    "an opaque directory), the squash report's figure. Beside them, dive's figures: efficiency (the bytes of "
    "each path's smallest copy over the bytes of all copies), dive's wasted bytes where they differ (a path "
    "found in several layers wastes all its copies but the smallest, even when a hardlink keeps the file) and "
    "user wasted percent (dive's wasted bytes over the bytes of the layers above the first: it can pass 100%, "
    "as first-layer copies count as waste but not as user bytes). Reads each layer's headers once.\n\n"
    "--ci checks dive's three rules and exits 1 with one line per broken rule (with -q, that verdict is all "
    "it prints): --lowest-efficiency (0-1, default 0.9), --highest-wasted-bytes (a size such as 20MB; default "
    "disabled), --highest-user-wasted-percent (0-1, default 0.1). Giving a rule implies --ci; 'disabled' "
    "turns one off.\n\n"
    "Examples:\n\n"
    "  ocisquash analyze app.tar\n\n"
    "  ocisquash analyze app.tar --ci --lowest-efficiency 0.95 --highest-wasted-bytes 20MB\n\n"
    "  ocisquash analyze layout/ --image app:1.0 --top 50 --format json | jq .inefficiencies"
)


def _fraction(text: str | None, flag: str) -> float | None:
    if text is None or text.strip().lower() == "disabled":
        return None
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v <= 1.0:
        from ocisquash.errors import UsageError

        raise UsageError(f"{flag} {text!r}: expected a fraction from 0 to 1 (0.9 is 90%), or 'disabled'")
    return v


@app.command("analyze", help=ANALYZE_HELP)
@common.run_options
def analyze(
    path: common.ImageArg,
    image: common.ImageOption = None,
    platform: common.PlatformOption = None,
    top: int = typer.Option(10, "--top", min=0, help="How many duplicated paths and hidden files to list."),
    fmt: str = typer.Option("table", "--format", metavar="FORMAT", help="table, or json (layers numbered from 1)."),
    json_out: bool = typer.Option(False, "--json", help="The same as --format json."),
    no_trunc: bool = typer.Option(False, "--no-trunc", help="Don't truncate CREATED BY."),
    ci: bool = typer.Option(False, "--ci", help="Check dive's rules; exit 1 with one line per broken rule."),
    lowest_efficiency: str | None = typer.Option(None, "--lowest-efficiency", metavar="0-1",
                                                 help="CI rule: the least efficiency allowed (default 0.9)."),
    highest_wasted_bytes: str | None = typer.Option(None, "--highest-wasted-bytes", metavar="SIZE",
                                                    help="CI rule: the most wasted bytes allowed, e.g. 20MB "
                                                         "(default disabled)."),
    highest_user_wasted_percent: str | None = typer.Option(
        None, "--highest-user-wasted-percent", metavar="0-1",
        help="CI rule: the most wasted bytes allowed, as a fraction of the user layers' bytes (default 0.1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    from ocisquash import api
    from ocisquash.listing import analyze as listing_analyze

    f = "json" if json_out else fmt.strip().lower()
    if f not in ("table", "json"):
        from ocisquash.errors import UsageError

        raise UsageError(f"--format {fmt!r}: analyze prints 'table' or 'json'")
    given = (lowest_efficiency, highest_wasted_bytes, highest_user_wasted_percent)
    ci = ci or any(v is not None for v in given)
    defaults = listing_analyze.CiRules()
    wasted_limit = highest_wasted_bytes
    rules = listing_analyze.CiRules(
        defaults.lowest_efficiency if lowest_efficiency is None else _fraction(lowest_efficiency,
                                                                               "--lowest-efficiency"),
        None if wasted_limit is None or wasted_limit.strip().lower() == "disabled"
        else listing_analyze.parse_size(wasted_limit),
        defaults.highest_user_wasted_percent if highest_user_wasted_percent is None
        else _fraction(highest_user_wasted_percent, "--highest-user-wasted-percent"),
    )
    with api.open(path) as src:
        img = src.image(image, platform=platform, default_platform=True)
        if img.note:
            common.note(img.note)
        with common.progress(quiet) as prog:
            res = img.analyze(top=top, on_phase=lambda what, n: prog.phase(what, n, unit="items"),
                              on_layer=lambda i: prog.advance(1))
    broken = rules.broken(res) if ci else []
    if f == "json":
        out = res.to_json()
        if ci:
            out["ci"] = {"lowest_efficiency": rules.lowest_efficiency,
                         "highest_wasted_bytes": rules.highest_wasted_bytes,
                         "highest_user_wasted_percent": rules.highest_user_wasted_percent, "broken": broken}
        common.print_json(out)
    elif not (ci and quiet):  # --ci -q: the verdict only
        _analyze_table(res, no_trunc)
    if ci:
        c = common.err_console()
        for line in broken:
            c.print(f"[bold red]fail:[/] {_esc(line)}")
        if not broken:
            c.print("[green]ci: pass[/] (lowest-efficiency, highest-wasted-bytes, highest-user-wasted-percent)")
        if broken:
            raise typer.Exit(1)


def _analyze_table(res: listing_analyze.Analysis, no_trunc: bool) -> None:
    from ocisquash.goformat import align, human_size, printable
    from ocisquash.listing.history import ellipsis

    hs = human_size
    table = [["LAYER", "DIGEST", "SIZE", "ADDS", "HIDDEN LATER", "CREATED BY", ""]]
    for ly in res.layers:
        made = ly.created_by.replace("\t", " ")
        table.append([str(ly.index + 1), (ly.digest or "-").split(":", 1)[-1][:12], hs(ly.tar_bytes),
                      hs(ly.bytes_added), f"{hs(ly.hidden_bytes)} ({ly.hidden_files} files)",
                      printable(made if no_trunc else ellipsis(made, 45)), ly.bar()])
    eff = res.efficiency
    lines = [f"{printable(res.image)} ({res.image_id.short()}): {len(res.layers)} layers"]
    _emit_lines(lines)
    _emit_lines(align(table, right=(0, 2, 3, 4), min_width=0), bold_first=True)
    remain = hs(res.bytes_added - res.dropped_bytes)
    dive_wasted = "" if eff.wasted_bytes == res.wasted_bytes else \
        f"; wasted {hs(eff.wasted_bytes)} (each duplicated path's copies but the smallest)"
    summary = ["", f"wasted {hs(res.wasted_bytes)}: the {res.dropped_files} hidden files a squash drops, of "
                   f"{hs(res.bytes_added)} file contents ({remain} remain)",
               f"dive's figures: efficiency {eff.score:.2%}{dive_wasted}; user wasted {eff.user_wasted_percent:.2%} "
               f"of {hs(eff.user_bytes)}"]
    if eff.user_wasted_percent > 1:
        summary.append("  (dive counts every copy of a path, in the first layer too, against the bytes the layers "
                       "above it add: it can pass 100%)")
    _emit_lines(summary)
    if eff.inefficiencies and res.top:
        dup = [["COUNT", "DIVE WASTED", "TOTAL", "PATH"]]
        dup += [[str(x.count), hs(x.wasted_bytes), hs(x.total_bytes), printable(x.path)]
                for x in eff.inefficiencies[:res.top]]
        _emit_lines([""])
        _emit_lines(align(dup, right=(0, 1, 2), min_width=0), bold_first=True)
    if res.largest_hidden:
        hidden = [["LARGEST HIDDEN FILES", "SIZE", "LAYER"]]
        hidden += [[printable(p), hs(size), str(layer + 1)] for p, size, layer in res.largest_hidden]
        _emit_lines([""])
        _emit_lines(align(hidden, right=(1, 2), min_width=0), bold_first=True)


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
@common.run_options
def validate(
    path: common.PathArg,
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary; only the exit status "
                                                            "and the findings."),
) -> None:
    from ocisquash import api, goformat

    with api.open(path) as src, common.progress(quiet) as prog:
        res = src.validate(on_phase=prog.phase, on_bytes=prog.advance)
    if json_out:
        common.print_json(res.to_json())
    else:
        c = common.out_console()
        for f in res.findings:
            c.print(f"[red]mismatch:[/] {_esc(f.where)}: {_esc(f.message)}")
        if not quiet:
            state = "[green]ok[/]" if res.ok else f"[red]{len(res.findings)} problem(s)[/]"
            c.print(f"{_esc(res.label)}: {len(res.images)} image(s), {res.blobs_checked} blobs, "
                    f"{goformat.human_size(res.bytes_read)} read: {state}")
    if not res.ok:
        raise typer.Exit(1)


def _esc(text: str) -> str:
    return common.safe(text)
