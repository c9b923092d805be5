"""Full-size SAM 3 (facebook/sam3's architecture; random weights unless --model points at the real ones)
prediction latency per image on a CUDA device, with text prompts, through `trainer.predict.Predictor`: the
code the predict endpoint runs. A short prepared check for when a GPU is lent; compare with the SAM 3
paper's 30 ms per image on an H200.

    python bench/gpu_predict.py [--model DIR_OR_REPO] [--prompts 1] [--images 50] [--bf16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Sam3Model  # noqa: E402

from trainer.architecture import full_size_sam3_config  # noqa: E402
from trainer.base_model import LoadedModel, load_base_model  # noqa: E402
from trainer.predict import Predictor  # noqa: E402
from trainer.tokenizer import load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a SAM 3 directory or repo id in the HF cache; default: random weights")
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 weights (the paper's setting is unstated)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: bench/predict.py measures the CPU")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    if args.model:
        loaded = load_base_model(args.model, device="cuda", dtype=dtype)
    else:
        model = Sam3Model(full_size_sam3_config()).to("cuda", dtype).eval()
        loaded = LoadedModel(model, load_tokenizer(), 1008, "random weights", "facebook/sam3 architecture")
    predictor = Predictor(loaded, "cuda")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8)) for _ in range(4)]
    prompts = ["cat", "dog", "person", "car", "tree", "bicycle", "bottle", "chair"][: args.prompts]
    for i in range(args.warmup):
        predictor.predict(images[i % 4], prompts, confidence=0.5)
    torch.cuda.synchronize()
    times = []
    for i in range(args.images):
        t = time.perf_counter()
        predictor.predict(images[i % 4], prompts, confidence=0.5)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    p50, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {'bf16' if args.bf16 else 'fp32'}, "
          f"{args.prompts} prompt(s), 1024x768 images, {args.images} runs")  # fmt: skip
    print(f"per image: p50 {p50 * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms (SAM 3 paper: 30 ms on an H200)")
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
