"""Full-size SAM 3 (facebook/sam3's architecture; random weights unless --model points at the real ones) on a
lent GPU: batches of 1/4/8/16 images through `trainer.predict.Predictor.predict_many` (the call the inference
service makes for one batch), fp32 weights under bf16 autocast (the Predictor's default on CUDA, as training runs
there); images/s and p50 latency per batch. With --service, the same batch sizes through the whole inference
service in process (`app.inference.local.LocalInference`: JPEG decode, the check, the DynamicBatcher, the
forward, the answer's polygons and JSON), N requests at once. Compare with the SAM 3 paper's 30 ms per image
on an H200.

A short prepared script for a lent GPU (about 1-2 minutes with the defaults: building the model is most of it):

    python bench/gpu_predict.py --service                 # fp32 weights, bf16 autocast
    python bench/gpu_predict.py --no-autocast             # fp32 throughout
    python bench/gpu_predict.py --bf16-weights            # bf16 weights (no autocast needed)

Smoke test on the CPU, a few seconds (the bundled tiny model, small images): it checks that the script runs,
not how fast anything is (autocast applies on CUDA only):

    .venv/bin/python bench/gpu_predict.py --device cpu --tiny --rounds 2 --service
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

PROMPTS = ["cat", "dog", "person", "car", "tree", "bicycle", "bottle", "chair"]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _p50_p95(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[int(0.95 * (len(values) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a smoke test)")
    ap.add_argument("--tiny", action="store_true", help="the bundled tiny model, small images (a smoke test)")
    ap.add_argument("--model", help="a SAM 3 directory or repo id in the HF cache; default: random weights")
    ap.add_argument("--batches", default="1,4,8,16", help="batch sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=10, help="timed batches per batch size")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches per batch size")
    ap.add_argument("--prompts", type=int, default=1, help="text prompts per image")
    ap.add_argument(
        "--no-autocast", action="store_true", help="fp32 throughout (default: bf16 autocast on CUDA)"
    )
    ap.add_argument("--bf16-weights", action="store_true", help="bfloat16 weights instead of fp32 + autocast")
    ap.add_argument("--service", action="store_true", help="also through LocalInference, N requests at once")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from transformers import Sam3Model

    from trainer.architecture import full_size_sam3_config
    from trainer.base_model import EMBEDDED_BASE, LoadedModel, load_base_model
    from trainer.predict import Ask, Predictor
    from trainer.tokenizer import load_tokenizer

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device (bench/predict.py measures the CPU; --device cpu --tiny smoke-tests this)"
        )
    batches = [int(b) for b in args.batches.split(",")]
    dtype = torch.bfloat16 if args.bf16_weights else torch.float32
    t = time.perf_counter()
    if args.tiny:
        loaded = load_base_model(EMBEDDED_BASE, device=device, dtype=dtype)
        size = (150, 112)
    elif args.model:
        loaded = load_base_model(args.model, device=device, dtype=dtype)
        size = (1024, 768)
    else:
        torch.manual_seed(0)
        model = Sam3Model(full_size_sam3_config()).to(device, dtype).eval()
        loaded = LoadedModel(model, load_tokenizer(), 1008, "random weights", "facebook/sam3 architecture")
        size = (1024, 768)
    built = time.perf_counter() - t
    autocast = not args.no_autocast
    # No embedding cache: every image here is "fresh" (the service keys images by their bytes; these repeat).
    predictor = Predictor(loaded, device, autocast=autocast, embedding_cache_size=0)
    precision = ("bf16 weights" if args.bf16_weights else
                 "fp32 weights + bf16 autocast" if autocast and device.startswith("cuda") else "fp32")  # fmt: skip
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "CPU"
    params = sum(p.numel() for p in loaded.model.parameters())
    rng = np.random.default_rng(0)
    pool = [
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(max(batches))
    ]
    prompts = PROMPTS[: args.prompts]
    print(f"{name}, torch {torch.__version__}, {loaded.description} ({params / 1e6:.0f}M parameters, built in "
          f"{built:.0f} s), {precision}, {args.prompts} prompt(s), {size[0]}x{size[1]} images, "
          f"{args.rounds} timed batches per size")  # fmt: skip
    print()
    print("| path | batch | p50 ms per batch | p95 ms | p50 ms per image | images/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for b in batches:
        asks = [Ask(pool[i], prompts, 0.5) for i in range(b)]
        times = []
        for r in range(args.warmup + args.rounds):
            _sync(device)
            t = time.perf_counter()
            answers = predictor.predict_many(asks)
            _sync(device)
            if r >= args.warmup:
                times.append(time.perf_counter() - t)
            errors = [a for a in answers if isinstance(a, Exception)]
            if errors:
                raise errors[0]
        p50, p95 = _p50_p95(times)
        print(f"| `Predictor.predict_many` | {b} | {p50 * 1e3:.1f} | {p95 * 1e3:.1f} | {p50 * 1e3 / b:.1f} | "
              f"{b / p50:.1f} |")  # fmt: skip
    if args.service:
        _service(args, loaded, predictor, pool, prompts, batches, device)
    if device.startswith("cuda"):
        print()
        print(
            f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (SAM 3 paper: 30 ms per image, H200)"
        )


def _service(args: argparse.Namespace, loaded, predictor, pool, prompts, batches, device) -> None:  # noqa: ANN001
    """N requests at once through LocalInference (what `samtune inference` and an API without inference URLs
    run), the model put in its cache directly (random weights have no files to load)."""
    from app.core.storage import make_storage
    from app.inference.calls import ModelSpec, PredictCall
    from app.inference.local import LocalInference
    from app.models.schemas import PredictOptions
    from app.models.serving import Served
    from app.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="samtune-gpu-predict-")), inference_device=device,
                        batch_max_size=max(batches))  # fmt: skip
    inference = LocalInference(settings, make_storage(settings))
    size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    inference.cache._models["bench"] = Served(predictor, size)  # noqa: SLF001 - no files to load it from
    call = PredictCall(model=ModelSpec(key="bench", classes=prompts, base_name="bench/random"),
                       options=PredictOptions(prompts=prompts, confidence=0.5))  # fmt: skip
    jpegs = []
    for picture in pool:
        buf = io.BytesIO()
        picture.save(buf, "JPEG", quality=90)
        jpegs.append(buf.getvalue())

    async def one(data: bytes) -> tuple[float, str]:
        t = time.perf_counter()
        answer = await inference.predict(call, data)
        if answer.status != 200:
            raise RuntimeError(answer.body[:500])
        return time.perf_counter() - t, answer.timing

    async def run() -> None:
        for b in batches:
            walls, latencies = [], []
            seen: collections.Counter[str] = collections.Counter()
            for r in range(args.warmup + args.rounds):
                t = time.perf_counter()
                done = await asyncio.gather(*(one(jpegs[i]) for i in range(b)))
                wall = time.perf_counter() - t
                if r >= args.warmup:
                    walls.append(wall)
                    latencies += [d for d, _ in done]
                    for _, timing in done:
                        seen[
                            timing.split("batch;desc=")[1].split(",")[0] if "batch;desc=" in timing else "?"
                        ] += 1
            p50, p95 = _p50_p95(latencies)
            sizes = ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))
            print(f"| LocalInference, {b} at once (batches {sizes}) | {b} | {statistics.median(walls) * 1e3:.1f} "
                  f"| {p95 * 1e3:.1f} (request) | {p50 * 1e3:.1f} (request) | {b * len(walls) / sum(walls):.1f} |")  # fmt: skip

    asyncio.run(run())


if __name__ == "__main__":
    main()
