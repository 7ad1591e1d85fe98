"""Packaging: ranges in pyproject.toml, the exact tested set in constraints.txt (which the venv CI builds
installs), LICENSE, py.typed."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def requirements() -> list[Requirement]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_dependencies_are_ranges_and_the_constraints_satisfy_them() -> None:
    pins = constraints()
    for req in requirements():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} has no exact version in constraints.txt"
        assert req.specifier.contains(pins[name]), f"constraints.txt's {req.name}=={pins[name]} is outside {req}"
        if name != "oci-squash":  # the benchmark's peer is one version on purpose (bench/README.md)
            assert any(s.operator == "<" for s in req.specifier), f"{req} has no upper bound"
            assert not any(s.operator == "==" for s in req.specifier), f"{req} is a pin, not a range"
    typer = next(r for r in requirements() if r.name == "typer")
    assert not typer.specifier.contains("0.29.0")  # 0.29 imports pydantic at start-up (see pyproject.toml)


def test_installed_versions_are_the_constraints() -> None:
    pins = constraints()
    for req in requirements():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue  # an extra this environment did not install (fuzz, bench)
        assert have == pins[name], f"{req.name} {have} is installed; CI tests {pins[name]}"


def test_venv_and_ci_install_with_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text()
    installs = [ln for ln in makefile.splitlines() if "pip install" in ln and "-e " in ln]
    assert installs and all("-c constraints.txt" in ln for ln in installs)
    assert re.search(r"^\$\(VENV\)/\.installed: .*constraints\.txt", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_license_and_py_typed() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert pyproject()["project"]["license"] == "Apache-2.0"  # type: ignore[index]
    assert (ROOT / "ocisquash" / "py.typed").exists()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["ocisquash"]  # type: ignore[index]
