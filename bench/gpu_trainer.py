"""Full-size SAM 3 (random weights, facebook/sam3's architecture) training-step timing on a CUDA device,
`full` vs `decoder` mode, bf16 autocast. A short prepared check for when a GPU is lent:

    python bench/gpu_trainer.py [--image-size 1008] [--prompts 4] [--steps 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import torch  # noqa: E402

from bench.train_step import bench, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=1008)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run bench/train_step.py on the CPU instead")
    print(torch.cuda.get_device_name(0), f"torch {torch.__version__}")
    r = bench(args.image_size, args.prompts, args.steps, args.warmup, torch.device("cuda"), bf16=True)
    report(r, args.image_size, args.prompts, "cuda bf16")


if __name__ == "__main__":
    main()
