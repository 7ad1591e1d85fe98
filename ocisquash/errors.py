"""The one exception family of ocisquash: every error carries a message fit to show a user.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; anything that is not an
``OcisquashError`` reaching the CLI is a bug in ocisquash, not in the user's input. ``printable`` escapes
what a hostile input could use against a terminal (newlines, ESC and OSC sequences, C1 controls) in
everything ocisquash prints.
"""

from __future__ import annotations


class OcisquashError(Exception):
    """Base class: a failed operation or bad input (exit code 1)."""

    exit_code = 1
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UsageError(OcisquashError):
    """The command line itself is wrong (exit code 2)."""

    exit_code = 2


class FormatError(OcisquashError):
    """A file is not what it claims to be: malformed JSON, a bad tar, a field of the wrong type."""


class DigestMismatch(FormatError):
    """A blob's bytes do not hash to the digest (or size) its descriptor gives."""


class MissingBlob(FormatError):
    """A referenced blob is not present in the input."""


class UnsafePath(FormatError):
    """A member name, link or whiteout that would escape where it belongs."""


class NotFound(OcisquashError):
    """An image reference that matches nothing."""


class Ambiguous(OcisquashError):
    """An image reference (or a missing one) that matches several images."""


class MultiPlatform(Ambiguous):
    """An image name that stands for several platforms and no ``--platform`` said which."""


class LimitExceeded(OcisquashError):
    """A safety cap was reached; the message names the cap and how to raise it."""


class OutputError(OcisquashError):
    """The output cannot be written where asked."""


_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape_char(c: str) -> str:
    o = ord(c)
    if o in _ESCAPES:
        return _ESCAPES[o]
    return f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}"


def _unsafe(o: int) -> bool:
    # C0 controls and DEL; C1 controls (U+009B is a one-character CSI to many terminals); lone surrogates
    # (undecodable bytes of file names and arguments, which no UTF-8 stream can write); line and
    # paragraph separators; and the bidirectional overrides and isolates that reorder what a user sees.
    return (o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF or o in (0x2028, 0x2029)
            or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069)


def printable(text: str) -> str:
    """``text`` safe to put on a terminal, on one line: every control character (and lone surrogate)
    written as a backslash escape. Every name, message or field ocisquash prints goes through this."""
    if text.isprintable() and text.isascii():
        return text  # the common case, quickly
    return "".join(_escape_char(c) if _unsafe(ord(c)) else c for c in text)
