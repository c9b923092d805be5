"""`samtune demo` end to end (slow: `make test-long`): a real `samtune up` in a temporary folder, the whole
flow over HTTP, and a fine-tuned model that beats the bundled base on concepts the base never saw."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_shows_a_lift() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAMTUNE_")}
    done = subprocess.run([sys.executable, "-m", "app.cli", "demo"], env=env, capture_output=True, text=True,
                          timeout=1700)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "base model: samtune/sam3-tiny-shapes" in done.stdout
    found = re.search(r"lift: mask AP50 ([0-9.]+) -> ([0-9.]+)", done.stdout)
    assert found, done.stdout
    base, tuned = float(found.group(1)), float(found.group(2))
    # Measured 2026-12-02: base 0.000 on every run; fine-tuned 0.26-0.42 over 600-step runs of the demo's recipe
    # with different seeds (0.464 in bench/RESULTS.md). The floor sits at half the lowest of them, so a
    # different CPU or a dependency release moves the result well before it moves the verdict.
    assert base < 0.05 and tuned >= 0.12 and tuned >= base + 0.1, done.stdout
