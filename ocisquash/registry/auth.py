"""Where registry credentials come from, the way skopeo and docker find them.

Order: the side's own option (``--src-creds`` for IN and ``--parent``, ``--dest-creds`` for OUT), else
``--creds USER[:PASS]`` (allowed only when every registry of the run is one host: ``check_scope``,
so one password never reaches two registries); else ``--authfile FILE`` alone; else the first of
``$REGISTRY_AUTH_FILE``, ``${XDG_RUNTIME_DIR}/containers/auth.json``,
``~/.config/containers/auth.json`` and ``~/.docker/config.json`` that has an entry for the registry.
In a file, ``credHelpers[host]`` and then ``credsStore`` name a ``docker-credential-NAME`` program
(asked with ``get``, the host on stdin), and ``auths`` entries are matched by host (``https://`` and
a trailing path tolerated; ``host/namespace`` keys, most specific first, as containers-auth.json
allows). Credentials are held in a ``Credentials`` whose ``repr`` hides them: nothing here prints,
logs or puts them in an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field

from ocisquash.errors import OcisquashError, UsageError
from ocisquash.registry.options import AuthOptions
from ocisquash.registry.ref import DOCKER_HUB, RegistryRef

HELPER_TIMEOUT = 30.0  # seconds a credential helper may take (it may talk to a keychain daemon)
_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io")


class AuthError(OcisquashError):
    """Credentials could not be found, read, or were refused."""


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)
    origin: str = ""  # where they came from, for messages: never the values

    def __repr__(self) -> str:
        return f"Credentials(from {self.origin or '?'})"

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def parse_creds(text: str, option: str = "--creds") -> Credentials:
    user, sep, password = text.partition(":")
    if not user:
        raise UsageError(f"{option}: expected USER[:PASSWORD] (the user name is empty)")
    if not sep:
        # skopeo asks for the password on a terminal; a script must give it.
        raise UsageError(f"{option}: give USER:PASSWORD (ocisquash does not prompt for a password)")
    return Credentials(user, password, option)


def _given(opts: AuthOptions, dest: bool) -> tuple[str, str] | None:
    """The credentials option that applies to a side of the run, ``(text, option name)``, or None."""
    own = opts.dest_creds if dest else opts.src_creds
    if own is not None:
        return own, "--dest-creds" if dest else "--src-creds"
    return (opts.creds, "--creds") if opts.creds is not None else None


def check_scope(opts: AuthOptions, sources: list[RegistryRef], dest: RegistryRef | None) -> None:
    """Refuse, before anything is sent, a credentials option that would reach two registries:
    ``--creds`` where the registries of the run (IN, ``--parent``, OUT) are not one host, or
    ``--src-creds`` where IN and ``--parent`` are on two. Hosts compare with their ports (two ports are
    two registries). Each option is also checked for USER:PASSWORD form here, before any request."""
    src_hosts = {r.api_host for r in sources}
    dest_hosts = {dest.api_host} if dest is not None else set()
    reach: dict[str, set[str]] = {"--src-creds": set(), "--dest-creds": set(), "--creds": set()}
    for side_dest, hosts in ((False, src_hosts), (True, dest_hosts)):
        given = _given(opts, side_dest)
        if given is not None:
            reach[given[1]] |= hosts
    for name, text in (("--creds", opts.creds), ("--src-creds", opts.src_creds), ("--dest-creds", opts.dest_creds)):
        if text is not None:
            parse_creds(text, name)
    for name, hint in (("--creds", "give --src-creds USER:PASSWORD for IN and --parent, --dest-creds USER:PASSWORD "
                                    "for OUT"),
                       ("--src-creds", "IN and --parent are on different registries: put each one's credentials in "
                                       "an --authfile (looked up per host)")):
        names = sorted(reach[name])
        if len(names) > 1:
            raise UsageError(f"{name} would go to {len(names)} registries ({', '.join(names)}); one password is "
                             "sent to one registry only", hint=hint)


def default_auth_files() -> list[str]:
    out = []
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        out.append(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        out.append(os.path.join(xdg, "containers", "auth.json"))
    home = os.path.expanduser("~")
    out.append(os.path.join(home, ".config", "containers", "auth.json"))
    docker_cfg = os.environ.get("DOCKER_CONFIG")
    out.append(os.path.join(docker_cfg or os.path.join(home, ".docker"), "config.json"))
    return out


def find(ref: RegistryRef, opts: AuthOptions, *, dest: bool = False) -> Credentials | None:
    """The credentials to use for ``ref``'s registry, on the OUT side (``dest``) or on the IN side (IN and
    ``--parent``), or None (anonymous)."""
    given = _given(opts, dest)
    if given is not None:
        return parse_creds(*given)
    if opts.authfile is not None:
        if not os.path.isfile(opts.authfile):
            raise UsageError(f"--authfile {opts.authfile}: no such file")
        return _from_file(opts.authfile, ref)
    for path in default_auth_files():
        if os.path.isfile(path):
            c = _from_file(path, ref)
            if c is not None:
                return c
    return None


def _from_file(path: str, ref: RegistryRef) -> Credentials | None:
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read(4 << 20))
    except (OSError, ValueError) as e:
        # The message names the file and the reason, never its content.
        raise AuthError(f"{path}: cannot read credentials: {type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise AuthError(f"{path}: not a JSON object of credentials")
    keys = _candidate_keys(ref)
    helpers = obj.get("credHelpers")
    if isinstance(helpers, dict):
        for k in keys:
            name = helpers.get(k)
            if isinstance(name, str) and name:
                return _from_helper(name, _helper_server(ref, k))
    auths = obj.get("auths")
    if isinstance(auths, dict):
        norm = {_normalize_key(k): v for k, v in auths.items() if isinstance(k, str)}
        for k in keys:
            entry = norm.get(k)
            if isinstance(entry, dict):
                c = _from_entry(entry, path)
                if c is not None:
                    return c
    store = obj.get("credsStore")
    if isinstance(store, str) and store:
        return _from_helper(store, _helper_server(ref, ref.host))
    return None


def _candidate_keys(ref: RegistryRef) -> list[str]:
    """Keys to look for, most specific first: host/repo, host/namespace…, host (and Hub's aliases)."""
    hosts = [ref.host] + ([h for h in _HUB_KEYS if h != ref.host] if ref.host == DOCKER_HUB else [])
    out = []
    parts = ref.repo.split("/")
    for host in hosts:
        for i in range(len(parts), 0, -1):
            out.append(_normalize_key(host + "/" + "/".join(parts[:i])))
        out.append(_normalize_key(host))
    return list(dict.fromkeys(out))


def _normalize_key(key: str) -> str:
    k = key
    for scheme in ("https://", "http://"):
        if k.startswith(scheme):
            k = k[len(scheme):]
            # docker's legacy keys carry an API path (https://index.docker.io/v1/): the host is the key
            k = k.split("/", 1)[0]
    k = k.rstrip("/")
    if k in _HUB_KEYS:
        return DOCKER_HUB
    return k


def _helper_server(ref: RegistryRef, key: str) -> str:
    # docker stores Hub credentials under its legacy index URL; helpers are asked with that name
    return "https://index.docker.io/v1/" if ref.host == DOCKER_HUB else key


def _from_entry(entry: dict[str, object], path: str) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            raw = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(f"{path}: an 'auth' entry is not base64 of USER:PASSWORD") from None
        user, sep, password = raw.partition(":")
        if not sep or not user:
            raise AuthError(f"{path}: an 'auth' entry is not base64 of USER:PASSWORD")
        return Credentials(user, password, path)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret, path)
    return None


