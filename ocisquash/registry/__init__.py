"""Registries as inputs and outputs: ``docker://HOST/REPO[:TAG|@DIGEST]`` (see ``client``).

``is_registry_ref`` is the one test callers make; ``open_source`` gives a ``sources.Source`` whose
images stream from the registry, ``open_sink`` a ``Sink`` that pushes to it. The options the CLI
gives (``--creds``, ``--authfile``, ``--cert-dir``, ``--tls-verify``) are set once with
``configure``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocisquash.registry.client import RegistryOptions, configure, current
from ocisquash.registry.ref import is_registry_ref

if TYPE_CHECKING:
    from ocisquash.registry.sink import RegistrySink
    from ocisquash.sources import Source

__all__ = ["RegistryOptions", "configure", "current", "is_registry_ref", "open_sink", "open_source"]


def open_source(text: str) -> Source:
    """A registry reference as an input: a virtual OCI layout of the one image (or index) it names."""
    from ocisquash import layout
    from ocisquash.image import Candidate, Image
    from ocisquash.registry.ref import parse
    from ocisquash.registry.sink import Origin, OriginOpener
    from ocisquash.registry.source import RegistryTree
    from ocisquash.sources import Source

    ref = parse(text)
    tree = RegistryTree(ref)
    src = Source(text, "registry", tree)
    origin = Origin(ref.api_host, ref.repo)
    try:
        cands = []
        for e in layout.entries(tree):
            def load(e: layout.Entry = e) -> Image:
                img = layout.load(tree, e)
                for ly in img.layers:
                    ly.opener = OriginOpener(ly.opener, origin)
                return img

            cands.append(Candidate(names=list(e.names), image_id=e.manifest.config.digest,
                                   manifest_digest=e.descriptor.digest, load=load,
                                   platform=str(e.platform) if e.platform else None))
        src.candidates = cands
    except BaseException:
        tree.close()
        raise
    return src


def open_sink(text: str) -> RegistrySink:
    from ocisquash.registry.ref import parse
    from ocisquash.registry.sink import RegistrySink

    return RegistrySink(parse(text))
