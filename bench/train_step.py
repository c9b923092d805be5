"""Seconds per training step in `full` and `decoder` mode, in one run, at one configuration.

SAM 3's architecture with random weights (facebook/sam3's sizes: ViT-L/14 x 32 layers, CLIP-L text, 256-wide
heads, 200 queries) at --image-size. One image with --prompts text queries per step, two target instances
each. `full` trains everything from pixels; `decoder` freezes both encoders and reads the ViT output from
the fp16 cache (its one-off cost per image is printed too), so a step runs the neck and heads only.

    .venv/bin/python bench/train_step.py --image-size 504        # CPU
    python bench/gpu_trainer.py                                # CUDA, 1008 px, bf16
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))
import threading  # noqa: E402
import time  # noqa: E402

import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import Sam3Model  # noqa: E402

from trainer.architecture import full_size_sam3_config, mask_size_for  # noqa: E402
from trainer.forward import QueryModel, text_backbone, vision_backbone  # noqa: E402
from trainer.losses import LossWeights, SetCriterion  # noqa: E402
from trainer.matcher import HungarianMatcher  # noqa: E402
from trainer.types import ModelOutputs, QueryTargets  # noqa: E402


class PeakMemory:
    """Peak resident memory (CPU) or peak allocated GPU memory over a block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            self._proc = psutil.Process()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def gib(self) -> float:
        return self.peak / 2**30


def targets(prompts: int, mask_size: int, device: torch.device) -> list[QueryTargets]:
    out = []
    for _ in range(prompts):
        masks = torch.zeros(2, mask_size, mask_size, device=device)
        masks[0, : mask_size // 3, : mask_size // 3] = 1
        masks[1, mask_size // 2 :, mask_size // 2 :] = 1
        boxes = torch.tensor([[1 / 6, 1 / 6, 1 / 3, 1 / 3], [0.75, 0.75, 0.5, 0.5]], device=device)
        out.append(QueryTargets(boxes=boxes, masks=masks))
    return out


def time_steps(step, n: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def bench(image_size: int, prompts: int, steps: int, warmup: int, device: torch.device, bf16: bool) -> dict:
    torch.manual_seed(0)
    with device:  # initialised where it runs: 840M parameters take long on few CPU cores
        model = Sam3Model(full_size_sam3_config(image_size))
    params = sum(p.numel() for p in model.parameters())
    qm = QueryModel(model)
    criterion = SetCriterion(HungarianMatcher(), LossWeights())
    mask_size = mask_size_for(image_size)
    tgts = targets(prompts, mask_size, device)
    pixels = torch.randn(1, 3, image_size, image_size, device=device)
    ids = torch.randint(1, 49000, (prompts, 32), device=device)
    attn = torch.ones(prompts, 32, dtype=torch.long, device=device)
    image_index = torch.zeros(prompts, dtype=torch.long, device=device)
    class_index = torch.arange(prompts, device=device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    results: dict = {"params_m": params / 1e6}

    # decoder: frozen encoders, cached outputs; only the neck and the heads train.
    for p in model.vision_encoder.backbone.parameters():
        p.requires_grad_(False)
    for p in model.text_encoder.parameters():
        p.requires_grad_(False)
    with torch.no_grad(), autocast():
        t0 = time.perf_counter()
        cached = vision_backbone(model, pixels).to(torch.float16)
        if device.type == "cuda":
            torch.cuda.synchronize()
        results["cache_s_per_image"] = time.perf_counter() - t0
        text_hidden = text_backbone(model, ids, attn)
    results["cache_mb_per_image"] = cached.numel() * 2 / 2**20
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def make_step(forward, optimizer):
        def step() -> None:
            with autocast():
                loss, _ = criterion(ModelOutputs(*forward()), tgts)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    decoder_step = make_step(
        lambda: qm(
            None, image_index, class_index, ids, attn, backbone_hidden=cached.float(), text_hidden=text_hidden
        ),
        opt,
    )

    with PeakMemory(device) as mem:
        results["decoder_s"] = time_steps(decoder_step, steps, warmup, device)
    results["decoder_peak_gib"] = mem.gib
    del opt
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # full: everything trains from pixels (Meta's recipe).
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    full_step = make_step(lambda: qm(pixels, image_index, class_index, ids, attn), opt)

    with PeakMemory(device) as mem:
        results["full_s"] = time_steps(full_step, steps, warmup, device)
    results["full_peak_gib"] = mem.gib
    if device.type == "cpu":
        results["process_max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return results


def report(r: dict, image_size: int, prompts: int, device: str) -> None:
    print(f"SAM 3 architecture, random weights, {r['params_m']:.0f}M parameters, {image_size} px, "
          f"1 image x {prompts} prompts per step, {device}")  # fmt: skip
    print()
    print("| mode | s/step | peak memory |")
    print("| --- | --- | --- |")
    print(f"| full (pixels in, everything trains) | {r['full_s']:.2f} | {r['full_peak_gib']:.1f} GiB |")
    print(
        f"| decoder (cached ViT output, neck + heads train) | {r['decoder_s']:.3f} | {r['decoder_peak_gib']:.1f} GiB |"
    )
    print()
    print(f"full / decoder: {r['full_s'] / r['decoder_s']:.1f}x per step")
    print(
        f"cache: {r['cache_s_per_image']:.2f} s and {r['cache_mb_per_image']:.1f} MB (fp16) per image, once"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=504)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    r = bench(args.image_size, args.prompts, args.steps, args.warmup, device, args.bf16)
    report(r, args.image_size, args.prompts, str(device))


if __name__ == "__main__":
    main()
