"""Pretrain the tiny base model (`samtune/sam3-tiny-shapes`) from scratch on the synthetic concept corpus,
with samtune's own recipe in `full` mode.

    python -m trainer.pretrain OUT_DIR [--minutes 170] [--image-size 112] [--train-images 4000]

The base must already know some concepts so that fine-tuning has something to show: it finds the
pretraining shapes, and misses the held-out ones (`trainer.synth.HELD_OUT_DOMAINS`) until fine-tuned.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import Sam3Model

from trainer.callbacks import NullCallbacks
from trainer.config import TrainConfig
from trainer.model import reinit_for_pretraining, save_model, tiny_sam3_config
from trainer.recipe import run
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset
from trainer.tokenizer import load_tokenizer


class Deadline(NullCallbacks):
    """Stop (keeping the best checkpoint) when the time budget is spent."""

    def __init__(self, minutes: float) -> None:
        self.until = time.monotonic() + minutes * 60

    def should_stop(self):  # type: ignore[no-untyped-def]
        return "stop" if time.monotonic() > self.until else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.pretrain")
    p.add_argument("out", type=Path)
    p.add_argument("--minutes", type=float, default=170.0)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--train-images", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="warmup steps (then inverse square root decay)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (the deadline still applies)")
    p.add_argument(
        "--cooldown", type=float, default=0.0, help="fraction of --max-steps spent on a linear lr cooldown"
    )
    p.add_argument(
        "--init", type=Path, help="continue from these weights (a model directory) instead of a random init"
    )
    args = p.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight loading/saving bars would bury the training log

    data = args.out / "corpus"
    if not (data / "train").exists():
        write_dataset(data, list(PRETRAIN_CONCEPTS), {"train": args.train_images, "valid": 100, "test": 100},
                      size=args.image_size, seed=args.seed)  # fmt: skip
    base = args.init or args.out / "init"
    if not base.exists():
        torch.manual_seed(args.seed)
        model = Sam3Model(tiny_sam3_config(image_size=args.image_size))
        # transformers' default init (std 0.02) leaves a narrow model blind; see reinit_for_pretraining.
        reinit_for_pretraining(model, seed=args.seed)
        save_model(
            model, load_tokenizer(), base, image_size=args.image_size, card={"base_model": "random init"}
        )
    cfg = TrainConfig(
        base_model=str(base), data_dir=data, output_dir=args.out / "run", mode="full", seed=args.seed,
        epochs=1000, batch_size=8, max_negatives=3, warmup_steps=args.warmup, max_steps=args.max_steps,
        lr_heads=args.lr, lr_vision=args.lr, lr_text=args.lr / 4, layer_decay=1.0, grad_clip=1.0,
        eval_every_epochs=1, early_stopping_patience=1000, checkpoint_every_steps=200,
        cooldown_fraction=args.cooldown if args.max_steps else 0.0, eval_base_model=False, progress_bar=False, cls_negative_queries=True,
    )  # fmt: skip
    result = run(cfg, Deadline(args.minutes))
    print(
        json.dumps(
            {
                "steps": result.steps,
                "best_valid": result.best_valid,
                "test": result.test and result.test["summary"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
