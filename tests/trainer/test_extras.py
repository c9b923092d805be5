"""The optional extras ([tensorboard], [slurm]): off without a word when not asked for, a clear error naming
the install command when asked for and missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from trainer import __main__ as trainer_cli
from trainer.extras import MissingExtra, installed, require
from trainer.recipe import FineTuneRecipe


def test_require_names_the_extra() -> None:
    require("json", "anything", "a feature")  # installed: no error
    assert not installed("samtune_no_such_module")
    with pytest.raises(MissingExtra, match=r"pip install 'samtune\[slurm\]'") as err:
        require("samtune_no_such_module", "slurm", "--use-cluster 1")
    assert "--use-cluster 1" in str(err.value)


def test_tensorboard_asked_for_but_missing_fails_before_work(
    monkeypatch, small_config, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the extra were not installed
    recipe = FineTuneRecipe(small_config(tensorboard=True))
    with pytest.raises(MissingExtra, match=r"samtune\[tensorboard\]"):
        recipe.setup()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_tensorboard_by_default_only_when_installed(monkeypatch, small_config, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    recipe = FineTuneRecipe(small_config())
    recipe.setup()
    assert recipe.writer is None and not (tmp_path / "run" / "tensorboard").exists()


def test_cluster_without_submitit_is_a_clear_error(monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump({"base_model": "x", "data_dir": str(tmp_path), "output_dir": str(tmp_path)})
    )
    assert trainer_cli.main(["-c", str(cfg), "--use-cluster", "1"]) == 2
    assert "pip install 'samtune[slurm]'" in capsys.readouterr().err
