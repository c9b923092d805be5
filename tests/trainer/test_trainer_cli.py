"""`python -m trainer` as a researcher runs it: overrides, --mode val, and DDP with 2 gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file


def _config(tmp_path: Path, tiny_base: Path, shapes_data: Path, **extra: object) -> Path:
    cfg = {
        "base_model": str(tiny_base),
        "data_dir": str(shapes_data),
        "output_dir": str(tmp_path / "run"),
        "mode": "full",
        "batch_size": 2,
        "epochs": 2,
        "eval_base_model": False,
        "progress_bar": True,
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _result(stdout: str) -> dict:
    return json.loads(stdout[stdout.index("{") :])


def test_train_with_overrides_then_val(tmp_path: Path, tiny_base: Path, shapes_data: Path) -> None:
    cfg = _config(tmp_path, tiny_base, shapes_data)
    done = _run("-c", str(cfg), "max_steps=3", "mode=decoder")
    assert done.returncode == 0, done.stderr[-3000:]
    result = _result(done.stdout)
    assert result["status"] == "succeeded" and result["steps"] == 3
    assert "local" in result["base_model"] or str(tiny_base) in result["base_model"]
    assert "fine-tuning" in done.stderr  # the progress bar
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["max_steps"] == 3

    val = _run("-c", str(cfg), "--mode", "val", "mode=decoder", f"output_dir={tmp_path / 'val'}")
    assert val.returncode == 0, val.stderr[-3000:]
    assert set(_result(val.stdout)["results"]) == {"valid", "test"}


def test_bad_config_is_a_clear_error(tmp_path: Path, tiny_base: Path, shapes_data: Path) -> None:
    cfg = _config(tmp_path, tiny_base, shapes_data)
    done = _run("-c", str(cfg), "epochs=-1")
    assert done.returncode == 2 and "epochs" in done.stderr and "Traceback" not in done.stderr
    done = _run("-c", str(cfg), "--num-nodes", "2")
    assert done.returncode == 2 and "--use-cluster" in done.stderr


@pytest.mark.timeout(600)
def test_ddp_two_gloo_processes_early_stop_together(
    tmp_path: Path, tiny_base: Path, shapes_data: Path
) -> None:
    """Two DDP processes train, checkpoint and save the model; early stopping reads rank 0's validation only,
    and every rank leaves the loop at that step (rank 1 used to go on alone into the next gradient all-reduce
    and fail on its closed peer)."""
    # Learning rates too small to change a validation score: the 2nd evaluation is no better than the 1st.
    tiny_lr = {"lr_heads": 1e-12, "lr_vision": 1e-12, "lr_text": 1e-12}
    cfg = _config(
        tmp_path,
        tiny_base,
        shapes_data,
        epochs=8,
        early_stopping_patience=1,
        checkpoint_every_steps=2,
        **tiny_lr,
    )
    done = _run("-c", str(cfg), "--num-gpus", "2")
    assert done.returncode == 0, done.stderr[-4000:]
    result = _result(done.stdout)
    assert result["status"] == "succeeded", result
    events = [
        json.loads(line) for line in (tmp_path / "run" / "logs" / "events.jsonl").read_text().splitlines()
    ]
    stops = [e for e in events if e["kind"] == "early_stopping"]
    assert stops and result["steps"] == stops[0]["step"], (result["steps"], stops)
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    assert weights and (tmp_path / "run" / "model" / "model.safetensors").exists()
