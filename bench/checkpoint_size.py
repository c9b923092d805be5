"""Bytes and seconds per checkpoint save, `decoder` vs `full` mode, at facebook/sam3's real size.

SAM 3's architecture (trainer/architecture.py `full_size_sam3_config`, ~840M parameters) with random weights,
an AdamW state for what trains (filled as after a first step), saved by the recipe's own `_save_checkpoint`
(trainer/recipe.py) into a temporary folder that is deleted afterwards. `decoder` freezes both encoders as the
recipe does; `full` trains everything. Seconds: the save itself (to the page cache), then the `os.sync` that
puts it on disk, then the hard-link snapshot the job's uploader takes (app/jobs/checkpoints.py).

    .venv/bin/python bench/checkpoint_size.py                 # real size: ~14 GB of RAM, ~11 GB of disk
    .venv/bin/python bench/checkpoint_size.py --tiny          # the tests' tiny model
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))
import torch  # noqa: E402
from transformers import Sam3Model  # noqa: E402

from app.jobs.checkpoints import snapshot_dir  # noqa: E402
from trainer.architecture import full_size_sam3_config, tiny_sam3_config  # noqa: E402
from trainer.callbacks import NullCallbacks  # noqa: E402
from trainer.recipe import FineTuneRecipe  # noqa: E402


def _recipe(model: Sam3Model, mode: str, out: Path) -> FineTuneRecipe:
    """A recipe with just what `_save_checkpoint` reads: no data, no base model directory."""
    for p in model.parameters():
        p.requires_grad_(True)
    if mode == "decoder":  # as FineTuneRecipe.setup freezes them
        for p in model.vision_encoder.backbone.parameters():
            p.requires_grad_(False)
        for p in model.text_encoder.parameters():
            p.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    for p in trainable:  # AdamW's state after one step, without materialising gradients
        optimizer.state[p] = {
            "step": torch.tensor(1.0),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
        }
    recipe = FineTuneRecipe.__new__(FineTuneRecipe)
    recipe.callbacks, recipe.out, recipe.rank, recipe.mode, recipe.model = (
        NullCallbacks(),
        out,
        0,
        mode,
        model,
    )
    recipe.optimizer = optimizer
    recipe.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    recipe.step, recipe.best_metric, recipe.best_valid, recipe.epochs_without_gain = 100, 0.5, None, 0
    recipe.rollbacks, recipe.lr_scale, recipe.history = 0, 1.0, [1.0] * 100
    recipe._batches_per_epoch = lambda: 10  # type: ignore[method-assign]
    return recipe


def measure(model: Sam3Model, mode: str, root: Path) -> dict[str, float]:
    recipe = _recipe(model, mode, root / mode)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    t0 = time.perf_counter()
    recipe._save_checkpoint()
    saved = time.perf_counter() - t0
    t0 = time.perf_counter()
    os.sync()
    synced = time.perf_counter() - t0
    last = root / mode / "checkpoints" / "last"
    t0 = time.perf_counter()
    snapshot_dir(last, root / mode / "checkpoints" / "uploading" / "last-100")
    snapshot = time.perf_counter() - t0
    sizes = {p.name: p.stat().st_size for p in last.iterdir()}
    result = {
        "trainable_parameters": trainable,
        "weights_bytes": sizes["model.safetensors"],
        "trainer_state_bytes": sizes["trainer_state.pt"],
        "total_bytes": sum(sizes.values()),
        "save_seconds": saved,
        "sync_seconds": synced,
        "snapshot_seconds": snapshot,
    }
    del recipe
    shutil.rmtree(root / mode)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model instead of the real size")
    parser.add_argument("--modes", default="decoder,full")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temporary folder in it)")
    args = parser.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = Sam3Model(tiny_sam3_config() if args.tiny else full_size_sam3_config())
    total = sum(p.numel() for p in model.parameters())
    state_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(f"model: {total / 1e6:.1f}M parameters, state dict {state_bytes / 1e9:.3f} GB, "
          f"built in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="checkpoint-size-", dir=args.dir) as tmp:
        print(
            "| mode | trainable params | model.safetensors | trainer_state.pt | total | save s | sync s | snapshot s |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for mode in args.modes.split(","):
            r = measure(model, mode, Path(tmp))
            print(
                f"| {mode} | {r['trainable_parameters'] / 1e6:.1f}M | {r['weights_bytes'] / 1e9:.3f} GB "
                f"| {r['trainer_state_bytes'] / 1e9:.3f} GB | {r['total_bytes'] / 1e9:.3f} GB "
                f"| {r['save_seconds']:.2f} | {r['sync_seconds']:.2f} | {r['snapshot_seconds']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
