"""The registry options of a run (``--creds``, ``--src-creds``, ``--dest-creds``, ``--authfile``,
``--cert-dir``, ``--tls-verify``), set once by the CLI. Kept apart from ``client`` so setting them costs
no import of the HTTP stack."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AuthOptions:
    """The CLI's ``--creds``, ``--src-creds`` (IN and ``--parent``), ``--dest-creds`` (OUT) and ``--authfile``.
    A side's own option wins over ``--creds``, which may stand only for one registry (``auth.check_scope``)."""

    creds: str | None = field(default=None, repr=False)
    authfile: str | None = None
    src_creds: str | None = field(default=None, repr=False)
    dest_creds: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RegistryOptions:
    """Auth (``AuthOptions``), TLS (``--cert-dir``, ``--tls-verify``), ``--registry-timeout``."""

    auth: AuthOptions = field(default_factory=AuthOptions)
    cert_dir: str | None = None
    tls_verify: bool = True
    timeout: float = 60.0  # --registry-timeout: seconds per request; a blob's progress window (``bounds``)


_OPTIONS = RegistryOptions()


def configure(opts: RegistryOptions) -> None:
    """Set the options every registry source and sink of this process uses (the CLI calls this)."""
    global _OPTIONS
    _OPTIONS = opts


def current() -> RegistryOptions:
    return _OPTIONS
