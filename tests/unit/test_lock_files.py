"""requirements/*.lock (what `make setup` and deploy/Dockerfile install) satisfy pyproject.toml, pin every
package exactly with hashes, and ship the versions the tests ran against. Run `make lock` to fix."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_DIR = Path(__file__).resolve().parents[2]
LOCKS = REPO_DIR / "requirements"
PROJECT = canonicalize_name("apidevs-alerts")
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.MULTILINE)


def pins(lock: Path) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in _PIN.findall(lock.read_text())}


def project() -> dict:
    return tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]


def requirements(extras: set[str]) -> list[Requirement]:
    """The project's requirements with these extras, following its own extras (dev names embedded, ...)."""
    optional = project()["optional-dependencies"]
    found = [Requirement(text) for text in project()["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in optional[extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == PROJECT:
                pending += list(requirement.extras)
            else:
                found.append(requirement)
    return found


def unsatisfied(lock: Path, extras: set[str]) -> list[str]:
    pinned = pins(lock)
    missing = []
    for requirement in requirements(extras):
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{requirement} (locked: {version})")
    return missing


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("dev.lock", {"dev"}), ("production.lock", {"gcs", "s3"})],
)
def test_lock_satisfies_pyproject(lock: str, extras: set[str]) -> None:
    assert unsatisfied(LOCKS / lock, extras) == []


def test_a_requirement_the_lock_does_not_meet_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    locked = pins(LOCKS / "production.lock")["grpcio"]
    original = project()
    raised = original | {"dependencies": [*original["dependencies"], f"grpcio>{locked}"]}
    monkeypatch.setattr(sys.modules[__name__], "project", lambda: raised)
    assert unsatisfied(LOCKS / "production.lock", {"gcs", "s3"}) == [f"grpcio>{locked} (locked: {locked})"]


@pytest.mark.parametrize("lock", ["dev.lock", "production.lock", "gcs-emulator.lock"])
def test_every_pin_is_exact_and_hashed(lock: str) -> None:
    """pip's --require-hashes refuses the whole file otherwise; checked here so it fails before a build."""
    blocks = re.split(r"\n(?=\S)", (LOCKS / lock).read_text())
    packages = [block for block in blocks if not block.startswith("#") and block.strip()]
    assert packages
    for block in packages:
        assert _PIN.match(block), block.splitlines()[0]
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_production_ships_the_versions_the_tests_ran_against() -> None:
    dev, production = pins(LOCKS / "dev.lock"), pins(LOCKS / "production.lock")
    differing = {
        name: (version, dev.get(name)) for name, version in production.items() if dev.get(name) != version
    }
    assert differing == {}


def test_the_emulator_lock_pins_what_compose_builds() -> None:
    source = (LOCKS / "gcs-emulator.in").read_text()
    (requirement,) = [Requirement(line) for line in source.splitlines() if line and not line.startswith("#")]
    assert requirement.specifier.contains(
        pins(LOCKS / "gcs-emulator.lock")[canonicalize_name(requirement.name)]
    )
