"""The names an output image is given: ``--tag``'s, else the input image's, else the output's own
(a registry reference, ``Format.output_tags``), and beside the original in its own layout directory."""

from __future__ import annotations

import re

from ocisquash import reference
from ocisquash.errors import UsageError
from ocisquash.formats.base import Format
from ocisquash.transports import RefName


def output_tags(names: list[str], tags: list[str]) -> list[str]:
    """The names to give the output: ``--tag`` values (normalised), else the input image's names."""
    chosen = tags or names
    if not tags:
        # A layout entry names its image twice, by io.containerd.image.name (``docker.io/acme/app:1.2``)
        # and by ref.name (``1.2``): the bare tag is the full name's own, not a second name, and
        # writing it again would put a second index.json entry in a tarball (skopeo's oci-archive:
        # then asks which image to take).
        full_tags = {reference.split(n)[1] or "latest" for n in names if "/" in n or ":" in n}
        chosen = [n for n in names if "/" in n or ":" in n or n not in full_tags]
    out: list[str] = []
    for t in chosen:
        if isinstance(t, RefName):  # a layout ref.name from oci:DIR:REF: written as given
            if t not in out:
                out.append(t)
            continue
        full = reference.normalize(t) if ("/" in t or ":" in t or tags) else t
        if tags and reference.name_too_long(full):
            raise UsageError(f"--tag {t!r}: the repository name is over {reference.NAME_TOTAL_LENGTH_MAX} "
                             "characters (docker's limit, counting the registry)")
        if tags and not reference.is_valid_tagged(full):
            raise UsageError(f"--tag {t!r} is not a valid name:tag")
        if full not in out:
            out.append(full)
    return out


def names_for(fmt: Format | None, dest: str | None, names: list[str], tags: list[str], *,
              same_layout: bool = False) -> tuple[list[str], bool]:
    """The output's names and whether they are the input's (no ``--tag``: ``docker load`` moves them
    onto it). ``same_layout``: OUT is IN's own layout directory, the image written beside the original."""
    out = layout_tags(names, tags) if same_layout else output_tags(names, tags)
    own = fmt.output_tags(dest, tags) if fmt is not None and dest is not None else None
    if own is not None:
        return own, False
    return out, not (tags or same_layout) and bool(out)


_LAYOUT_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")


def layout_tags(names: list[str], tags: list[str]) -> list[str]:
    """Tags for the squashed image beside the original in its own layout.

    A bare ``--tag flat`` is the layout tag ``flat`` itself: read as the name ``flat:latest`` its
    ref.name would be ``latest`` and take the original's entry away. ``name:tag`` keeps its meaning.
    Without ``--tag`` the original keeps its tag and the squashed image sits beside it, ``-squashed``.
    """
    if not tags:
        return [(names[0] if names else "image") + "-squashed"]
    bare = [t for t in tags if "/" not in t and ":" not in t]
    for t in bare:
        if not _LAYOUT_TAG.match(t):
            raise UsageError(f"--tag {t!r} is not a valid tag")
    named = [t for t in tags if t not in bare]
    return list(dict.fromkeys(bare + (output_tags([], named) if named else [])))
