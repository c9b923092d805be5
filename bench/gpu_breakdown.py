"""Where a full-size SAM 3 prediction's time goes on a lent GPU (random weights, facebook/sam3's architecture,
fp32 weights under bf16 autocast as `Predictor` serves them): the vision encoder, the text encoder and the heads,
and the post-processing on the CPU (masks upsampled to the image and encoded as RLE, NMS), at batch 1 and 8; then
the vision encoder alone under each attention implementation transformers offers. A short prepared check:

    python bench/gpu_breakdown.py

Smoke test on the CPU (tiny model): `python bench/gpu_breakdown.py --device cpu --tiny --rounds 1`
"""

# ruff: noqa: B023, SLF001, E402 - timed closures over the loop's values, the Predictor's stages one by one, imports after the path fix
from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse
import statistics
import time
from collections.abc import Callable


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from bench.gpu_predict import bench_model
    from trainer.forward import ask, vision_backbone
    from trainer.predict import Ask, Predictor

    device = torch.device(args.device)
    loaded, size = bench_model(device, tiny=args.tiny)
    predictor = Predictor(loaded, device, embedding_cache_size=0)
    model = predictor.model
    print(f"attention: model {model.config._attn_implementation}, vision "
          f"{model.vision_encoder.config._attn_implementation}")  # fmt: skip
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(8)]

    def timed(fn: Callable[[], object]) -> tuple[float, object]:
        times, out = [], None
        for r in range(args.rounds + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3, out

    print("\n| batch | resize ms per image (CPU, request threads) | vision encoder ms | text + heads ms | "
          "post-processing ms (CPU) | masks kept per image | whole predict_many ms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for b in (1, 8):
        resize_ms, _ = timed(lambda: predictor.prepare(images[0]))
        # Resized beforehand, as the inference service does on each request's thread: the vision column is
        # then the device's work (plus the uint8 copy to it).
        asks = [Ask(images[i], ["cat"], 0.5, pixels=predictor.prepare(images[i])) for i in range(b)]
        with torch.inference_mode():
            with predictor._model_precision():
                vision_ms, hidden = timed(lambda: predictor._embed(asks))
                ids, mask, text_hidden = predictor._prompts(("cat",))
                index = torch.arange(b, device=device)
                zeros = torch.zeros(b, dtype=torch.long, device=device)
                heads_ms, found = timed(lambda: ask(predictor.query_model, ids, mask, backbone_hidden=hidden,
                                                    text_hidden=text_hidden, image_index=index,
                                                    class_index=zeros))  # fmt: skip
            post_ms, answers = timed(
                lambda: [predictor._answer(asks[i], ["cat"], found, i) for i in range(b)]
            )
        whole_ms, _ = timed(lambda: predictor.predict_many(asks))
        kept = statistics.mean(len(a) for a in answers)
        print(
            f"| {b} | {resize_ms:.1f} | {vision_ms:.1f} | {heads_ms:.1f} | {post_ms:.1f} | {kept:.1f} | {whole_ms:.1f} |"
        )

    print("\n| attention | vision encoder ms, batch 1 | batch 8 |")
    print("| --- | --- | --- |")
    for impl in ("sdpa", "eager", "flash_attention_2", "flex_attention"):
        try:
            model.vision_encoder.set_attn_implementation(impl)
        except Exception as exc:  # noqa: BLE001 - not offered here: say why, go on
            print(f"| {impl} | not available: {str(exc).splitlines()[0][:120]} | |")
            continue
        row = []
        for b in (1, 8):
            pixels = torch.randn(b, 3, loaded.image_size, loaded.image_size, device=device)
            with torch.inference_mode(), predictor._model_precision():
                ms, _ = timed(lambda: vision_backbone(model, pixels))
            row.append(f"{ms:.1f}")
        print(f"| {impl} | {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
