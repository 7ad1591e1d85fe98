"""ocisquash's own container image (issue 23 item 3): built from the Containerfile, squashed, run as README shows.

The image is built once per module with ``buildah bud --isolation chroot`` from a Debian base that
contrib/debian-base.sh makes with debootstrap (no container registry is reachable here; users build
from debian:bookworm-slim, the Containerfile's default, which this base stands in for). The base is
cached between sessions in ``$OCISQUASH_BASE_CACHE`` (default: the file ``make image BASE=local``
uses), as it takes minutes and depends on nothing in this repository. Then, as ``make image`` does,
the built image is saved as a docker-archive, squashed by ocisquash, and the squash loaded into podman.

What is checked: the squash unpacks (umoci, tests/oracle.py) to the built image's root filesystem; the
squashed image, run by podman with the README's command line, squashes the trap image (tests/fixtures.py)
into a file that unpacks to the same tree, written by the container's non-root user; and the image
holds the interpreter, ocisquash with its compiled merge and its dependencies, and no compiler, pip,
headers, sources or tests.

README's CI examples are read from README.md (its ```yaml blocks, parsed) and run as a runner runs them:
the GitHub Actions step's ``run:`` with ``bash -e`` against our own dockerd (tests/realclients.py) and the
GitLab CI job's ``script:`` inside the image with its entry point reset; README's podman line runs rootless
too, with its ``--userns=keep-id`` flag, as the unprivileged user ``nobody``.

This sandbox's runc may not raise RLIMIT_NOFILE/RLIMIT_NPROC to podman's defaults (``error setting
rlimit type 7: operation not permitted``), so ``podman run`` here gets ``--ulimit`` values below the
host's limits: a workaround for the sandbox, not part of the command users run.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import needs, skip_or_fail
from oracle import assert_same_rootfs
from realclients import DOCKER, Clients, start_or_skip

pytestmark = [pytest.mark.slow, pytest.mark.tools]

ROOT = Path(__file__).resolve().parent.parent
TAG = "localhost/ocisquash-test:latest"
BUILT_TAG = "localhost/ocisquash-test:build"
USER = 1000  # the Containerfile's USER
BASE_CACHE = Path(os.environ.get("OCISQUASH_BASE_CACHE")
                  or Path.home() / ".cache" / "ocisquash" / "debian-bookworm-python3.oci.tar")
SANDBOX_ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
# What a runtime image must not hold: build tools, pip, headers, the build's sources and wheels, tests.
FORBIDDEN_FILES = {"usr/bin/gcc", "usr/bin/cc", "usr/bin/cpp", "usr/bin/ld", "usr/bin/as", "usr/bin/strip",
                   "usr/bin/make", "usr/bin/pip", "usr/bin/pip3", "opt/ocisquash/bin/pip"}
FORBIDDEN_PARTS = ("/usr/lib/gcc/", "/site-packages/pip/", "/site-packages/setuptools/", "/site-packages/mypy/",
                   "/site-packages/mypyc/", "/ensurepip/_bundled/", "/usr/include/", "/src/", "/tests/",
                   "test_squash.py", ".whl", "/.cache/")


def run(*args: str | os.PathLike[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail the test with its command line and output."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}",
                    pytrace=False)
    return p


@pytest.fixture(scope="session")
def debian_base() -> Path:
    """An oci-archive of Debian bookworm minbase + python3 (contrib/debian-base.sh), built once and cached."""
    problem = needs(("debootstrap", "umoci", "buildah", "podman", "skopeo"), "make debs",
                    root="(debootstrap, and a rootful container store)")
    if problem:
        skip_or_fail(problem)
    if not BASE_CACHE.is_file():
        run(ROOT / "contrib" / "debian-base.sh", BASE_CACHE, timeout=1800)
    return BASE_CACHE


@dataclass(frozen=True)
class Built:
    store: tuple[str, ...]  # --root/--runroot options of the private store buildah and podman share
    built: Path  # the image buildah built, as a docker-archive
    squashed: Path  # the same squashed by ocisquash (what `make image` leaves), loaded into podman as TAG


def pip_options() -> list[str]:
    """This machine's pip settings for the build stage (its PyPI CA), as `make image` passes them."""
    opts = []
    if cert := os.environ.get("PIP_CERT"):
        opts += ["-v", f"{cert}:/run/pip-cert.pem:ro", "--build-arg", "PIP_CERT=/run/pip-cert.pem"]
    if index := os.environ.get("PIP_INDEX_URL"):
        opts += ["--build-arg", f"PIP_INDEX_URL={index}"]
    return opts


