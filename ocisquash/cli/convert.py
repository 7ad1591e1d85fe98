"""``ocisquash convert IN OUT``: copy an image between formats, optionally recompressing its layers."""

from __future__ import annotations

import time

import typer

from ocisquash.cli import app, common


@app.command(
    "convert",
    help=(
        "Copy an image between docker save tarballs and OCI layouts, verifying every blob.\n\n"
        "The output format follows OUT: a directory is an OCI layout, a .tar (or '-') is a docker save "
        "tarball whatever the input's form (it is also a valid OCI layout tar); --format overrides "
        "(oci-archive: a pure OCI layout tar). IN and OUT may be '-'; a pipe or FIFO as IN is read once. "
        + common.IN_OUT_HELP + "\n\n"
        "Examples:\n\n"
        "  ocisquash convert app.tar app-oci/            # docker save tar -> OCI layout dir\n\n"
        "  ocisquash convert app-oci/ app.tar --tag app:1.0 --compression zstd"
    ),
)
@common.run_options
def convert(
    source: common.InArg,
    dest: str = typer.Argument(..., metavar="OUT", help="Output path, or - for standard output."),
    image: common.ImageOption = None,
    platform: common.PlatformOption = None,
    tag: list[str] | None = typer.Option(None, "--tag", "-t", help="Name the output (repeatable)."),
    fmt: common.FormatOption = None,
    compression: str | None = typer.Option(None, "--compression", "-c",
                                           help=f"Recompress layers: {common.COMPRESSIONS} (default: keep)."),
    level: int | None = typer.Option(None, "--level", help=common.LEVEL_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    common.check_level(level, compression)
    out, fmt, tag = common.resolve_output(dest, fmt, tag)
    dest = out or dest
    # The library (codecs, sources, sinks: ~60 ms to import) loads only when the command runs, for start-up time.
    from ocisquash import api

    codec = None if compression is None else api.Compression.parse(compression)
    lvl = None if codec is None else codec.check_level(level)
    t0 = time.monotonic()
    with common.progress(quiet) as prog:
        report = api.convert_image(source, dest, image=image, platform=platform, tags=tag or [],
                                   format=None if fmt is None else api.OutputFormat(fmt), compression=codec,
                                   level=lvl, on_step=prog.describe, on_phase=prog.phase, on_bytes=prog.advance)
    result = report.to_json()
    result["seconds"] = round(time.monotonic() - t0, 3)
    if json_out:
        common.print_json(result)
    elif not quiet:
        if result.get("note"):
            common.note(result["note"])
        common.err_console().print(
            f"[green]converted[/] {common.safe(result['image'])} -> {common.safe(result['output'])} "
            f"({result['format']}, "
            f"{len(result['layers'])} layers, manifest {result['manifest'][:19]}…)")

