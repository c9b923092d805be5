"""The lock files are what every install uses: the venv running the suite holds exactly the locked versions,
and the lock satisfies pyproject.toml's ranges (so it was refreshed after the last change of them)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)", re.M)


def locked(path: Path = LOCK) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in _PIN.findall(path.read_text())}


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_every_line_of_the_lock_is_an_exact_pin() -> None:
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert _PIN.match(line), f"not an exact pin: {line!r}"


def test_lock_satisfies_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in the lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}: run `make lock`"
        )


def test_venv_matches_the_lock() -> None:
    """`make install-dev` installs the whole lock (runtime and every extra); nothing else, nothing different."""
    pins, have = locked(), installed()
    have.pop("samtune", None)
    wrong = {name: (have[name], pins[name]) for name in pins.keys() & have.keys() if have[name] != pins[name]}
    missing = sorted(pins.keys() - have.keys())
    extra = sorted(have.keys() - pins.keys())
    assert not wrong, f"installed != locked (installed, locked): {wrong}; run `make install-dev`"
    assert not missing, f"locked but not installed: {missing}; run `make install-dev`"
    assert not extra, f"installed but not in the lock: {extra}; recreate the venv (`make clean install-dev`)"


def test_pip_finds_no_broken_requirements() -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sdk_venv_matches_its_lock() -> None:
    sdk_python = REPO / ".venv-sdk" / "bin" / "python"
    assert sdk_python.exists(), "no .venv-sdk: run `make install-dev`"
    listing = subprocess.run(
        [str(sdk_python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    have = {canonicalize_name(n): v for n, v in _PIN.findall(listing)}
    pins = locked(REPO / "requirements" / "sdk-lock.txt")
    wrong = {n: (have.get(n), v) for n, v in pins.items() if have.get(n) != v}
    assert not wrong, f".venv-sdk differs from requirements/sdk-lock.txt (installed, locked): {wrong}"
