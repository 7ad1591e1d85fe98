"""The names of images in an OCI layout's ``index.json``, read and written: the rule every reader and
writer of ocisquash follows, and the ``index.json`` of any layout (a directory's, a tar's):

- ``io.containerd.image.name``: the full reference, ``docker.io/h2/a:1`` (Docker 25+, containerd).
  ``org.opencontainers.image.ref.name``: the tag alone, ``1`` (what ``skopeo oci:DIR:TAG`` and
  ``umoci --image DIR:TAG`` look up). A bare layout tag (``--tag flat`` into the input layout) is
  written as ref.name only.
- An entry's *name* (``entry_name``) is its full reference when it has one, else its ref.name.
- Writing a name replaces the entries of the same name (``same_name``: references compared
  normalised, so skopeo's verbatim ref.name ``app:1`` is ``docker.io/library/app:1``; a bare tag
  equals only itself) and no others: ``h2/b:1`` never takes ``h2/a:1``'s entry although both have
  ref.name ``1``.
- Reading: an image is listed and copied under its full names (``preferred_names``); ``--image``
  matches full names normalised and ref.name exactly, and a ref.name several images share is
  ambiguous, an error that lists them. skopeo's ``oci:DIR:1`` takes the first such entry.
"""

from __future__ import annotations

from typing import Any

from ocisquash import model, reference
from ocisquash.formats.commit import WrittenImage
from ocisquash.model import Descriptor
from ocisquash.transports import RefName


def is_full_name(name: str) -> bool:
    """Whether ``name`` is a reference (``repo:tag``, ``host/repo``) rather than a bare layout tag."""
    return "/" in name or ":" in name


def entry_name(annotations: dict[str, str]) -> str | None:
    """The name an index.json entry stands for: its full reference when it has one, else its ref.name."""
    full = annotations.get(model.CONTAINERD_NAME)
    if isinstance(full, str) and full:
        return full
    ref = annotations.get(model.REF_NAME)
    return ref if isinstance(ref, str) and ref else None


def same_name(a: str, b: str) -> bool:
    """Whether two entry names name the same image: references compared normalised (``app:1`` is
    ``docker.io/library/app:1``, as skopeo's verbatim ref.name meets our full name), a bare tag only
    equal to itself."""
    if a == b:
        return True
    if is_full_name(a) and is_full_name(b):
        return reference.normalize(a) == reference.normalize(b)
    return False


def names_of(desc: Descriptor) -> list[str]:
    out = []
    full = desc.annotations.get(model.CONTAINERD_NAME)
    if full:
        out.append(full)
    ref = desc.annotations.get(model.REF_NAME)
    if ref and ref not in out:
        out.append(ref)
    return out


def preferred_names(names: list[str]) -> list[str]:
    """An image's names without a bare ref.name that only repeats the tag of one of its full names:
    ``docker.io/h2/a:1`` is the name, its ref.name ``1`` a lookup key (still matched by ``--image``),
    not a second name to list or to copy to an output."""
    tags = {reference.split(n)[1] or "latest" for n in names if is_full_name(n)}
    return [n for n in names if is_full_name(n) or n not in tags]


def index_entries(images: list[WrittenImage], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """index.json ``manifests``: the existing entries no new name takes, then one per new name.

    The naming rule is ``same_name``'s: a new name takes only an entry of the same image name
    (its full reference, or a bare layout tag); another repository's entry with the same
    ``ref.name`` tag stays.
    """
    new_names = [t for img in images for t in img.tags]

    def taken(e: dict[str, Any]) -> bool:
        ann = e.get("annotations")
        name = entry_name(ann) if isinstance(ann, dict) else None
        return name is not None and any(same_name(name, t) for t in new_names)

    out = [e for e in existing if not taken(e)]
    for img in images:
        base = img.manifest.to_json()
        base.pop("annotations", None)
        if img.platform is not None:
            base["platform"] = img.platform.to_json()
        if not img.tags:
            ann = dict(img.annotations)
            if ann:
                base["annotations"] = ann
            out.append(base)
        for t in img.tags:
            d = dict(base)
            ann = dict(img.annotations)
            if isinstance(t, RefName):  # oci:DIR:REF: the ref.name alone, verbatim, as skopeo writes it
                ann.pop(model.CONTAINERD_NAME, None)
                ann[model.REF_NAME] = str(t)
            else:
                if is_full_name(t):
                    ann[model.CONTAINERD_NAME] = t
                ann[model.REF_NAME] = _ref_name(t)
            d["annotations"] = ann
            out.append(d)
    return out


def _ref_name(tag: str) -> str:
    """What goes in ``org.opencontainers.image.ref.name``: the tag, as Docker and containerd write it."""
    if is_full_name(tag):
        _, t, _ = reference.split(tag)
        return t or "latest"
    return tag


def index_bytes(entries: list[dict[str, Any]]) -> bytes:
    return model.canonical_json({"schemaVersion": 2, "mediaType": model.OCI_INDEX, "manifests": entries})
