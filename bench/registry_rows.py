"""The local-registry rows of ``make bench`` (issue 14 item 3).

A throw-away ``docker-registry`` on 127.0.0.1 (``tests/registryd.py``) is given the benchmark image
with skopeo, then three rows run against it, each into a fresh repository per run:

- ``reg-squash``: ocisquash registry -> registry, to scratch;
- ``reg-parent``: ocisquash registry -> registry keeping the bottom three layers (another repository
  of the same registry: they are mounted, not uploaded);
- ``reg-push``: skopeo pushing ``sq-gzip``'s file output (the file -> file squash), i.e. the transfer a
  user adds to a file squash; ``sq-gzip + reg-push`` is what ``reg-squash`` replaces.

Bytes come from the registry's access log: downloaded = blob GET response bytes; uploaded = the
blobs whose uploads completed (their sizes asked with HEAD); kept layers uploaded must be 0.
"""

from __future__ import annotations

import re
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import registryd

NAMES = ("reg-squash", "reg-parent", "reg-push")
KEEP = 3


def fresh(repo: str) -> str:
    # one repository per run: a run must not find the previous run's blobs there
    return f'{repo}-$(date +%s%N)'


def setup(work: Path, oci: Path, squash: list[str], by: dict[str, Any]) -> registryd.Registry | None:
    """Start the registry, push the image, fill the rows' commands; None (rows skipped) if it cannot."""
    problem = registryd.problem()
    rows = [by[n] for n in NAMES if not by[n].skip]
    if not rows:
        return None
    if problem is not None:
        for r in rows:
            r.skip = problem
        return None
    reg = registryd.Registry(work / "registry").start()
    h = reg.host
    registryd.run("skopeo", "--insecure-policy", "copy", "-q", "--dest-tls-verify=false", f"oci:{oci}",
                  f"docker://{h}/bench/src:1")
    sq = " ".join(squash)
    src = f"docker://{h}/bench/src:1"
    by["reg-squash"].cmd = ["sh", "-c", f"{sq} squash {src} docker://{h}/{fresh('bench/flat')}:1 "
                                        "--tls-verify=false -q"]
    by["reg-parent"].cmd = ["sh", "-c", f"{sq} squash {src} docker://{h}/{fresh('bench/kept')}:1 "
                                        f"--from-layer {KEEP + 1} --tls-verify=false -q"]
    by["reg-push"].cmd = ["sh", "-c", f"skopeo --insecure-policy copy -q --dest-tls-verify=false "
                                      f"oci:{work / 'sq-gzip.oci'} docker://{h}/{fresh('bench/push')}:1"]
    return reg


_LINE = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')


def note(reg: registryd.Registry, since: int, until: int, runs: int) -> str:
    """Per run: bytes downloaded and uploaded, blobs mounted, kept layers uploaded."""
    reqs = [(m.group(1), m.group(2), int(m.group(3)), int(m.group(4)) if m.group(4).isdigit() else 0)
            for m in _LINE.finditer(reg.log.read_text(errors="replace"))][since:until]
    down = sum(size for method, path, status, size in reqs
               if method == "GET" and "/blobs/" in path and status in (200, 206))
    uploaded: list[tuple[str, str]] = []
    mounted = 0
    for method, path, status, _ in reqs:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        repo = path.split("/blobs/")[0].removeprefix("/v2/")
        if method == "PUT" and "/blobs/uploads/" in path and status == 201:
            uploaded += [(repo, d) for d in q.get("digest", [])]
        if method == "POST" and status == 201 and "mount" in q:
            mounted += 1
    up_bytes = 0
    with httpx.Client() as c:
        for repo, d in uploaded:
            r = c.head(f"{reg.url}/v2/{repo}/blobs/{d}")
            up_bytes += int(r.headers.get("content-length", 0))
    kept = set(_layers(reg, "bench/src", "1")[:KEEP])
    kept_up = sum(1 for _, d in uploaded if d in kept)
    return (f"per run: {down / runs / 1e6:.1f} MB downloaded, {up_bytes / runs / 1e6:.1f} MB uploaded "
            f"({len(uploaded) / runs:.0f} blobs), {mounted / runs:.0f} mounted; kept layers uploaded: {kept_up}")


def _layers(reg: registryd.Registry, repo: str, tag: str) -> list[str]:
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    r = httpx.get(f"{reg.url}/v2/{repo}/manifests/{tag}", headers={"Accept": accept})
    return [ly["digest"] for ly in r.json().get("layers", [])]


def stop(reg: registryd.Registry | None) -> None:
    if reg is not None:
        reg.stop()
        shutil.rmtree(reg.dir / "storage", ignore_errors=True)
