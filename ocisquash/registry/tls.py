"""TLS for registries: the context a client verifies with, and telling a TLS failure from others.

Verified by default against the system store plus a certs.d directory (``--cert-dir``, else
``/etc/containers/certs.d/HOST`` and ``/etc/docker/certs.d/HOST``, as containers-certs.d(5) reads
them): ``*.crt`` are extra CAs, ``NAME.cert`` with ``NAME.key`` a client certificate.
``--tls-verify=false`` accepts any certificate.
"""

from __future__ import annotations

import glob
import os
import ssl

from ocisquash.errors import UsageError
from ocisquash.registry.options import RegistryOptions

CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")


def context(host: str, opts: RegistryOptions) -> ssl.SSLContext:
    """The TLS context for ``host``: the system store, plus ``--cert-dir`` or the host's certs.d directory."""
    if not opts.tls_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
    if opts.cert_dir is not None:
        if not os.path.isdir(opts.cert_dir):
            raise UsageError(f"--cert-dir {opts.cert_dir}: not a directory")
        dirs = [opts.cert_dir]
    else:
        dirs = [os.path.join(d, host) for d in CERT_DIRS if os.path.isdir(os.path.join(d, host))]
    for d in dirs:
        for ca in sorted(glob.glob(os.path.join(d, "*.crt"))):
            try:
                ctx.load_verify_locations(cafile=ca)
            except (ssl.SSLError, OSError) as e:
                raise UsageError(f"{ca}: not a readable CA certificate ({e.__class__.__name__})") from None
        for cert in sorted(glob.glob(os.path.join(d, "*.cert"))):
            key = cert[: -len(".cert")] + ".key"
            if not os.path.exists(key):
                raise UsageError(f"{cert}: client certificate without its key {os.path.basename(key)}")
            try:
                ctx.load_cert_chain(cert, key)
            except (ssl.SSLError, OSError) as e:
                raise UsageError(f"{cert}: cannot load the client certificate ({e.__class__.__name__})") from None
    return ctx


def is_failure(e: BaseException) -> bool:
    """Whether a transport error (or anything in its cause chain) is a TLS handshake or certificate failure."""
    seen: BaseException | None = e
    for _ in range(8):  # the cause chain is short; bounded anyway
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        text = str(seen)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text or "TLS" in text or "WRONG_VERSION" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
