"""What every command shares: the stderr console, error lines, progress, and common options."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

# rich (console ~40 ms, progress ~20 ms to import), json and ocisquash.limits are imported in the functions
# that use them, not here, for start-up time: --version, --help and quiet runs without errors need none of them.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


@dataclass
class State:
    debug: bool = False
    quiet: bool = False


STATE = State()


def _no_color() -> bool:
    return "NO_COLOR" in os.environ


def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, no_color=_no_color(), highlight=False, soft_wrap=True)


def out_console() -> Console:
    from rich.console import Console

    return Console(no_color=_no_color(), highlight=False, soft_wrap=True)


def error_line(message: str, hint: str | None = None) -> None:
    c = err_console()
    c.print(f"[bold red]error:[/] {_escape(message)}")
    if hint:
        c.print(f"[dim]hint: {_escape(hint)}[/]")


def note(message: str) -> None:
    if not STATE.quiet:
        err_console().print(f"[cyan]note:[/] {_escape(message)}")


def _escape(text: str) -> str:
    """``text`` for a rich markup string: control characters escaped (one line, no terminal sequences),
    then markup escaped (a name like ``[bold]`` prints as itself)."""
    from rich.markup import escape

    from ocisquash.errors import printable

    return escape(printable(text))


safe = _escape


def cell(text: str) -> Any:
    """A table cell showing ``text`` as it is: control characters escaped, no markup interpreted."""
    from rich.text import Text

    from ocisquash.errors import printable

    return Text(printable(text))


def json_line(obj: Any, indent: int | None = None) -> str:
    """JSON for a terminal: non-ASCII text kept readable, but C1 controls, line separators and lone
    surrogates escaped (``json`` escapes only C0 controls), so the bytes are valid UTF-8 and inert."""
    import json

    from ocisquash.errors import printable

    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    if text.isascii():
        return text
    return "".join(f"\\u{ord(c):04x}" if printable(c) != c else c for c in text)


def print_traceback() -> None:
    err_console().print_exception()


def print_json(obj: Any) -> None:

    sys.stdout.write(json_line(obj, indent=2) + "\n")
    sys.stdout.flush()


class Progressor:
    """A rich progress bar on stderr, or nothing at all when stderr is not a terminal or with -q."""

    def __init__(self, progress: Progress | None) -> None:
        self._p = progress
        self._task: Any = None

    def phase(self, description: str, total: int | None = None) -> None:
        if self._p is None:
            return
        if self._task is not None:
            self._p.remove_task(self._task)
        self._task = self._p.add_task(_escape(description), total=total)

    def advance(self, n: int) -> None:
        if self._p is not None and self._task is not None:
            self._p.advance(self._task, n)

    def describe(self, description: str) -> None:
        if self._p is not None and self._task is not None:
            self._p.update(self._task, description=_escape(description))


@contextmanager
def progress(quiet: bool = False) -> Iterator[Progressor]:
    if quiet or STATE.quiet or not sys.stderr.isatty():
        yield Progressor(None)
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                 TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                 console=err_console(), transient=True)
    with p:
        yield Progressor(p)


def apply_limits(values: list[str] | None) -> None:
    if not values:
        return
    from ocisquash import limits

    for v in values:
        name, n = limits.parse_option(v)
        limits.configure({name: n})


LIMIT_OPTION = typer.Option(
    None, "--limit", metavar="NAME=N",
    help="Raise a safety cap for trusted input, e.g. --limit max_json=67108864 (see OCISQUASH_* variables).",
)
IMAGE_OPTION = typer.Option(None, "--image", "-i", metavar="REF",
                            help="Which image of a multi-image input: name:tag, digest, or image ID prefix.")
PLATFORM_OPTION = typer.Option(None, "--platform", metavar="OS/ARCH[/VARIANT]",
                               help="Which platform of a multi-platform image, e.g. linux/arm64.")

_INPUT_HELP = "OCI layout dir, OCI tar, docker save tar, or -."
IN_ARG = typer.Argument(..., metavar="IN", help="Input: " + _INPUT_HELP)
IMAGE_ARG = typer.Argument(..., metavar="IMAGE", help=_INPUT_HELP)
PATH_ARG = typer.Argument(..., metavar="PATH", help=_INPUT_HELP)
