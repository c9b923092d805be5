"""Checkpoint uploads run beside training, and a worker SIGKILLed in the middle of one leaves the job pointing
at the previous complete checkpoint, from which the next attempt resumes (after step 0: the checkpoints of
this job come by time, `checkpoint_every_seconds`, its step interval is never reached).

Real processes, real PostgreSQL and Redis, local object storage: the installation of tests/jobs/test_job_faults.py
(its `dep` fixture). The killed worker uploads slowly through a test-only setting, a delay before each
uploaded file (app/jobs/checkpoints.py TEST_ONLY_UPLOAD_DELAY_ENV), so that the kill lands inside an upload.
"""

from __future__ import annotations

import re
import signal
import sys

import pytest

from app.jobs.checkpoints import TEST_ONLY_UPLOAD_DELAY_ENV
from tests.jobs.test_job_faults import (  # noqa: F401 - `dep` is the fixture
    DB_KILL,
    STEPS_PER_EPOCH,
    Api,
    Deployment,
    dep,
    events_summary,
    redis_url,
    status_events,
)
from tests.support.processes import Proc, stop_together
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(420)

UPLOAD_DELAY = 2.0  # seconds before each file: a `last` checkpoint (2 files) takes 4 s to upload


def test_a_worker_killed_during_an_upload_resumes_from_the_previous_complete_checkpoint(
    dep: Deployment,  # noqa: F811 - the fixture imported above
) -> None:
    epochs = 30
    total = epochs * STEPS_PER_EPOCH
    kill_settings = dep.settings_with(broker_url=redis_url(DB_KILL))
    other_machine = dep.settings_with(broker_url=redis_url(DB_KILL), data_dir=dep.root / "upload-machine-b")
    with dep.logs_on_failure(), dep.client(kill_settings) as c:
        api = Api(c, dep.auth)
        beat = dep.start("beat-upload", "beat", settings=dep.settings_with(broker_url=redis_url(DB_KILL),
                                                                            data_dir=dep.root / "upload-beat"))  # fmt: skip
        slow = Proc(
            "worker-slow-upload",
            [sys.executable, "-m", "app.cli", "worker", "-Q", "gpu,cpu", "-c", "1"],
            dep.env(kill_settings) | {TEST_ONLY_UPLOAD_DELAY_ENV: str(UPLOAD_DELAY)},
            dep.logs,
        )
        dep.procs.append(slow)
        job = api.create(dep.version_id, epochs, checkpoint_every_steps=1000, checkpoint_every_seconds=1)
        job_id = job["id"]
        api.wait_status(job_id, {"running"}, timeout=120)
        second = dep.worker("worker-b-upload", settings=other_machine)

        # A complete upload first (the pointer moved), then a later one caught half-way: its weights are in
        # storage, its trainer state is not yet.
        def mid_upload() -> tuple[dict, int] | None:
            pointer = dep.checkpoint_pointer(job_id)
            if pointer["step"] <= 0:
                return None
            files = list(dep.storage.list(f"jobs/{job_id}/attempt-1/checkpoints/"))
            for key in files:
                m = re.search(r"/step-(\d+)-[0-9a-f]+/last/model\.safetensors$", key)
                if (
                    m
                    and int(m.group(1)) > pointer["step"]
                    and key.replace("model.safetensors", "trainer_state.pt") not in files
                ):
                    return pointer, int(m.group(1))
            return None

        pointer, in_flight = wait_until(mid_upload, timeout=150, interval=0.05, message="an upload in flight")
        slow.kill()
        assert slow.popen.returncode == -signal.SIGKILL
        after = dep.checkpoint_pointer(job_id)
        assert after == pointer, (after, pointer)  # the half-uploaded checkpoint is pointed at by nothing
        assert 0 < pointer["step"] < in_flight < total, (pointer, in_flight)
        # Training went on while the upload was in flight: the trainer had handed in later checkpoints.
        handed = [int(s) for s in re.findall(r"uploading the checkpoint at step (\d+)", slow.log())]
        assert in_flight in handed, handed

        done = api.wait_terminal(job_id, timeout=240)
        summary = events_summary(done)
        assert done["status"] == "succeeded" and done["attempt"] == 2, (done["error"], summary)
        running = status_events(done, "running")
        assert f"resuming from step {pointer['step']}" in running[1]["message"], summary
        resumed = [e for e in done["events"] if e["kind"] == "resumed"]
        assert [(e["attempt"], e["data"]["step"]) for e in resumed] == [(2, pointer["step"])], summary
        assert done["progress"]["step"] == total
        assert list(dep.storage.list(f"jobs/{job_id}/")) == []  # the half upload went with the rest
        stop_together(beat, second)
