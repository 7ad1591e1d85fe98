"""Build the benchmark images with independent tools (umoci, skopeo), cached under bench/.cache/.

The "large" image is made of real files from this machine (/usr/share, the Python stdlib, toolchain
libraries, site-packages), topped up with deterministic synthetic files where the machine has too few,
in six layers: installs, deletions of big trees, edits of many files, chmod-only changes, hardlinks,
symlinks, a directory replaced by a file and a big file overwritten. The "tiny" image has the same
shape with a handful of files and is the reference for "``images`` does not grow with layer size".

Each image is cached as ``image.oci`` (OCI layout, gzip layers, one manifest tagged ``latest``),
``image.docker.tar`` (``skopeo copy`` to docker-archive, uncompressed layers) and ``image.oci.tar`` (a
plain tar of the layout: the input form oci-squash takes).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# Bump when the recipe changes: the cache is keyed by it.
IMAGE_VERSION = "v2"
TAG = "latest"
DOCKER_NAME = "ocisquash-bench/{kind}:latest"
MAX_FILE = 16 << 20  # skip single source files bigger than this (keeps the mix file-heavy)

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma",
         "omega", "layer", "image", "squash", "container", "manifest", "config", "digest", "blob",
         "whiteout", "opaque", "hardlink", "symlink", "tar", "gzip", "zstd", "python", "import", "def",
         "return", "class", "self", "none", "true", "false", "if", "else", "for", "while", "with",
         "yield")


def log(msg: str) -> None:
    print(f"[build] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")


# --------------------------------------------------------------------------------------------- content


def copy_budget(sources: Iterable[Path], dest: Path, budget: int, *,
                skip: Callable[[Path], bool] = lambda p: False) -> tuple[int, int]:
    """Copy files from ``sources`` (sorted walk) into ``dest`` until ``budget`` bytes; (bytes, files)."""
    used = files = 0
    for src in sources:
        if not src.is_dir():
            continue
        for root, dirs, names in os.walk(src):
            rootp = Path(root)
            dirs[:] = sorted(d for d in dirs if not skip(rootp / d))
            out = dest / src.name / rootp.relative_to(src)
            out.mkdir(parents=True, exist_ok=True)
            for name in sorted(names):
                if used >= budget:
                    return used, files
                sp = rootp / name
                if skip(sp):
                    continue
                dp = out / name
                try:
                    if sp.is_symlink():
                        os.symlink(os.readlink(sp), dp)
                    elif sp.is_file():
                        size = sp.stat().st_size
                        if size > MAX_FILE:
                            continue
                        shutil.copyfile(sp, dp)
                        os.chmod(dp, sp.stat().st_mode & 0o7777 | 0o600)
                        used += size
                    else:
                        continue
                    files += 1
                except OSError:
                    continue
    return used, files


def synth_text(rng: random.Random, size: int) -> bytes:
    """Deterministic text-like content (compresses like source code)."""
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def synth_binary(rng: random.Random, size: int) -> bytes:
    """Half random, half repetitive bytes (compresses ~2:1 like shared libraries)."""
    chunk = rng.randbytes(4096)
    parts = []
    for i in range(0, size, 8192):
        parts.append(rng.randbytes(4096) if i % 16384 == 0 else chunk)
    return b"".join(parts)[:size]


def fill_synthetic(dest: Path, budget: int, seed: int, *, binary: bool = False,
                   mean_size: int = 12_000) -> tuple[int, int]:
    """Write deterministic files into ``dest`` until ``budget`` bytes; (bytes, files)."""
    rng = random.Random(seed)
    used = files = 0
    while used < budget:
        d = dest / f"d{files // 200:04d}"
        d.mkdir(parents=True, exist_ok=True)
        size = min(budget - used, max(64, int(rng.expovariate(1 / mean_size))))
        data = synth_binary(rng, size) if binary else synth_text(rng, size)
        (d / f"f{files:06d}.{'bin' if binary else 'txt'}").write_bytes(data)
        used += size
        files += 1
    return used, files


def fill(sources: Iterable[Path], dest: Path, budget: int, seed: int, *, binary: bool = False,
         skip: Callable[[Path], bool] = lambda p: False, synth: Path | None = None) -> tuple[int, int]:
    """Real files up to ``budget``, topped up with synthetic ones (in ``synth``) if there are too few."""
    used, files = copy_budget(sources, dest, budget, skip=skip)
    if used < budget * 0.95:
        u2, f2 = fill_synthetic(synth or dest / "synthetic", budget - used, seed, binary=binary)
        used, files = used + u2, files + f2
    return used, files


def walk_files(root: Path, suffix: str) -> list[Path]:
    out = []
    for r, dirs, names in os.walk(root):
        dirs.sort()
        out += [Path(r) / n for n in sorted(names) if n.endswith(suffix)
                and not (Path(r) / n).is_symlink()]
    return out


# ------------------------------------------------------------------------------------------- recipes

MB = 1 << 20


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def site_dir() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def large_layers(scale: float) -> list[tuple[str, Callable[[Path], None]]]:
    """(created_by, mutate-rootfs) per layer of the large image; ``scale`` multiplies byte budgets."""

    def b(n: int) -> int:
        return int(n * scale)

    def n(count: int) -> int:  # counts of paths scale too (identical to v2 at scale 1)
        return max(1, int(count * scale))

    std = stdlib_dir()
    site = site_dir()

    def base(rootfs: Path) -> None:
        share = rootfs / "usr/share"
        share.mkdir(parents=True)
        # Real /usr/share trees, lots of small files; doc and locale get deleted later.
        for name, budget in (("doc", 16 * MB), ("locale", 16 * MB), ("man", 10 * MB),
                             ("perl", 10 * MB), ("i18n", 8 * MB), ("zoneinfo", 4 * MB),
                             ("mime", 3 * MB), ("misc", 2 * MB), ("vim", 6 * MB), ("icons", 5 * MB)):
            src = Path("/usr/share") / name
            fill([src], share, b(budget), seed=hash_seed(name), synth=share / name / "synthetic")
        etc = rootfs / "etc"
        etc.mkdir()
        rng = random.Random(1)
        for i in range(n(300)):
            (etc / f"conf{i:03d}.conf").write_bytes(synth_text(rng, 800))
        (rootfs / "tmp").mkdir(mode=0o1777)

    def python(rootfs: Path) -> None:
        dest = rootfs / "usr/local/lib"
        dest.mkdir(parents=True)
        py = dest / "python3.11"
        fill([std], dest, b(170 * MB), seed=2, skip=lambda p: p.name == "site-packages",
             synth=py / "synthetic")
        if std.name != py.name and (dest / std.name).exists():
            (dest / std.name).rename(py)
        bindir = rootfs / "usr/local/bin"
        bindir.mkdir(parents=True)
        shutil.copyfile(sys.executable, bindir / "python3.11")
        os.chmod(bindir / "python3.11", 0o755)
        os.link(bindir / "python3.11", bindir / "python3")  # hardlink, as in Debian's python packages
        os.symlink("python3", bindir / "python")
        # A hardlink farm: 300 stdlib files linked under a second name in the same layer.
        farm = py / "hardlinks"
        farm.mkdir()
        for i, f in enumerate(walk_files(py, ".py")[:n(300)]):
            os.link(f, farm / f"{i:04d}_{f.name}")

    def toolchain(rootfs: Path) -> None:
        opt = rootfs / "opt/toolchain"
        opt.mkdir(parents=True)
        fill([Path("/usr/lib/gcc"), Path("/usr/lib/llvm-14"), Path("/usr/lib/jvm")], opt,
             b(180 * MB), seed=3, binary=True)
        py = rootfs / "usr/local/lib/python3.11"
        fill([site], py, b(50 * MB), seed=4, skip=lambda p: p.name == "__pycache__",
             synth=py / site.name / "synthetic")

    def cleanup(rootfs: Path) -> None:
        # Deletions of big trees: squashing drops all of this data.
        shutil.rmtree(rootfs / "opt/toolchain")
        shutil.rmtree(rootfs / "usr/share/doc")
        shutil.rmtree(rootfs / "usr/share/locale")
        test = rootfs / "usr/local/lib/python3.11/test"
        if test.exists():
            shutil.rmtree(test)
        # Edits of many files (each edited file is re-emitted whole in this layer).
        py = rootfs / "usr/local/lib/python3.11"
        for f in walk_files(py, ".py")[:n(3000):2]:
            with open(f, "ab") as fh:
                fh.write(b"\n# patched by the bench image recipe\n")
        # chmod-only changes: same bytes, new mode.
        man = walk_files(rootfs / "usr/share/man", "")
        for f in man[:n(800)]:
            os.chmod(f, 0o600)
        if (rootfs / "usr/share/vim").is_dir():
            os.chmod(rootfs / "usr/share/vim", 0o700)

    def app(rootfs: Path) -> None:
        appd = rootfs / "srv/app"
        appd.mkdir(parents=True)
        fill_synthetic(appd / "src", b(12 * MB), seed=5, mean_size=3000)
        rng = random.Random(6)
        (appd / "data.bin").write_bytes(synth_binary(rng, b(24 * MB)))
        os.link(appd / "data.bin", appd / "data-link.bin")
        for i in range(min(n(50), 200)):
            os.symlink(f"src/d0000/f{i:06d}.txt", appd / f"link{i:02d}")
        # A directory replaced by a file, a file replaced by a directory.
        shutil.rmtree(rootfs / "usr/share/zoneinfo", ignore_errors=True)
        (rootfs / "usr/share/zoneinfo").write_text("UTC\n")
        (rootfs / "etc/conf000.conf").unlink()
        (rootfs / "etc/conf000.conf").mkdir()
        (rootfs / "etc/conf000.conf/inner").write_text("now a directory\n")
        for p in [appd, *appd.rglob("*")]:
            os.lchown(p, 1000, 1000)

    def final(rootfs: Path) -> None:
        appd = rootfs / "srv/app"
        rng = random.Random(7)
        (appd / "data.bin").unlink()  # the old 24 MB blob lives on only through its hardlink twin
        (appd / "data.bin").write_bytes(synth_binary(rng, b(24 * MB)))
        for f in sorted((appd / "src").rglob("*.txt"))[::5]:
            f.unlink()
        for i in range(1, n(300), 7):
            with open(rootfs / f"etc/conf{i:03d}.conf", "a") as fh:
                fh.write("edited = true\n")

    return [("base: /usr/share and /etc", base),
            ("install python stdlib, hardlinks", python),
            ("install toolchain and site-packages", toolchain),
            ("cleanup: rm toolchain, doc, locale, tests; edit .py files; chmod man pages", cleanup),
            ("add app: small files, 24 MB blob, symlinks, dir<->file swaps", app),
            ("update app: new blob, delete a fifth of the sources, edit configs", final)]


# The entry-heavy image: a dependency tree of tens of thousands of small files in one layer (like a
# Python site-packages plus a node_modules), then an upgrade and a cleanup above it. All content is
# synthetic and seeded, so the same files (names, sizes, bytes, modes) are built on every machine.

_CORPUS: list[bytes] = []


def corpus() -> bytes:
    """4 MiB of seeded source-like text; files are slices of it (fast to write).

    Lines of indented identifiers drawn (Zipf-like) from 3000 made-up words, with digits and
    punctuation: it deflates about 3:1 at ISA-L's levels, like real source code, where text from a
    handful of words would compress far better and make the codec reference too cheap.
    """
    if not _CORPUS:
        rng = random.Random(11)
        letters = "abcdefghijklmnopqrstuvwxyz_"
        vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 12))) for _ in range(3000)]
        cum = list(itertools.accumulate(1 / (k + 1) for k in range(len(vocab))))
        punct = ("(", ")", ", ", " = ", ".", ": ", " + ", "[", "]", " == ", " # ")
        out: list[str] = []
        n = 0
        while n < 4 << 20:
            words = rng.choices(vocab, cum_weights=cum, k=rng.randint(2, 10))
            line = " " * (4 * rng.randint(0, 3)) + "".join(
                w + (rng.choice(punct) if rng.random() < 0.5 else " ") + (str(rng.randint(0, 999))
                                                                          if rng.random() < 0.1 else "")
                for w in words) + "\n"
            out.append(line)
            n += len(line)
        _CORPUS.append("".join(out).encode()[:4 << 20])
    return _CORPUS[0]


def small_file(path: Path, rng: random.Random, mean: int = 5000, *, empty: float = 0.0) -> None:
    """Write a file of exponentially distributed size (``empty``: the chance of an empty one)."""
    if rng.random() < empty:
        path.write_bytes(b"")
        return
    text = corpus()
    size = min(len(text) // 2, max(16, int(rng.expovariate(1 / mean))))
    off = rng.randrange(0, len(text) - size)
    path.write_bytes(text[off:off + size])


def py_package(site: Path, i: int, version: int = 1) -> None:
    """One Python distribution: nested modules, often tests/, a .dist-info, rarely an extension."""
    rng = random.Random(i * 1009 + version)
    name = f"pkg{i:04d}_{WORDS[i % len(WORDS)]}"
    top = site / name
    dirs = [top]
    for s in range(rng.randint(0, 6)):
        sub = top / f"sub{s}"
        dirs.append(sub)
        if rng.random() < 0.4:
            dirs.append(sub / "inner")
    if rng.random() < 0.6:
        dirs.append(top / "tests")
    for d in dirs:
        d.mkdir(parents=True)
        small_file(d / "__init__.py", rng, 400, empty=0.5)
        for m in range(rng.randint(2, 14)):
            small_file(d / f"{WORDS[(i + m) % len(WORDS)]}_{m}.py", rng)
    if rng.random() < 0.3:
        (top / "py.typed").write_bytes(b"")
    if rng.random() < 0.12:
        (top / "_speedups.cpython-311-x86_64-linux-gnu.so").write_bytes(
            synth_binary(rng, rng.randint(50_000, 1_500_000)))
    info = site / f"{name}-{version}.0.dist-info"
    info.mkdir()
    for f, mean in (("METADATA", 3000), ("RECORD", 4000), ("WHEEL", 100), ("top_level.txt", 20)):
        small_file(info / f, rng, mean)
    (info / "INSTALLER").write_bytes(b"pip\n")


def node_package(nm: Path, i: int, depth: int = 0) -> None:
    """One npm package: package.json, index.js, lib/, README, LICENSE; some nest their own deps."""
    rng = random.Random(100_003 * (depth + 1) + i)
    name = f"{WORDS[i % len(WORDS)]}-{WORDS[(i // len(WORDS)) % len(WORDS)]}-{i}"
    top = nm / name
    (top / "lib").mkdir(parents=True)
    for f in ("package.json", "index.js", "README.md", "LICENSE", "CHANGELOG.md"):
        small_file(top / f, rng, 3000)
    for m in range(rng.randint(1, 12)):
        small_file(top / "lib" / f"{WORDS[(i + m) % len(WORDS)]}{m}.js", rng, 4000)
    if rng.random() < 0.3:
        (top / "dist").mkdir()
        small_file(top / "dist" / "index.min.js", rng, 20_000)
        small_file(top / "dist" / "index.d.ts", rng, 800)
    if rng.random() < 0.1:
        (top / "bin").mkdir()
        small_file(top / "bin" / "cli.js", rng, 600)
        os.chmod(top / "bin" / "cli.js", 0o755)
        (nm / ".bin").mkdir(exist_ok=True)
        os.symlink(f"../{name}/bin/cli.js", nm / ".bin" / name)
    if depth == 0 and rng.random() < 0.08:
        for j in range(rng.randint(1, 4)):
            node_package(top / "node_modules", i * 7 + j, depth + 1)


def entry_layers(scale: float) -> list[tuple[str, Callable[[Path], None]]]:
    """(created_by, mutate-rootfs) per layer of the entry-heavy image; ``scale`` multiplies the counts."""
    n_py, n_node = max(2, int(490 * scale)), max(2, int(1300 * scale))
    site_rel, nm_rel = "usr/local/lib/python3.11/site-packages", "srv/app/node_modules"

    def base(rootfs: Path) -> None:
        etc = rootfs / "etc"
        etc.mkdir()
        rng = random.Random(21)
        for i in range(40):
            small_file(etc / f"conf{i:02d}.conf", rng, 600)
        (rootfs / "tmp").mkdir(mode=0o1777)

    def install(rootfs: Path) -> None:
        site, nm = rootfs / site_rel, rootfs / nm_rel
        site.mkdir(parents=True)
        nm.mkdir(parents=True)
        for i in range(n_py):
            py_package(site, i)
        for i in range(n_node):
            node_package(nm, i)

    def upgrade(rootfs: Path) -> None:
        site, nm = rootfs / site_rel, rootfs / nm_rel
        rng = random.Random(22)
        # A tenth of the Python packages replaced by version 2 (new files, whiteouts for gone ones).
        for i in range(0, n_py, 10):
            name = f"pkg{i:04d}_{WORDS[i % len(WORDS)]}"
            shutil.rmtree(site / name)
            shutil.rmtree(site / f"{name}-1.0.dist-info")
            py_package(site, i, version=2)
        # A twentieth of the npm packages removed, new ones added.
        for i in range(3, n_node, 20):
            name = f"{WORDS[i % len(WORDS)]}-{WORDS[(i // len(WORDS)) % len(WORDS)]}-{i}"
            shutil.rmtree(nm / name)
            with contextlib.suppress(FileNotFoundError):
                (nm / ".bin" / name).unlink()
        for i in range(n_node, n_node + n_node // 20):
            node_package(nm, i)
        # Edits to many files (each is re-emitted whole in this layer).
        for f in walk_files(site, ".py")[::25]:
            with open(f, "ab") as fh:
                fh.write(b"\n# patched by the bench image recipe\n")
        for f in walk_files(rootfs / "etc", ".conf")[::3]:
            small_file(f, rng, 600)

    def cleanup(rootfs: Path) -> None:
        site, nm = rootfs / site_rel, rootfs / nm_rel
        # rm -rf of every tests/ tree: one whiteout per directory, its files dropped by a squash.
        for t in sorted(site.glob("*/tests")):
            shutil.rmtree(t)
        # Many single-file deletions: one whiteout each.
        for f in sorted(nm.glob("*/CHANGELOG.md")):
            f.unlink()
        # chmod-only changes.
        for f in walk_files(nm, ".js")[::40]:
            os.chmod(f, 0o600)

    return [("base: /etc", base),
            ("install dependencies: site-packages and node_modules", install),
            ("upgrade: replace a tenth of the packages, remove some, edit files", upgrade),
            ("cleanup: rm -rf tests/, rm CHANGELOG.md, chmod some .js", cleanup)]


def tiny_layers() -> list[tuple[str, Callable[[Path], None]]]:
    def step(i: int) -> Callable[[Path], None]:
        def mutate(rootfs: Path) -> None:
            d = rootfs / "data"
            d.mkdir(exist_ok=True)
            (d / f"f{i}.txt").write_text(f"layer {i}\n")
            if i == 3:
                (d / "f1.txt").unlink()
            if i == 4:
                os.chmod(d / "f2.txt", 0o600)
        return mutate
    return [(f"tiny layer {i}", step(i)) for i in range(5)]


def hash_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


# ---------------------------------------------------------------------------------------------- build


def build_oci(layout: Path, work: Path, layers: list[tuple[str, Callable[[Path], None]]]) -> None:
    """umoci init/new, then per layer: mutate the bundle's rootfs and umoci repack."""
    image = f"{layout}:{TAG}"
    run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", image])
    bundle = work / "bundle"
    run(["umoci", "unpack", "--image", image, str(bundle)])
    created = "2024-01-01T00:00:00Z"
    for i, (created_by, mutate) in enumerate(layers):
        t0 = time.monotonic()
        mutate(bundle / "rootfs")
        run(["umoci", "repack", "--refresh-bundle", "--history.created_by", created_by,
             "--history.created", created, "--image", image, str(bundle)])
        log(f"layer {i + 1}/{len(layers)} ({created_by}) in {time.monotonic() - t0:.1f}s")
    run(["umoci", "config", "--image", image, "--config.cmd", "/usr/local/bin/python3",
         "--config.workingdir", "/srv/app", "--config.env", "PATH=/usr/local/bin:/usr/bin:/bin",
         "--history.created_by", "CMD python3", "--history.created", created])
    run(["umoci", "gc", "--layout", str(layout)])
    shutil.rmtree(bundle)


