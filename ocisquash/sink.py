"""An output's format: the writing side of ``sources`` (which opens inputs).

The sinks themselves live with their formats (``Format.open_sink``: ``formats.ocilayout.OciDirSink``,
``formats.ocitar.TarSink``, ``registry.sink``), all standing on ``formats.commit``; which format an
output is comes from the registration table (``formatlist.output_format``).
"""

from __future__ import annotations

from ocisquash import formatlist
from ocisquash.errors import UsageError
from ocisquash.formats.base import Format


def guess_format(path: str) -> str:
    """The name of the format an output path is without ``--format``, whatever the input's form (a
    registry reference aside): standard output, a ``.tar`` name (also ``.tar.gz``/``.tgz``/``.tar.zst``)
    or an existing file is a ``docker save`` tarball in the Docker 25+ shape, which ``docker load`` reads
    and which is also an OCI layout tar; a directory, or any other new name, an OCI layout directory.
    ``--format oci`` asks for a pure OCI layout tar."""
    return next((f for f in formatlist.FORMATS if not f.claims_reference(path) and f.claims_output(path)),
                formatlist.DEFAULT_OUTPUT).name


def index_format(dest: str, name: str | None) -> Format:
    """The format of an output that is to hold an image index (``--platform all``): the one asked for
    or guessed, or, guessed but unable to hold one, its stand-in (a ``docker save`` tarball's: an OCI
    layout tar, which docker load reads too)."""
    fmt = formatlist.output_format(dest, name)
    if fmt.holds_index:
        return fmt
    if name is not None or fmt.index_stand_in is None:
        raise UsageError(f"--platform all writes an image index, which {fmt.title} cannot hold",
                         hint="use --format oci (an OCI layout tar that docker load reads too) or a directory")
    return formatlist.by_name(fmt.index_stand_in)
