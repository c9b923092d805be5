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
    assert tuned >= 3 * base and tuned >= 0.3, done.stdout
