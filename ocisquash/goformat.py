"""Docker's ``--format`` for listings: a small Go-template subset, docker's JSON lines, aligned tables.

``docker images --format`` takes ``table`` (the default table), ``json`` (one ``{{json .}}`` object per
line), or a Go template such as ``'{{.Repository}}:{{.Tag}}'`` or ``'table {{.ID}}\\t{{.Size}}'`` (a
``table`` prefix prints a header row made of the fields' column names and aligns the columns). This
module implements the subset that covers those uses:

- literal text, with the two-character sequences ``\\t`` and ``\\n`` turned into a tab and a newline
  (docker does the same, so a shell-quoted ``'\\t'`` works);
- ``{{.Field}}``, ``{{json .Field}}``, ``{{json .}}``, with ``{{-``/``-}}`` trimming spaces around them.

Anything else (``if``, ``range``, pipes, other functions) is refused with a usage error that says what is
supported, and an unknown field names the valid ones: better one clear line than Go's half-rendered output.

Tables are aligned the way docker's ``tabwriter`` does it (a column is as wide as its widest cell plus 3
spaces, at least 10; the last column is not padded), never cut to the terminal width: a terminal wraps
a long line instead, as it does for docker. Lines never end in spaces.

Every value printed in text form goes through ``printable()`` first: an image's history or labels are
untrusted, and a raw escape sequence or carriage return from them must not reach the terminal.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ocisquash.errors import UsageError

TABLE = "table"
JSON = "json"
MIN_WIDTH = 10
PADDING = 3

# Go's encoding/json escapes these for HTML safety; docker's JSON lines carry them, so we do too, and
# escape the control characters a terminal would act on (DEL, C1 controls, bidi overrides) as well.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_RE = re.compile("[<>&\u2028\u2029\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def human_size(n: int) -> str:
    """A byte count as docker prints sizes (``images``, ``history``; also our progress and reports): go-units
    ``HumanSizeWithPrecision(n, 3)``, decimal units, three significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    f = float(n)
    i = 0
    while f >= 1000 and i < len(units) - 1:
        f /= 1000
        i += 1
    text = f"{f:.3g}"
    if "e" in text and i < len(units) - 1:  # 999.9 kB rounds to 1e+03: say 1 MB instead
        return f"{f / 1000:.3g}{units[i + 1]}"
    return f"{text}{units[i]}"


