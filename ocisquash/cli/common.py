"""What every command shares: the stderr console, error lines, progress, and common options."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ocisquash import codecs

# rich (console ~40 ms, progress ~20 ms to import), json and ocisquash.limits are imported in the functions
# that use them, not here, for start-up time: --version, --help and quiet runs without errors need none of them.
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from rich.console import Console
    from rich.progress import Progress


@dataclass
class State:
    debug: bool = False
    quiet: bool = False
    # The run's scope (``cli._run``): --limit and the registry options are entered into it, and undone when it ends.
    scope: ExitStack | None = None


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
    from ocisquash.registry.ref import redact  # a docker://USER:PASSWORD@… argument is never echoed

    c = err_console()
    c.print(f"[bold red]error:[/] {_escape(redact(message))}")
    if hint:
        c.print(f"[dim]hint: {_escape(redact(hint))}[/]")


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
    """A rich progress bar on stderr, or nothing at all when stderr is not a terminal or with -q.

    A phase counts bytes unless told otherwise (``unit="items"``): bytes show as done/total, throughput
    and time left, as ``docker pull`` and ``skopeo copy`` show them."""

    def __init__(self, progress: Progress | None) -> None:
        self._p = progress
        self._task: Any = None

    def phase(self, description: str, total: int | None = None, *, unit: str = "bytes") -> None:
        if self._p is None:
            return
        if self._task is not None:
            self._p.remove_task(self._task)
        self._task = self._p.add_task(_escape(description), total=total, unit=unit)

    def advance(self, n: int) -> None:
        if self._p is not None and self._task is not None:
            self._p.advance(self._task, n)

    def describe(self, description: str) -> None:
        if self._p is not None and self._task is not None:
            self._p.update(self._task, description=_escape(description))


def _clock(seconds: float) -> str:
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s // 60 % 60:02}:{s % 60:02}" if s >= 3600 else f"{s // 60}:{s % 60:02}"


def progress_text(unit: str, done: float, total: float | None, speed: float | None) -> str:
    """The figures beside a bar: ``12.3MB / 45.6MB  8.1MB/s  ETA 0:04`` (bytes) or ``3/7`` (items)."""
    if total is None and not done:
        return ""  # nothing counted yet, nothing known: a spinner says enough
    if unit != "bytes":
        return f"{int(done)}/{int(total)}" if total is not None else f"{int(done)}"
    from ocisquash.goformat import human_size

    parts = [f"{human_size(int(done))} / {human_size(int(total))}" if total is not None else human_size(int(done))]
    if speed:
        parts.append(f"{human_size(int(speed))}/s")
        if total is not None and total > done:
            parts.append(f"ETA {_clock((total - done) / speed)}")
    return "  ".join(parts)


@contextmanager
def progress(quiet: bool = False) -> Iterator[Progressor]:
    if quiet or STATE.quiet or not sys.stderr.isatty():
        yield Progressor(None)
        return
    from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class Figures(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(progress_text(task.fields.get("unit", "bytes"), task.completed, task.total, task.speed))

    p = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                 TextColumn("{task.percentage:>3.0f}%"), Figures(), TimeElapsedColumn(),
                 console=err_console(), transient=True)
    with p:
        yield Progressor(p)


# Outside ``cli._run`` (a caller of the command functions themselves, such as typer's test runner) the
# options hold for the process, as they did before runs were scoped: this stack holds them until exit, when
# atexit closes it (before module teardown, which would leave their exits without their globals).
_PROCESS_SCOPE = ExitStack()
_process_scope_closes = False


def _enter(cm: AbstractContextManager[None]) -> None:
    """``cm`` for the rest of the run: entered into the scope ``cli._run`` opens, and undone when it ends."""
    if STATE.scope is not None:
        STATE.scope.enter_context(cm)
        return
    global _process_scope_closes
    if not _process_scope_closes:
        import atexit

        atexit.register(_PROCESS_SCOPE.close)
        _process_scope_closes = True
    _PROCESS_SCOPE.enter_context(cm)


def apply_limits(values: list[str] | None) -> None:
    if not values:
        return
    from ocisquash import api, limits

    for v in values:
        name, n = limits.parse_option(v)  # each --limit checked in turn, with the option's words
        _enter(api.safety_limits({name: n}))


LEVEL_HELP = codecs.level_help()
"""``--level``'s help (squash, convert), from the codec table."""
COMPRESSIONS = codecs.written_names()
"""The names ``--compression`` takes, from the codec table."""