def tar_dir(src: Path, out: Path) -> None:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(src.rglob("*")):
            tf.add(p, arcname=str(p.relative_to(src)), recursive=False)


def finish_forms(oci: Path, dest: Path, kind: str, docker_tar: Path | None = None) -> dict[str, str]:
    """Make the docker-archive and the tarred-layout forms of ``oci`` inside ``dest``."""
    forms = {"oci": str(oci)}
    dt = dest / "image.docker.tar"
    if docker_tar is not None:
        forms["docker"] = str(docker_tar)
    else:
        run(["skopeo", "copy", "-q", f"oci:{oci}:{TAG}",
             f"docker-archive:{dt}:{DOCKER_NAME.format(kind=kind)}"])
        forms["docker"] = str(dt)
    ot = dest / "image.oci.tar"
    tar_dir(oci, ot)
    forms["oci_tar"] = str(ot)
    return forms


def stats(oci: Path) -> dict[str, Any]:
    """Layer count, blob sizes and the uncompressed size / entry count of the layers."""
    index = json.loads((oci / "index.json").read_text())
    man = json.loads(blob(oci, index["manifests"][0]["digest"]).read_text())
    layers = man["layers"]
    unc = entries = 0
    for layer in layers:
        with tarfile.open(blob(oci, layer["digest"]), "r|*") as tf:
            entries += sum(1 for _ in tf)
            unc += tf.offset
    return {"layers": len(layers), "compressed_bytes": sum(x["size"] for x in layers),
            "uncompressed_bytes": unc, "tar_entries": entries,
            "media_types": sorted({x["mediaType"] for x in layers})}


