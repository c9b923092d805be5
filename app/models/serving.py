"""Models loaded for prediction: fetched from object storage once per machine (checked against their
sha256) and kept in an LRU bounded by a memory budget. In the API every load and forward runs on the cache's
one inference thread (`run`), so predictions take turns while other routes go on; the per-model locks keep
direct callers (the batch-prediction worker, tests) safe too."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from app.core.errors import AppError
from app.core.storage import ObjectStorage, file_sha256
from app.metrics.series import MODEL_CACHE_BYTES, MODEL_CACHE_MODELS
from app.models.assembly import assemble
from app.settings import Settings
from trainer.base_model import load_base_model
from trainer.predict import Predictor

T = TypeVar("T")


class ModelUnavailable(AppError):
    status_code = 503
    kind = "model-unavailable"


@dataclass
class Served:
    predictor: Predictor
    bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)


def serve_device(name: str = "auto") -> torch.device:
    """`auto`: the first GPU if there is one, else the CPU; else the device named (cpu, cuda, cuda:N)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def weights_bytes(directory_or_name: Path | str) -> int | None:
    """A model's size before it is loaded: its weight files' bytes (a directory's safetensors, or the largest
    checkpoint file given alone); None when it is a hub name not on disk yet."""
    path = Path(directory_or_name)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
        return sum(f.stat().st_size for f in files) or None
    return None


class ModelCache:
    def __init__(
        self, storage: ObjectStorage, cache_dir: Path, budget_bytes: int, device: torch.device | None = None,
        settings: Settings | None = None,
    ) -> None:  # fmt: skip
        self.storage, self.cache_dir, self.budget = storage, cache_dir, budget_bytes
        # Where a model stored as a delta finds its catalog base (the environment's settings when not given).
        self.settings = settings
        self.device = device if device is not None else serve_device()
        self._models: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        # Every load and forward of this process runs on this one thread. PyTorch's CPU kernels keep an OpenMP
        # thread team per calling thread, and teams left spinning by other threads of the pool slowed a
        # forward called from a fresh thread about 2x (bench/predict.py); one caller keeps one team.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="samtune-predict")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking model work (load, forward), on this cache's inference thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, functools.partial(fn, *args))

    def __contains__(self, key: str) -> bool:
        return key in self._models

    def peek(self, key: str) -> Served | None:
        """The served model for `key` if it is loaded, without loading it or counting it as used."""
        return self._models.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._models)

    @property
    def used_bytes(self) -> int:
        return sum(s.bytes for s in self._models.values())

    def fetch(self, model_id: uuid.UUID, prefix: str, sha256: str) -> Path:
        """The model directory on local disk, downloaded (a delta assembled over its base: app/models/assembly.py)
        and verified once. A delta whose base is gone or changed is BaseUnavailable (503) or BaseChanged (409)."""
        target = self.cache_dir / str(model_id)
        if (target / ".complete").exists():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{model_id}.{uuid.uuid4().hex}"
        try:
            tmp.mkdir()
            assemble(
                self.storage, prefix, tmp, self.settings or Settings(), self.fetch, self.cache_dir / ".sha256"
            )
            if not (tmp / "model.safetensors").exists() or file_sha256(tmp / "model.safetensors") != sha256:
                raise ModelUnavailable(
                    f"model {model_id}: its stored weights are missing or do not match their sha256"
                )
            (tmp / ".complete").touch()
            with contextlib.suppress(OSError):  # another request finished first: theirs is as good
                tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def get(self, key: str, directory_or_name: Callable[[], Path | str]) -> Served:
        """The served model for `key`, loading it (once, even under concurrent requests) if needed."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            try:
                where = directory_or_name()
                expected = weights_bytes(where)
                if expected is not None:
                    self._make_room(key, expected)  # before loading: device memory is what runs out
                loaded = load_base_model(str(where), device="cpu")
                size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
                self._make_room(key, size)
                served = Served(Predictor(loaded, self.device), size)
                with self._lock:
                    self._models[key] = served
                    self._report()
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            return served

    def _make_room(self, key: str, size: int) -> None:
        """Refuse a model larger than the whole budget; else drop the least recently used until it fits."""
        if size > self.budget:
            raise ModelUnavailable(
                f"model {key} needs {size / 2**30:.2f} GiB and the model cache's budget is "
                f"{self.budget / 2**30:.2f} GiB (SAMTUNE_MODEL_CACHE_BYTES)"
            )
        with self._lock:
            dropped = False
            while self._models and self.used_bytes + size > self.budget:
                self._models.popitem(last=False)
                dropped = True
            self._report()
        if dropped and self.device.type == "cuda":
            torch.cuda.empty_cache()  # hand the dropped model's blocks back before the next one asks

    def evict(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)
            self._report()

    def _report(self) -> None:
        """This process's model-cache series (app/metrics); called under the lock, after each change."""
        MODEL_CACHE_BYTES.set(self.used_bytes)
        MODEL_CACHE_MODELS.set(len(self._models))
