"""ocisquash benchmark (``make bench``): time, CPU and peak RSS of squashing a realistic image.

Builds (once, cached under bench/.cache/) a byte-heavy multi-layer image and an entry-heavy one with
umoci and skopeo (or takes the first with ``--image-dir``), and, for the rss-1m row, a layer
of 1,000,000 paths; runs every row ``--repeat`` times, one after another, each as a child process
measured with ``os.wait4`` (wall clock, user+sys CPU, ``ru_maxrss``); prints a table with the
medians and ratios to the reference rows; checks the targets of issues 5 and 15; writes everything
to bench/results/latest.json. ``--scale 0.25,1,4`` prints a scaling table instead. See
bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
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
SCALING_JSON = BENCH / "results" / "scaling.json"
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
    for i in range(0, len(files), 1000):  # in batches: a layout of 20,000 images is 40,000 files
        subprocess.run(["cat", *files[i:i + 1000]], stdout=subprocess.DEVNULL, check=False)


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
    """The ISA-L level ocisquash's default gzip level maps to, from ocisquash/compression.py's table."""
    try:
        sys.path.insert(0, str(REPO))
        from ocisquash import compression  # type: ignore[import-not-found, unused-ignore]

        gz = compression.Codec.GZIP.default_level
        return int(compression.ISAL_LEVEL[gz]), f"ocisquash.compression: gzip level {gz}, ISA-L's"
    except Exception:
        pass
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(REPO))
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
                    timeout: float, tag: str = "large") -> tuple[Path | None, str]:
    """An uncompressed squashed layer: from ``ocisquash --compression none``, else from oci-squash."""
    out = work / f"ref-{tag}.oci"
    rm(out)
    log = work / f"ref-{tag}.log"
    s = measure([*squash, "squash", image["oci"], str(out), "--compression", "none", "-q"], log, env,
                timeout, None)
    if s.rc == 0 and out.exists():
        try:
            layer = squashed_layer(out, work / f"ref-{tag}-layer.tar")
            if imagebuild.sniff_plain_tar(layer):
                return layer, "ocisquash squash --compression none"
        except Exception as e:
            print(f"  reference: cannot read ocisquash output: {e}", file=sys.stderr)
    why = f"ocisquash failed ({s.err or 'exit ' + str(s.rc)})"
    if "oci_tar" not in image:
        return None, f"none: {why}"
    peer_out = work / f"ref-{tag}-peer.tar"
    s = measure([sys.executable, "-m", "oci_squash", "-o", str(peer_out), image["oci_tar"]], log, env,
                timeout, None)
    if s.rc == 0:
        return squashed_layer(peer_out, work / f"ref-{tag}-layer.tar"), f"oci-squash output ({why})"
    return None, f"none: {why}; oci-squash failed too ({s.err})"


# ------------------------------------------------------------------------------------------ the rows


ENTRY_ROWS = ("sq-gzip-entry", "codec-entry", "sq-dry-entry", "analyze-entry", "inflate-entry", "gzip-floor-entry",
              "inflate-floor-entry")
PATHS_ROW = "rss-1m"
MANY_ROW = "images-many"
PLATFORMS_ROW, PLATFORMS_REF = "sq-platforms", "sq-platforms-separate"
MANY_IMAGES = 20_000  # issue 20: at most 5 s and 150 MB


def sh(script: str, *args: Path) -> list[str]:
    """A shell one-liner as a measured command (its children's CPU and RSS count, via wait4)."""
    return ["sh", "-c", script, "sh", *map(str, args)]


def make_rows(squash: list[str], big: dict[str, Any], tiny: dict[str, Any], entry: dict[str, Any],
              paths: dict[str, Any], work: Path, only: set[str] | None, million: bool = True) -> list[Row]:
    oci, docker, oci_tar = Path(big["oci"]), Path(big["docker"]), Path(big["oci_tar"])
    t_oci, t_docker = Path(tiny["oci"]), Path(tiny["docker"])
    e_oci, p_oci = Path(entry["oci"]), Path(paths["oci"])
    many = imagebuild.many_images_path(CACHE, MANY_IMAGES)
    plat = imagebuild.platforms_path(CACHE)
    o = work
    # one `squash --platform P` per platform, one after another: what --platform all is compared with
    separate = " && ".join(f'{shlex.join(squash)} squash "$1" "$2/{i}.oci" --platform {p} -q'
                           for i, p in enumerate(imagebuild.PLATFORM_SCALES))
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
        Row("analyze", "ocisquash analyze IN.oci", [*squash, "analyze", str(oci)], None, [oci]),
        Row("sq-gzip-entry", "ocisquash squash ENTRY.oci OUT.oci (gzip→gzip, entry-heavy image)",
            [*squash, "squash", str(e_oci), str(o / "sq-gzip-entry.oci"), "-q"], o / "sq-gzip-entry.oci",
            [e_oci]),
        Row("sq-dry-entry", "ocisquash squash ENTRY.oci OUT --dry-run",
            [*squash, "squash", str(e_oci), str(o / "sq-dry-entry.oci"), "--dry-run", "-q"],
            o / "sq-dry-entry.oci", [e_oci]),
        Row("analyze-entry", "ocisquash analyze ENTRY.oci", [*squash, "analyze", str(e_oci)], None, [e_oci]),
        Row("sq-tiny", "ocisquash squash TINY.oci OUT.oci (the RSS baseline of a trivial squash)",
            [*squash, "squash", str(t_oci), str(o / "sq-tiny.oci"), "-q"], o / "sq-tiny.oci", [t_oci]),
        Row(PATHS_ROW, "ocisquash squash PATHS.oci OUT.oci (a layer of 1,000,000 paths; memory)",
            # a million paths is past the default caps (600,000): raised, as a user with such an image would
            [*squash, "squash", str(p_oci), str(o / "rss-1m.oci"), "-q", "--limit", "max_paths=2000000",
             "--limit", "max_entries_per_layer=2000000"], o / "rss-1m.oci", [p_oci]),
        Row("startup", "ocisquash --version (interpreter + imports: in every ocisquash row)",
            [*squash, "--version"], None, []),
        Row("images-oci", "ocisquash images IN.oci", [*squash, "images", str(oci)], None, [oci]),
        Row("images-docker", "ocisquash images IN.docker.tar", [*squash, "images", str(docker)], None,
            [docker]),
        Row("images-oci-tiny", "ocisquash images TINY.oci", [*squash, "images", str(t_oci)], None, [t_oci]),
        Row("images-docker-tiny", "ocisquash images TINY.docker.tar", [*squash, "images", str(t_docker)],
            None, [t_docker]),
        Row(MANY_ROW, f"ocisquash images MANY.oci -a ({MANY_IMAGES} images sharing 32 layers, chains up to 6 deep)",
            [*squash, "images", str(many), "-a", "--limit", f"max_images={2 * MANY_IMAGES}"], None, [many]),
        Row(PLATFORMS_ROW, f"ocisquash squash PLATFORMS.oci OUT.oci --platform all ({len(imagebuild.PLATFORM_SCALES)} "
            "platforms, gzip→gzip)", [*squash, "squash", str(plat), str(o / "sq-platforms.oci"), "--platform", "all",
                                     "-q"], o / "sq-platforms.oci", [plat]),
        Row(PLATFORMS_REF, "ocisquash squash PLATFORMS.oci OUT/i.oci --platform P, for each platform in turn",
            sh(f'mkdir "$2" && {separate}', plat, o / "sq-platforms-separate"), o / "sq-platforms-separate", [plat]),
        Row("peer", "oci-squash 0.1.0 -o OUT.tar IN.oci.tar (out: uncompressed docker tar)",
            [sys.executable, "-m", "oci_squash", "-o", str(o / "peer.tar"), str(oci_tar)], o / "peer.tar",
            [oci_tar]),
        Row("cp-oci", "cp -r IN.oci OUT", ["cp", "-r", str(oci), str(o / "cp.oci")], o / "cp.oci", [oci]),
        Row("cp-docker", "cp IN.docker.tar OUT", ["cp", str(docker), str(o / "cp.tar")], o / "cp.tar",
            [docker]),
        Row("cp-sync", "cp IN.docker.tar OUT && sync OUT (the copy made durable, as ocisquash does)",
            sh('cp "$1" "$2" && sync "$2"', docker, o / "cp-sync.tar"), o / "cp-sync.tar", [docker]),
        Row("codec", "isal: inflate input layers + deflate squashed layer", [], o / "codec.gz", [oci]),
        Row("codec-entry", "isal: inflate + deflate as codec, on the entry-heavy image", [],
            o / "codec-entry.gz", [e_oci]),
        Row("inflate", "isal: inflate every input layer, one thread (no output)",
            [sys.executable, str(BENCH / "codec_work.py"), *map(str, oci_layers(oci))] if oci.is_dir() else [],
            None, [oci]),
        Row("inflate-entry", "isal: inflate every layer of the entry-heavy image, one thread",
            [sys.executable, str(BENCH / "codec_work.py"), *map(str, oci_layers(e_oci))] if e_oci.is_dir()
            else [], None, [e_oci]),
        Row("inflate-floor", "verify + inflate every layer, two at a time, each hash on its own thread (no output)",
            [sys.executable, str(BENCH / "verify_floor.py"), "--inflate", *map(str, oci_layers(oci))]
            if oci.is_dir() else [], None, [oci]),
        Row("inflate-floor-entry", "inflate-floor on the entry-heavy image",
            [sys.executable, str(BENCH / "verify_floor.py"), "--inflate", *map(str, oci_layers(e_oci))]
            if e_oci.is_dir() else [], None, [e_oci]),
        Row("verify-floor", "sha256 IN.docker.tar; write + sha256 + fsync the squashed layer (2 threads)", [],
            o / "floor.tar", [docker]),
        Row("gzip-floor", "verify + inflate the layers (2 threads), deflate + hash + fsync the squashed one", [],
            o / "gzip-floor.gz", [oci]),
        Row("gzip-floor-entry", "gzip-floor on the entry-heavy image", [], o / "gzip-floor-entry.gz", [e_oci]),
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
        elif only is None and r.name == PATHS_ROW and not million:
            r.skip = "--no-million"
    for r in rows[-2:]:
        if not r.skip and shutil.which(r.name):
            r.skip = f"{r.name} is on PATH but needs a registry/daemon; not measured by this script"
    return rows


# ----------------------------------------------------------------------------------------- reporting


def ratio(a: Row, b: Row) -> float | None:
    x, y = a.med("wall"), b.med("wall")
    return x / y if x is not None and y else None


REFS = {"sq-gzip": ("peer", "codec", "gzip-floor"), "sq-docker": ("cp-docker", "cp-sync", "verify-floor"),
        "sq-zstd": ("codec",), "sq-dry": ("inflate", "inflate-floor"),
        "analyze": ("inflate", "inflate-floor"), "sq-gzip-entry": ("codec-entry", "gzip-floor-entry"),
        "sq-dry-entry": ("inflate-entry", "inflate-floor-entry"),
        "analyze-entry": ("inflate-entry", "inflate-floor-entry"),
        "images-oci": ("images-oci-tiny",), PLATFORMS_ROW: (PLATFORMS_REF,), "images-docker": ("images-docker-tiny",)}
BYTES_PER_PATH_LIMIT = 400
CORES = len(os.sched_getaffinity(0))  # the cores this run may use: the limit rows divide CPU by them


def bytes_per_path(by: dict[str, Row], paths: int) -> float | None:
    """(peak RSS of the many-paths squash − peak RSS of a trivial squash) / paths, from medians."""
    big, base = by[PATHS_ROW].med("rss_mb"), by["sq-tiny"].med("rss_mb")
    if big is None or base is None or not paths:
        return None
    return (big - base) * (1 << 20) / paths


def ratios(row: Row, by: dict[str, Row], paths: int = 0) -> str:
    parts = []
    for ref in REFS.get(row.name, ()):
        r = ratio(row, by[ref])
        if r is not None:
            parts.append(f"{r:.2f}× {ref}")
    if row.name == PATHS_ROW and (bpp := bytes_per_path(by, paths)) is not None:
        parts.append(f"{bpp:.0f} B/path over sq-tiny RSS ({paths} paths)")
    return ", ".join(parts)


def checks(by: dict[str, Row], paths: int = 0) -> list[dict[str, Any]]:
    """The targets of issues 5, 15 and 20; status PASS, FAIL or SKIP (a needed row was not run)."""
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
    for n in ("sq-gzip", "sq-docker", "sq-zstd", "sq-dry", "analyze", "sq-gzip-entry", "sq-dry-entry",
              "analyze-entry", PLATFORMS_ROW):
        rss = max((s.rss_mb for s in by[n].samples), default=0.0)
        add(f"(d) peak RSS ≤ {RSS_LIMIT_MB:.0f} MB: {n}", [n],
            lambda rss=rss: (rss <= RSS_LIMIT_MB, f"{rss:.1f} MB (max over runs)"), "ru_maxrss")
    for big, tiny in (("images-oci", "images-oci-tiny"), ("images-docker", "images-docker-tiny")):
        add(f"(e) {big} ≤ 1.5 × tiny + 0.1s", [big, tiny],
            lambda big=big, tiny=tiny: (wall(big) <= 1.5 * wall(tiny) + 0.1,
                                        f"{wall(big):.3f}s vs 1.5 × {wall(tiny):.3f}s + 0.1s = "
                                        f"{1.5 * wall(tiny) + 0.1:.3f}s"), "wall")

    # Issue 15 (performance, round two): the targets as ratios of wall-time medians.
    def cpu_ratio(row: str, ref: str) -> str:
        # CPU seconds are steadier than wall time when other processes compete for the cores; shown
        # beside the wall ratio (the target) to tell a real regression from a busy machine.
        a, b = by[row].med("cpu"), by[ref].med("cpu")
        return f"; cpu {a / b:.2f}×" if a is not None and b else ""

    def at_most(name: str, row: str, ref: str, k: float) -> None:
        add(name, [row, ref], lambda: (wall(row) <= k * wall(ref),
                                       f"{wall(row) / wall(ref):.2f}× ({wall(row):.2f}s vs {k:g} × "
                                       f"{wall(ref):.2f}s = {k * wall(ref):.2f}s{cpu_ratio(row, ref)})"), "wall")

    # Issue 20 (performance, round three) tightened issue 15's ratios; the limit is the CPU of the work a
    # verifying squash cannot avoid (the gzip-floor row: codecs and sha256, no tar parsed) over the cores.
    at_most("(20a) gzip→gzip ≤ 0.9 × codec work (byte-heavy)", "sq-gzip", "codec", 0.9)
    at_most("(20a) gzip→gzip ≤ 1.3 × codec work (entry-heavy)", "sq-gzip-entry", "codec-entry", 1.3)
    for row, ref, floor in (("sq-gzip", "codec", "gzip-floor"), ("sq-gzip-entry", "codec-entry", "gzip-floor-entry")):
        add(f"(20a) limit for {row}: {floor} cpu / {CORES} cores, as × {ref}", [row, ref, floor],
            lambda row=row, ref=ref, floor=floor: (True, limit_text(by, row, ref, floor)), "cpu")
    at_most("(20b) docker→docker (none) ≤ 2.0 × cp + sync", "sq-docker", "cp-sync", 2.0)
    for row, ref in (("sq-dry", "inflate"), ("analyze", "inflate"), ("sq-dry-entry", "inflate-entry"),
                     ("analyze-entry", "inflate-entry")):
        at_most(f"(20c) {row} ≤ 1.2 × {ref}", row, ref, 1.2)
    # The floor under a verifying read: two hashes beside each inflate. One stream cannot be split over
    # the cores (the entry-heavy image is one layer in the main), so its wall time bounds the limit too.
    for row, ref, floor in (("sq-dry", "inflate", "inflate-floor"), ("analyze", "inflate", "inflate-floor"),
                            ("sq-dry-entry", "inflate-entry", "inflate-floor-entry"),
                            ("analyze-entry", "inflate-entry", "inflate-floor-entry")):
        add(f"(20c) limit for {row}: the larger of {floor}'s wall and its cpu / {CORES} cores, as × {ref}",
            [row, ref, floor], lambda row=row, ref=ref, floor=floor: (True, limit_text(by, row, ref, floor, True)),
            "cpu, wall")
    # (15d) peak RSS ≤ 100 MB on the bench images is check (d) above, over the entry rows too.
    add(f"(20) {MANY_ROW} ≤ 5 s and 150 MB", [MANY_ROW],
        lambda: (wall(MANY_ROW) <= 5 and (by[MANY_ROW].med("rss_mb") or 0) <= 150,
                 f"{wall(MANY_ROW):.2f}s, {by[MANY_ROW].med('rss_mb'):.1f} MB"), "wall, peak RSS")

    at_most("(20) --platform all ≤ 0.6 × one squash per platform", PLATFORMS_ROW, PLATFORMS_REF, 0.6)

    def platforms_limit() -> tuple[bool, str]:
        # The least any overlap of the platforms can reach: --platform all's CPU on every core, against
        # the separate squashes' wall. A target below it needs less CPU, not more concurrency.
        cpu, cores = by[PLATFORMS_ROW].med("cpu") or 0.0, os.cpu_count() or 1
        limit = cpu / cores / wall(PLATFORMS_REF)
        return limit <= 0.6, (f"{limit:.2f}× ({cpu:.2f}s cpu / {cores} cores vs {wall(PLATFORMS_REF):.2f}s); "
                              f"reached {wall(PLATFORMS_ROW) / wall(PLATFORMS_REF):.2f}×")

    add("(20) limit: --platform all's CPU over the cores ≤ 0.6 × one squash per platform",
        [PLATFORMS_ROW, PLATFORMS_REF], platforms_limit, "cpu, wall")

    def per_path() -> tuple[bool, str]:
        bpp = bytes_per_path(by, paths)
        assert bpp is not None
        return bpp <= BYTES_PER_PATH_LIMIT, (f"{bpp:.0f} B/path = ({by[PATHS_ROW].med('rss_mb'):.1f} − "
                                             f"{by['sq-tiny'].med('rss_mb'):.1f} MB) / {paths} paths")

    add(f"(15e) ≤ {BYTES_PER_PATH_LIMIT} bytes per path on {paths or 'N'} paths", [PATHS_ROW, "sq-tiny"],
        per_path, "peak RSS")
    return out


def limit_text(by: dict[str, Row], row: str, ref: str, floor: str, serial: bool = False) -> str:
    """The least wall time two cores could take for ``row``'s work (``floor``'s CPU over the cores; with
    ``serial``, no less than ``floor``'s own wall, for work one stream keeps on one core), as a ratio to
    ``ref``, beside ``row``'s own ratio."""
    cpu, r, w = by[floor].med("cpu"), by[ref].med("wall"), by[row].med("wall")
    if cpu is None or not r or w is None:
        return "-"
    least = cpu / CORES
    fw = by[floor].med("wall")
    if serial and fw is not None and fw > least:
        return f"{fw:.2f}s ({floor}'s wall) = {fw / r:.2f}× {ref} (the row: {w / r:.2f}×)"
    return f"{least:.2f}s = {least / r:.2f}× {ref} (the row: {w / r:.2f}×)"


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table_rows(rows: list[Row], by: dict[str, Row], paths: int = 0) -> list[list[str]]:
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
                    ratios(r, by, paths), status])
    return out