def blob(oci: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return oci / "blobs" / algo / hexd


def prune(cache: Path) -> None:
    """Remove images cached by older recipe versions."""
    for d in cache.glob("v*-*"):
        if d.is_dir() and (not d.name.startswith(f"{IMAGE_VERSION}-") or re.search(r"-x[0-9.]+$", d.name)):
            log(f"removing {d} (built by an older recipe)")
            shutil.rmtree(d, ignore_errors=True)


def _cached(cache: Path, key: str, build: Callable[[Path, Path], dict[str, Any]]) -> dict[str, Any]:
    """The info dict of the image cached as ``cache/key``. On first use ``build(tmp, dest)`` makes it in
    the scratch folder ``tmp`` and returns its info (naming the paths it will have under ``dest``); the
    folder is renamed to ``dest`` only when whole, and info.json, written last, marks it as built."""
    dest = cache / key
    info_file = dest / "info.json"
    if info_file.exists():
        return dict(json.loads(info_file.read_text()))
    tmp = cache / f"{key}.building"
    shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted build
    tmp.mkdir(parents=True)
    info = build(tmp, dest)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    info_file.write_text(json.dumps(info, indent=2))
    return info


def ensure_built(cache: Path, kind: str, scale: float = 1.0) -> dict[str, Any]:
    """The cached image ``kind`` ("large", "entry" or "tiny"), built on first use; returns its info dict."""
    # "-s": scaled images scale path counts as well as bytes (older "-x" ones scaled bytes only).
    key = f"{IMAGE_VERSION}-{kind}" + (f"-s{scale:g}" if scale != 1.0 else "")

    def build(tmp: Path, dest: Path) -> dict[str, Any]:
        for tool in ("umoci", "skopeo"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is needed to build the benchmark image (or pass --image-dir)")
        t0 = time.monotonic()
        log(f"building the {kind} image into {dest} (once; cached by version {IMAGE_VERSION})")
        recipes = {"large": lambda: large_layers(scale), "entry": lambda: entry_layers(scale), "tiny": tiny_layers}
        if kind not in recipes:
            raise ValueError(f"unknown image kind {kind!r}")
        layers = recipes[kind]()
        build_oci(tmp / "image.oci", tmp, layers)
        finish_forms(tmp / "image.oci", tmp, kind)
        info = {"kind": kind, "version": key, "source": "built by bench/imagebuild.py",
                "oci": str(dest / "image.oci"), "docker": str(dest / "image.docker.tar"),
                "oci_tar": str(dest / "image.oci.tar"), **stats(tmp / "image.oci"),
                "build_seconds": round(time.monotonic() - t0, 1)}
        log(f"built {kind} image in {info['build_seconds']}s: {info}")
        return info

    return _cached(cache, key, build)


def ensure_external(cache: Path, path: Path) -> dict[str, Any]:
    """Use an existing OCI layout or docker-archive tar; derive (and cache) the other forms.

    A layout with several manifests is narrowed (skopeo copy, blobs unchanged) to the one tagged
    ``latest`` (else the first), so that every tool sees the same single image. A sibling
    ``<stem>.docker.tar`` of a ``<stem>.oci`` layout is used as the docker form when it exists.
    """
    path = path.resolve()
    st = path.stat()
    key = "ext-" + hashlib.sha256(f"{path}:{st.st_mtime_ns}:{IMAGE_VERSION}".encode()).hexdigest()[:12]

    def build(tmp: Path, dest: Path) -> dict[str, Any]:
        docker: Path | None = None
        if path.is_dir():
            index = json.loads((path / "index.json").read_text())
            mans = index.get("manifests", [])
            tags = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in mans]
            if len(mans) == 1:
                shutil.copytree(path, tmp / "image.oci")
            else:
                tag = TAG if TAG in tags else tags[0]
                run(["skopeo", "copy", "-q", f"oci:{path}:{tag}", f"oci:{tmp / 'image.oci'}:{TAG}"])
            sibling = path.with_name(path.name.removesuffix(".oci") + ".docker.tar")
            if sibling.is_file():
                docker = sibling
        else:
            docker = path
            run(["skopeo", "copy", "-q", f"docker-archive:{path}", f"oci:{tmp / 'image.oci'}:{TAG}"])
        forms = finish_forms(tmp / "image.oci", tmp, "external", docker_tar=docker)
        forms = {k: v.replace(str(tmp), str(dest)) for k, v in forms.items()}
        return {"kind": "external", "version": key, "source": str(path), **forms, **stats(tmp / "image.oci")}

    return _cached(cache, key, build)


def sniff_plain_tar(path: Path) -> bool:
    """True if ``path`` starts like an uncompressed (ustar/pax/gnu) tar."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    return len(head) == 512 and head[257:262] == b"ustar"


# ----------------------------------------------------------------------------- a layer of many paths

MTIME = 1704067200  # 2024-01-01T00:00:00Z: every entry of the synthetic path layers


def ustar_header(name: str, size: int, typeflag: bytes, mode: int) -> bytes:
    """A ustar header (root:root, fixed mtime) for a name of at most 100 bytes."""
    h = bytearray(512)
    nb = name.encode()
    assert len(nb) <= 100, name
    h[0:len(nb)] = nb
    h[100:108] = b"%07o\0" % mode
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % MTIME
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[265:269] = h[297:301] = b"root"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def many_paths(paths: int) -> Iterator[tuple[str, bytes]]:
    """Exactly ``paths`` tar members (header + padded data), generated one at a time, never held.

    ``data/dAAA/eBB/fCCCC``: 100 directories per level, 98 files per leaf directory; every other file
    is empty, the rest hold 1-400 bytes of text.
    """
    text = corpus()
    span = len(text) - 512
    count = 0

    def member(name: str, data: bytes = b"", typeflag: bytes = b"0", mode: int = 0o644) -> tuple[str, bytes]:
        pad = -len(data) % 512
        return name, ustar_header(name, len(data), typeflag, mode) + data + b"\0" * pad

    yield member("data/", typeflag=b"5", mode=0o755)
    count = 1
    i = 0
    a = 0
    while True:
        top = f"data/d{a:04d}/"
        for b in range(-1, 100):
            if count >= paths:
                return
            if b < 0:
                yield member(top, typeflag=b"5", mode=0o755)
                count += 1
                continue
            leaf = f"{top}e{b:02d}/"
            yield member(leaf, typeflag=b"5", mode=0o755)
            count += 1
            for c in range(98):
                if count >= paths:
                    return
                size = 0 if i % 2 == 0 else (i * 7919) % 400 + 1
                off = (i * 104729) % span
                yield member(f"{leaf}f{c:03d}", text[off:off + size])
                count += 1
                i += 1
        a += 1


def write_layer(blobs: Path, members: Iterable[tuple[str, bytes]], level: int = 1) -> tuple[dict[str, Any], str, int]:
    """Stream ``members`` into a gzip layer blob; (descriptor, diff ID, entry count)."""
    from isal import igzip  # a dependency of ocisquash; only needed for these synthetic layers

    tmp = blobs / "layer.tmp"
    diff = hashlib.sha256()
    n = 0
    buf: list[bytes] = []
    held = 0
    with open(tmp, "wb") as raw, \
            igzip.IGzipFile(filename="", fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
        for _, data in members:
            buf.append(data)
            held += len(data)
            n += 1
            if held >= 1 << 20:
                chunk = b"".join(buf)
                diff.update(chunk)
                gz.write(chunk)
                buf, held = [], 0
        chunk = b"".join(buf) + b"\0" * 1024  # the end-of-archive marker
        diff.update(chunk)
        gz.write(chunk)
    return _store(blobs, tmp, "application/vnd.oci.image.layer.v1.tar+gzip"), "sha256:" + diff.hexdigest(), n


def _store(blobs: Path, tmp: Path, media_type: str) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(tmp, "rb") as fh:
        while data := fh.read(1 << 20):
            h.update(data)
    final = blobs / h.hexdigest()
    tmp.rename(final)
    return {"mediaType": media_type, "digest": "sha256:" + h.hexdigest(), "size": final.stat().st_size}


def _store_json(blobs: Path, obj: object, media_type: str) -> dict[str, Any]:
    tmp = blobs / "json.tmp"
    tmp.write_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())
    return _store(blobs, tmp, media_type)


def top_layer(paths: int) -> Iterator[tuple[str, bytes]]:
    """Above the path layer: delete ``data/d0000`` (one whiteout), rewrite 500 files, add a directory."""
    yield "data/", ustar_header("data/", 0, b"5", 0o755)
    yield "data/.wh.d0000", ustar_header("data/.wh.d0000", 0, b"0", 0o644)
    if paths > 10_000:
        yield "data/d0001/", ustar_header("data/d0001/", 0, b"5", 0o755)
        yield "data/d0001/e00/", ustar_header("data/d0001/e00/", 0, b"5", 0o755)
        for c in range(0, 98, 2):
            name = f"data/d0001/e00/f{c:03d}"
            yield name, ustar_header(name, 0, b"0", 0o600)
    yield "data/new/", ustar_header("data/new/", 0, b"5", 0o755)
    for c in range(100):
        name = f"data/new/g{c:03d}"
        yield name, ustar_header(name, 0, b"0", 0o644)


def _new_layout(tmp: Path, what: str, dest: Path) -> tuple[Path, Path, float]:
    """An empty layout's folder and blob folder under ``tmp``, and the time its build starts."""
    layout = tmp / "image.oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    log(f"building {what} into {dest} (once; cached)")
    return layout, blobs, time.monotonic()


def ensure_paths_image(cache: Path, paths: int) -> dict[str, Any]:
    """An OCI layout whose first layer holds exactly ``paths`` tar entries (small and empty files in
    nested directories) and whose second deletes and edits a few: written by streaming generated tar
    members into ISA-L gzip, so the builder never holds the path list. Cached like the other images.
    """
    key = f"{IMAGE_VERSION}-paths{paths}"

    def build(tmp: Path, dest: Path) -> dict[str, Any]:
        layout, blobs, t0 = _new_layout(tmp, f"a layer of {paths} paths", dest)
        l1, d1, n1 = write_layer(blobs, many_paths(paths))
        l2, d2, n2 = write_layer(blobs, top_layer(paths))
        created = "2024-01-01T00:00:00Z"
        config = {"architecture": "amd64", "os": "linux", "created": created, "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [d1, d2]},
                  "history": [{"created": created, "created_by": f"{paths} paths"},
                              {"created": created, "created_by": "delete data/d0000, edit and add files"}]}
        cfg = _store_json(blobs, config, "application/vnd.oci.image.config.v1+json")
        man = _store_json(blobs, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                  "config": cfg, "layers": [l1, l2]}, "application/vnd.oci.image.manifest.v1+json")
        man["annotations"] = {"org.opencontainers.image.ref.name": TAG}
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [man]}))
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        info = {"kind": "paths", "version": key, "source": f"built by bench/imagebuild.py ({paths} paths)",
                "oci": str(dest / "image.oci"), "layers": 2, "paths": n1, "tar_entries": n1 + n2,
                "compressed_bytes": l1["size"] + l2["size"], "build_seconds": round(time.monotonic() - t0, 1)}
        log(f"built the {paths}-path image in {info['build_seconds']}s: {info}")
        return info

    return _cached(cache, key, build)


