"""The cache of loaded models (app/models/serving.py): bounded by its memory budget."""

from __future__ import annotations

from pathlib import Path

from app.models.serving import ModelCache
from trainer.base_model import EMBEDDED_BASE_DIR, load_base_model


def test_cache_is_bounded_by_its_memory_budget(tmp_path: Path) -> None:
    size = load_base_model(str(EMBEDDED_BASE_DIR)).num_parameters * 4
    cache = ModelCache(storage=None, cache_dir=tmp_path, budget_bytes=int(size * 1.5))
    first = cache.get("a", lambda: EMBEDDED_BASE_DIR)
    assert cache.get("a", lambda: EMBEDDED_BASE_DIR) is first, "loaded once"
    cache.get("b", lambda: EMBEDDED_BASE_DIR)
    assert "b" in cache and "a" not in cache, "least recently used out when over budget"
    assert cache.used_bytes <= int(size * 1.5)
