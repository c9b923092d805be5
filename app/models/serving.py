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
from trainer.base_model import load_base_model
from trainer.predict import Predictor

T = TypeVar("T")


class ModelUnavailable(AppError):
    status_code = 503


@dataclass
class Served:
    predictor: Predictor
    bytes: int
    lock: threading.Lock = field(default_factory=threading.Lock)


def serve_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ModelCache:
    def __init__(self, storage: ObjectStorage, cache_dir: Path, budget_bytes: int) -> None:
        self.storage, self.cache_dir, self.budget = storage, cache_dir, budget_bytes
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

    @property
    def used_bytes(self) -> int:
        return sum(s.bytes for s in self._models.values())

    def fetch(self, model_id: uuid.UUID, prefix: str, sha256: str) -> Path:
        """The model directory on local disk, downloaded and verified once."""
        target = self.cache_dir / str(model_id)
        if (target / ".complete").exists():
            return target
        tmp = self.cache_dir / f".{model_id}.{uuid.uuid4().hex}"
        try:
            for key in self.storage.list(prefix):
                dest = tmp / key[len(prefix) :].lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.storage.download(key, dest)
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
            loaded = load_base_model(str(directory_or_name()), device="cpu")
            size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
            served = Served(Predictor(loaded, serve_device()), size)
            with self._lock:
                self._models[key] = served
                # Least recently used first out, never the one just loaded.
                while self.used_bytes > self.budget and len(self._models) > 1:
                    self._models.popitem(last=False)
                self._loading.pop(key, None)
            return served

    def evict(self, key: str) -> None:
        with self._lock:
            self._models.pop(key, None)
