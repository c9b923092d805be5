"""Embedding reuse with the full-size architecture: facebook/sam3's (ViT-L/14 with 32 layers at 1008x1008, CLIP-L
text, about 840M parameters) with random weights, fp32 on the CPU, in this process through
`trainer.predict.Predictor.predict(..., image_key=...)`, the call the inference service makes.

One image asked again with new prompts (its vision embedding kept under its key: only the text encoder and the
heads run) vs a fresh image with new prompts (the vision encoder too), alternating: fresh, again, fresh, again...
New prompts every request, so the text side runs in both and only the vision embedding is reused. A one-off
run: a fresh forward takes about half a minute on a 2-core CPU, so a few images only (--images fresh ones and as
many repeats, after one warm-up of each). Goal: asked again at least 5x faster (p50). Needs about 10 GB of RAM.

    .venv/bin/python bench/predict_full_size.py --images 3

`--tiny` runs the same on the bundled tiny model in a few seconds (a smoke test of the script).
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

CONCEPTS = [
    "cat",
    "dog",
    "person",
    "car",
    "tree",
    "bicycle",
    "bottle",
    "chair",
    "cup",
    "bird",
    "boat",
    "lamp",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3, help="fresh images measured (and as many repeats)")
    ap.add_argument("--prompts", type=int, default=2, help="prompts per request")
    ap.add_argument("--tiny", action="store_true", help="the bundled tiny model instead (a smoke test)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from bench.gpu_predict import bench_model
    from trainer.predict import Predictor

    t = time.perf_counter()
    loaded, size = bench_model("cpu", tiny=args.tiny)
    built = time.perf_counter() - t
    predictor = Predictor(loaded, "cpu")
    params = sum(p.numel() for p in loaded.model.parameters())
    rng = np.random.default_rng(0)
    count = [0]

    def fresh_image() -> tuple[Image.Image, str]:
        count[0] += 1
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        return Image.fromarray(pixels), f"fresh-{count[0]}"

    asked = [0]

    def prompts() -> list[str]:  # never the same list twice: the text encoder runs every request
        asked[0] += 1
        return [f"{CONCEPTS[(asked[0] + i) % len(CONCEPTS)]} {asked[0]}" for i in range(args.prompts)]

    def timed(image: Image.Image, key: str) -> float:
        reused = predictor.has_embedding(key)
        t = time.perf_counter()
        predictor.predict(image, prompts(), confidence=0.5, image_key=key)
        took = time.perf_counter() - t
        print(f"  {'asked again' if reused else 'fresh':11s} {key:9s} {took:8.2f} s", flush=True)
        return took

    repeated, repeated_key = fresh_image()
    repeated_key = "repeated"
    print(f"{loaded.description}: {params / 1e6:.0f}M parameters, built in {built:.0f} s; fp32, CPU "
          f"({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads); "
          f"{size[0]}x{size[1]} images, {args.prompts} new prompts each request")  # fmt: skip
    print("warm-up (not counted):")
    timed(repeated, repeated_key)  # computes and keeps the repeated image's embedding
    timed(repeated, repeated_key)
    fresh: list[float] = []
    again: list[float] = []
    print("measured:")
    for _ in range(args.images):
        fresh.append(timed(*fresh_image()))
        again.append(timed(repeated, repeated_key))
    f50, a50 = statistics.median(fresh), statistics.median(again)
    ratio = f50 / a50
    print()
    print("| image | requests | p50 s | min s | max s |")
    print("| --- | --- | --- | --- | --- |")
    for kind, values in (("fresh", fresh), ("asked again, new prompts", again)):
        print(f"| {kind} | {len(values)} | {statistics.median(values):.2f} | {min(values):.2f} | "
              f"{max(values):.2f} |")  # fmt: skip
    print()
    verdict = "met" if ratio >= 5 else "NOT met"
    print(
        f"asked again is {ratio:.1f}x faster at p50 (goal >= 5x with the full-size architecture: {verdict})"
    )


if __name__ == "__main__":
    main()
