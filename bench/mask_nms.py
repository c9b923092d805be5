"""Mask NMS's pairwise IoU: pycocotools on the compressed RLEs against `trainer.mask_iou.pairwise_iou` (which
takes the decoded-mask way where it is cheaper), in one run, on the masks the two kinds of model draw:

  - speckled: an untrained or weakly trained model's candidates at confidence 0 (batch prediction over a split
    keeps every candidate): noise on a coarse grid (the model's mask resolution; 288 for SAM 3 at 1008 px)
    upsampled to the image and thresholded, tens of thousands of runs per mask;
  - compact: a trained model's, rectangles of up to a fifth of the image, a few runs per column.

Each measurement alternates the two ways ROUNDS times and checks that they give the same IoUs. Prints seconds
per IoU matrix and their ratio.

    .venv/bin/python bench/mask_nms.py --candidates 100 --size 1008
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pycocotools import mask as mask_utils  # noqa: E402

from trainer.mask_iou import dense_is_cheaper, pairwise_iou, rle_iou  # noqa: E402

ROUNDS = 3


def speckled(n: int, size: int, grid: int, rng: np.random.Generator) -> list[dict]:
    coarse = torch.from_numpy(rng.standard_normal((n, 1, grid, grid)).astype(np.float32))
    masks = (F.interpolate(coarse, size=(size, size), mode="bilinear") > 0).numpy()[:, 0]
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def compact(n: int, size: int, rng: np.random.Generator) -> list[dict]:
    out = []
    for _ in range(n):
        m = np.zeros((size, size), dtype=np.uint8)
        h, w = rng.integers(size // 20, size // 5, size=2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        m[y : y + h, x : x + w] = 1
        out.append(mask_utils.encode(np.asfortranarray(m)))
    return out


def timed(how: Callable[[list[dict]], np.ndarray], rles: list[dict]) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    ious = how(rles)
    return time.perf_counter() - t, ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=100, help="masks per image")
    ap.add_argument("--size", type=int, default=1008, help="image side in pixels")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sets = {
        "speckled, 72 px grid": speckled(args.candidates, args.size, 72, rng),
        "speckled, 288 px grid": speckled(args.candidates, args.size, 288, rng),
        "compact": compact(args.candidates, args.size, rng),
    }
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); {args.candidates} masks of "
          f"{args.size}x{args.size} px; median of {ROUNDS} alternations")  # fmt: skip
    print()
    print(
        "| masks | compressed counts per mask (chars) | way taken | pycocotools s | pairwise_iou s | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rles in sets.items():
        ours, theirs = [], []
        for _ in range(ROUNDS):
            t, reference = timed(rle_iou, rles)
            theirs.append(t)
            t, got = timed(pairwise_iou, rles)
            ours.append(t)
            if not np.array_equal(got, reference):
                raise SystemExit(f"{name}: the two ways disagree by {np.abs(got - reference).max()}")
        chars = statistics.mean(len(r["counts"]) for r in rles)
        way = "decoded" if dense_is_cheaper(rles) else "RLE"
        a, b = statistics.median(theirs), statistics.median(ours)
        print(f"| {name} | {chars:.0f} | {way} | {a:.3f} | {b:.3f} | {a / b:.1f}x |")


if __name__ == "__main__":
    main()
