"""Where a registry's credentials may go: origins, ``Location`` resolution, and the rules, as pure logic.

An origin is scheme, host and port (RFC 6454): ``https://reg:443`` and ``https://reg:5000`` are two,
and so are ``http://reg`` and ``https://reg``. The rules the client keeps:

- A registry's credentials (its ``Basic`` header or the bearer token it issued) go to the registry's
  own origin only. A redirect or an upload ``Location`` elsewhere (a blob CDN, another port) is
  followed without them (``carries_credentials``).
- A ``Location`` is resolved against the URL of the request it answers (RFC 3986 §5, ``resolve``);
  nothing but ``http``/``https`` URLs with a host is accepted, and user information in one is dropped.
- Nothing leaves ``https`` for plain ``http`` (``downgrade``): a registry reached over TLS is never
  redirected or sent to a clear-text URL, with or without credentials (the layers of a private image
  are secrets too).
- A token realm gets the registry's credentials (``realm_refusal``) if it is ``https``; a plain
  ``http`` realm only on the registry's own host when that host is a loopback address (nothing leaves
  the machine) or the registry itself is plain ``http`` (``--tls-verify=false`` against a registry
  without TLS: the user already chose clear text for that host). This is go-containerregistry's rule
  (an ``http`` realm only for an insecure registry) plus the loopback case Debian's test registries use.
"""

from __future__ import annotations

import ipaddress

import httpx

Origin = tuple[str, str, int]  # scheme, host (lower case), port
DEFAULT_PORTS = {"http": 80, "https": 443}


class BadURL(ValueError):
    """A ``Location`` or realm that is no usable http(s) URL (the message never quotes it)."""


def origin_of(url: httpx.URL) -> Origin:
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or DEFAULT_PORTS.get(scheme, 0)


def show(origin: Origin) -> str:
    """``scheme://host:port``, for messages."""
    scheme, host, port = origin
    return f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"


def _checked(url: httpx.URL) -> httpx.URL:
    if url.scheme.lower() not in DEFAULT_PORTS or not url.host:
        raise BadURL("not an http(s) URL with a host")
    # user information in a URL a server gave would become an Authorization header of its choosing
    return url.copy_with(userinfo=b"") if url.userinfo else url


def parse(text: str) -> httpx.URL:
    """An absolute URL (a token realm), checked."""
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise BadURL("not a valid URL") from None
    return _checked(url)


def resolve(base: httpx.URL, location: str) -> httpx.URL:
    """``location`` (a ``Location`` header) resolved against ``base``, the URL of the request it answers,
    as RFC 3986 §5 says: ``u1`` next to the last path segment, ``/u1`` at the root, ``//h/u1`` on host h."""
    try:
        url = base.join(location.strip())
    except (httpx.InvalidURL, ValueError, TypeError):
        raise BadURL("not a valid URL reference") from None
    return _checked(url)


def carries_credentials(url: httpx.URL, registry: Origin) -> bool:
    """Whether a request to ``url`` may carry the credentials of the registry at ``registry``."""
    return origin_of(url) == registry


def downgrade(to: httpx.URL, registry: Origin) -> bool:
    """Whether going to ``to`` would leave TLS for a registry reached over TLS."""
    return registry[0] == "https" and to.scheme.lower() != "https"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def realm_refusal(realm: httpx.URL, registry: Origin) -> str | None:
    """Why the token realm ``realm`` may not get the credentials of the registry at ``registry``, or None."""
    if realm.scheme.lower() == "https":
        return None
    if realm.host.lower() != registry[1]:
        return "a plain http token service on another host would get the password in clear text"
    if registry[0] == "http" or is_loopback(registry[1]):
        return None
    return "a plain http token service would get the password in clear text"
