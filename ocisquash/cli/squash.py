"""``ocisquash squash IN OUT`` (also plain ``ocisquash IN OUT``): squash an image's layers into one."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from ocisquash.cli import app, common

# The library (squash, merge, codecs: ~60 ms to import), rich.table and json load in the functions that use them,
# not here, for start-up time: registering the command must not cost every other command their import.
if TYPE_CHECKING:
    from ocisquash import squash as squash_lib


def human(n: int | None) -> str:
    """A size as ``images`` and ``history`` print it (docker's units: 61.4kB), so the report compares with them."""
    from ocisquash.goformat import human_size

    return "—" if n is None else human_size(n)


def print_report(r: squash_lib.Report) -> None:
    from rich.table import Table

    from ocisquash import reference

    c = common.err_console()
    title = "dry run: nothing written" if r.dry_run else f"squashed {r.image} -> {r.output}"
    if not r.squashed:
        title = f"{r.image}: {r.note}"
    t = Table(title=common.safe(title), show_header=True, header_style="bold", title_justify="left")
    t.add_column("")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    t.add_row("layers", str(r.layers_before), str(r.layers_after))
    t.add_row("size (uncompressed)", human(r.bytes_before_uncompressed), human(r.bytes_after_uncompressed))
    t.add_row("size (compressed)", human(r.bytes_before_compressed), human(r.bytes_after_compressed))
    c.print(t)
    if r.saving is not None and r.squashed:
        why = f": {r.compressed_note}" if r.compressed_note else ""
        c.print(f"saves {r.saving:.0%} ({r.saving_basis} sizes{why})")
    elif r.compressed_note:
        c.print(f"size (compressed): {r.compressed_note}")
    if r.squashed:
        c.print(f"dropped {r.files_dropped} hidden files ({human(r.bytes_dropped)}) that later layers overwrote or "
                f"deleted; kept {r.kept_layers} parent layers; {r.seconds:.2f}s")
    if r.parent_rule is not None:
        c.print(common.safe(f"--parent auto: found {r.parent_image} by {r.parent_rule}; "
                            f"keeps its {r.kept_layers} layers"))
    if r.squashed and r.mtimes_clamped is not None:
        c.print(f"--rewrite-timestamp: set back the times of {r.mtimes_clamped} entries of the new layer")
    if r.squashed and not r.dry_run and r.config:
        c.print(f"image ID {r.config.split(':', 1)[-1][:12]}" + (f", manifest {r.manifest}" if r.manifest else ""))
    if r.tags and not r.dry_run:
        kept = " (kept from the input; --tag to rename)" if r.tags_kept_from_input else ""
        c.print("tags: " + common.safe(", ".join(reference.familiar(t) if ":" in t or "/" in t else t
                                                 for t in r.tags)) + kept)


@app.command(
    "squash",
    help=(
        "Squash an image's layers into one merged layer (the default command).\n\n"
        "The result unpacks to exactly the same filesystem. By default every layer is squashed onto "
        "scratch; --parent keeps a base image's layers (--parent auto finds the base: from the manifest's "
        "org.opencontainers.image.base.* annotations, else the other image in IN, or in auto:FILE, whose layers "
        "are the longest prefix of the image's), --from-layer keeps the layers below a position. "
        "IN and OUT may be '-' (stdin/stdout); a pipe or FIFO as IN is read once, into a temporary file "
        "beside OUT. OUT's format follows its path (directory: OCI layout; .tar or '-': docker save "
        "tarball, also an OCI layout tar, whatever the input's form) unless --format says otherwise "
        "(oci-archive: a pure OCI layout tar); OUT may be the input layout itself, to add the squashed image "
        "beside the original. One layer above the cut still makes a new image, as docker's squash did; "
        "none leaves the image unchanged. " + common.IN_OUT_HELP + "\n\n"
        "Examples:\n\n"
        "  docker save app:1.0 | ocisquash - - | docker load\n\n"
        "  ocisquash app.tar app-squashed.tar --tag app:squashed\n\n"
        "  ocisquash squash app.tar out.tar --parent debian.tar          # keep the base image's layers\n\n"
        "  docker save app base | ocisquash - - --image app --parent base | docker load\n\n"
        "  ocisquash squash app.tar out.tar --parent auto:debian.tar    # find the base in debian.tar\n\n"
        "  ocisquash squash layout/ layout/ --image app:1.0 --from-layer -3 --tag app:1.0-flat\n\n"
        "  ocisquash squash app.tar --dry-run                           # how much would it save?"
    ),
)
@common.run_options
def squash(
    source: common.InArg,
    dest: str | None = typer.Argument(None, metavar="OUT", help="Output path, or - for stdout (not needed with "
                                                               "--dry-run)."),
    image: common.ImageOption = None,
    platform: common.PlatformOption = None,
    parent: str | None = typer.Option(None, "--parent", "-p", metavar="REF",
                                      help="Keep this parent image's layers (REF in IN, or FILE[:REF]); "
                                           "'auto' (or auto:FILE) finds the base."),
    from_layer: str | None = typer.Option(None, "--from-layer", metavar="N|DIGEST",
                                          help="Squash from this layer up: 1 is the bottom, -3 the last three; "
                                               "or a layer digest or diff ID."),
    tag: list[str] | None = typer.Option(None, "--tag", "-t", help="Name the result, name:tag (repeatable)."),
    fmt: common.FormatOption = None,
    compression: str | None = typer.Option(None, "--compression", "-c",
                                           help=f"New layer's compression: {common.COMPRESSIONS} (default gzip)."),
    level: int | None = typer.Option(None, "--level", help=common.LEVEL_HELP),
    message: str | None = typer.Option(None, "--message", "-m", help="Comment for the new history entry."),
    timestamp: str | None = typer.Option(None, "--timestamp", help="Creation time (RFC 3339 or epoch seconds); "
                                                                  "default SOURCE_DATE_EPOCH or now."),
    rewrite_timestamp: bool = typer.Option(False, "--rewrite-timestamp",
                                           help="Set every time of the new layer later than --timestamp "
                                                "(or SOURCE_DATE_EPOCH, one required) to it, for reproducible "
                                                "squashes; kept layers are never changed."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Compute and print the report; write nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no report."),
) -> None:
    common.check_level(level, compression)
    dest, fmt, tag = common.resolve_output(dest, fmt, tag)
    if dest is None and not dry_run:
        from ocisquash.errors import UsageError

        raise UsageError("missing OUT: where to write the squashed image", hint="give a path, '-', or --dry-run")
    from ocisquash import api
    from ocisquash.apitypes import parse_timestamp

    # The strings become the API's typed options, checked in the order the squash checks them.
    codec = api.Compression.parse(compression or "gzip")
    lvl = codec.check_level(level)
    created = None if timestamp is None else parse_timestamp(timestamp)
    with common.progress(quiet) as prog:
        report = api.squash_image(source, None if dry_run else dest, image=image, platform=platform,
                                  cut=api.Cut.parse(parent, from_layer), tags=tag or [],
                                  format=None if fmt is None else api.OutputFormat(fmt), compression=codec,
                                  level=lvl, message=message, timestamp=created,
                                  rewrite_timestamp=rewrite_timestamp, on_phase=prog.phase,
                                  on_progress=prog.advance)
    if json_out:
        import json

        stream = sys.stderr if dest == "-" and not dry_run else sys.stdout
        stream.write(json.dumps(report.to_json(), indent=2) + "\n")
    elif not quiet:
        if report.note and report.squashed:
            common.note(report.note)
        print_report(report)
