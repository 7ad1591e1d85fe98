"""The ``ocisquash`` command line: a thin typer layer over the library.

``main()`` runs the typer app and turns every ``OcisquashError`` and every click usage error into one
red line (and a hint) on stderr with its exit code (``EXIT_CODES``). A traceback is shown only for a bug
(exit 70), or for anything with ``--debug``. ``ocisquash IN OUT`` with no command name means ``ocisquash
squash IN OUT``; a first word that is no command and no file but close to a command is a typo, not an
input. ``--debug`` and ``-q`` work before or after the command name.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

import typer

from ocisquash import __version__, heap
from ocisquash.cli import common

app = typer.Typer(
    name="ocisquash",
    help=(
        "Squash container image layers into one, without a daemon.\n\n"
        "Reads and writes OCI image layouts (directories or tars) and docker save tarballs.\n\n"
        "Examples:\n\n"
        "  docker save app | ocisquash - - | docker load\n\n"
        "  ocisquash in.tar out.tar --tag app:squashed\n\n"
        "  ocisquash images in.tar\n\n"
        "Exit status: 0 success; 1 failed operation or bad input (validate: mismatches; analyze --ci: a "
        "broken rule); 2 usage error; 70 internal error (a bug in ocisquash: please report it); 130 "
        "interrupted (Ctrl-C); 143 terminated (SIGTERM)."
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
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Show the version."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback for every error (before or after the "
                                                      "command name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no report (the command's own -q)."),
) -> None:
    common.STATE.debug = debug or common.STATE.debug
    common.STATE.quiet = quiet or common.STATE.quiet


@app.command(
    "completion",
    help=(
        "Print the shell completion script for bash, zsh or fish.\n\n"
        "Examples:\n\n"
        "  source <(ocisquash completion bash)                  # this shell only\n\n"
        "  ocisquash completion zsh > ~/.zfunc/_ocisquash\n\n"
        "  ocisquash completion fish > ~/.config/fish/completions/ocisquash.fish"
    ),
)
def completion(shell: str = typer.Argument(..., metavar="SHELL", help="bash, zsh or fish.")) -> None:
    if shell not in ("bash", "zsh", "fish"):
        from ocisquash.errors import UsageError

        raise UsageError(f"no completion for shell {shell!r}", hint="use bash, zsh or fish")
    from typer._completion_shared import get_completion_script  # what typer's --show-completion prints

    # The script calls ocisquash back with _OCISQUASH_COMPLETE set; main() then answers with the words.
    typer.echo(get_completion_script(prog_name="ocisquash", complete_var="_OCISQUASH_COMPLETE", shell=shell))


# Each command module registers its commands on ``app`` with ``@app.command`` when imported (so ``app``
# must exist first); the library code they run is imported inside the command functions, for start-up time.
# Imported one by one: ``--help`` lists the commands in this order.
from ocisquash.cli import convert  # noqa: E402, F401, I001
from ocisquash.cli import squash  # noqa: E402, F401
from ocisquash.cli import listing  # noqa: E402, F401


def _commands() -> set[str]:
    names = set()
    for cmd in app.registered_commands:
        names.add(cmd.name or (cmd.callback.__name__ if cmd.callback else ""))
    return names


EXIT_CODES = {0: "success", 1: "failed operation or bad input", 2: "usage error", 70: "internal error (a bug)",
              130: "interrupted", 143: "terminated"}
_GLOBAL_FLAGS = ("--debug", "-q", "--quiet")


def _split_global_flags(argv: list[str]) -> tuple[list[str], bool]:
    """``--debug`` anywhere (before a ``--``) is taken out; ``-q`` before the command name moves after it."""
    debug = False
    end = argv.index("--") if "--" in argv else len(argv)
    head: list[str] = []
    moved: list[str] = []
    rest: list[str] = []
    seen_command = False
    for i, a in enumerate(argv):
        if i >= end:
            rest.extend(argv[i:])
            break
        if a == "--debug":
            debug = True
        elif not seen_command and a in ("-q", "--quiet"):
            moved.append("-q")
        elif not seen_command and not a.startswith("-"):
            seen_command = True
            head.append(a)
            head.extend(moved)
            moved = []
        else:
            head.append(a)
    return head + moved + rest, debug


def _with_default_command(argv: list[str]) -> list[str]:
    """``ocisquash IN OUT ...`` means ``ocisquash squash IN OUT ...``; a near-miss of a command name is a typo."""
    commands = _commands()
    for i, a in enumerate(argv):
        if a.startswith("-") and a != "-":
            return argv  # --help, --version, or an option before any command: leave it to click
        if a in commands or "squash" not in commands:
            return argv
        if a != "-" and not os.path.lexists(a) and not any(c in a for c in "/:.") and a.isprintable():
            import difflib

            close = difflib.get_close_matches(a, sorted(commands), n=1, cutoff=0.6)
            if close:
                from ocisquash.errors import UsageError

                raise UsageError(f"no such command '{a}' — did you mean '{close[0]}'?",
                                 hint=f"commands: {', '.join(sorted(commands))}; to squash a file named {a}, "
                                      f"write ./{a}")
        return [*argv[:i], "squash", *argv[i:]]
    return argv


def _click_usage(e: Any) -> tuple[str, str]:
    """A click usage error as our one line and hint, in place of click's usage block."""
    message = str(e.format_message()).strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(e, "ctx", None)
    path = ctx.command_path if ctx is not None else "ocisquash"
    return message, f"see '{path} --help'"


# typer >= 0.29 vendors click (typer._click) and does not install click itself: its usage errors are
# TyperExceptions that can show themselves, or a missing argument would be an "internal error" (70).
_EXIT: tuple[type[BaseException], ...] = (typer.Exit,)
_ABORT: tuple[type[BaseException], ...] = (typer.Abort,)
_CLICK_ERROR: tuple[type[BaseException], ...] = (typer.TyperException,)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through every finally/except BaseException, so temporary files are removed.
    raise SystemExit(128 + signum)


def _run(args: list[str]) -> object:
    """The typer app, with the caps a run's ``--limit`` sets and its registry options put back when it
    returns (``limits.scoped``, and the scope ``common`` enters ``ocisquash.api.safety_limits`` and
    ``registry_access`` into): ``main`` may run many times in one process (a library caller, the
    tests), and one run's options must not carry over to the next."""
    from contextlib import ExitStack

    from ocisquash import limits

    with limits.scoped(), ExitStack() as scope:
        common.STATE.scope = scope
        try:
            return app(args=args, prog_name="ocisquash", standalone_mode=False)
        finally:
            common.STATE.scope = None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    args, debug_flag = _split_global_flags(args)
    debug = debug_flag or os.environ.get("OCISQUASH_DEBUG") == "1"
    common.STATE.debug = debug
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    heap.tune()
    if "_OCISQUASH_COMPLETE" in os.environ:  # a shell asking for completions (see `ocisquash completion`)
        from typer._completion_classes import completion_init  # registers bash, zsh, fish

        completion_init()
    try:
        args = _with_default_command(args)
        rv = _run(args)
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
        code = int(getattr(e, "exit_code", 2))
        if hasattr(e, "format_message"):
            message, hint = _click_usage(e)
            common.error_line(message, hint if code == 2 else None)
        else:
            e.show()  # type: ignore[attr-defined]
        return code
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
