"""ocisquash benchmark (``make bench``): time, CPU and peak RSS of squashing a realistic image.

Builds (once, cached under bench/.cache/) a multi-layer image with umoci and skopeo, or takes one
with ``--image-dir``; runs every row ``--repeat`` times, one after another, each as a child process
measured with ``os.wait4`` (wall clock, user+sys CPU, ``ru_maxrss``); prints a table with the
medians and ratios to the reference rows; checks the targets of issue 5; writes everything to
bench/results/latest.json. See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import imagebuild
import registry_rows

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CACHE = BENCH / ".cache"
DEFAULT_JSON = BENCH / "results" / "latest.json"
RSS_LIMIT_MB = 100.0


@dataclass
class Sample:
    wall: float
    cpu: float
    rss_mb: float
    rc: int
    err: str = ""
    out_bytes: int | None = None
    others_cpu: float = 0.0  # CPU seconds used machine-wide by other processes during the run


@dataclass
class Row:
    name: str
    label: str
    cmd: list[str] = field(default_factory=list)
    out: Path | None = None  # removed before each run
    warm: list[Path] = field(default_factory=list)  # `cat`ed to /dev/null before the row
    skip: str = ""  # non-empty: not run, this says why
    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(s.rc == 0 for s in self.samples)

    def med(self, attr: str) -> float | None:
        vals = [getattr(s, attr) for s in self.samples if s.rc == 0]
        return statistics.median(vals) if vals else None

    @property
    def failure(self) -> str:
        bad = [s for s in self.samples if s.rc != 0]
        if not bad:
            return ""
        s = bad[-1]
        what = "timeout" if s.rc == -9 else f"exit {s.rc}"
        return f"{what} ({len(bad)}/{len(self.samples)} runs): {s.err}"


# ------------------------------------------------------------------------------------------ measuring


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def tree_bytes(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return None


# A small launcher process spawns every measured command. ru_maxrss of a child starts from the
# high-water RSS of the process that spawned it (vfork/posix_spawn share its memory until exec), so
# spawning from this ~30 MB bench process would put a 30 MB floor under every row; the launcher
# (python -S, os/json/signal/time only) keeps that floor at ~10 MB.
LAUNCHER = r"""
import json, os, signal, sys, time
pid = 0
def _kill(signum, frame):
    if pid:
        os.kill(pid, signal.SIGKILL)
signal.signal(signal.SIGALRM, _kill)
for line in sys.stdin:
    req = json.loads(line)
    os.chdir(req["cwd"])
    fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
          (os.POSIX_SPAWN_OPEN, 1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
          (os.POSIX_SPAWN_OPEN, 2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)]
    t0 = time.perf_counter()
    try:
        pid = os.posix_spawnp(req["cmd"][0], req["cmd"], req["env"], file_actions=fa)
    except OSError as e:
        print(json.dumps({"rc": 127, "err": f"cannot start: {e}"}), flush=True)
        continue
    signal.setitimer(signal.ITIMER_REAL, req["timeout"])
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    pid = 0
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall": wall,
                      "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss}), flush=True)
"""


class Launcher:
    """The long-lived launcher process; ``run`` measures one command (see LAUNCHER)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, cmd: list[str], cwd: Path, env: dict[str, str], stdout: Path, stderr: Path,
            timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        req = {"cmd": cmd, "cwd": str(cwd), "env": env, "stdout": str(stdout), "stderr": str(stderr),
               "timeout": timeout}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the launcher process died")
        return dict(json.loads(line))

    def floor_mb(self) -> float:
        """Peak RSS reported for a trivial command: the floor under every row's RSS."""
        r = self.run(["true"], REPO, dict(os.environ), Path(os.devnull), Path(os.devnull), 10)
        return float(r.get("maxrss_kb", 0)) / 1024

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


LAUNCH: Launcher | None = None


