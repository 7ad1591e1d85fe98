"""The ``ocisquash`` command line: a thin typer layer over the library.

``main()`` runs the typer app and turns every ``OcisquashError`` into one red line (and a hint) on
stderr with its exit code: 1 for a failed operation or bad input, 2 for a usage error, 130 for Ctrl-C.
A traceback is shown only for a bug, or for anything with ``--debug``. ``ocisquash IN OUT`` with no
command name means ``ocisquash squash IN OUT``.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import typer

from ocisquash import __version__
from ocisquash.cli import common

app = typer.Typer(
    name="ocisquash",
    help=(
        "Squash container image layers into one, without a daemon.\n\n"
        "Reads and writes OCI image layouts (directories or tars) and docker save tarballs.\n\n"
        "Examples:\n\n"
        "  docker save app | ocisquash - - | docker load\n\n"
        "  ocisquash in.tar out.tar --tag app:squashed\n\n"
        "  ocisquash images in.tar"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ocisquash {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for every error."),
) -> None:
    common.STATE.debug = debug


def _register() -> None:
    from ocisquash.cli import convert as _convert  # noqa: F401

    for name in ("squash", "listing"):
        try:
            __import__(f"ocisquash.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"ocisquash.cli.{name}":
                raise


_register()


def _commands() -> set[str]:
    names = set()
    for cmd in app.registered_commands:
        names.add(cmd.name or (cmd.callback.__name__ if cmd.callback else ""))
    return names


def _with_default_command(argv: list[str]) -> list[str]:
    """``ocisquash IN OUT ...`` means ``ocisquash squash IN OUT ...``."""
    commands = _commands()
    for i, a in enumerate(argv):
        if a in ("--debug",):
            continue
        if a.startswith("-") and a != "-":
            return argv  # --help, --version, or an option before any command: leave it to click
        if a in commands or "squash" not in commands:
            return argv
        return [*argv[:i], "squash", *argv[i:]]
    return argv


# typer >= 0.29 vendors click (typer._click) and does not install click itself: its usage errors are
# TyperExceptions that can show themselves, or a missing argument would be an "internal error" (70).
_EXIT: tuple[type[BaseException], ...] = (typer.Exit,)
_ABORT: tuple[type[BaseException], ...] = (typer.Abort,)
_CLICK_ERROR: tuple[type[BaseException], ...] = (typer.TyperException,)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every finally/except BaseException, so temporary files are removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("OCISQUASH_DEBUG") == "1"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    args = _with_default_command(args)
    try:
        rv = app(args=args, prog_name="ocisquash", standalone_mode=False)
        # typer turns Ctrl-C into its own Exit(130), which standalone_mode=False *returns*: an int here
        # is an exit status, never a success to drop on the floor.
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            if rv == 130:
                common.error_line("interrupted")
            return rv
        return 0
    except _EXIT as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except _ABORT:
        common.error_line("interrupted")
        return 130
    except _CLICK_ERROR as e:
        e.show()  # type: ignore[attr-defined]
        return int(e.exit_code)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        common.error_line("interrupted")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:
        from ocisquash.errors import OcisquashError

        if isinstance(e, OcisquashError):
            if debug:
                common.print_traceback()
            common.error_line(str(e), e.hint)
            return e.exit_code
        common.print_traceback() if debug else None
        common.error_line(f"internal error: {type(e).__name__}: {e}",
                          "this is a bug in ocisquash; run again with --debug and report the traceback")
        return 70
    finally:
        signal.signal(signal.SIGTERM, previous)  # a library caller's own handler comes back


def run() -> None:
    sys.exit(main())