HEAD = ["row", "wall s", "min wall s", "cpu s", "RSS MB", "out MB", "others cpu s", "vs reference (wall)", "status"]


def print_table(rows: list[Row], by: dict[str, Row], res: list[dict[str, Any]], title: str,
                paths: int = 0) -> None:
    body = table_rows(rows, by, paths)
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
    ap.add_argument("--json", type=Path, help=f"results file (default {DEFAULT_JSON}; with several --scale "
                                              f"factors {SCALING_JSON})")
    ap.add_argument("--timeout", type=float, default=900, help="seconds before a single run is killed")
    ap.add_argument("--scale", default="1",
                    help="one factor: scale the built images' paths and bytes (cached separately; default 1); "
                         "several, comma-separated (e.g. 0.25,1,4): the scaling table of --scale-image instead "
                         "of the usual rows")
    ap.add_argument("--scale-image", choices=("large", "entry"), default="large",
                    help="which built image the scaling table scales (default large)")
    ap.add_argument("--no-million", dest="million", action="store_false",
                    help=f"skip the {PATHS_ROW} row (a squash of --paths paths; its image takes ~25 s to build, "
                         "once, and each run ~20 s)")
    ap.add_argument("--paths", type=int, default=1_000_000,
                    help=f"paths in the {PATHS_ROW} row's synthetic layer (default 1000000)")
    ap.add_argument("--ocisquash", default=f"{shlex.quote(sys.executable)} -m ocisquash",
                    help="how to invoke ocisquash (default: python -m ocisquash, the repo on PYTHONPATH)")
    args = ap.parse_args(argv)
    try:
        args.scales = [float(x) for x in args.scale.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--scale: not a number or a comma-separated list of numbers: {args.scale!r}")
    if not args.scales or any(x <= 0 for x in args.scales):
        ap.error("--scale: factors must be positive")
    if args.paths < 1000:
        ap.error("--paths: at least 1000")
    if args.json is None:
        args.json = SCALING_JSON if len(args.scales) > 1 else DEFAULT_JSON
    return args


NO_IMAGE: dict[str, Any] = {"oci": "/nonexistent", "docker": "/nonexistent", "oci_tar": "/nonexistent"}


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def describe(img: dict[str, Any]) -> str:
    return (f"{img['source']} ({img['layers']} layers, {img['uncompressed_bytes'] / 1e6:.0f} MB "
            f"uncompressed, {img['compressed_bytes'] / 1e6:.0f} MB gzip, {img['tar_entries']} tar entries)")


def close_launcher() -> float:
    """Stop the launcher; returns its RSS floor (MB)."""
    global LAUNCH
    if LAUNCH is None:
        LAUNCH = Launcher()
    floor = LAUNCH.floor_mb()
    LAUNCH.close()
    LAUNCH = None
    return floor


def scaling(args: argparse.Namespace, squash: list[str]) -> int:
    """``--scale A,B,C``: build --scale-image at each factor and time a squash and a dry run of each."""
    kind = args.scale_image
    work = CACHE / "work"
    rm(work)
    work.mkdir(parents=True)
    env = bench_env()
    results: list[dict[str, Any]] = []
    for scale in sorted(args.scales):
        img = imagebuild.ensure_built(CACHE, kind, scale)
        oci = Path(img["oci"])
        print(f"scale {scale:g}: {describe(img)}", file=sys.stderr, flush=True)
        rows = [Row("sq-gzip", "", [*squash, "squash", str(oci), str(work / "scale.oci"), "-q"],
                    work / "scale.oci", [oci]),
                Row("sq-dry", "", [*squash, "squash", str(oci), str(work / "dry.oci"), "--dry-run", "-q"],
                    work / "dry.oci", [oci])]
        for r in rows:
            run_row(r, args.repeat, work, env, args.timeout)
        results.append({"scale": scale, "image": img, "rows": {
            r.name: {"median_wall": r.med("wall"), "median_cpu": r.med("cpu"), "median_rss_mb": r.med("rss_mb"),
                     "ok": r.ok, "failure": r.failure or None, "samples": [asdict(x) for x in r.samples]}
            for r in rows}})
    floor = close_launcher()
    head = ["scale", "entries", "MB unc", "MB gzip", "sq-gzip s", "s per 1×", "cpu s", "RSS MB",
            "B/entry over smallest", "sq-dry s", "dry RSS MB"]
    body = []
    first = results[0]
    for res in results:
        img, g, d = res["image"], res["rows"]["sq-gzip"], res["rows"]["sq-dry"]
        per = g["median_wall"] / res["scale"] if g["median_wall"] is not None else None
        # Marginal memory per tar entry against the smallest scale: flat if memory grows with paths only.
        rss0, n0 = first["rows"]["sq-gzip"]["median_rss_mb"], first["image"]["tar_entries"]
        marginal = None
        if res is not first and g["median_rss_mb"] is not None and rss0 is not None and img["tar_entries"] != n0:
            marginal = (g["median_rss_mb"] - rss0) * (1 << 20) / (img["tar_entries"] - n0)
        body.append([f"{res['scale']:g}×", str(img["tar_entries"]), f"{img['uncompressed_bytes'] / 1e6:.0f}",
                     f"{img['compressed_bytes'] / 1e6:.0f}", fmt(g["median_wall"], ".2f"), fmt(per, ".2f"),
                     fmt(g["median_cpu"], ".2f"), fmt(g["median_rss_mb"], ".1f"), fmt(marginal, ".0f"),
                     fmt(d["median_wall"], ".2f"), fmt(d["median_rss_mb"], ".1f")])
    print(f"scaling of the {kind} image: median of {args.repeat} runs; {os.cpu_count()} CPUs; "
          f"RSS includes a floor of {floor:.1f} MB")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for b in body:
        print("| " + " | ".join(b) + " |")
    for res in results:
        for name, r in res["rows"].items():
            if not r["ok"]:
                print(f"note: {res['scale']:g}× {name}: {r['failure']}")
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "repeat": args.repeat, "mode": "scaling",
           "scale_image": kind, "rss_floor_mb": round(floor, 1), "machine": machine_info(), "scaling": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"results: {args.json}")
    if not args.keep:
        rm(work)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [r.name for r in make_rows([], NO_IMAGE, NO_IMAGE, NO_IMAGE, NO_IMAGE, Path(), None)]
    only = {x.strip() for x in args.only.split(",") if x.strip()} if args.only else None
    if only and PATHS_ROW in only:
        only.add("sq-tiny")  # its baseline: bytes per path need both
    if only and only - set(names):
        print(f"unknown rows in --only: {sorted(only - set(names))}; rows are {', '.join(names)}",
              file=sys.stderr)
        return 2
    CACHE.mkdir(exist_ok=True)
    imagebuild.prune(CACHE)
    squash = shlex.split(args.ocisquash)
    if len(args.scales) > 1:
        return scaling(args, squash)
    scale = args.scales[0]
    wanted = {r.name for r in make_rows([], NO_IMAGE, NO_IMAGE, NO_IMAGE, NO_IMAGE, Path(), only, args.million)
              if not r.skip}
    big = (imagebuild.ensure_external(CACHE, args.image_dir) if args.image_dir
           else imagebuild.ensure_built(CACHE, "large", scale))
    tiny = imagebuild.ensure_built(CACHE, "tiny")
    entry = imagebuild.ensure_built(CACHE, "entry", scale) if wanted & set(ENTRY_ROWS) else NO_IMAGE
    paths_img = imagebuild.ensure_paths_image(CACHE, args.paths) if PATHS_ROW in wanted else NO_IMAGE
    n_paths = int(paths_img.get("paths", 0))
    if MANY_ROW in wanted:
        imagebuild.ensure_many_images(CACHE, MANY_IMAGES)
    if wanted & {PLATFORMS_ROW, PLATFORMS_REF}:
        plat_img = imagebuild.ensure_platforms_image(CACHE)
        print(f"platforms image: {plat_img['source']}: " + "; ".join(
            f"{p} {i['layers']} layers, {i['uncompressed_bytes'] / 1e6:.0f} MB uncompressed, {i['tar_entries']} entries"
            for p, i in plat_img["platforms"].items()), file=sys.stderr)
    work = CACHE / "work"
    rm(work)
    work.mkdir(parents=True)
    env = bench_env()
    rows = make_rows(squash, big, tiny, entry, paths_img, work, only, args.million)
    by = {r.name: r for r in rows}

    level, level_src = gzip_level()
    print(f"image: {describe(big)}", file=sys.stderr)
    if entry is not NO_IMAGE:
        print(f"entry-heavy image: {describe(entry)}", file=sys.stderr)
    if paths_img is not NO_IMAGE:
        print(f"paths image: {paths_img['source']} ({paths_img['tar_entries']} tar entries, "
              f"{paths_img['compressed_bytes'] / 1e6:.0f} MB gzip)", file=sys.stderr)
    print(f"warm-up: cat inputs > /dev/null; gzip level for the codec rows: {level} ({level_src})",
          file=sys.stderr, flush=True)
    warm([Path(p) for img in (big, tiny, entry) for k in ("oci", "docker", "oci_tar")
          if (p := img.get(k)) and Path(p).exists()])
    refs: dict[str, tuple[Path | None, str]] = {}

    def ref_for(tag: str, img: dict[str, Any]) -> tuple[Path | None, str]:
        if tag not in refs:
            refs[tag] = reference_layer(squash, img, work, env, args.timeout, tag)
        return refs[tag]

    # the rows that compress the squashed layer (an untimed squash's, per image) as a reference
    floor_note = f"the least a verifying gzip->gzip squash does on two cores, no tar parsed (level {level})"
    for name, img, tag in (("codec", big, "large"), ("codec-entry", entry, "entry"),
                           ("gzip-floor", big, "large"), ("gzip-floor-entry", entry, "entry")):
        row = by[name]
        if row.skip:
            continue
        ref, ref_src = ref_for(tag, img)
        if ref is None:
            row.skip = f"no squashed layer to compress: {ref_src}"
            continue
        blobs = [str(b) for b in oci_layers(Path(img["oci"]))]
        if name.startswith("codec"):
            row.cmd = [sys.executable, str(BENCH / "codec_work.py"), "--level", str(level),
                       "--compress", str(ref), "--out", str(row.out), *blobs]
            row.note = f"gzip level {level} ({level_src}); squashed layer from {ref_src}"
            print(f"{name} reference: {row.note}", file=sys.stderr)
        else:
            row.cmd = [sys.executable, str(BENCH / "verify_floor.py"), "--gzip", str(level), str(ref), str(row.out),
                       *blobs]
            row.note = floor_note
        row.warm.append(ref)
    floor_row = by["verify-floor"]
    if not floor_row.skip:
        ref, ref_src = ref_for("large", big)
        if ref is None:
            floor_row.skip = f"no squashed layer to write: {ref_src}"
        else:
            floor_row.cmd = [sys.executable, str(BENCH / "verify_floor.py"), str(big["docker"]), str(ref),
                             str(work / "floor.tar")]
            floor_row.warm.append(ref)
            floor_row.note = "the least a verifying docker->docker squash does, no tar parsed (bench/verify_floor.py)"
    if not by["cp-sync"].skip:
        by["cp-sync"].note = "sync OUT fsyncs the copy alone (not the whole machine's dirty pages)"
    if not by[PATHS_ROW].skip:
        by[PATHS_ROW].note = (f"{n_paths} paths in one layer, a small layer above; B/path = (median peak RSS − "
                              "sq-tiny's) / paths")

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
    floor = close_launcher()

    res = checks(by, n_paths)
    title = (f"ocisquash bench: {big['source']} — {big['layers']} layers, "
             f"{big['uncompressed_bytes'] / 1e6:.0f} MB uncompressed, {big['tar_entries']} entries; "
             f"median of {args.repeat} runs; {os.cpu_count()} CPUs")
    print_table(rows, by, res, title, n_paths)
    if entry is not NO_IMAGE:
        print(f"note: *-entry rows: {describe(entry)}")
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
        "entry_image": entry if entry is not NO_IMAGE else None,
        "paths_image": paths_img if paths_img is not NO_IMAGE else None,
        "codec": {"gzip_level": level, "level_source": level_src,
                  "reference_layers": {k: v[1] for k, v in refs.items()}},
        "rows": [{**{k: v for k, v in asdict(r).items() if k not in ("out", "warm")},
                  "cmd": r.cmd, "median_wall": r.med("wall"), "median_cpu": r.med("cpu"),
                  "median_rss_mb": r.med("rss_mb"), "ok": r.ok, "failure": r.failure or None,
                  "vs_reference": ratios(r, by, n_paths)} for r in rows],
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
