from __future__ import annotations

import pytest
import torch

from trainer.config import TrainConfig, resolve
from trainer.preflight import DoesNotFit, find_batch_size


def test_halves_until_a_step_fits() -> None:
    tried: list[int] = []

    def step(size: int) -> None:
        tried.append(size)
        if size > 3:  # what a 3-image GPU would answer
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert find_batch_size(step, start=16) == 2
    assert tried == [16, 8, 4, 2]


def test_nothing_fits() -> None:
    def step(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DoesNotFit, match="does not fit"):
        find_batch_size(step, start=4)


def test_resolve_explains_every_choice(tmp_path) -> None:
    cfg = TrainConfig(base_model="x", data_dir=tmp_path, output_dir=tmp_path)
    cpu = resolve(cfg, num_train_images=100, device_type="cpu")
    assert cpu["mode"].value == "decoder" and "no GPU" in cpu["mode"].reason
    assert cpu["batch_size"].value == 2 and cpu["epochs"].value == 20
    gpu = resolve(cfg, num_train_images=500, device_type="cuda", gpu_memory_gb=80, batch_size_found=8)
    assert (
        gpu["mode"].value == "full"
        and gpu["batch_size"].value == 8
        and "GPU memory" in gpu["batch_size"].reason
    )
    assert gpu["precision"].value == "bf16"
    small = resolve(cfg, num_train_images=10, device_type="cuda", gpu_memory_gb=80)
    assert small["mode"].value == "decoder" and small["epochs"].value == 40
    fixed = resolve(
        cfg.model_copy(update={"epochs": 3, "mode": "full"}), num_train_images=10, device_type="cpu"
    )
    assert fixed["epochs"].reason == "set in the configuration" and fixed["mode"].value == "full"
