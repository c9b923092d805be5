"""GPU memory preflight: the largest batch that survives one real training step."""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch


class DoesNotFit(Exception):
    pass


def find_batch_size(try_step: Callable[[int], None], start: int = 16, minimum: int = 1) -> int:
    """Try `try_step(size)` from `start`, halving on CUDA out-of-memory, and return the first size that ran."""
    size = start
    while size >= minimum:
        try:
            try_step(size)
            return size
        except torch.cuda.OutOfMemoryError:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            size //= 2
    raise DoesNotFit(f"even a batch of {minimum} image(s) does not fit in GPU memory")
