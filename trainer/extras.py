"""Optional dependencies (pyproject's extras): found without importing them, and a missing one named with
the install command that brings it."""

from __future__ import annotations

import importlib.util


class MissingExtra(ImportError):
    """An optional feature was asked for and its package is not installed."""


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return False


def require(module: str, extra: str, feature: str) -> None:
    """Raise MissingExtra, naming `pip install 'samtune[extra]'`, when `module` is not installed."""
    if not installed(module):
        raise MissingExtra(
            f"{feature} needs the '{module}' package, which is not installed: "
            f"pip install 'samtune[{extra}]' (or pip install {module})"
        )