def check_level(level: int | None, compression: str | None) -> None:
    """``--level`` means one codec's level (gzip's 0-9, zstd's 1-19): without ``--compression`` it is a guess."""
    if level is not None and compression is None:
        from ocisquash.errors import UsageError

        ranges = codecs.either([f"a {c.name} level ({c.levels[0]}-{c.levels[1]})" for c in codecs.leveled()])
        gzip = codecs.Codec.GZIP
        example = level if gzip.levels[0] <= level <= gzip.levels[1] else gzip.default_level
        raise UsageError(f"--level needs --compression: a level is {ranges}",
                         hint=f"e.g. --compression gzip --level {example}")


def resolve_output(dest: str | None, fmt: str | None, tags: list[str] | None) -> tuple[str | None, str | None,
                                                                                list[str]]:
    """OUT as a path or a skopeo reference (``ocisquash.transports``), and ``--format`` in the library's
    names: ``(dest, format, tags)``, a REF in OUT added to the tags. (IN goes to the API as it is: the
    API reads references itself.)"""
    from ocisquash import transports

    if dest is None:
        return None, transports.format_name(fmt), list(tags or [])
    return transports.output_ref(dest, fmt, tags)


FORMAT_HELP = ("Output format: docker-archive (a docker save tar), oci-archive (an OCI layout tar) or oci-dir "
               "(an OCI layout directory); docker and oci are the old names (oci is the tar here, unlike "
               "skopeo's oci:, a directory).")
IN_OUT_HELP = ("IN and OUT may also be skopeo references: docker-archive:PATH[:REF], oci:DIR[:REF], "
               "oci-archive:PATH[:REF] (REF: the image to read, or the name to write), docker://HOST/REPO:TAG "
               "(a registry: see --creds, --src-creds, --dest-creds, --authfile, --cert-dir, --tls-verify).")

# The options and arguments several commands take, as typer's Annotated types: one declaration each, so
# the flags and help texts cannot drift apart between commands.
ImageOption = Annotated[str | None, typer.Option(
    "--image", "-i", metavar="REF", help="Which image of a multi-image input: name:tag, digest, or image ID prefix.")]
PlatformOption = Annotated[str | None, typer.Option(
    "--platform", metavar="OS/ARCH[/VARIANT]",
    help="Which platform, e.g. linux/arm64: must match exactly one image (its index entry's platform, else its "
         "config's).")]
FormatOption = Annotated[str | None, typer.Option("--format", help=FORMAT_HELP)]

_INPUT_HELP = ("OCI layout dir, OCI tar, docker save tar, or -; or docker-archive:PATH[:REF], oci:DIR[:REF], "
               "oci-archive:PATH[:REF], FILE:REF (REF names the image), or docker://HOST/REPO:TAG (a registry).")
InArg = Annotated[str, typer.Argument(metavar="IN", help="Input: " + _INPUT_HELP)]
ImageArg = Annotated[str, typer.Argument(metavar="IMAGE", help=_INPUT_HELP)]
PathArg = Annotated[str, typer.Argument(metavar="PATH", help=_INPUT_HELP)]

# What every command that reads or writes an image takes besides its own options: --limit, and the
# registry options (docker://HOST/REPO:TAG as IN or OUT), named and meant as skopeo's.
LimitOption = Annotated[list[str] | None, typer.Option(
    "--limit", metavar="NAME=N",
    help="Raise a safety cap for trusted input, e.g. --limit max_json=67108864 (see OCISQUASH_* variables).")]
