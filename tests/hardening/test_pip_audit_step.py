"""The CI pip-audit step tells "clean", "vulnerable" and "could not audit" apart (pip-audit alone exits 0 on
all of "not found on PyPI"), on reports in pip-audit's JSON format and on a real run over this venv."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.hardening.live import REPO
from tests.hardening.pip_audit_step import EDITABLE, classify


def _dep(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "version": "1.0", **extra}


def test_a_vulnerable_package_is_listed_with_its_fix() -> None:
    report = {
        "dependencies": [
            _dep("good", vulns=[]),
            _dep("bad", vulns=[{"id": "PYSEC-1", "fix_versions": ["1.2", "2.0"]}]),
            _dep("samtune", skip_reason=EDITABLE),
        ]
    }
    outcome = classify(report)
    assert outcome.vulnerable == ["bad 1.0: PYSEC-1 (fixed in: 1.2, 2.0)"]
    assert outcome.audited == 2 and outcome.skipped == 0 and outcome.trustworthy


def test_nothing_found_on_the_service_is_not_a_clean_audit() -> None:
    skip = "Dependency not found on PyPI and could not be audited: x (1.0)"
    outcome = classify(
        {"dependencies": [_dep(f"p{i}", skip_reason=skip) for i in range(10)] + [_dep("ok", vulns=[])]}
    )
    assert not outcome.vulnerable
    assert not outcome.trustworthy
    assert outcome.reasons and "not found on PyPI" in outcome.reasons[0]
    assert not classify({"dependencies": []}).trustworthy


def test_the_step_runs_and_says_what_it_did() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.hardening.pip_audit_step"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != "SAMTUNE_REQUIRE_AUDIT"},
    )  # fmt: skip
    out = done.stdout
    assert "[ci] pip-audit: " in out, (out, done.stderr)
    # One of the three outcomes, each explicit; the exit code follows it.
    if "known vulnerabilities" in out:
        assert done.returncode == 1
    else:
        assert done.returncode == 0 and ("NOT AUDITED" in out or "no known vulnerability" in out), out
