"""The lock files (requirements/*.lock, made by `make lock`) are what every
install uses: complete, hashed, consistent with each other and with
pyproject.toml, past the advisories pyproject's floors were raised for; and
the Makefile installs from them, reinstalling when they change."""

from __future__ import annotations

import hashlib
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
LOCKS = ("dev", "runtime", "build", "bench")

# Published advisories the floors in pyproject.toml step past: the package,
# the newest affected version, the first fixed one.
ADVISORY_FLOORS = {
    "starlette": ("1.3.0", "1.3.1"),  # GHSA-82w8-qh3p-5jfq; CVE-2026-48710 (< 1.0.1)
    "jinja2": ("3.1.5", "3.1.6"),  # CVE-2025-27516
    "python-multipart": ("0.0.30", "0.0.31"),  # GHSA-v9pg-7xvm-68hf
    "h11": ("0.15.0", "0.16.0"),  # CVE-2025-43859
    "fastapi": ("0.132.0", "0.133.0"),  # the first that takes a fixed starlette
}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: str) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (REQUIREMENTS / f"{lock}.lock").read_text().splitlines():
        match = _PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = Version(match.group(2))
    return found


def requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(r) for r in listed]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_is_exact_and_hashed(lock: str) -> None:
    text = (REQUIREMENTS / f"{lock}.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert len(entries) == len(pins(lock)) > 0
    for entry in entries:
        assert _PIN.match(entry), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, entry.splitlines()[0]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("runtime", ()), ("dev", ("dev",)), ("bench", ("dev", "bench"))],
)
def test_each_lock_satisfies_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    pinned = pins(lock)
    for requirement in requirements(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is missing from {lock}.lock: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock}.lock pins {name}=={pinned[name]}, pyproject.toml wants "
            f"{requirement.specifier}: run `make lock`"
        )
    if lock == "runtime":
        assert not {"pytest", "ruff", "mypy", "uv"} & set(pinned), "no dev tool in the image"


def test_the_build_lock_builds_with_the_declared_backend() -> None:
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    pinned = pins("build")
    for raw in build_system["requires"]:
        requirement = Requirement(raw)
        assert requirement.specifier.contains(pinned[canonicalize_name(requirement.name)])


@pytest.mark.parametrize("lock", ["runtime", "build", "bench"])
def test_every_lock_pins_the_versions_the_tests_ran(lock: str) -> None:
    dev = pins("dev")
    differing = {
        name: (version, dev[name])
        for name, version in pins(lock).items()
        if name in dev and version != dev[name]
    }
    assert differing == {}


@pytest.mark.parametrize("package", sorted(ADVISORY_FLOORS))
def test_floors_and_pins_are_past_the_advisories(package: str) -> None:
    affected, fixed = ADVISORY_FLOORS[package]
    (requirement,) = [r for r in requirements() if canonicalize_name(r.name) == package]
    assert not requirement.specifier.contains(affected), (
        f"pyproject.toml allows {package} {affected}"
    )
    assert requirement.specifier.contains(fixed)
    for lock in ("dev", "runtime", "bench"):
        assert pins(lock)[package] >= Version(fixed), lock


def test_make_installs_from_the_lock_and_reinstalls_when_it_changes() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "-B", "venv"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in dry_run.splitlines() if " install " in line]
    assert any("--require-hashes --no-deps -r requirements/dev.lock" in i for i in installs)
    package = [i for i in installs if i.rstrip().endswith("-e .")]
    assert package, dry_run
    assert all("--no-deps --no-build-isolation" in i for i in package)
    assert not [i for i in installs if "[dev" in i], "no unpinned install of the extras"
    content = (ROOT / "pyproject.toml").read_bytes() + (REQUIREMENTS / "dev.lock").read_bytes()
    stamp = hashlib.sha1(content, usedforsecurity=False).hexdigest()[:12]
    assert f".venv/.installed-{stamp}" in dry_run, "the stamp names the lock it installed"
