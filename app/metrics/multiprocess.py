"""Several processes, one `/metrics`: prometheus-client's multiprocess mode.

Every process (uvicorn workers, `samtune up`'s children, Celery workers and their pool children, the inference
service) writes its samples to memory-mapped files in one directory, and `/metrics` adds them up. The directory
is named by PROMETHEUS_MULTIPROC_DIR, which prometheus-client reads when it is imported, so `enable()` runs in the
command line before anything imports it, and every child process inherits it.

Files are named by a process identity that is unique on the machine even across containers sharing the
directory (compose's samtune services share one volume, each in its own PID namespace, where PID 7 of one
container is not PID 7 of another): the PID namespace's inode and the PID."""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.settings import Settings

logger = logging.getLogger("samtune.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
# The identity of the files into which ended processes' counters and histograms are added (see `mark_dead`).
ARCHIVE = "archive"
_LOCK_FILE = ".lock"


def _pid_namespace() -> str:
    try:
        # "pid:[4026531836]": the same for a process and its forked children, different in each container.
        return re.sub(r"\D", "", os.readlink("/proc/self/ns/pid")) or "0"
    except OSError:  # not Linux: one namespace
        return "0"


_NAMESPACE = _pid_namespace()


def process_identity(pid: int | None = None) -> str:
    """This process's name in the directory's file names (no '_': prometheus-client splits names on it)."""
    return f"{_NAMESPACE}-{os.getpid() if pid is None else pid}"


def enabled() -> Path | None:
    """The directory this process writes to, when multiprocess mode is on."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def enable(settings: Settings, *, wipe: bool = False) -> Path:
    """Turn multiprocess mode on for this process and its children (call before prometheus-client is imported).
    `wipe` empties the directory first: right for `samtune up`, which starts every process of the machine, and
    wrong for one service among others that are still writing there."""
    path = settings.metrics_path
    if wipe:
        for entry in path.glob("*.db"):
            entry.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path


@contextmanager
def locked(path: Path, *, exclusive: bool) -> Iterator[None]:
    """Scrapes read under a shared lock, a process folding its files into the archive writes under an exclusive
    one: a scrape never sees a count both in the archive and in the file it came from."""
    with open(path / _LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mark_dead(pid: int | None = None) -> None:
    """The documented clean-up for a process that ends: its live gauges (model-cache bytes) stop counting. Its
    counters and histograms are added into the archive files and its own removed, so that totals never go down
    and the directory does not grow by a few files per process: `--max-tasks-per-child=1` ends a Celery pool
    child after every task, beat's reapers included."""
    path = enabled()
    if path is None:
        return
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    identity = process_identity(pid)
    multiprocess.mark_process_dead(identity, str(path))
    with locked(path, exclusive=True):
        for kind in ("counter", "histogram", "summary"):  # additive: an ended process's values add up
            own = path / f"{kind}_{identity}.db"
            if not own.exists():
                continue
            archive = MmapedDict(str(path / f"{kind}_{ARCHIVE}.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(own)):
                    total, _ = archive.read_value(key)
                    archive.write_value(key, total + value, timestamp)
            finally:
                archive.close()
            own.unlink()


def sweep_dead(path: Path) -> None:
    """Live gauges of processes of this PID namespace that died without `mark_dead` (SIGKILL, out of memory):
    looked for at every scrape, since nothing else outlives them."""
    for entry in path.glob("gauge_live*_*.db"):
        identity = entry.stem.rsplit("_", 1)[-1]
        namespace, _, pid = identity.partition("-")
        if namespace != _NAMESPACE or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            entry.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            pass
