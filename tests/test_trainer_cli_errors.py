"""`python -m trainer` refuses, with one line and exit status 2, what README.md and docs/training.md show
but this machine cannot do: a base model that is not downloaded, and --use-cluster 1 without SLURM."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainer import __main__ as trainer_cli
from trainer.base_model import BaseModelNotFound


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {"base_model": "facebook/sam3", "data_dir": str(tmp_path), "output_dir": str(tmp_path / "run")}
        )
    )
    return cfg


def test_missing_base_model_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    def run_process(cfg, mode):
        raise BaseModelNotFound("base model 'facebook/sam3' not found: hf download facebook/sam3")

    monkeypatch.setattr(trainer_cli, "run_process", run_process)
    assert trainer_cli.main(["-c", str(_config(tmp_path)), "epochs=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: base model 'facebook/sam3' not found") and "Traceback" not in err


@pytest.mark.parametrize("nodes", ["1", "2"])
def test_cluster_without_slurm_is_refused(monkeypatch, capsys, tmp_path: Path, nodes: str) -> None:
    submitit = pytest.importorskip("submitit")
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))  # no `srun` here
    argv = ["-c", str(_config(tmp_path)), "--use-cluster", "1", "--num-nodes", nodes, "--num-gpus", "8"]
    assert trainer_cli.main(argv) == 2
    assert "no SLURM client" in capsys.readouterr().err
    assert not (tmp_path / "run" / "submitit").exists()  # nothing submitted, not even locally
