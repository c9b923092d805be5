"""The checkpoint uploader (app/jobs/checkpoints.py): one upload at a time, beside the caller; a newer
checkpoint replaces a waiting one of its kind; a waiting `best` goes before a waiting `last`; snapshots keep
the bytes they were taken from when the trainer renames new files over the originals."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from app.jobs.checkpoints import BackgroundUploader, Snapshot, snapshot_dir


def _snap(tmp_path: Path, kind: str, step: int) -> Snapshot:
    d = tmp_path / f"{kind}-{step}"
    d.mkdir()
    (d / "x").write_text(str(step))
    return Snapshot(kind, step, d)


def test_one_upload_at_a_time_and_the_latest_waiting_one_wins(tmp_path: Path) -> None:
    release = threading.Event()
    started = threading.Event()
    done: list[tuple[str, int]] = []
    running = 0
    most = 0
    lock = threading.Lock()

    def upload(s: Snapshot) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        started.set()
        release.wait(10)
        assert (s.directory / "x").read_text() == str(s.step)
        with lock:
            running -= 1
        done.append((s.kind, s.step))

    uploader = BackgroundUploader(upload, name="test-uploader")
    uploader.start()
    uploader.submit(_snap(tmp_path, "last", 1))
    assert started.wait(10)  # in flight; what comes now waits (submit returns at once)
    replaced = _snap(tmp_path, "last", 2)
    uploader.submit(replaced)
    uploader.submit(_snap(tmp_path, "last", 3))
    uploader.submit(_snap(tmp_path, "best", 3))
    assert not replaced.directory.exists()  # superseded before it started: dropped
    release.set()
    uploader.wait()
    assert done == [("last", 1), ("best", 3), ("last", 3)] and most == 1
    assert not list(tmp_path.glob("last-*")) and not list(tmp_path.glob("best-*"))  # snapshots deleted
    uploader.close()


def test_a_failed_upload_is_raised_on_the_callers_thread(tmp_path: Path) -> None:
    def upload(s: Snapshot) -> None:
        raise OSError("storage unreachable")

    uploader = BackgroundUploader(upload, name="test-uploader")
    uploader.start()
    uploader.submit(_snap(tmp_path, "last", 1))
    uploader.wait()
    with pytest.raises(OSError, match="unreachable"):
        uploader.raise_error()
    uploader.close()


def test_a_snapshot_keeps_its_bytes_while_the_checkpoint_is_rewritten(tmp_path: Path) -> None:
    last = tmp_path / "last"
    last.mkdir()
    (last / "model.safetensors").write_bytes(b"step 4")
    (last / "trainer_state.pt.tmp").write_bytes(b"half")
    snap = snapshot_dir(last, tmp_path / "uploading" / "last-4")
    assert sorted(p.name for p in snap.iterdir()) == ["model.safetensors"]  # unfinished files left out
    (last / "model.safetensors.tmp").write_bytes(b"step 8")  # as the recipe writes the next checkpoint
    os.replace(last / "model.safetensors.tmp", last / "model.safetensors")
    assert (snap / "model.safetensors").read_bytes() == b"step 4"