@pytest.fixture(scope="module")
def image(debian_base: Path) -> Iterator[Built]:
    d = Path(tempfile.mkdtemp(prefix="ci-", dir="/tmp"))  # podman refuses a runroot path over 50 characters
    store = ("--root", str(d / "store"), "--runroot", str(d / "run"), "--storage-driver", "overlay")
    try:
        run("buildah", *store, "bud", "--isolation", "chroot", "--build-arg", f"BASE=oci-archive:{debian_base}",
            *pip_options(), "-f", ROOT / "Containerfile", "-t", BUILT_TAG, ROOT, timeout=1800)
        built, squashed = d / "built.tar", d / "squashed.tar"
        run("buildah", *store, "push", "-q", BUILT_TAG, f"docker-archive:{built}:{TAG}")
        run(sys.executable, "-m", "ocisquash", "-q", built, squashed, "--tag", TAG)
        run("podman", *store, "load", "-q", "-i", squashed)
        yield Built(store, built, squashed)
    finally:
        subprocess.run(["podman", *store, "system", "reset", "--force"], capture_output=True, timeout=300,
                       check=False)
        shutil.rmtree(d, ignore_errors=True)


def layer_names(docker_archive: Path) -> list[list[str]]:
    """Every layer's entry names, bottom first, read from a docker-archive with tarfile."""
    with tarfile.open(docker_archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = []
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=t.extractfile(name)) as layer:
                layers.append([m.name.removeprefix("./") for m in layer])
        return layers


