"""The locks (`make lock`) hold what pyproject.toml asks for, pinned with hashes, and this
environment was installed from them (`make` installs requirements-dev.lock)."""

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked(name: str) -> dict[str, tuple[str, str | None, int]]:
    """name → (version, marker, number of hashes) of every pin in the lock file ``name``."""
    pins: dict[str, tuple[str, str | None, int]] = {}
    current = None
    for line in (REPO / name).read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match[1])
            assert current not in pins, f"{name} pins {current} twice"
            pins[current] = (match[2], match[3], 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            found, marker, hashes = pins[current]
            pins[current] = (found, marker, hashes + 1)
    return pins


def wanted(*extras: str) -> list[Requirement]:
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return requirements


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ()), ("requirements-dev.lock", ("test", "bench"))])
def test_each_lock_pins_every_requirement_within_its_bounds_with_hashes(lock, extras):
    pins = locked(lock)
    assert len(pins) > 50, f"{lock}: {len(pins)} pins"
    assert all(hashes for _, _, hashes in pins.values()), "a pin without a hash"
    for requirement in wanted(*extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} does not pin {requirement}: run `make lock`"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"{lock} pins {name}=={pins[name][0]}, outside {requirement}: run `make lock`"
        )


def test_the_development_lock_agrees_with_the_services_lock():
    services, development = locked("requirements.lock"), locked("requirements-dev.lock")
    assert services.keys() <= development.keys()
    differ = {name: (pin[0], development[name][0]) for name, pin in services.items() if development[name][0] != pin[0]}
    assert not differ, f"the two locks disagree: {differ}"


def test_this_environment_was_installed_from_the_development_lock():
    pins = locked("requirements-dev.lock")
    installed = {}
    for name, (pinned, marker, _) in pins.items():
        try:
            installed[name] = version(name)
        except PackageNotFoundError:
            assert marker, f"{name} is locked for every platform and not installed"
    differ = {name: (pins[name][0], found) for name, found in installed.items() if found != pins[name][0]}
    assert not differ, f"installed versions differ from the lock (pinned, installed): {differ}"
