"""Batch prediction over a version's split (`app.models.batches.coco_results`, the `gpu` queue's work) with
full-size SAM 3 on a lent GPU: images/s with the next chunk decoded and resized on another thread while this
chunk's forward runs, against the same chunks done one step after the other in this process (decode, resize,
forward). JPEGs written for the run. A short prepared check:

    python bench/gpu_batch_predict.py --model DIR [--images 64] [--chunk 8]

Give it real weights (--model, a SAM 3 directory): batch prediction asks at confidence 0 and decodes all 200
candidate masks per image, and a random-weight model's masks are noise, whose RLEs make mask NMS quadratic in
their runs (one 1024x768 image's 200 noise masks: 1.5 s of upsampling and 97 s of NMS on the development CPU).
Without --model it builds facebook/sam3's architecture with random weights, and on the H200 of 2026-12-04 that
run did not finish within 120 s.

Smoke test on the CPU (tiny model, small images): `python bench/gpu_batch_predict.py --device cpu --tiny`
"""

# ruff: noqa: E402 - imports after the path fix
from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse
import tempfile
import time
from typing import Any


def serial(predictor: Any, folder: Path, images: list[dict[str, Any]], prompts: list[str], chunk: int) -> int:
    """The chunks one step after the other: each image decoded and resized on the forward's own thread."""
    from PIL import Image

    from trainer.predict import Ask

    found = 0
    for start in range(0, len(images), chunk):
        pictures = []
        for img in images[start : start + chunk]:
            with Image.open(folder / img["file_name"]) as picture:
                pictures.append(picture.convert("RGB"))
        answers = predictor.predict_many(
            [Ask(p, prompts, confidence=0.0, max_detections=100) for p in pictures]
        )
        found += sum(len(a) for a in answers if isinstance(a, list))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--model", help="a SAM 3 directory (real weights); default: random weights")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=8)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from app.models.batches import coco_results
    from bench.gpu_predict import bench_model
    from trainer.predict import Predictor

    device = torch.device(args.device)
    loaded, size = bench_model(device, tiny=args.tiny, model=args.model)
    predictor = Predictor(loaded, device, embedding_cache_size=0)
    folder = Path(tempfile.mkdtemp(prefix="samtune-gpu-batch-"))
    rng = np.random.default_rng(0)
    images = []
    for i in range(args.images):
        name = f"{i:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / name, quality=90
        )
        images.append({"id": i + 1, "file_name": name, "width": size[0], "height": size[1]})
    prompts = ["cat"]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    coco_results(predictor, folder, images[: args.chunk], prompts, (0.5, False), args.chunk)  # warm-up
    rows = []
    for name, run in (
        ("one step after the other", lambda: serial(predictor, folder, images, prompts, args.chunk)),
        ("coco_results, next chunk prepared meanwhile",
         lambda: len(coco_results(predictor, folder, images, prompts, (0.5, False), args.chunk))),
    ):  # fmt: skip
        sync()
        t = time.perf_counter()
        run()
        sync()
        rows.append((name, time.perf_counter() - t))
    print(
        f"{device.type}, {loaded.description}, {args.images} {size[0]}x{size[1]} JPEGs, chunks of {args.chunk}\n"
    )
    print("| batch prediction | seconds | images/s |")
    print("| --- | --- | --- |")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} | {args.images / seconds:.1f} |")
    print(f"\nprepared meanwhile / one after the other: {rows[0][1] / rows[1][1]:.2f}x images/s")


if __name__ == "__main__":
    main()
