"""Where a `decoder`-mode step's memory goes at SAM 3's real size: the model, the caching phase, and a
training step per number of query rows, with the heads' activations kept or recomputed in the backward pass.
One fresh process per configuration, so one run's freed-but-kept heap never hides the next one's peak.

SAM 3's architecture with random weights (facebook/sam3's sizes, 840M parameters). A row is one image asked
about one prompt: a step of 2 images with 3 classes is about 6 rows. The per-row figure is why the recipe runs
rows through the heads in passes on a CPU at 1008 px (`rows_per_pass`, trainer/recipe.py), and what
`recompute_activations` (trainer.forward.recompute_head_activations) saves on top.

    .venv/bin/python bench/train_memory.py --image-size 1008 --rows 1,3 --steps 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import psutil  # noqa: E402

GIB = 2**30


def child(image_size: int, rows: int, recompute: bool, steps: int) -> dict[str, float]:
    import torch
    from transformers import Sam3Model

    from bench.train_step import PeakMemory, targets
    from trainer.architecture import full_size_sam3_config, mask_size_for
    from trainer.forward import QueryModel, recompute_head_activations, text_backbone, vision_backbone
    from trainer.losses import LossWeights, SetCriterion
    from trainer.matcher import HungarianMatcher
    from trainer.types import ModelOutputs

    torch.manual_seed(0)
    out: dict[str, float] = {}
    cpu = torch.device("cpu")
    model = Sam3Model(full_size_sam3_config(image_size))
    out["model_gib"] = psutil.Process().memory_info().rss / GIB
    for p in [*model.vision_encoder.backbone.parameters(), *model.text_encoder.parameters()]:
        p.requires_grad_(False)
    if recompute:
        recompute_head_activations(model)
    with torch.no_grad(), PeakMemory(cpu) as mem:
        cached = vision_backbone(model, torch.randn(1, 3, image_size, image_size)).to(torch.float16)
        ids = torch.randint(1, 49000, (rows, 32))
        attn = torch.ones(rows, 32, dtype=torch.long)
        text_hidden = text_backbone(model, ids, attn)
    out["cache_peak_gib"] = mem.peak / GIB

    qm = QueryModel(model)
    criterion = SetCriterion(HungarianMatcher(), LossWeights())
    tgts = targets(rows, mask_size_for(image_size), cpu)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    index = torch.zeros(rows, dtype=torch.long)
    classes = torch.arange(rows)
    hidden = cached.float()
    with PeakMemory(cpu) as mem:
        t0 = time.perf_counter()
        for _ in range(steps):
            logits = qm(None, index, classes, ids, attn, backbone_hidden=hidden, text_hidden=text_hidden)
            loss, _ = criterion(ModelOutputs(*logits), tgts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out["step_s"] = (time.perf_counter() - t0) / steps
    out["train_peak_gib"] = mem.peak / GIB
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=1008)
    ap.add_argument("--rows", default="1,3", help="comma-separated query rows per step")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rows, recompute = args.child.split(":")
        result = child(args.image_size, int(rows), recompute == "1", args.steps)
        print("RESULT " + json.dumps(result), flush=True)
        return

    print(f"SAM 3 architecture, random weights, {args.image_size} px, decoder mode, CPU fp32, "
          f"{args.steps} steps per configuration, one process each")  # fmt: skip
    print()
    print("| rows per step | head activations | model | caching peak | training peak | s/step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for rows in [int(r) for r in args.rows.split(",")]:
        for recompute in (False, True):
            run = subprocess.run(
                [sys.executable, __file__, "--image-size", str(args.image_size), "--steps", str(args.steps),
                 "--child", f"{rows}:{int(recompute)}"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT "))
            r = json.loads(line.removeprefix("RESULT "))
            print(
                f"| {rows} | {'recomputed' if recompute else 'kept'} | {r['model_gib']:.1f} GiB | "
                f"{r['cache_peak_gib']:.1f} GiB | {r['train_peak_gib']:.1f} GiB | {r['step_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
