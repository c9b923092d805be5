"""bench/ scripts start as bench/RESULTS.md runs them (`.venv/bin/python bench/NAME.py ...`): as scripts, whose
folder comes first on sys.path, so a file named like a standard-library module or one of samtune's packages
would hide it from everything that imports it (bench/queue.py once broke redis's `from queue import Empty`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")


def test_no_script_shadows_the_standard_library() -> None:
    for folder in ("bench", "tests", "examples"):
        for path in (REPO / folder).rglob("*.py"):
            assert path.stem not in sys.stdlib_module_names, (
                f"{path.relative_to(REPO)} hides the stdlib's {path.stem}"
            )


def _help(script: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script.relative_to(REPO)), "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


@pytest.fixture(scope="module")
def helps() -> Iterator[dict[Path, Future[subprocess.CompletedProcess[str]]]]:
    """Every script's `--help`, two at a time: each spends its seconds importing torch and transformers on one
    core, so the 19 of them took 1.5 minutes of `make test` one after another."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {script: pool.submit(_help, script) for script in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_starts(script: Path, helps: dict[Path, Future[subprocess.CompletedProcess[str]]]) -> None:
    """Every import of the script resolves when run the documented way; --help stops before any work."""
    done = helps[script].result()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage:" in done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_every_name_the_script_imports_exists(script: Path) -> None:
    """Imports inside functions run only when the benchmark does (after --help): each `from M import N` of
    samtune's own packages names a module and an attribute that exist (test helpers move; benchmarks follow)."""
    import ast
    import importlib

    for node in ast.walk(ast.parse(script.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.module or node.level:
            continue
        if node.module.split(".")[0] not in ("app", "trainer", "worker", "tests"):
            continue
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                f"{script.name}: from {node.module} import {alias.name}: no such name"
            )


@pytest.mark.parametrize(
    "argv",
    [
        ["bench/gpu_predict.py", "--device", "cpu", "--tiny", "--rounds", "1", "--warmup", "0", "--batches", "1,2",
         "--service"],
        ["bench/gpu_predict.py", "--device", "cpu", "--tiny", "--rounds", "1", "--warmup", "0", "--batches", "1",
         "--http"],
        ["bench/gpu_breakdown.py", "--device", "cpu", "--tiny", "--rounds", "1"],
        ["bench/gpu_batch_predict.py", "--device", "cpu", "--tiny", "--images", "8", "--chunk", "4"],
        ["bench/predict_full_size.py", "--tiny", "--images", "1"],
    ],
    ids=["gpu_predict", "gpu_predict_http", "gpu_breakdown", "gpu_batch_predict", "predict_full_size"],
)  # fmt: skip
def test_one_off_script_runs_on_the_cpu(argv: list[str]) -> None:
    """The one-off benchmarks (a lent GPU's, the full-size architecture's) run rarely: their smoke options, on the
    bundled tiny model on the CPU in a few seconds, go through the same code."""
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| " in done.stdout, done.stdout[-3000:]
