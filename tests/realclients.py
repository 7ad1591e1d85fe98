"""Real clients as an oracle: our own dockerd + containerd, and podman, loading images and showing their trees.

Nothing here uses ocisquash's code. ``Clients.start`` runs a private ``containerd`` (own root, state and
socket) and a private ``dockerd`` on it (overlay2, or vfs when overlay2 will not start; no iptables, no
bridge; own data-root, exec-root, pidfile and socket), all under one short directory in /tmp (unix socket
paths are limited to 108 bytes); ``stop`` ends them by PID, kills the shims they left, unmounts and
removes everything. podman runs daemonless on its own ``--root``/``--runroot`` there too.

Each loader loads an image tarball once and captures its tree as an ``oracle.Snapshot``:

- docker: ``docker load``, then ``docker create IMG true`` + ``docker export`` (the container's merged
  rootfs as a tar), read here with tarfile. Docker adds its own files to every container (moby's init
  layer, ``daemon/initlayer``): ``DOCKER_OWN`` lists exactly those and they are left out; the
  directories it writes them into (``/dev``, ``/etc``) keep their type, mode, owner and xattrs in the
  comparison but not their mtime, which the init layer sets to the container's creation time. moby's
  export writes no root entry and, of the xattrs, only ``security.capability`` (its archive code reads
  no other), so the root and other xattrs are compared in the other loaders.
- containerd: ``ctr images import`` (unpacks into the overlayfs snapshotter), ``ctr images mount`` and a
  walk of the mounted directory (``oracle.snapshot``: all xattrs, the root included).
- podman: ``podman load`` and ``podman image mount`` (overlay store, vfs when overlay fails), walked too;
  ``podman-vfs``: the same on a second store with the vfs driver, which copies each layer's parent and
  unpacks the layer over it (what issue 10 item 2 was seen with).

mtimes at or after the first load of the session are recorded as ``FRESH``: a directory that a loader
had to create because no layer gave it (issue 10 item 1) gets the time its layer was first unpacked,
which differs from load to load (docker and containerd share a layer between images, so a per-load
threshold would not do); the images are all made, ``docker build`` included, before the first load.
All other mtimes, of directories too, are compared exactly.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import os
import posixpath
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from conftest import needs
from oracle import Entry, Snapshot, compare, snapshot

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client; a newer /usr/local/bin/docker may speak a newer API
FRESH = -1  # mtime_ns of an entry stamped at load time
# What moby's init layer (daemon/initlayer/setup_unix.go) adds to every container, and docker export shows.
DOCKER_OWN = frozenset({".dockerenv", "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab",
                        "dev/console", "dev/pts", "dev/shm", "proc", "sys"})
DOCKER_TOUCHED = frozenset({"dev", "etc"})  # the init layer writes into them: their mtime is its own
READY_SECONDS = 60
LOADERS = ("docker", "containerd", "podman", "podman-vfs")


class ClientError(RuntimeError):
    """A real client failed; the message holds its command line and output."""


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                       env={**os.environ, **(env or {})})
    if check and p.returncode != 0:
        raise ClientError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr.strip()}\n{p.stdout.strip()}")
    return p


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll ``ready`` for up to READY_SECONDS; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClientError(f"{what} exited {proc.returncode}: {_tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    raise ClientError(f"{what} not ready after {READY_SECONDS}s: {_tail(log)}")


def _tail(log: Path, n: int = 8) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def problem() -> str | None:
    """Why real clients cannot run here, or None."""
    tools = (DOCKERD, DOCKER, "containerd", "ctr", "podman", "runc", "busybox")  # busybox: docker build's shell
    return needs(tools, "apt-get install -y docker.io containerd podman busybox-static",
                 root="to run dockerd and containerd")


# ------------------------------------------------------------------------------------------ trees

def _tar_tree(path: Path, t0: float) -> Snapshot:
    """A snapshot of a ``docker export`` tar, without DOCKER_OWN."""
    raw: dict[str, dict[str, object]] = {}
    links: dict[str, list[str]] = {}
    with tarfile.open(path) as t:
        for m in t:
            name = m.name.removeprefix("./").rstrip("/") or "."
            if name in DOCKER_OWN or any(name.startswith(p + "/") for p in DOCKER_OWN):
                continue
            e: dict[str, object] = {"mode": m.mode & 0o7777, "uid": m.uid, "gid": m.gid,
                                    "mtime_ns": int(m.mtime * 1_000_000_000)}
            e["xattrs"] = tuple(sorted((k.removeprefix("SCHILY.xattr."), v.encode("utf-8", "surrogateescape"))
                                       for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")))
            if m.islnk():
                target = m.linkname.removeprefix("./")
                first = raw[target]
                e.update(type="file", size=first["size"], sha256=first["sha256"])
                links.setdefault(target, [target]).append(name)
            elif m.isreg():
                f = t.extractfile(m)
                assert f is not None
                h = hashlib.sha256()
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                e.update(type="file", size=m.size, sha256=h.hexdigest())
            elif m.isdir():
                e["type"] = "dir"
            elif m.issym():
                e.update(type="symlink", target=m.linkname)
            elif m.ischr() or m.isblk():
                e.update(type="chardev" if m.ischr() else "blockdev", rdev=(m.devmajor, m.devminor))
            elif m.isfifo():
                e["type"] = "fifo"
            else:
                e["type"] = "other"
            raw[name] = e
    for group in links.values():
        g = tuple(sorted(group))
        for p in g:
            raw[p]["hardlinks"] = g
    return _fresh({p: Entry(**e) for p, e in raw.items()}, t0)  # type: ignore[arg-type]


def _fresh(tree: Snapshot, t0: float) -> Snapshot:
    cut = int(t0) * 1_000_000_000  # whole seconds: docker export's tar truncates mtimes
    return {p: replace(e, mtime_ns=FRESH) if e.mtime_ns >= cut else e for p, e in tree.items()}


def _mtime(ns: int) -> str:
    if ns == FRESH:
        return "load time"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + f".{ns % 1_000_000_000:09d}Z"


def compare_trees(a: Snapshot, b: Snapshot, *, seconds: bool = False,
                  mtime_skip: frozenset[str] = frozenset(),
                  xattr_filter: Callable[[str], bool] | None = None) -> list[str]:
    """Differences between two trees, one line each: ``oracle.compare`` with every mtime compared,
    directories' too (what overlay loaders get wrong). ``seconds`` compares mtimes to the second (for
    trees from different loaders); ``mtime_skip`` names paths whose mtime a loader sets itself."""
    def key(ns: int) -> int:
        return ns if ns == FRESH or not seconds else ns // 1_000_000_000

    return compare(a, b, mtime=True, dir_mtimes=True, mtime_key=key, mtime_skip=mtime_skip, show_mtime=_mtime,
                   xattr_filter=xattr_filter)


# ------------------------------------------------------------------------------------------ the clients

@dataclass
class Loaded:
    """An image in a loader: the reference the loader printed for it."""

    ref: str


@dataclass
class Clients:
    """The private daemons and the podman store; ``load``/``tree`` per loader (LOADERS)."""

    root: Path
    storage_driver: str = ""
    podman_driver: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    loaded: dict[tuple[str, str], Loaded] = field(default_factory=dict)
    trees: dict[tuple[str, str], Snapshot] = field(default_factory=dict)
    failed: dict[tuple[str, str], ClientError] = field(default_factory=dict)  # not retried: tests share them
    epoch: float = 0.0  # time.time() before the first load: later mtimes are FRESH

    # -- paths and base commands
    @property
    def ctd_sock(self) -> Path:
        return self.root / "ctd.sock"

    @property
    def docker_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.root / 'docker.sock'}", "DOCKER_BUILDKIT": "0",
                "DOCKER_CONFIG": str(self.root / "docker-config")}

    def docker(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([DOCKER, *args], env=self.docker_env, timeout=timeout, check=check)

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(["ctr", "--address", str(self.ctd_sock), "--namespace", "rc", *args], timeout=timeout)

    def podman(self, *args: str, timeout: float = 300, vfs: bool = False) -> subprocess.CompletedProcess[str]:
        """podman on our overlay store, or (``vfs``) on a second store with the vfs driver."""
        store, driver = ("pm-vfs", "vfs") if vfs else ("pm", self.podman_driver)
        return run(["podman", "--root", str(self.root / f"{store}-root"), "--runroot", str(self.root / f"{store}-run"),
                    "--storage-driver", driver, "--events-backend", "none",
                    "--cgroup-manager", "cgroupfs", *args], timeout=timeout)

    # -- life cycle
    @classmethod
    def start(cls) -> Clients:
        c = cls(Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp")))
        try:
            c._start_containerd()
            c._start_dockerd()
            c._pick_podman_driver()
        except BaseException:
            c.stop()
            raise
        return c

    def _start_containerd(self) -> None:
        r = self.root
        conf = r / "containerd.toml"
        conf.write_text(f'version = 2\nroot = "{r}/ctd-root"\nstate = "{r}/ctd-state"\n'
                        f'[grpc]\n  address = "{self.ctd_sock}"\n[ttrpc]\n  address = "{self.ctd_sock}.ttrpc"\n'
                        '[debug]\n  address = ""\n[metrics]\n  address = ""\n')
        log = r / "containerd.log"
        with open(log, "wb") as f:
            self.procs["containerd"] = subprocess.Popen(["containerd", "--config", str(conf)], stdout=f,
                                                        stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            return run(["ctr", "--address", str(self.ctd_sock), "version"], timeout=10, check=False).returncode == 0
        _wait(ready, self.procs["containerd"], "containerd", log)

    def _start_dockerd(self) -> None:
        errors = []
        for driver in ("overlay2", "vfs"):
            d = self.root / f"docker-{driver}"
            log = self.root / f"dockerd-{driver}.log"
            argv = [DOCKERD, "--experimental", "--iptables=false", "--bridge=none", "--storage-driver", driver,
                    "--data-root", str(d / "data"), "--exec-root", str(d / "exec"), "--pidfile", str(d / "pid"),
                    "-H", self.docker_env["DOCKER_HOST"], "--containerd", str(self.ctd_sock)]
            with open(log, "wb") as f:
                proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            self.procs["dockerd"] = proc
            try:
                _wait(lambda: self.docker("version", timeout=10, check=False).returncode == 0, proc, "dockerd", log)
            except ClientError as e:
                errors.append(f"{driver}: {e}")
                self._stop_proc("dockerd")
                continue
            self.storage_driver = driver
            return
        raise ClientError("dockerd would not start:\n" + "\n".join(errors))

    def _pick_podman_driver(self) -> None:
        for driver in ("overlay", "vfs"):
            self.podman_driver = driver
            try:
                self.podman("info", timeout=60)
                return
            except ClientError:
                shutil.rmtree(self.root / "pm-root", ignore_errors=True)
        raise ClientError("podman info fails with both overlay and vfs")

    def _stop_proc(self, name: str) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def stop(self) -> None:
        """Stop dockerd, then containerd, by PID; kill the shims they started; unmount; remove the directory."""
        for vfs in (False, True):
            with contextlib.suppress(ClientError, subprocess.TimeoutExpired):
                if self.podman_driver:
                    self.podman("image", "unmount", "--all", timeout=60, vfs=vfs)
        self._stop_proc("dockerd")
        self._stop_proc("containerd")
        for pid in self._own_pids():  # shims outlive containerd by design; ours name our socket
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for m in sorted(self._mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _own_pids(self) -> list[int]:
        me = str(self.root).encode()
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                with contextlib.suppress(OSError):
                    if me in (d / "cmdline").read_bytes():
                        pids.append(int(d.name))
        return pids

    def _mounts(self) -> list[str]:
        out = []
        for line in Path("/proc/self/mounts").read_text().splitlines():
            mnt = line.split()[1].encode().decode("unicode_escape")
            if mnt == str(self.root) or mnt.startswith(str(self.root) + "/"):
                out.append(mnt)
        return out

    # -- load and capture
    def load(self, loader: str, key: str, tar: Path) -> Loaded:
        """Load ``tar`` into ``loader`` once per ``key``; raises ClientError when the loader refuses it."""
        if (loader, key) in self.loaded:
            return self.loaded[(loader, key)]
        if not self.epoch:  # start on a whole second, so nothing made before it shares its second
            time.sleep(1 - time.time() % 1)
            self.epoch = time.time()
        if loader == "docker":
            out = self.docker("load", "-i", str(tar)).stdout
            refs = re.findall(r"^Loaded image(?: ID)?: (\S+)$", out, re.M)
        elif loader == "containerd":
            out = self.ctr("images", "import", str(tar)).stdout
            refs = re.findall(r"^unpacking (\S+) \(sha256:", out, re.M)
        elif loader in ("podman", "podman-vfs"):
            out = self.podman("load", "-i", str(tar), vfs=loader == "podman-vfs").stdout
            refs = [r for line in re.findall(r"^Loaded image\(?s?\)?: (.+)$", out, re.M) for r in line.split(",")]
        else:
            raise ValueError(loader)
        if len(refs) != 1:
            raise ClientError(f"{loader} load {tar}: expected one image, got {refs!r}:\n{out}")
        self.loaded[(loader, key)] = Loaded(refs[0].strip())
        return self.loaded[(loader, key)]

    def adopt(self, key: str, ref: str) -> None:
        """Treat an image already in our dockerd (built by docker build) as loaded under ``key``."""
        self.loaded[("docker", key)] = Loaded(ref)

    def tree(self, loader: str, key: str, tar: Path | None = None) -> Snapshot:
        """The tree ``loader`` shows for the image loaded under ``key`` (loaded from ``tar`` first if needed)."""
        if (loader, key) in self.trees:
            return self.trees[(loader, key)]
        if (loader, key) in self.failed:
            raise self.failed[(loader, key)]
        try:
            return self._tree(loader, key, tar)
        except ClientError as e:
            self.failed[(loader, key)] = e
            raise

    def _tree(self, loader: str, key: str, tar: Path | None) -> Snapshot:
        if (loader, key) not in self.loaded:
            if tar is None:
                raise ValueError(f"{key} not loaded in {loader}")
            self.load(loader, key, tar)
        img = self.loaded[(loader, key)]
        work = Path(tempfile.mkdtemp(prefix="cap-", dir=self.root))
        try:
            if loader == "docker":
                tree = self._docker_tree(img, work)
            elif loader == "containerd":
                tree = self._ctr_tree(img, work)
            else:
                tree = self._podman_tree(img, vfs=loader == "podman-vfs")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.trees[(loader, key)] = tree
        return tree

    def _docker_tree(self, img: Loaded, work: Path) -> Snapshot:
        cid = self.docker("create", "--network", "none", img.ref, "true").stdout.strip()
        try:
            self.docker("export", "-o", str(work / "rootfs.tar"), cid)
        finally:
            self.docker("rm", "-f", cid, check=False)
        return _tar_tree(work / "rootfs.tar", self.epoch or time.time())

    def _ctr_tree(self, img: Loaded, work: Path) -> Snapshot:
        target = work / "mnt"
        target.mkdir()
        self.ctr("images", "mount", img.ref, str(target))
        try:
            return _fresh(snapshot(target), self.epoch or time.time())
        finally:
            self.ctr("images", "unmount", "--rm", str(target))

    def _podman_tree(self, img: Loaded, vfs: bool) -> Snapshot:
        path = self.podman("image", "mount", img.ref, vfs=vfs).stdout.strip().splitlines()[-1]
        try:
            return _fresh(snapshot(path), self.epoch or time.time())
        finally:
            self.podman("image", "unmount", img.ref, vfs=vfs)


@contextlib.contextmanager
def clients() -> Iterator[Clients]:
    c = Clients.start()
    try:
        yield c
    finally:
        c.stop()


def start_or_skip() -> Clients:
    """Started clients, or the test skipped (failed under CI) saying why this machine cannot run them."""
    from conftest import skip_or_fail

    why = problem()
    if why is not None:
        skip_or_fail(f"real clients: {why}")
    try:
        return Clients.start()
    except (ClientError, OSError, subprocess.SubprocessError) as e:
        skip_or_fail(f"real clients: this machine cannot run them: {e}")
        raise  # not reached: skip_or_fail raises


# ------------------------------------------------------------------------------------------ images for them

def _dir_entry(name: str, like: tarfile.TarInfo | None, default_mtime: int) -> tarfile.TarInfo:
    if like is not None and like.isdir():
        ti = copy.copy(like)
        ti.pax_headers = dict(like.pax_headers)
    else:
        ti = tarfile.TarInfo()
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, default_mtime
    ti.name = name + "/"
    return ti


def _rewrite(last: dict[str, tuple[tarfile.TarInfo, bytes | None]],
             state: dict[str, tuple[tarfile.TarInfo, bytes | None]], default_mtime: int) -> bytes:
    """One layer's entries (``last``) over the tree so far (``state``), written as moby's diff would."""
    buf = io.BytesIO()
    here: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        def emit(name: str, m: tarfile.TarInfo, data: bytes | None) -> None:
            parts = name.split("/")
            for i in range(1, len(parts)):
                anc = "/".join(parts[:i])
                if anc not in here:
                    here.add(anc)
                    dst.addfile(_dir_entry(anc, last.get(anc, state.get(anc, (None, None)))[0], default_mtime))
            here.add(name)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)

        for name, (m, data) in last.items():
            if name in here:
                continue
            target = m.linkname.removeprefix("./")
            if m.islnk() and target not in here and target not in last and target in state:
                emit(target, *state[target])
            emit(name, m, data)
    return buf.getvalue()


def as_moby_diff(layers: list[bytes], default_mtime: int) -> list[bytes]:
    """The same layers as moby's own diff would write them, so that overlay loaders take them.

    The trap layers are made for umoci, which unpacks every layer onto one directory; docker and podman
    unpack each layer into its own directory, and refuse or alter three things moby's diff never writes:
    a path twice in one layer (kept: the last), a hardlink to a file of a lower layer (the file is written
    again first, as overlayfs copies it up before linking), and an entry whose parent directories are
    not in the layer (each ancestor is written first with its metadata as it stands, as moby's
    ``changes.go`` does; a directory no layer gave gets 0755 root ``default_mtime``).
    """
    state: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}  # the tree so far: path -> last entry
    out = []
    for layer in layers:
        last: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
        with tarfile.open(fileobj=io.BytesIO(layer)) as src:
            for m in src:
                f = src.extractfile(m) if m.isreg() else None
                name = m.name.removeprefix("./").rstrip("/")
                last.pop(name, None)  # a duplicate: the last one wins, in its place
                last[name] = (m, f.read() if f else None)
        out.append(_rewrite(last, state, default_mtime))
        for name in last:  # deletions first, then this layer's entries
            d, base = posixpath.split(name)
            gone = d if base == ".wh..wh..opq" else posixpath.join(d, base[4:]) if base.startswith(".wh.") else None
            if gone is not None:
                for k in [k for k in state if k.startswith(gone + "/") or (k == gone and base != ".wh..wh..opq")]:
                    del state[k]
        state.update((n, e) for n, e in last.items() if not posixpath.basename(n).startswith(".wh."))
    return out
