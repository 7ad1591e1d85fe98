"""Registries as inputs and outputs: ``docker://HOST/REPO[:TAG|@DIGEST]`` (see ``client``).

``is_registry_ref`` is the one test callers make; ``open_input`` gives what ``registry.format`` reads
an input's images from (its documents fetched by digest, its layers streamed); ``open_sink`` a ``Sink``
that pushes to it. Nothing here imports ``sources``: the registry sits below it. The options
the CLI gives (``--creds``, ``--src-creds``, ``--dest-creds``, ``--authfile``, ``--cert-dir``,
``--tls-verify``, ``--registry-timeout``) are set once with ``configure``; ``check_credentials`` refuses,
before a run starts, credentials that would reach two registries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocisquash.errors import UsageError
from ocisquash.registry.options import AuthOptions, RegistryOptions, configure, current
from ocisquash.registry.ref import is_registry_ref

if TYPE_CHECKING:
    from ocisquash.registry.sink import Origin, RegistrySink
    from ocisquash.registry.source import RegistryInput

__all__ = ["AuthOptions", "RegistryOptions", "check_credentials", "configure", "current", "is_registry_ref",
           "open_input", "open_sink"]


def check_credentials(sources: list[str], dest: str | None) -> None:
    """Before a run that reads ``sources`` (IN, ``--parent``) and writes ``dest``: every ``docker://`` one
    parsed (a malformed one, or one carrying USER:PASSWORD@, is a usage error) and the credentials options
    checked to reach one registry each (``auth.check_scope``), and a side's option for a side that is no
    registry refused."""
    from ocisquash.registry import auth
    from ocisquash.registry.ref import parse

    refs = [parse(s) for s in sources if is_registry_ref(s)]
    out = parse(dest) if dest is not None and is_registry_ref(dest) else None
    opts = current().auth
    # a side's option for a side that is no registry would be silently ignored: say so instead
    if opts.src_creds is not None and not refs:
        raise UsageError("--src-creds: neither IN nor --parent is a registry (docker://…)")
    if opts.dest_creds is not None and dest is not None and out is None:
        raise UsageError("--dest-creds: OUT is not a registry (docker://…)")
    auth.check_scope(opts, refs, out)


def open_input(text: str) -> tuple[RegistryInput, Origin]:
    """A registry reference as an input (nothing fetched yet), and the origin its layers carry: a sink on
    the same registry mounts them instead of uploading them."""
    from ocisquash.registry.ref import parse
    from ocisquash.registry.sink import Origin
    from ocisquash.registry.source import RegistryInput

    ref = parse(text)
    return RegistryInput(ref), Origin(ref.api_host, ref.repo)


def open_sink(text: str) -> RegistrySink:
    from ocisquash.registry.ref import parse
    from ocisquash.registry.sink import RegistrySink

    return RegistrySink(parse(text))


def output_tags(dest: str, tags: list[str]) -> list[str]:
    """The names a registry output gets: OUT's own ``host/repo:tag``, and each ``--tag`` (a bare tag,
    or a reference in OUT's repository: a registry can only tag inside the repository pushed to)."""
    from ocisquash import reference
    from ocisquash.errors import UsageError
    from ocisquash.registry.ref import parse

    ref = parse(dest)
    out = [ref.with_tag()]
    for t in tags:
        name, tag, digest = reference.split(t) if ("/" in t or ":" in t) else (ref.name, t, None)
        if digest is not None or not tag:
            raise UsageError(f"--tag {t!r}: give a tag for {ref.name}")
        if reference.normalize_name(name) != reference.normalize_name(ref.name):
            raise UsageError(f"--tag {t!r}: a registry output is tagged only in its own repository {ref.name}",
                             hint=f"use --tag {tag}, or push again to docker://{name}:{tag}")
        full = f"{ref.name}:{tag}"
        if not reference.is_valid_tagged(full):
            raise UsageError(f"--tag {t!r} is not a valid tag")
        if full not in out:
            out.append(full)
    return out