CredsOption = Annotated[str | None, typer.Option(
    "--creds", metavar="USER:PASSWORD",
    help="Registry credentials, when every registry of the run is one HOST:PORT (else use --src-creds and "
         "--dest-creds). Without any, --authfile or the containers/docker auth files are read, per host. "
         "Credentials are sent to their registry's own scheme, host and port only.")]
SrcCredsOption = Annotated[str | None, typer.Option(
    "--src-creds", metavar="USER:PASSWORD",
    help="Credentials for the registry of IN and --parent only (as skopeo copy's --src-creds).")]
DestCredsOption = Annotated[str | None, typer.Option(
    "--dest-creds", metavar="USER:PASSWORD",
    help="Credentials for the registry of OUT only (as skopeo copy's --dest-creds).")]
AuthfileOption = Annotated[str | None, typer.Option(
    "--authfile", metavar="FILE", help="Registry credentials file (containers-auth.json / docker config.json).")]
CertDirOption = Annotated[str | None, typer.Option(
    "--cert-dir", metavar="DIR",
    help="Registry TLS: CA certificates (*.crt) and client certificate (*.cert + *.key), as in containers-certs.d.")]
TlsVerifyOption = Annotated[str, typer.Option(
    "--tls-verify", metavar="BOOL", help="Verify registry TLS certificates (--tls-verify=false also allows HTTP).")]
RegistryTimeoutOption = Annotated[float, typer.Option(
    "--registry-timeout", metavar="SECONDS",
    help="Most time one registry request may take to connect, answer and send a small body (default 60); a "
         "blob's download or upload must move at least 1 KiB/s over each such window.")]

# (name, type, default) of those options, in the order --help lists them: after the command's own.
_RUN_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("limit", LimitOption, None), ("creds", CredsOption, None), ("src_creds", SrcCredsOption, None),
    ("dest_creds", DestCredsOption, None), ("authfile", AuthfileOption, None),
    ("cert_dir", CertDirOption, None), ("tls_verify", TlsVerifyOption, "true"),
    ("registry_timeout", RegistryTimeoutOption, 60.0),
)


def run_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` taking the run options too (``--limit`` and the registry options), applied for the run
    before the command's own code starts. Their parameters are added to the signature typer reads, so each
    command declares only its own options."""
    import inspect

    own = inspect.signature(command, eval_str=True)
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
             for name, kind, default in _RUN_OPTIONS]

    def run(**kwargs: Any) -> None:
        given = {name: kwargs.pop(name, default) for name, _, default in _RUN_OPTIONS}
        apply_limits(given["limit"])
        apply_registry(given["creds"], given["authfile"], given["cert_dir"], given["tls_verify"],
                       src_creds=given["src_creds"], dest_creds=given["dest_creds"],
                       timeout=given["registry_timeout"])
        command(**kwargs)

    sig = own.replace(parameters=[*own.parameters.values(), *added])
    run.__signature__ = sig  # type: ignore[attr-defined]  # what typer (inspect.signature) reads
    run.__annotations__ = {p.name: p.annotation for p in sig.parameters.values()}
    run.__name__, run.__qualname__ = command.__name__, command.__qualname__
    run.__module__, run.__doc__ = command.__module__, command.__doc__
    return run


def apply_registry(creds: str | None, authfile: str | None, cert_dir: str | None, tls_verify: str, *,
                   src_creds: str | None = None, dest_creds: str | None = None, timeout: float = 60.0) -> None:
    """Hand the registry options to every registry source and sink of this run."""
    from ocisquash import api
    from ocisquash.errors import UsageError

    value = tls_verify.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise UsageError(f"--tls-verify={tls_verify!r}: expected true or false")
    if not 0 < timeout < float("inf"):
        raise UsageError(f"--registry-timeout {timeout}: give a number of seconds above 0")
    _enter(api.registry_access(api.RegistryAccess(creds, authfile, cert_dir, value in ("true", "1", "yes"),
                                                  src_creds=src_creds, dest_creds=dest_creds, timeout=timeout)))