def many_images_path(cache: Path, count: int) -> Path:
    """Where ``ensure_many_images(cache, count)`` keeps its layout."""
    return cache / f"{IMAGE_VERSION}-many{count}" / "image.oci"


def ensure_many_images(cache: Path, count: int) -> dict[str, Any]:
    """An OCI layout of ``count`` images for ``images``' scaling: small configs, 32 tiny layers shared among
    them. Each image is built on an earlier one (its layers and one more) with probability 0.6, up to 6
    layers deep, so there are parents with children; one in three images is untagged (intermediate or
    dangling). Deterministic; cached like the other images."""
    key = many_images_path(cache, count).parent.name

    def build(tmp: Path, dest: Path) -> dict[str, Any]:
        layout, blobs, t0 = _new_layout(tmp, f"a layout of {count} images", dest)
        pool = []
        for i in range(32):
            name = f"file{i:02d}"
            data = f"layer {i}\n".encode()
            tar = ustar_header(name, len(data), b"0", 0o644) + data.ljust(512, b"\0") + b"\0" * 1024
            (blobs / "layer.tmp").write_bytes(tar)
            desc = _store(blobs, blobs / "layer.tmp", "application/vnd.oci.image.layer.v1.tar")
            pool.append((desc, desc["digest"]))  # uncompressed: the diff ID is the digest
        rng = random.Random(count)
        chains: list[list[int]] = []
        manifests = []
        for i in range(count):
            parent = rng.randrange(i) if i and rng.random() < 0.6 else -1
            base = chains[parent] if parent >= 0 and len(chains[parent]) < 6 else []
            chain = [*base, rng.randrange(len(pool))]
            chains.append(chain)
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + i))
            config = {"architecture": "amd64", "os": "linux", "created": created, "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [pool[j][1] for j in chain]},
                      "history": [{"created": created, "created_by": f"layer {j}"} for j in chain]}
            cfg = _store_json(blobs, config, "application/vnd.oci.image.config.v1+json")
            man = _store_json(blobs, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "config": cfg, "layers": [pool[j][0] for j in chain]},
                              "application/vnd.oci.image.manifest.v1+json")
            if i % 3:
                name = f"bench/many{i % 50}:t{i}"
                man["annotations"] = {"io.containerd.image.name": f"docker.io/{name}",
                                      "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
            manifests.append(man)
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        info = {"kind": "many", "version": key, "source": f"built by bench/imagebuild.py ({count} images)",
                "oci": str(dest / "image.oci"), "images": count, "build_seconds": round(time.monotonic() - t0, 1)}
        log(f"built the {count}-image layout in {info['build_seconds']}s")
        return info

    return _cached(cache, key, build)


# Two platforms of one image for `--platform all`: the large recipe at two scales (other files, other
# sizes: two builds of one Dockerfile differ that way), each config naming its platform.
PLATFORM_SCALES = {"linux/amd64": 0.3, "linux/arm64/v8": 0.25}


def platforms_path(cache: Path) -> Path:
    """Where ``ensure_platforms_image(cache)`` keeps its layout."""
    return cache / f"{IMAGE_VERSION}-platforms" / "image.oci"


def ensure_platforms_image(cache: Path, scales: dict[str, float] = PLATFORM_SCALES) -> dict[str, Any]:
    """An OCI layout whose image ``latest`` is an index of one platform per ``scales`` entry, each the
    large recipe at that scale (by default about 199 and 165 MB uncompressed, six layers, none shared),
    built with umoci; cached like the other images. The info lists each platform's ``stats``."""
    key = platforms_path(cache).parent.name

    def build(tmp: Path, dest: Path) -> dict[str, Any]:
        layout, blobs, t0 = _new_layout(tmp, f"an index of {len(scales)} platforms", dest)
        entries, per = [], {}
        for plat, scale in scales.items():
            os_, arch, *variant = plat.split("/")
            one = tmp / f"one-{arch}"
            build_oci(one, tmp, large_layers(scale))
            per[plat] = stats(one)
            for b in (one / "blobs" / "sha256").iterdir():
                if not (blobs / b.name).exists():
                    os.link(b, blobs / b.name)
            desc = json.loads((one / "index.json").read_text())["manifests"][0]
            man = json.loads(blob(one, desc["digest"]).read_text())
            cfg = json.loads(blob(one, man["config"]["digest"]).read_text())
            cfg.update(os=os_, architecture=arch, **({"variant": variant[0]} if variant else {}))
            man["config"] = _store_json(blobs, cfg, man["config"]["mediaType"])
            entry = _store_json(blobs, man, "application/vnd.oci.image.manifest.v1+json")
            entry["platform"] = {"os": os_, "architecture": arch, **({"variant": variant[0]} if variant else {})}
            entries.append(entry)
            shutil.rmtree(one)
        idx = _store_json(blobs, {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                  "manifests": entries}, "application/vnd.oci.image.index.v1+json")
        idx["annotations"] = {"org.opencontainers.image.ref.name": TAG}
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [idx]}))
        (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        info = {"kind": "platforms", "version": key, "source": "built by bench/imagebuild.py (large recipe at "
                + ", ".join(f"{s:g} for {p}" for p, s in scales.items()) + ")",
                "oci": str(dest / "image.oci"), "platforms": per, "build_seconds": round(time.monotonic() - t0, 1)}
        log(f"built the {len(scales)}-platform image in {info['build_seconds']}s: {per}")
        return info

    return _cached(cache, key, build)
