"""Shared pytest fixtures: the tool check and the trap images, built once per session.

Tests marked ``@pytest.mark.tools`` (or using ``require_tools`` or any image fixture) need umoci and
skopeo and root: without them they are skipped with the reason, or *fail* when ``CI`` is set, so a CI
run can never count a missing oracle as a pass.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # `import oracle, fixtures` however pytest was started
    sys.path.insert(0, str(TESTS))

from fixtures import (  # noqa: E402
    BuiltImage,
    build_docker,
    to_containerd,
    to_docker25,
    to_docker_legacy,
    trap_image,
    trap_umoci_image,
)
from oracle import Snapshot, assert_same_rootfs  # noqa: E402

TOOLS = ("umoci", "skopeo")
TRAP_REPO_TAG = "ocisquash-test/trap:latest"
SAMPLE_DOCKER = TESTS.parent / "testdata" / "sample.docker.tar"


def needs(tools: Sequence[str], install: str, *, root: str | None = None) -> str | None:
    """Why tests that run ``tools`` cannot run here, or None: some are not on PATH (``install`` says how
    to get them), or, when ``root`` says what needs it, this is not root."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)} ({install})"
    if root is not None and os.geteuid() != 0:
        return f"needs root {root}"
    return None


def tools_problem() -> str | None:
    """Why the oracle can't run here, or None."""
    return needs(TOOLS, "apt-get install -y umoci skopeo",
                 root="(the oracle unpacks owners, devices and security.* xattrs)")


def skip_or_fail(problem: str) -> None:
    """Skip the current test for ``problem``; fail instead when the CI env var is set (CI installs it all)."""
    if os.environ.get("CI"):
        pytest.fail(f"{problem}; CI is set, so this is a failure, not a skip", pytrace=False)
    pytest.skip(problem)


def check_tools() -> None:
    """Skip the current test when the tools are missing; fail instead when the CI env var is set."""
    problem = tools_problem()
    if problem is not None:
        skip_or_fail(problem)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests using any tool-backed fixture get the ``tools`` marker, so ``-m "not tools"`` deselects them."""
    for item in items:
        if "require_tools" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.tools)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("tools"):
        check_tools()


def pytest_report_header(config: pytest.Config) -> str:
    return f"oracle tools: {tools_problem() or 'umoci, skopeo, root: ok'}"


@pytest.fixture(scope="session")
def require_tools() -> None:
    """Depend on this (or mark the test ``tools``) when a test runs umoci/skopeo."""
    check_tools()


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory, require_tools: None) -> Path:
    """One session directory holding every built test image."""
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="session")
def trap_oci(images_dir: Path) -> BuiltImage:
    """The trap image from hand-made layers: OCI layout (gzip), tags ``latest`` (5 layers) and ``l2``."""
    return trap_image(images_dir)


@pytest.fixture(scope="session")
def trap_umoci_oci(images_dir: Path) -> BuiltImage:
    """The same trap steps built by umoci unpack/repack; tags ``latest`` (4 layers) and ``l2``."""
    return trap_umoci_image(images_dir)


@pytest.fixture(scope="session")
def trap_docker(trap_oci: BuiltImage, images_dir: Path) -> BuiltImage:
    """skopeo's docker-archive of the trap image (``<diffid>.tar`` + ``<v1id>/layer.tar`` symlinks)."""
    return build_docker(trap_oci.path, "latest", images_dir / "trap.docker.tar", TRAP_REPO_TAG)


@pytest.fixture(scope="session")
def trap_docker_legacy(trap_docker: BuiltImage, images_dir: Path) -> BuiltImage:
    """Docker <= 24 ``docker save`` form (real ``<v1id>/layer.tar`` files, ``repositories``)."""
    return to_docker_legacy(trap_docker.path, images_dir / "trap.docker-legacy.tar")


@pytest.fixture(scope="session")
def trap_docker25(trap_docker: BuiltImage, images_dir: Path) -> BuiltImage:
    """Docker >= 25 classic-store form (OCI layout with plain layers + ``manifest.json``)."""
    return to_docker25(trap_docker.path, images_dir / "trap.docker25.tar")


@pytest.fixture(scope="session")
def trap_containerd(trap_oci: BuiltImage, images_dir: Path) -> BuiltImage:
    """Docker 29 containerd-store form (gzip layers, nested index, missing arm64, attestation)."""
    return to_containerd(trap_oci.path, "latest", images_dir / "trap.containerd.tar", TRAP_REPO_TAG)


@pytest.fixture(scope="session")
def trap_zstd_oci(images_dir: Path) -> BuiltImage:
    """The trap image with zstd layers (skopeo); umoci 0.4.7 can't read it, the oracle converts it."""
    return trap_image(images_dir, compression="zstd")


@pytest.fixture(scope="session")
def trap_plain_oci(images_dir: Path) -> BuiltImage:
    """The trap image with uncompressed ``…layer.v1.tar`` layers (digest == DiffID)."""
    return trap_image(images_dir, compression="none")


@pytest.fixture(scope="session")
def sample_docker() -> BuiltImage:
    """The committed demo image ``testdata/sample.docker.tar`` (``ocisquash/sample:latest``)."""
    assert SAMPLE_DOCKER.is_file(), f"{SAMPLE_DOCKER} missing: run testdata/make-sample.py"
    return BuiltImage(SAMPLE_DOCKER, "ocisquash/sample:latest")


@pytest.fixture
def same_rootfs(tmp_path: Path, require_tools: None) -> Callable[..., Snapshot]:
    """``same_rootfs(ref_a, ref_b, mtime=False)``: assert_same_rootfs with this test's tmp_path."""
    def check(ref_a: object, ref_b: object, **kw: bool) -> Snapshot:
        a = ref_a.ref if isinstance(ref_a, BuiltImage) else ref_a
        b = ref_b.ref if isinstance(ref_b, BuiltImage) else ref_b
        return assert_same_rootfs(a, b, tmp_path, **kw)  # type: ignore[arg-type]
    return check
