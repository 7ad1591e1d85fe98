"""The API's checks of what a caller passes: each value of the right type and range, or ``UsageError``
naming the argument, before anything is read.

Each check returns the value the squash or conversion takes (typed, as in ``ocisquash.apitypes``), so the
facade (``ocisquash.api``) is a line per argument. A string is parsed here only where the API takes one
by design (an input's reference, a platform).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import TypeVar

from ocisquash import codecs
from ocisquash.apitypes import ALL_PLATFORMS, Compression, Cut, OutputFormat
from ocisquash.errors import UsageError

T = TypeVar("T")


def path(p: object, what: str) -> str:
    """``p`` as a path string; ``what`` names the argument in the error."""
    if isinstance(p, str | os.PathLike):
        s = os.fspath(p)
        if isinstance(s, str) and s:
            return s
    raise UsageError(f"{what} {p!r}: expected a path (str or os.PathLike)")


def input_ref(p: object, what: str, image: str | None = None) -> tuple[str, str | None]:
    """An input as ``(path, image)``: a ``str`` may be a reference (``ocisquash.transports``) whose REF
    chooses the image, as ``image`` does; an ``os.PathLike`` is a path."""
    s = path(p, what)
    if not isinstance(p, str):
        return s, image
    from ocisquash import transports

    return transports.input_ref(s, image)


def cut(c: object) -> Cut:
    if c is None:
        return Cut.scratch()
    if not isinstance(c, Cut):
        raise UsageError(f"cut={c!r}: use Cut.scratch(), Cut.onto(...), Cut.auto() or Cut.from_layer(...)")
    return c


def ref(r: object) -> str | None:
    if r is None or (isinstance(r, str) and r):
        return r
    raise UsageError(f"image={r!r}: a non-empty reference string (name:tag, digest or image ID)")


def platform(p: object) -> str | None:
    if p is None:
        return None
    if not isinstance(p, str):
        raise UsageError(f"platform={p!r}: expected 'os/arch' or 'os/arch/variant', e.g. 'linux/arm64'")
    if p.strip().lower() == ALL_PLATFORMS:
        return p
    from ocisquash.model import Platform

    Platform.from_text(p)  # the one check and message, the command line's
    return p


def tags(t: object) -> list[str]:
    # A str is a Sequence[str] too: "app:1" would become six one-letter tags.
    if isinstance(t, str) or not isinstance(t, Sequence | set | frozenset):
        raise UsageError(f"tags={t!r}: a list of name:tag strings")
    out = list(t)
    for one in out:
        if not isinstance(one, str) or not one:
            raise UsageError(f"tag {one!r}: a non-empty name:tag string")
    return out


def _optional(value: object, kind: type[T], error: str) -> T | None:
    """``value`` if it is None or a ``kind``, else ``UsageError(error)``."""
    if value is None or isinstance(value, kind):
        return value
    raise UsageError(error)


def output_format(fmt: object) -> OutputFormat | None:
    return _optional(fmt, OutputFormat, f"format={fmt!r}: use OutputFormat.DOCKER, OutputFormat.OCI or "
                     "OutputFormat.OCI_DIR")


def compression(c: object) -> Compression:
    if not isinstance(c, Compression):
        raise UsageError(f"compression={c!r}: use "
                         + codecs.either([f"Compression.{w.name.upper()}" for w in codecs.written()]))
    return c


def level(c: Compression, lvl: object) -> int | None:
    if lvl is None:
        return None
    if isinstance(lvl, bool) or not isinstance(lvl, int):
        raise UsageError(f"level={lvl!r}: an int")
    return codecs.check_level(c.codec, lvl, "level=")


def message(m: object) -> str | None:
    return _optional(m, str, f"message={m!r}: a string")


def timestamp(t: object) -> dt.datetime | None:
    if t is None:
        return None
    if not isinstance(t, dt.datetime):
        raise UsageError(f"timestamp={t!r}: a datetime.datetime with a time zone")
    if t.tzinfo is None or t.utcoffset() is None:
        raise UsageError(f"timestamp={t!r}: a naive datetime is ambiguous; give it a time zone, e.g. "
                         "datetime(..., tzinfo=timezone.utc)")
    try:
        t.astimezone(dt.UTC)  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC, which datetime cannot hold
    except OverflowError:
        raise UsageError(f"timestamp={t!r}: before the year 1 in UTC") from None
    return t
