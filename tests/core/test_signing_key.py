"""The default signing key is one key for every process that shares a data directory, even when they all
start at once (uvicorn's workers, a worker and beat): tokens one signs, the others must accept."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from app.settings import Settings


def _key(data_dir: str, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    start.wait()
    out.put(Settings(data_dir=Path(data_dir), secret_key="").signing_key)


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        data_dir = tmp_path / f"d{attempt}"
        n = 8
        start, out = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_key, args=(str(data_dir), start, out)) for _ in range(n)]
        for p in procs:
            p.start()
        keys = {out.get(timeout=30) for _ in procs}
        for p in procs:
            p.join(timeout=30)
        assert len(keys) == 1, f"attempt {attempt}: {len(keys)} different keys"
        assert (data_dir / "secret_key").read_text().strip().encode() in keys
        assert sorted(p.name for p in data_dir.iterdir()) == ["secret_key"], "no temporary files left"


def test_a_configured_key_wins(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path, secret_key="s3cret").signing_key == b"s3cret"
    assert not (tmp_path / "secret_key").exists()
