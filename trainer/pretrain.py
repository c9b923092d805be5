"""Pretrain the tiny base model (`samtune/sam3-tiny-shapes`) from scratch on the synthetic concept corpus,
with samtune's own recipe in `full` mode.

    python -m trainer.pretrain OUT_DIR [--minutes 170] [--image-size 112] [--train-images 4000]

Two stages (STAGES): 14,300 steps at lr 1e-3 from a random init, then 18,000 steps from the first stage's
best weights at lr 1.5e-4 with a linear cooldown; about 100 minutes on a 2-core CPU. The model is
OUT_DIR/stage2/model.

The base must already know some concepts so that fine-tuning has something to show: it finds the
pretraining shapes, and misses the held-out ones (`trainer.synth.HELD_OUT_DOMAINS`) until fine-tuned.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import Sam3Model

from trainer.architecture import tiny_sam3_config
from trainer.callbacks import NullCallbacks, StopRequest
from trainer.config import TrainConfig
from trainer.recipe import run
from trainer.save import save_model
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset
from trainer.tokenizer import load_tokenizer


class Deadline(NullCallbacks):
    """Stop (keeping the best checkpoint) when the time budget is spent."""

    def __init__(self, minutes: float) -> None:
        self.until = time.monotonic() + minutes * 60

    def should_stop(self) -> StopRequest:
        return "stop" if time.monotonic() > self.until else None


@dataclass(frozen=True)
class Stage:
    name: str
    lr: float
    warmup: int
    max_steps: int | None
    cooldown: float


# How the committed base was made: a fast stage at a high learning rate, then a long, gentle one that
# decays to zero (the first stage's inverse-square-root schedule had already brought the lr to ~1.2e-4).
STAGES = (
    Stage("stage1", lr=1e-3, warmup=200, max_steps=14_300, cooldown=0.0),
    Stage("stage2", lr=1.5e-4, warmup=2_000, max_steps=18_000, cooldown=0.3),
)


@torch.no_grad()
def reinit_for_pretraining(model: Sam3Model, seed: int = 0) -> None:
    """Re-initialise `model` for training from scratch, deterministically.

    transformers' default init (normal, std 0.02) leaves a narrow model blind: presence logits constant, masks
    independent of the prompt. Here every nn.Linear, nn.Conv2d and nn.ConvTranspose2d weight gets
    xavier_uniform_ (bias 0), every nn.Embedding N(0, 1) (its padding row, if any, 0), and LayerNorm /
    GroupNorm are set to ones / zeros. The ViT's position table (a bare Parameter) is redrawn
    N(0, initializer_range) so that nothing depends on the global RNG. The
    values are drawn on the CPU from a torch.Generator seeded by `seed`, in module order, then copied to the
    parameters' device and dtype, so the result does not depend on the device.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def assign(param: torch.Tensor, value: torch.Tensor) -> None:
        param.copy_(value.to(device=param.device, dtype=param.dtype))

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            weight = torch.empty(module.weight.shape, dtype=torch.float32)
            nn.init.xavier_uniform_(weight, generator=gen)
            assign(module.weight, weight)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            weight = torch.empty(module.weight.shape, dtype=torch.float32)
            weight.normal_(0.0, 1.0, generator=gen)
            if module.padding_idx is not None:
                weight[module.padding_idx] = 0.0
            assign(module.weight, weight)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
        else:
            # A learned position table kept as a bare Parameter (the ViT's): redrawn at transformers' scale
            # (N(0, initializer_range)) from the same generator, so the whole model depends on `seed` only.
            table = module._parameters.get("position_embeddings")
            if isinstance(table, nn.Parameter):
                std = float(getattr(model.config, "initializer_range", 0.02))
                weight = torch.empty(table.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
                assign(table, weight)


def _train(out: Path, data: Path, base: Path, stage: Stage, deadline: Deadline, seed: int) -> dict:
    cfg = TrainConfig(
        base_model=str(base), data_dir=data, output_dir=out, mode="full", seed=seed,
        epochs=1000, batch_size=8, max_negatives=3, warmup_steps=stage.warmup, max_steps=stage.max_steps,
        lr_heads=stage.lr, lr_vision=stage.lr, lr_text=stage.lr / 4, layer_decay=1.0, grad_clip=1.0,
        eval_every_epochs=1, early_stopping_patience=1000, checkpoint_every_steps=200,
        cooldown_fraction=stage.cooldown if stage.max_steps else 0.0, eval_base_model=False,
        progress_bar=False, cls_negative_queries=True,
    )  # fmt: skip
    result = run(cfg, deadline)
    summary = {
        "stage": stage.name,
        "steps": result.steps,
        "best_valid": result.best_valid,
        "test": {name: r and r["summary"] for name, r in result.test.items()},
        "model": str(result.model_dir),
    }
    print(json.dumps(summary), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.pretrain")
    p.add_argument("out", type=Path)
    p.add_argument("--minutes", type=float, default=170.0, help="hard time limit for all stages together")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init", type=Path, help="one stage from these weights (a model directory) instead of the two stages"
    )
    p.add_argument("--lr", type=float, default=1e-3, help="with --init")
    p.add_argument("--warmup", type=int, default=200, help="with --init: warmup steps, then 1/sqrt decay")
    p.add_argument("--max-steps", type=int, help="with --init: stop after this many steps")
    p.add_argument(
        "--cooldown", type=float, default=0.0, help="with --init: fraction of --max-steps to cool down"
    )
    args = p.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars would bury the training log

    deadline = Deadline(args.minutes)
    data = args.out / "corpus"
    if not (data / "train").exists():
        write_dataset(data, list(PRETRAIN_CONCEPTS), {"train": args.train_images, "valid": 100, "test": 100},
                      size=args.image_size, seed=args.seed)  # fmt: skip
    if args.init is not None:
        stage = Stage("continue", args.lr, args.warmup, args.max_steps, args.cooldown)
        _train(args.out / "run", data, args.init, stage, deadline, args.seed)
        return 0
    base = args.out / "init"
    if not base.exists():
        torch.manual_seed(args.seed)
        model = Sam3Model(tiny_sam3_config(image_size=args.image_size))
        # transformers' default init (std 0.02) leaves a narrow model blind; see reinit_for_pretraining.
        reinit_for_pretraining(model, seed=args.seed)
        save_model(
            model, load_tokenizer(), base, image_size=args.image_size, card={"base_model": "random init"}
        )
    for stage in STAGES:
        base = Path(_train(args.out / stage.name, data, base, stage, deadline, args.seed)["model"])
    print(f"the base model: {base}")
    return 0


def curve_points(metrics_files: list[Path], name: str = "valid_segm_AP50") -> list[tuple[int, float]]:
    """(global step, value) over consecutive stages: each stage's steps continue from the previous one's."""
    points: list[tuple[int, float]] = []
    offset = 0
    for path in metrics_files:
        last = 0
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if name in row:
                points.append((offset + row["step"], float(row[name])))
            last = max(last, row["step"])
        offset += last
    return points


def draw_curve(
    points: list[tuple[int, float]], path: Path, *, title: str, boundaries: Sequence[int] = ()
) -> None:
    """A plain line chart (PNG) with Pillow: no plotting library needed for one curve."""
    from PIL import Image, ImageDraw

    w, h, left, bottom, top, right = 720, 360, 60, 40, 30, 20
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    max_x = max(p[0] for p in points) or 1

    def xy(step: float, value: float) -> tuple[float, float]:
        return left + step / max_x * (w - left - right), h - bottom - value * (h - bottom - top)

    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        d.line([xy(0, v), xy(max_x, v)], fill=(225, 225, 225))
        d.text((8, xy(0, v)[1] - 6), f"{v:.2f}", fill="black")
    for b in boundaries:
        d.line([xy(b, 0), xy(b, 1)], fill=(180, 180, 255))
    d.line([xy(s, v) for s, v in points], fill=(200, 40, 40), width=2)
    d.text((left, 8), title, fill="black")
    d.text((w // 2 - 20, h - bottom + 12), f"step (0 .. {max_x})", fill="black")
    img.save(path)


if __name__ == "__main__":
    raise SystemExit(main())