def _unsafe(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat == "Cc" or (cat == "Cf" and unicodedata.bidirectional(ch) in
                           ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI", "LRM", "RLM", "ALM"))


def printable(text: str) -> str:
    """``text`` with every control character (and bidi override) shown as an escape: ``\\n``, ``\\x1b``."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if not _unsafe(ch):
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def go_json(value: object) -> str:
    """``value`` as Go's ``json.Marshal`` writes it (compact, sorted keys, HTML characters escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return _JSON_RE.sub(lambda m: _JSON_ESCAPES.get(m.group(), f"\\u{ord(m.group()):04x}"), text)


# ------------------------------------------------------------------------------------------ tables


def _width(text: str) -> int:
    if text.isascii() and text.isprintable():  # one cell per character: most cells, without rich's lookup
        return len(text)
    from rich.cells import cell_len  # terminal cells: a CJK character takes two

    return cell_len(text)


def align(rows: Sequence[Sequence[str]], *, right: Sequence[int] = (), min_width: int = MIN_WIDTH,
          padding: int = PADDING) -> list[str]:
    """Rows of cells as aligned lines. Every cell but a row's last is padded to its column's width."""
    return list(_aligned(rows, right=right, min_width=min_width, padding=padding))


def _aligned(rows: Sequence[Sequence[str]], *, right: Sequence[int] = (), min_width: int = MIN_WIDTH,
             padding: int = PADDING) -> Iterator[str]:
    widths: list[int] = []
    for row in rows:
        # A row's last cell is not padded, so it widens its column only when right-aligned.
        for i, cell in enumerate(row if len(row) - 1 in right else row[:-1]):
            w = max(_width(cell) + padding, min_width)
            if i == len(widths):
                widths.append(w)
            elif w > widths[i]:
                widths[i] = w
    for row in rows:
        parts = []
        for i, cell in enumerate(row):
            if i == len(row) - 1:
                if i in right:
                    cell = " " * (widths[i] - padding - _width(cell)) + cell
                parts.append(cell)
                continue
            gap = widths[i] - _width(cell)
            parts.append(" " * (gap - padding) + cell + " " * padding if i in right else cell + " " * gap)
        yield "".join(parts).rstrip(" ")


def tabulate(text: str) -> list[str]:
    """Docker's tabwriter over rendered template text: tab-separated cells, newline-separated rows."""
    return align([line.split("\t") for line in text.split("\n")])


# ------------------------------------------------------------------------------------------ templates


_FIELD = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)\Z")
_SUPPORTED = "{{.Field}}, {{json .Field}}, {{json .}}, \\t, \\n, and a 'table ' prefix"


@dataclass(frozen=True)
class _Action:
    field: str | None
    """The field, or None for ``.`` (the whole row)."""
    as_json: bool


Piece = str | _Action


@dataclass(frozen=True)
class Template:
    """A parsed ``--format`` value for a listing with the fields ``headers`` names."""

    pieces: tuple[Piece, ...]
    table: bool
    """Print a header row and align the columns (``table`` or a ``table ...`` template)."""
    is_json: bool
    """``json``: one object per row (``{{json .}}``)."""

    def uses(self, name: str) -> bool:
        return any(isinstance(p, _Action) and p.field == name for p in self.pieces)

    def render(self, row: Mapping[str, str], optional: Collection[str] = ()) -> str:
        """One row as text; ``optional`` fields are left out of ``{{json .}}`` when they are empty."""
        out = []
        for p in self.pieces:
            if isinstance(p, str):
                out.append(p)
            elif p.field is None:
                whole = {k: v for k, v in row.items() if v or k not in optional}
                out.append(go_json(whole) if p.as_json else go_map(whole))
            elif p.as_json:
                out.append(go_json(row[p.field]))
            else:
                out.append(printable(row[p.field]))
        return "".join(out)

    def header(self, headers: Mapping[str, str]) -> str:
        return "".join(p if isinstance(p, str) else headers.get(p.field or "", "") for p in self.pieces)


def go_map(row: Mapping[str, str]) -> str:
    """How Go's template prints a map: ``map[Key:value ...]`` in key order."""
    return "map[" + " ".join(f"{k}:{printable(row[k])}" for k in sorted(row)) + "]"


def parse(fmt: str, fields: Sequence[str], *, default_table: str) -> Template:
    """Parse a ``--format`` value; ``default_table`` is the template ``table`` stands for."""
    source = fmt
    if source.strip() == JSON:
        source = "{{json .}}"
        is_json = True
    else:
        is_json = False
    if source.strip() == TABLE:
        source = default_table
    table = source.startswith(TABLE)
    if table:
        source = source[len(TABLE):]
    source = source.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    pieces: list[Piece] = []
    pos = 0
    trim_next = False  # the previous action ended in "-}}": drop the spaces that follow it
    for start, end, trim_left, body, trim_right in _actions(source, fmt):
        text = source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\n")
        if trim_left:
            text = text.rstrip(" \t\n")
        if text:
            pieces.append(text)
        pieces.append(_action(body, fmt, fields))
        pos = end
        trim_next = trim_right
    rest = source[pos:]
    if trim_next:
        rest = rest.lstrip(" \t\n")
    if rest:
        pieces.append(rest)
    return Template(tuple(pieces), table, is_json)


def _actions(source: str, fmt: str) -> Iterator[tuple[int, int, bool, str, bool]]:
    """Each ``{{...}}`` of ``source``: its span, a ``{{-``, the body without its spaces, a ``-}}``.

    A scan with ``str.find``, linear in the length of ``source``: the regular expression it replaces
    (``{{(-?)\\s*(.*?)\\s*(-?)}}``) backtracked over every ``{{`` without a ``}}`` and every run of
    spaces, and took a minute on a 4 KB format string. An action ends at the first ``}}`` after its
    ``{{``, as it did there."""
    pos = 0
    while (start := source.find("{{", pos)) >= 0:
        close = source.find("}}", start + 2)
        if close < 0:
            raise UsageError(f"--format {_shown(fmt)}: unclosed action '{{{{'", hint=f"supported: {_SUPPORTED}")
        inner = source[start + 2:close]
        trim_left = inner.startswith("-")
        if trim_left:
            inner = inner[1:]
        trim_right = inner.endswith("-")
        if trim_right:
            inner = inner[:-1]
        yield start, close + 2, trim_left, inner.strip(), trim_right
        pos = close + 2


def _shown(text: str, limit: int = 80, *, quote: bool = True) -> str:
    """``text`` for an error message, cut to ``limit`` characters: a 64 KB format is not worth echoing."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return repr(cut) if quote else cut


def _action(body: str, fmt: str, fields: Sequence[str]) -> _Action:
    words = body.split()
    as_json = bool(words) and words[0] == "json"
    if as_json:
        words = words[1:]
    m = _FIELD.match(words[0]) if len(words) == 1 else None
    if len(words) == 1 and words[0] == ".":
        return _Action(None, as_json)
    if not m:
        raise UsageError(f"--format {_shown(fmt)}: cannot use {{{{{_shown(body, quote=False)}}}}} here",
                         hint=f"supported: {_SUPPORTED}")
    name = m.group(1)
    if name not in fields:
        raise UsageError(f"--format {_shown(fmt)}: no field {_shown(name)}; valid fields: {', '.join(fields)}",
                         hint="field names are case-sensitive, as in docker: {{.ID}}, {{.Repository}}")
    return _Action(name, as_json)


def write(template: Template, rows: Iterable[Mapping[str, str]], headers: Mapping[str, str],
          emit: Callable[[str], None], optional: Collection[str] = ()) -> None:
    """Render every row (and the header row of a table) and hand each finished line to ``emit``."""
    for line in lines(template, rows, headers, optional):
        emit(line)


def lines(template: Template, rows: Iterable[Mapping[str, str]], headers: Mapping[str, str],
          optional: Collection[str] = ()) -> Iterator[str]:
    """The finished lines of ``write``, one at a time (a table's are aligned once every row is rendered)."""
    if template.table:
        texts = itertools.chain([template.header(headers)], (template.render(r, optional) for r in rows))
        # each rendered row split into cells as it comes: docker's tabwriter over the joined text
        yield from _aligned([line.split("\t") for text in texts for line in text.split("\n")])
        return
    for r in rows:
        yield template.render(r, optional)


# ------------------------------------------------------------------------------------------ Go's time


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?([Zz]|[+-]\d{2}:?\d{2})?\Z")


def parse_time_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (Docker writes nanoseconds), or None."""
    if not text:
        return None
    m = _RFC3339.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=UTC)
    except ValueError:
        return None
    offset = 0
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    secs = int(dt.timestamp()) - offset
    if secs <= -62135596800:  # Go's zero time (0001-01-01): "no creation time"
        return None
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def human_duration(seconds: float) -> str:
    """go-units ``HumanDuration``, as ``docker images`` prints it (without " ago")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since_text(created_ns: int | None, now: float) -> str:
    """"3 weeks ago", or "N/A" when the image has no creation time."""
    if created_ns is None:
        return "N/A"
    return human_duration(now - created_ns / 1e9) + " ago"


def go_time_string(created_ns: int | None) -> str:
    """Go's ``time.Time.String()`` in local time, as ``docker images`` prints CreatedAt; "N/A" if unknown."""
    if created_ns is None:
        return "N/A"
    t = datetime.fromtimestamp(created_ns // 1_000_000_000, UTC).astimezone()
    return t.strftime("%Y-%m-%d %H:%M:%S %z ") + (t.tzname() or t.strftime("%z"))


def rfc3339(created_ns: int | None) -> str:
    """RFC 3339 in UTC to the second, as ``docker history`` prints CreatedAt; "N/A" if unknown."""
    if created_ns is None:
        return "N/A"
    return datetime.fromtimestamp(created_ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
