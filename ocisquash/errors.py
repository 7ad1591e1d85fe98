"""The one exception family of ocisquash: every error carries a message fit to show a user.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; anything that is not an
``OcisquashError`` reaching the CLI is a bug in ocisquash, not in the user's input.
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


class LimitExceeded(OcisquashError):
    """A safety cap was reached; the message names the cap and how to raise it."""


class OutputError(OcisquashError):
    """The output cannot be written where asked."""
