"""skopeo's image references (``containers-transports(5)``) beside plain paths, and the output format names.

An input or output may be written as skopeo writes it:

- ``docker-archive:PATH[:REF]`` — a ``docker save`` tarball;
- ``oci:DIR[:REF]`` — an OCI image layout directory;
- ``oci-archive:PATH[:REF]`` — an OCI image layout in a tar;
- ``docker://HOST/REPO[:TAG|@DIGEST]`` — an image in a registry (``ocisquash.registry``). The whole
  reference is what the registry code opens: its tag is part of it, so it has no REF, and
  ``--format`` does not apply to it as an output.

PATH ends at the first ``:`` (as in containers/image). For an input, REF names the image (what
``--image`` takes). For an output, REF is the name to give it: for ``oci:`` and ``oci-archive:`` it is
the ``org.opencontainers.image.ref.name`` itself, written exactly as given (``oci:DIR:sq`` writes
``sq``, ``oci:DIR:example.com/app:1`` writes ``example.com/app:1``, and no ``io.containerd.image.name``),
as skopeo writes and reads it, so ``skopeo inspect oci:DIR:sq`` finds the image; for ``docker-archive:``
it is a ``name:tag`` as ``--tag`` takes it. A plain ``FILE:REF``, where FILE exists, names an image of
FILE too. A path that exists as written is always a path.

Output format names follow skopeo's transports: ``docker-archive``, ``oci-archive`` (a tar) and ``oci``
... except that ``oci`` has long meant the tar here; so ``--format oci`` keeps that meaning (scripts use
it) and the directory is ``oci-dir`` (or ``oci-layout``). ``docker`` stays an alias of ``docker-archive``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ocisquash.errors import UsageError
from ocisquash.registry.ref import is_registry_ref

TRANSPORTS = {"docker-archive": "docker", "oci-archive": "oci", "oci": "oci-dir"}
"""skopeo's transport -> the format name the library takes."""
UNSUPPORTED = ("containers-storage", "docker-daemon", "dir", "ostree", "sif", "tarball")
"""skopeo's other transports: an input that names one (and is no file) is a usage error, not a missing file."""
FORMATS = {"docker-archive": "docker", "docker": "docker", "oci-archive": "oci", "oci": "oci",
           "oci-dir": "oci-dir", "oci-layout": "oci-dir"}
"""``--format`` names (skopeo's and the old ones) -> the format name the library takes."""


# The grammar the image spec gives ref.name (annotations.md), which containers/image checks too.
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(f"{_COMPONENT}(?:/{_COMPONENT})*\\Z")


class RefName(str):
    """An output name that is an OCI layout's ``ref.name`` verbatim (from ``oci:DIR:REF`` or
    ``oci-archive:FILE:REF``), not a docker reference to normalise: it travels with ``--tag``'s names,
    and the layout writers give it a ref.name annotation and nothing else."""

    __slots__ = ()


def ref_name(text: str, where: str) -> RefName:
    """``text`` as a layout ref.name, or a usage error naming the grammar."""
    if len(text) > 255 or not _REF_NAME.match(text):
        raise UsageError(f"{where}: {text!r} is not a valid OCI ref.name",
                         hint="letters and digits in components separated by / and joined by - . _ : @ + or --, "
                              "e.g. sq, 1.0, example.com/app:1")
    return RefName(text)


@dataclass(frozen=True)
class Ref:
    path: str
    """A path, or a whole ``docker://`` reference."""
    ref: str | None = None
    fmt: str | None = None
    """The library's format name when a transport prefix gave one."""


def parse(text: str, *, file_ref: bool = True) -> Ref:
    """``docker-archive:PATH[:REF]``, ``oci:DIR[:REF]``, ``oci-archive:PATH[:REF]``, ``docker://…``, a path,
    or (with ``file_ref``, for inputs) ``FILE:REF``."""
    if is_registry_ref(text):
        return Ref(text)  # before the path test: sources and sinks take docker:// as a registry, path or not
    if text == "-" or os.path.lexists(text):
        return Ref(text)
    head, sep, rest = text.partition(":")
    if sep and head in TRANSPORTS:
        path, colon, ref = rest.partition(":")
        if not path:
            raise UsageError(f"{text!r}: no path after '{head}:'", hint=f"e.g. {head}:app.tar:app:1.0")
        if colon and not ref:  # "oci:DIR:" names no image: not the same as leaving the name out
            raise UsageError(f"{text!r}: an empty name after the path", hint=f"e.g. {head}:{path}:app:1.0, or "
                             f"{head}:{path} for no name")
        if ref.startswith("@"):
            raise UsageError(f"{text!r}: a source index (@N) is not supported here; name the image instead",
                             hint="name:tag, digest, or image ID prefix")
        return Ref(path, ref or None, TRANSPORTS[head])
    if file_ref and sep and rest and os.path.lexists(head):
        return Ref(head, rest)
    if file_ref and sep and head in UNSUPPORTED:
        raise UsageError(f"{text!r}: ocisquash does not read skopeo's {head}: transport",
                         hint="inputs: a path, docker-archive:PATH, oci:DIR, oci-archive:PATH or docker://HOST/REPO:TAG")
    return Ref(text)


def input_ref(text: str, image: str | None) -> tuple[str, str | None]:
    """An input argument as ``(path, image reference)``: a reference in it stands in for ``--image``."""
    r = parse(text)
    return r.path, pick_image(text, r.ref, image)


def pick_image(text: str, named: str | None, image: str | None) -> str | None:
    """The image an input chooses: the one its reference ``text`` names (``named``), or else ``image``
    (``--image``); both naming different images is a usage error."""
    if named is not None and image is not None and named != image:
        raise UsageError(f"{text!r} names image {named!r} and --image names {image!r}", hint="give one")
    return named or image


def format_name(fmt: str | None) -> str | None:
    """A ``--format`` value as the library's format name (``docker``, ``oci`` or ``oci-dir``)."""
    if fmt is None:
        return None
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: use docker-archive, oci-archive or oci-dir",
                         hint="docker and oci (a tar) are accepted too")
    return FORMATS[fmt]


def output_ref(text: str, fmt: str | None, tags: list[str] | None) -> tuple[str, str | None, list[str]]:
    """An output argument as ``(path, format, tags)``: a transport sets the format, a REF adds a tag."""
    r = parse(text, file_ref=False)
    lib_fmt = format_name(fmt)
    if r.fmt is not None and lib_fmt is not None and r.fmt != lib_fmt:
        raise UsageError(f"{text!r} is {r.fmt} output but --format says {fmt}", hint="give one")
    out_tags: list[str] = list(tags or [])
    if r.ref is not None and r.ref not in out_tags:
        # oci: and oci-archive: (the library's oci-dir and oci): the ref.name itself, as skopeo writes it
        out_tags.append(ref_name(r.ref, text) if r.fmt in ("oci", "oci-dir") else r.ref)
    return r.path, r.fmt or lib_fmt, out_tags
