"""Fixtures for models. A model is what a training job leaves behind, so these tests stand on the jobs kit
(`jobs_kit` of tests/support/jobs.py, a plugin of the root conftest: a committed database per module and
backend, a ready 112 px version, jobs run in-process with the real worker code)."""

from __future__ import annotations

import pytest

from tests.support.jobs import JobKit


@pytest.fixture(scope="module")
def model_id(jobs_kit: JobKit) -> str:
    """A model of the kit's version, trained by one run of a job."""
    job = jobs_kit.create()
    assert jobs_kit.run(job["id"]) == "succeeded"
    mid = jobs_kit.get(job["id"])["model_id"]
    assert mid
    return mid


@pytest.fixture(scope="module")
def test_image(jobs_kit: JobKit) -> bytes:
    """The first image of the kit's test split (112 x 112)."""
    jobs_kit.dataset_zip()
    path = sorted((jobs_kit.root / "synth" / "test").glob("*.jpg"))[0]
    return path.read_bytes()