def _from_helper(name: str, server: str) -> Credentials | None:
    prog = f"docker-credential-{name}"
    try:
        p = subprocess.run([prog, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT,
                           check=False)
    except FileNotFoundError:
        raise AuthError(f"credential helper {prog} is not on PATH",
                        hint="install it, or remove it from credHelpers/credsStore") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {prog} did not answer within {HELPER_TIMEOUT:.0f}s") from None
    if p.returncode != 0:
        # "credentials not found" is the protocol's way to say: none for this server
        if b"credentials not found" in p.stdout.lower() or b"credentials not found" in p.stderr.lower():
            return None
        raise AuthError(f"credential helper {prog} failed (exit {p.returncode})")
    try:
        obj = json.loads(p.stdout)
        user, secret = obj["Username"], obj["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {prog} gave no Username/Secret") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise AuthError(f"credential helper {prog} gave no Username/Secret")
    if user == "<token>":
        raise AuthError(f"credential helper {prog} gave an identity token; only user/password is supported")
    return Credentials(user, secret, prog)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` -> ``("bearer", {realm, service, scope})``."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key: str = rest[i:eq].strip().lower()
        i = eq + 1
        if i < n and rest[i] == '"':
            j = i + 1
            val = []
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                val.append(rest[j])
                j += 1
            params[key] = "".join(val)
            i = j + 1
        else:
            j = rest.find(",", i)
            j = n if j < 0 else j
            params[key] = rest[i:j].strip()
            i = j
    return scheme.lower(), params
