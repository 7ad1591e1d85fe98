"""Open an output by path and format: the writing side of ``sources`` (which opens inputs).

The sinks themselves live with their formats: ``formats.ocilayout.OciDirSink`` (a layout directory),
``formats.ocitar.TarSink`` (an OCI layout tar, or a ``docker save`` tar), ``registry.sink`` (a
registry); all stand on ``formats.commit``.
"""

from __future__ import annotations

import os
import stat

from ocisquash.errors import OutputError
from ocisquash.formats.commit import Sink
from ocisquash.formats.ocilayout import OciDirSink
from ocisquash.formats.ocitar import TarSink


def open_sink(path: str, fmt: str) -> Sink:
    """``fmt``: ``docker`` (docker save tar), ``oci`` (OCI layout tar) or ``oci-dir``; a ``docker://``
    reference is a registry (``fmt`` does not apply)."""
    from ocisquash import registry

    if registry.is_registry_ref(path):
        return registry.open_sink(path)
    if fmt == "oci-dir":
        if path == "-":
            raise OutputError("an OCI layout directory cannot go to standard output", hint="use --format oci or docker")
        return OciDirSink(path)
    return TarSink(path, docker=fmt == "docker")


def guess_format(path: str) -> str:
    """The output format from the output path, whatever the input's form: standard output, a
    ``.tar`` name (also ``.tar.gz``/``.tgz``/``.tar.zst``) or an existing file is a ``docker save``
    tarball in the Docker 25+ shape, which ``docker load`` reads and which is also an OCI layout tar;
    a directory, or any other new name, is an OCI layout directory. ``--format oci`` asks for a pure
    OCI layout tar: following the input's form instead gave OCI-tar inputs a ``.tar`` ``docker load``
    cannot read."""
    if path == "-":
        return "docker"
    if os.path.isdir(path) and not os.path.islink(path):
        return "oci-dir"
    lower = path.lower()
    if lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd")):
        return "docker"
    if os.path.exists(path) and stat.S_ISREG(os.stat(path).st_mode):
        return "docker"
    return "oci-dir"
