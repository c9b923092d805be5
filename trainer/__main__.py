"""`python -m trainer -c CONFIG.yaml [key=value ...]`: the trainer's command line, shaped like Meta's
`sam3/train/train.py` (same flags for GPUs, nodes and SLURM)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.extras import MissingExtra
from trainer.launch import ClusterUnavailable, launch_local, run_process, submit_cluster


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer", description="Fine-tune SAM 3 on a COCO export.")
    p.add_argument("-c", "--config", required=True, type=Path, help="YAML with TrainConfig fields")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config, e.g. epochs=5 mode=full")
    p.add_argument("--mode", choices=("train", "val"), default="train", help="val: evaluate only")
    p.add_argument("--num-gpus", type=int, default=1, help="processes per node (on CPU: gloo processes)")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument(
        "--use-cluster", type=int, choices=(0, 1), default=0, help="1: submit to SLURM with submitit"
    )
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--timeout-min", type=int, default=24 * 60)
    return p


def _print_result(result: Any) -> None:
    print(json.dumps(result, indent=2, default=str))


def _quiet_transformers() -> None:
    """transformers draws progress bars for every weight load and save; our own bar is the one to read."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_transformers()
    try:
        cfg = TrainConfig.from_yaml(args.config, args.overrides)
    except Exception as exc:  # a bad config is the user's to fix: say so plainly, no traceback
        print(f"error: invalid configuration {args.config}: {exc}", file=sys.stderr)
        return 2
    if args.use_cluster:
        try:
            job_id = submit_cluster(cfg, args.mode, args)
        except (MissingExtra, ClusterUnavailable) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"submitted SLURM job {job_id}; logs in {cfg.output_dir}/submitit")
        return 0
    if args.num_nodes > 1:
        print("error: several nodes need --use-cluster 1 (SLURM)", file=sys.stderr)
        return 2
    from trainer.base_model import BaseModelNotFound  # torch and transformers: not for --help or a bad config

    try:
        result = (
            launch_local(cfg, args.mode, args.num_gpus) if args.num_gpus > 1 else run_process(cfg, args.mode)
        )
    except BaseModelNotFound as exc:  # e.g. facebook/sam3 not downloaded yet: the message says what to do
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