def measure(cmd: list[str], log: Path, env: dict[str, str], timeout: float, out: Path | None) -> Sample:
    """Run ``cmd`` once as a child of the launcher: wall time, CPU (user+sys) and peak RSS from wait4."""
    global LAUNCH
    if LAUNCH is None:
        LAUNCH = Launcher()
    busy0 = busy_seconds()
    r = LAUNCH.run(cmd, REPO, env, log.with_suffix(".out"), log, timeout)
    others = max(0.0, busy_seconds() - busy0 - float(r.get("cpu", 0.0)))
    rc = int(r["rc"])
    if "wall" not in r:
        return Sample(0.0, 0.0, 0.0, rc, str(r.get("err", "")))
    err = "" if rc == 0 else (last_line(log) or last_line(log.with_suffix(".out")))
    if rc == -9 and not err:
        err = f"killed after {timeout:.0f}s"
    return Sample(float(r["wall"]), float(r["cpu"]), float(r["maxrss_kb"]) / 1024, rc, err,
                  tree_bytes(out) if out is not None and rc == 0 else None, round(others, 2))


def busy_seconds() -> float:
    """Machine-wide non-idle CPU seconds so far (from /proc/stat), to spot competing load."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rm(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def warm(paths: list[Path]) -> None:
    """``cat IN > /dev/null``: the same warm page cache for every tool."""
    files: list[str] = []
    for p in paths:
        files += [str(p)] if p.is_file() else [str(f) for f in sorted(p.rglob("*")) if f.is_file()]
    if files:
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=False)


def run_row(row: Row, repeat: int, work: Path, env: dict[str, str], timeout: float) -> None:
    if row.skip:
        print(f"  {row.name:<20} skipped: {row.skip}", file=sys.stderr, flush=True)
        return
    warm(row.warm)
    for i in range(repeat):
        rm(row.out)
        os.sync()  # flush the previous run's writes outside the timed region
        s = measure(row.cmd, work / f"{row.name}.{i}.log", env, timeout, row.out)
        row.samples.append(s)
        status = "ok" if s.rc == 0 else f"FAILED: {s.err}"
        print(f"  {row.name:<20} run {i + 1}/{repeat}: {s.wall:7.2f}s wall {s.cpu:7.2f}s cpu "
              f"{s.rss_mb:7.1f} MB  (others {s.others_cpu:.1f}s cpu)  {status}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ the reference


def gzip_level() -> tuple[int, str]:
    """The gzip level ocisquash uses by default, read from ocisquash/compression.py."""
    src = REPO / "ocisquash" / "compression.py"
    try:
        sys.path.insert(0, str(REPO))
        from ocisquash import compression  # type: ignore[import-not-found, unused-ignore]

        return int(compression.DEFAULT_LEVEL[compression.Codec.GZIP]), "ocisquash.compression.DEFAULT_LEVEL"
    except Exception:
        pass
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(REPO))
    if src.exists():
        m = re.search(r"GZIP\s*:\s*(\d)\b", src.read_text()) or re.search(
            r"GZIP\w*LEVEL\w*\s*=\s*(\d)\b", src.read_text())
        if m:
            return int(m.group(1)), "parsed from ocisquash/compression.py"
    return 1, "UNKNOWN (ocisquash/compression.py not readable): assumed ISA-L level 1"


def oci_layers(root: Path) -> list[Path]:
    """Layer blob paths of the (single) image in an OCI layout."""
    index = json.loads((root / "index.json").read_text())
    man = json.loads(imagebuild.blob(root, index["manifests"][0]["digest"]).read_text())
    while "manifests" in man:  # a nested index
        man = json.loads(imagebuild.blob(root, man["manifests"][0]["digest"]).read_text())
    return [imagebuild.blob(root, x["digest"]) for x in man["layers"]]


def squashed_layer(out: Path, dest: Path) -> Path:
    """The (last) layer of a squash output, as a file: OCI layout dir, OCI archive or docker tar."""
    if out.is_dir():
        return oci_layers(out)[-1]
    with tarfile.open(out) as tf:
        names = set(tf.getnames())
        if "manifest.json" in names:
            man = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
            member = man[0]["Layers"][-1]
        else:
            index = json.load(tf.extractfile("index.json"))  # type: ignore[arg-type]

            def blob_name(d: str) -> str:
                return "blobs/" + d.replace(":", "/")

            man = json.load(tf.extractfile(blob_name(index["manifests"][0]["digest"])))  # type: ignore[arg-type]
            member = blob_name(man["layers"][-1]["digest"])
        src = tf.extractfile(member)
        assert src is not None
        with open(dest, "wb") as fh:
            shutil.copyfileobj(src, fh, 1 << 20)
    return dest


def reference_layer(squash: list[str], image: dict[str, Any], work: Path, env: dict[str, str],
                    timeout: float) -> tuple[Path | None, str]:
    """An uncompressed squashed layer: from ``ocisquash --compression none``, else from oci-squash."""
    out = work / "ref.oci"
    rm(out)
    log = work / "ref.log"
    s = measure([*squash, "squash", image["oci"], str(out), "--compression", "none", "-q"], log, env,
                timeout, None)
    if s.rc == 0 and out.exists():
        try:
            layer = squashed_layer(out, work / "ref-layer.tar")
            if imagebuild.sniff_plain_tar(layer):
                return layer, "ocisquash squash --compression none"
        except Exception as e:
            print(f"  reference: cannot read ocisquash output: {e}", file=sys.stderr)
    why = f"ocisquash failed ({s.err or 'exit ' + str(s.rc)})"
    peer_out = work / "ref-peer.tar"
    s = measure([sys.executable, "-m", "oci_squash", "-o", str(peer_out), image["oci_tar"]], log, env,
                timeout, None)
    if s.rc == 0:
        return squashed_layer(peer_out, work / "ref-layer.tar"), f"oci-squash output ({why})"
    return None, f"none: {why}; oci-squash failed too ({s.err})"


# ------------------------------------------------------------------------------------------ the rows


def make_rows(squash: list[str], big: dict[str, Any], tiny: dict[str, Any], work: Path,
              only: set[str] | None) -> list[Row]:
    oci, docker, oci_tar = Path(big["oci"]), Path(big["docker"]), Path(big["oci_tar"])
    t_oci, t_docker = Path(tiny["oci"]), Path(tiny["docker"])
    o = work
    rows = [
        Row("sq-gzip", "ocisquash squash IN.oci OUT.oci (gzip→gzip)",
            [*squash, "squash", str(oci), str(o / "sq-gzip.oci"), "-q"], o / "sq-gzip.oci", [oci]),
        Row("sq-docker", "ocisquash squash IN.docker.tar OUT.tar --compression none",
            [*squash, "squash", str(docker), str(o / "sq-docker.tar"), "--compression", "none", "-q"],
            o / "sq-docker.tar", [docker]),
        Row("sq-zstd", "ocisquash squash IN.oci OUT --compression zstd",
            [*squash, "squash", str(oci), str(o / "sq-zstd.oci"), "--compression", "zstd", "-q"],
            o / "sq-zstd.oci", [oci]),
        Row("sq-dry", "ocisquash squash IN.oci OUT --dry-run",
            [*squash, "squash", str(oci), str(o / "sq-dry.oci"), "--dry-run", "-q"], o / "sq-dry.oci", [oci]),
        Row("startup", "ocisquash --version (interpreter + imports: in every ocisquash row)",
            [*squash, "--version"], None, []),
        Row("images-oci", "ocisquash images IN.oci", [*squash, "images", str(oci)], None, [oci]),
        Row("images-docker", "ocisquash images IN.docker.tar", [*squash, "images", str(docker)], None,
            [docker]),
        Row("images-oci-tiny", "ocisquash images TINY.oci", [*squash, "images", str(t_oci)], None, [t_oci]),
        Row("images-docker-tiny", "ocisquash images TINY.docker.tar", [*squash, "images", str(t_docker)],
            None, [t_docker]),
        Row("peer", "oci-squash 0.1.0 -o OUT.tar IN.oci.tar (out: uncompressed docker tar)",
            [sys.executable, "-m", "oci_squash", "-o", str(o / "peer.tar"), str(oci_tar)], o / "peer.tar",
            [oci_tar]),
        Row("cp-oci", "cp -r IN.oci OUT", ["cp", "-r", str(oci), str(o / "cp.oci")], o / "cp.oci", [oci]),
        Row("cp-docker", "cp IN.docker.tar OUT", ["cp", str(docker), str(o / "cp.tar")], o / "cp.tar",
            [docker]),
        Row("codec", "isal: inflate input layers + deflate squashed layer", [], o / "codec.gz", [oci]),
        Row("verify-floor", "sha256 IN.docker.tar; write + sha256 + fsync the squashed layer (2 threads)", [],
            o / "floor.tar", [docker]),
        Row("reg-squash", "ocisquash squash docker://…/src docker://…/new (local registry, to scratch)"),
        Row("reg-parent", f"ocisquash squash docker://…/src docker://…/new --from-layer {registry_rows.KEEP + 1} "
            "(kept layers mounted)"),
        Row("reg-push", "skopeo copy OUT.oci (sq-gzip's output) docker://… (a file squash's transfer)"),
        Row("crane", "crane flatten", skip="crane is not on PATH"),
        Row("docker-squash", "docker-squash", skip="docker-squash is not on PATH"),
    ]
    if importlib.util.find_spec("oci_squash") is None:
        peer = next(r for r in rows if r.name == "peer")
        peer.skip = f"oci-squash is not installed for {sys.executable} (pip install oci-squash==0.1.0)"
    for r in rows:
        if only is not None and r.name not in only:
            r.skip = "not in --only"
    for r in rows[-2:]:
        if not r.skip and shutil.which(r.name):
            r.skip = f"{r.name} is on PATH but needs a registry/daemon; not measured by this script"
    return rows


# ----------------------------------------------------------------------------------------- reporting


def ratio(a: Row, b: Row) -> float | None:
    x, y = a.med("wall"), b.med("wall")
    return x / y if x is not None and y else None


REFS = {"sq-gzip": ("peer", "codec"), "sq-docker": ("cp-docker", "verify-floor"), "sq-zstd": ("codec",),
        "images-oci": ("images-oci-tiny",), "images-docker": ("images-docker-tiny",)}


def ratios(row: Row, by: dict[str, Row]) -> str:
    parts = []
    for ref in REFS.get(row.name, ()):
        r = ratio(row, by[ref])
        if r is not None:
            parts.append(f"{r:.2f}× {ref}")
    return ", ".join(parts)


def checks(by: dict[str, Row]) -> list[dict[str, Any]]:
    """The targets of issue 5; status PASS, FAIL or SKIP (a needed row was not run)."""
    out: list[dict[str, Any]] = []

    def add(name: str, rows: list[str], test: Any, text: str) -> None:
        needed = [by[r] for r in rows]
        if any(r.skip or not r.samples for r in needed):
            out.append({"check": name, "status": "SKIP", "detail": "needs rows: " + ", ".join(rows)})
            return
        failed = [r.name for r in needed if not r.ok]
        if failed:
            out.append({"check": name, "status": "FAIL", "detail": "failed rows: " + ", ".join(failed)})
            return
        ok, detail = test()
        out.append({"check": name, "status": "PASS" if ok else "FAIL", "detail": f"{text}: {detail}"})

    def wall(n: str) -> float:
        v = by[n].med("wall")
        assert v is not None
        return v

    add("(a) gzip→gzip ≤ 0.33 × oci-squash", ["sq-gzip", "peer"],
        lambda: (wall("sq-gzip") <= 0.33 * wall("peer"),
                 f"{wall('sq-gzip'):.2f}s vs 0.33 × {wall('peer'):.2f}s = {0.33 * wall('peer'):.2f}s"),
        "wall")
    add("(b) gzip→gzip ≤ 2 × codec work", ["sq-gzip", "codec"],
        lambda: (wall("sq-gzip") <= 2 * wall("codec"),
                 f"{wall('sq-gzip'):.2f}s vs 2 × {wall('codec'):.2f}s = {2 * wall('codec'):.2f}s"), "wall")
    add("(c) docker→docker (none) ≤ 4 × cp", ["sq-docker", "cp-docker"],
        lambda: (wall("sq-docker") <= 4 * wall("cp-docker"),
                 f"{wall('sq-docker'):.2f}s vs 4 × {wall('cp-docker'):.2f}s = {4 * wall('cp-docker'):.2f}s"),
        "wall")
    for n in ("sq-gzip", "sq-docker", "sq-zstd", "sq-dry"):
        rss = max((s.rss_mb for s in by[n].samples), default=0.0)
        add(f"(d) peak RSS ≤ {RSS_LIMIT_MB:.0f} MB: {n}", [n],
            lambda rss=rss: (rss <= RSS_LIMIT_MB, f"{rss:.1f} MB (max over runs)"), "ru_maxrss")
    for big, tiny in (("images-oci", "images-oci-tiny"), ("images-docker", "images-docker-tiny")):
        add(f"(e) {big} ≤ 1.5 × tiny + 0.1s", [big, tiny],
            lambda big=big, tiny=tiny: (wall(big) <= 1.5 * wall(tiny) + 0.1,
                                        f"{wall(big):.3f}s vs 1.5 × {wall(tiny):.3f}s + 0.1s = "
                                        f"{1.5 * wall(tiny) + 0.1:.3f}s"), "wall")
    return out


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table_rows(rows: list[Row], by: dict[str, Row]) -> list[list[str]]:
    out = []
    for r in rows:
        if r.skip == "not in --only":
            continue
        outb = r.med("out_bytes") if any(s.out_bytes is not None for s in r.samples) else None
        status = f"skipped: {r.skip}" if r.skip else (r.failure or "ok")
        walls = [s.wall for s in r.samples if s.rc == 0]
        out.append([r.name, fmt(r.med("wall"), ".2f"), fmt(min(walls, default=None), ".2f"),
                    fmt(r.med("cpu"), ".2f"), fmt(r.med("rss_mb"), ".1f"),
                    fmt(outb / 1e6 if outb is not None else None, ".0f"), fmt(r.med("others_cpu"), ".1f"),
                    ratios(r, by), status])
    return out


HEAD = ["row", "wall s", "min wall s", "cpu s", "RSS MB", "out MB", "others cpu s", "vs reference (wall)", "status"]


def print_table(rows: list[Row], by: dict[str, Row], res: list[dict[str, Any]], title: str) -> None:
    body = table_rows(rows, by)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None  # type: ignore[assignment, misc]
    if Console is not None:
        con = Console(width=max(160, shutil.get_terminal_size().columns))
        t = Table(title=title, title_justify="left")
        for i, h in enumerate(HEAD):
            t.add_column(h, justify="right" if 0 < i < 7 else "left", overflow="fold")
        for b in body:
            t.add_row(*b)
        con.print(t)
        for c in res:
            color = {"PASS": "green", "FAIL": "red"}.get(c["status"], "yellow")
            con.print(f"[{color}]{c['status']:<4}[/{color}] {c['check']}  ({c['detail']})", highlight=False)
        return
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(HEAD)]
    print(title)
    for line in [HEAD, *body]:
        print("  ".join(c.rjust(w) if 0 < i < 7 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                               strict=True))))
    for c in res:
        print(f"{c['status']:<4} {c['check']}  ({c['detail']})")


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    versions: dict[str, str | None] = {}
    for pkg in ("ocisquash", "oci-squash", "isal", "rich", "zstandard", "python-magic", "typer"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    for tool in ("umoci", "skopeo"):
        try:
            r = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
            versions[tool] = r.stdout.strip()
        except OSError:
            versions[tool] = None
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory": mem, "python": sys.version.split()[0], "platform": platform.platform(),
            "versions": versions, "git_head": git or None}


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the table shows medians (default 3)")
    ap.add_argument("--image-dir", type=Path,
                    help="use this OCI layout dir or docker-archive tar instead of building the image")
    ap.add_argument("--only", help="comma-separated rows to run (names as in the table)")
    ap.add_argument("--keep", action="store_true", help="keep outputs and logs in bench/.cache/work")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a single run is killed")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="scale the built image's byte budgets (cached separately; default 1)")
    ap.add_argument("--ocisquash", default=f"{shlex.quote(sys.executable)} -m ocisquash",
                    help="how to invoke ocisquash (default: python -m ocisquash, the repo on PYTHONPATH)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [r.name for r in make_rows([], {"oci": "", "docker": "", "oci_tar": ""},
                                       {"oci": "", "docker": ""}, Path(), None)]
    only = {x.strip() for x in args.only.split(",") if x.strip()} if args.only else None
    if only and only - set(names):
        print(f"unknown rows in --only: {sorted(only - set(names))}; rows are {', '.join(names)}",
              file=sys.stderr)
        return 2
    CACHE.mkdir(exist_ok=True)
    imagebuild.prune(CACHE)
    big = (imagebuild.ensure_external(CACHE, args.image_dir) if args.image_dir
           else imagebuild.ensure_built(CACHE, "large", args.scale))
    tiny = imagebuild.ensure_built(CACHE, "tiny")
    work = CACHE / "work"
    rm(work)
    work.mkdir(parents=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    squash = shlex.split(args.ocisquash)
    rows = make_rows(squash, big, tiny, work, only)
    by = {r.name: r for r in rows}

    level, level_src = gzip_level()
    codec = by["codec"]
    print(f"image: {big['source']} ({big['layers']} layers, {big['uncompressed_bytes'] / 1e6:.0f} MB "
          f"uncompressed, {big['compressed_bytes'] / 1e6:.0f} MB gzip, {big['tar_entries']} tar entries)",
          file=sys.stderr)
    print(f"warm-up: cat inputs > /dev/null; gzip level for the codec row: {level} ({level_src})",
          file=sys.stderr, flush=True)
    warm([Path(big["oci"]), Path(big["docker"]), Path(big["oci_tar"]), Path(tiny["oci"]),
          Path(tiny["docker"])])
    ref_src = ""
    floor_row = by["verify-floor"]
    ref: Path | None = None
    if not codec.skip or not floor_row.skip:
        ref, ref_src = reference_layer(squash, big, work, env, args.timeout)
    if not codec.skip:
        if ref is None:
            codec.skip = f"no squashed layer to compress: {ref_src}"
        else:
            codec.cmd = [sys.executable, str(BENCH / "codec_work.py"), "--level", str(level),
                         "--compress", str(ref), "--out", str(work / "codec.gz"),
                         *map(str, oci_layers(Path(big["oci"])))]
            codec.warm.append(ref)
            codec.note = f"gzip level {level} ({level_src}); squashed layer from {ref_src}"
            print(f"codec reference: {codec.note}", file=sys.stderr)
    if not floor_row.skip:
        if ref is None:
            floor_row.skip = f"no squashed layer to write: {ref_src}"
        else:
            floor_row.cmd = [sys.executable, str(BENCH / "verify_floor.py"), str(big["docker"]), str(ref),
                             str(work / "floor.tar")]
            floor_row.warm.append(ref)
            floor_row.note = "the least a verifying docker->docker squash does, no tar parsed (bench/verify_floor.py)"

    reg = registry_rows.setup(work, Path(big["oci"]), squash, by)
    load0 = os.getloadavg()
    if load0[0] > 0.5:
        print(f"warning: load average {load0[0]:.1f} before the runs: other processes compete for the CPU; "
              "see the 'others cpu s' column", file=sys.stderr)
    t0 = time.monotonic()
    try:
        for r in rows:
            since = reg.mark() if reg is not None and r.name in registry_rows.NAMES else 0
            run_row(r, args.repeat, work, env, args.timeout)
            if reg is not None and r.name in registry_rows.NAMES and r.ok:
                r.note = registry_rows.note(reg, since, reg.mark(), len(r.samples))
    finally:
        registry_rows.stop(reg)
    elapsed = time.monotonic() - t0
    global LAUNCH
    if LAUNCH is None:
        LAUNCH = Launcher()
    floor = LAUNCH.floor_mb()
    LAUNCH.close()
    LAUNCH = None

    res = checks(by)
    title = (f"ocisquash bench: {big['source']} — {big['layers']} layers, "
             f"{big['uncompressed_bytes'] / 1e6:.0f} MB uncompressed, {big['tar_entries']} entries; "
             f"median of {args.repeat} runs; {os.cpu_count()} CPUs")
    print_table(rows, by, res, title)
    for r in rows:
        if r.note:
            print(f"note: {r.name}: {r.note}")
    print(f"note: RSS includes a floor of {floor:.1f} MB (the launcher's; `true` shows that much)")
    print("note: peer = oci-squash reads a plain tar of the same OCI layout and writes an uncompressed "
          "docker tar (no recompression)")

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "repeat": args.repeat,
        "elapsed_seconds": round(elapsed, 1), "rss_floor_mb": round(floor, 1),
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "machine": machine_info(), "image": big, "tiny_image": tiny,
        "codec": {"gzip_level": level, "level_source": level_src, "reference_layer": ref_src},
        "rows": [{**{k: v for k, v in asdict(r).items() if k not in ("out", "warm")},
                  "cmd": r.cmd, "median_wall": r.med("wall"), "median_cpu": r.med("cpu"),
                  "median_rss_mb": r.med("rss_mb"), "ok": r.ok, "failure": r.failure or None,
                  "vs_reference": ratios(r, by)} for r in rows],
        "checks": res,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"results: {args.json}")
    if not args.keep:
        rm(work)
    else:
        print(f"kept outputs and logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