def image_config(docker_archive: Path) -> dict:
    with tarfile.open(docker_archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        return json.load(t.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]


def test_squash_of_the_built_image_unpacks_to_it(image: Built, tmp_path: Path) -> None:
    assert len(layer_names(image.built)) > 1
    assert len(layer_names(image.squashed)) == 1
    built, squashed = image_config(image.built)["config"], image_config(image.squashed)["config"]
    for key in ("User", "Entrypoint", "WorkingDir", "Env", "Cmd"):
        assert squashed.get(key) == built.get(key), key
    assert squashed["User"] == f"{USER}:{USER}"
    assert squashed["Entrypoint"] == ["/opt/ocisquash/bin/ocisquash"]
    assert squashed["WorkingDir"] == "/data"
    assert_same_rootfs(image.built, image.squashed, tmp_path)


def test_image_holds_the_runtime_only(image: Built) -> None:
    (names,) = layer_names(image.squashed)
    bad = sorted({n for n in names if n in FORBIDDEN_FILES or any(f in "/" + n for f in FORBIDDEN_PARTS)})
    assert not bad, f"build leftovers in the image: {bad[:20]}"
    site = "opt/ocisquash/lib/python3.11/site-packages/"
    for needed in ("usr/bin/python3.11", site + "ocisquash/cli/squash.py", site + "typer/__init__.py",
                   site + "rich/__init__.py", site + "zstandard/__init__.py", site + "isal/__init__.py",
                   site + "httpx/__init__.py", site + "magic/__init__.py"):
        assert needed in names, needed
    assert any(n.startswith(site + "ocisquash_merge__mypyc") and n.endswith(".so") for n in names)


def podman_run(image: Built, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return run("podman", *image.store, "run", "--rm", *SANDBOX_ULIMITS, *args, timeout=600)


def test_runs_as_the_readme_shows_as_non_root(image: Built, trap_docker: object, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(trap_docker.path, data / "app.tar")  # type: ignore[attr-defined]
    os.chown(data, USER, USER)  # a directory the container's user may write, as README asks
    podman_run(image, "-v", f"{data}:/data", TAG, "/data/app.tar", "/data/app-squashed.tar")
    out = data / "app-squashed.tar"
    st = out.stat()
    assert (st.st_uid, st.st_gid) == (USER, USER), "the squash was not written by the container's user"
    assert len(layer_names(out)) == 1
    assert_same_rootfs(data / "app.tar", out, tmp_path)
    assert podman_run(image, "--entrypoint", "id", TAG, "-u").stdout.strip() == str(USER)


def test_runs_the_compiled_merge(image: Built) -> None:
    code = "import ocisquash.merge.tarread as m; print(m.__file__)"
    p = podman_run(image, "--entrypoint", "/opt/ocisquash/bin/python", TAG, "-c", code)
    assert p.stdout.strip().endswith(".so"), p.stdout


# ------------------------------------------------------------------------------------------ README's CI examples
# The GitHub Actions step and the GitLab CI job are read from README.md's ```yaml blocks and run as a runner
# would, with README's image name replaced by the image built above.

README = ROOT / "README.md"
GITHUB_IMAGE = "ghcr.io/OWNER/ocisquash:latest"
GITLAB_IMAGE = "registry.example.com/tools/ocisquash:latest"


def readme_blocks(lang: str) -> list[str]:
    """The text of README's ```LANG blocks, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(), re.S | re.M)


def github_step() -> dict[str, Any]:
    """The README's GitHub Actions step: the one yaml block that is a list of steps with a ``run``."""
    steps = [s for b in readme_blocks("yaml") if isinstance(doc := yaml.safe_load(b), list) for s in doc
             if isinstance(s, dict) and "run" in s]
    assert len(steps) == 1, steps
    return steps[0]


def gitlab_job() -> dict[str, Any]:
    """The README's GitLab CI job: the one yaml block that maps a job name to a job with a ``script``."""
    jobs = [j for b in readme_blocks("yaml") if isinstance(doc := yaml.safe_load(b), dict) for j in doc.values()
            if isinstance(j, dict) and "script" in j]
    assert len(jobs) == 1, jobs
    return jobs[0]


def squashed_as_documented(app: Path, out: Path, tmp_path: Path) -> None:
    """``out`` is the squash the examples promise: one layer, tagged ``app:squashed``, app's tree."""
    assert len(layer_names(out)) == 1
    with tarfile.open(out) as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert [m["RepoTags"] for m in manifest] == [["app:squashed"]]
    assert_same_rootfs(app, out, tmp_path)


@pytest.fixture(scope="module")
def dockerd(image: Built) -> Iterator[Clients]:
    """Our own dockerd (tests/realclients.py) with the squashed image loaded under TAG."""
    c = start_or_skip()
    try:
        c.load("docker", "ocisquash", image.squashed)
        yield c
    finally:
        c.stop()


@pytest.mark.parametrize("user", ["runner", "uid1000"])
def test_readme_github_actions_step(image: Built, dockerd: Clients, trap_docker: object, tmp_path: Path,
                                    user: str) -> None:
    """The step's ``run:`` in a shell, as GitHub's runner runs it (``bash -e``), in a workspace holding app.tar.

    dockerd runs as root here, so the documented ``-u "$(id -u):$(id -g)"`` is ``-u 0:0`` ("runner"); the
    "uid1000" case swaps it for ``-u 1000:1000`` on a workspace owned by uid 1000, README's other way."""
    run_line = github_step()["run"]
    ids = '-u "$(id -u):$(id -g)"'
    assert GITHUB_IMAGE in run_line and ids in run_line, run_line
    work = tmp_path / "workspace"
    work.mkdir()
    shutil.copyfile(trap_docker.path, work / "app.tar")  # type: ignore[attr-defined]
    script = run_line.replace(GITHUB_IMAGE, TAG)
    owner = os.getuid()
    if user == "uid1000":
        script, owner = script.replace(ids, f"-u {USER}:{USER}"), USER
        os.chown(work, USER, USER)
    bin_dir = tmp_path / "bin"  # `docker` is the client that speaks our dockerd's API (realclients.DOCKER)
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(DOCKER)
    env = {**os.environ, **dockerd.docker_env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    p = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0, f"{script}\n{p.stdout}\n{p.stderr}"
    out = work / "app-squashed.tar"
    assert out.stat().st_uid == owner
    squashed_as_documented(work / "app.tar", out, tmp_path)
    assert dockerd.load("docker", f"github-{user}", out).ref == "app:squashed"


@pytest.mark.parametrize("runner", ["umask-0000", "chown"])
def test_readme_gitlab_ci_job(image: Built, trap_docker: object, tmp_path: Path, runner: str) -> None:
    """The job's ``script:`` lines run in the image with its entry point reset, in a build directory
    prepared as GitLab Runner's docker executor prepares it for an image whose user is not root: made by
    root with ``umask 0000`` (its default), or chowned to the image's user
    (``FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR``)."""
    job = gitlab_job()
    assert job["image"] == {"name": GITLAB_IMAGE, "entrypoint": [""]}
    builds = tmp_path / "builds"
    builds.mkdir()
    shutil.copyfile(trap_docker.path, builds / "app.tar")  # type: ignore[attr-defined]
    if runner == "umask-0000":
        builds.chmod(0o777)
        (builds / "app.tar").chmod(0o666)
    else:
        os.chown(builds, USER, USER)
        os.chown(builds / "app.tar", USER, USER)
    script = "\n".join(job["script"])
    podman_run(image, "--entrypoint", "", "-v", f"{builds}:/builds", "-w", "/builds", TAG, "sh", "-e", "-c", script)
    paths = job["artifacts"]["paths"]
    assert paths and all((builds / p).is_file() for p in paths), paths
    squashed_as_documented(builds / "app.tar", builds / "app-squashed.tar", tmp_path)


# ------------------------------------------------------------------------------------------ rootless podman

def test_rootless_podman_as_readme_shows(image: Built, trap_docker: object, tmp_path: Path) -> None:
    """README's podman line with its rootless flag (``--userns=keep-id:uid=1000,gid=1000``), run by podman as
    an unprivileged user (``nobody``, uid 65534: not 1000, so the mapping shows): the squash is written as
    uid 1000 inside the container and is that user's file outside.

    Rootless podman needs subordinate IDs for the user (/etc/subuid, /etc/subgid, read by the setuid
    newuidmap). This machine's files are empty, so the test gives ``nobody`` a range in a private mount
    namespace (``unshare -m``, the files bind-mounted over), which goes with the test's process: nothing on
    the host changes. The sandbox has no slirp4netns for rootless networking, so ``--network none`` is
    added (the squash needs no network); the store is vfs (no fuse-overlayfs)."""
    who = pwd.getpwnam("nobody")
    problem = needs(("unshare", "runuser", "newuidmap", "newgidmap"), "apt-get install util-linux uidmap",
                    root="(to give nobody subordinate IDs in a private mount namespace)")
    if problem is None and not (Path("/etc/subuid").is_file() and Path("/etc/subgid").is_file()):
        problem = "needs /etc/subuid and /etc/subgid to exist (even empty) to bind-mount a range over them"
    if problem:
        skip_or_fail(problem)
    line = next(ln for b in readme_blocks("sh") for ln in b.splitlines() if ln.startswith("podman run "))
    (keep_id,) = re.findall(r"`(--userns=keep-id:[^`]+)`", README.read_text())
    assert keep_id == f"--userns=keep-id:uid={USER},gid={USER}"
    host_ids = [Path(f).read_bytes() for f in ("/etc/subuid", "/etc/subgid")]
    top = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))  # a short path: podman's runroot limit
    top.chmod(0o755)
    home, data = top / "home", top / "data"
    (home / "xdg").mkdir(parents=True, mode=0o700)
    data.mkdir()
    shutil.copyfile(trap_docker.path, data / "app.tar")  # type: ignore[attr-defined]
    shutil.copyfile(image.squashed, top / "image.tar")
    for p in (home, home / "xdg", data, data / "app.tar"):
        os.chown(p, who.pw_uid, who.pw_gid)
    (top / "image.tar").chmod(0o644)
    (top / "subids").write_text("nobody:100000:65536\n")
    store = f"--root {home}/store --runroot {home}/run --storage-driver vfs --events-backend none " \
            "--cgroup-manager cgroupfs"
    plain, cmd = (line.replace("localhost/ocisquash", TAG).replace("podman run ", f"podman {store} run {flag}", 1)
                  for flag in ("--network none ", f"--network none {keep_id} "))
    # Without the flag the container's uid 1000 is a subordinate ID that may not write the user's
    # directory: the run must fail, or the flag would not be what makes the squash work.
    as_nobody = (f"cd {data} && export HOME={home} XDG_RUNTIME_DIR={home}/xdg && "
                 f"podman {store} load -q -i {top}/image.tar && "
                 f"{{ {plain} 2> {home}/plain.err || echo $? > {home}/plain.rc; }} && test -s {home}/plain.rc && "
                 f"test ! -e app-squashed.tar && {cmd}")
    script = (f"mount --bind {top}/subids /etc/subuid && mount --bind {top}/subids /etc/subgid && "
              f"exec runuser -u nobody -- sh -ec {shlex.quote(as_nobody)}")
    try:
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script],
                           capture_output=True, text=True, timeout=900, check=False)
        assert p.returncode == 0, f"{as_nobody}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        refused = (home / "plain.err").read_text()
        assert (home / "plain.rc").read_text() == "1\n", refused
        assert refused.startswith("error: /data/app-squashed.tar: cannot write the output: permission denied\n"), \
            refused
        out = data / "app-squashed.tar"
        assert (out.stat().st_uid, out.stat().st_gid) == (who.pw_uid, who.pw_gid)
        assert len(layer_names(out)) == 1
        assert_same_rootfs(data / "app.tar", out, tmp_path)
    finally:
        pause = home / "xdg" / "libpod" / "tmp" / "pause.pid"  # rootless podman's user-namespace holder
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pause.read_text()), signal.SIGKILL)
        shutil.rmtree(top, ignore_errors=True)
    assert [Path(f).read_bytes() for f in ("/etc/subuid", "/etc/subgid")] == host_ids  # the host's, unchanged


def test_readme_pipe_through_the_image(image: Built, dockerd: Clients, tmp_path: Path) -> None:
    """README's ``docker save app:1.0 | docker run --rm -i IMAGE - - | docker load``, read from README and run
    in a shell against our dockerd: the image loaded back under its own name is one layer, app's tree. The
    app is testdata's sample (docker refuses to load the trap image itself: a hardlink to a lower layer)."""
    app = ROOT / "testdata" / "sample.docker.tar"
    found = re.search(r"`(docker save\s+app:1\.0 \| docker run --rm -i localhost/ocisquash - - \| docker load)`",
                      README.read_text())
    assert found is not None
    script = " ".join(found.group(1).split()).replace("localhost/ocisquash", TAG)
    dockerd.docker("tag", dockerd.load("docker", "pipe-app", app).ref, "app:1.0")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(DOCKER)
    env = {**os.environ, **dockerd.docker_env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0, f"{script}\n{p.stdout}\n{p.stderr}"
    assert "Loaded image: app:1.0" in p.stdout, p.stdout  # the names kept, as README says
    out = tmp_path / "back.tar"
    dockerd.docker("save", "-o", str(out), "app:1.0")
    assert len(layer_names(out)) == 1
    assert_same_rootfs(app, out, tmp_path)
