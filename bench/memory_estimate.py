"""The memory estimate (`trainer/memory.py`) against the measured peak of real training steps on the CPU.

Each configuration runs in a fresh process: build the model (random weights), freeze the encoders in `decoder`
mode, then two AdamW steps of `batch` images x `queries` queries (two target instances each) through the
recipe's own forward (`QueryModel`) and loss (`SetCriterion`); `decoder` mode reads a float32 cached ViT output
as the recipe does. Measured: the process's peak resident memory during the steps (VmHWM, reset after the model
is built) minus its resident memory before the model was built, so weights, gradients, AdamW state,
activations and the allocator's slack count, the interpreter and libraries do not.

    .venv/bin/python bench/memory_estimate.py                  # the tiny model, a few configurations
    .venv/bin/python bench/memory_estimate.py --full-size 448  # also facebook/sam3's architecture, decoder, 448 px
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

TINY_CASES = [  # (mode, batch, image_size, queries per image)
    ("decoder", 1, 224, 2),
    ("decoder", 4, 224, 2),
    ("decoder", 2, 448, 4),
    ("full", 1, 224, 2),
    ("full", 4, 224, 2),
    ("full", 2, 448, 4),
]


def _rss() -> int:
    return _status("VmRSS")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def measure(kind: str, mode: str, batch: int, image_size: int, queries: int, steps: int = 2) -> dict:
    """One configuration, in this process: the peak bytes above the resident memory before the model."""
    import torch
    from transformers import Sam3Model

    from trainer.architecture import full_size_sam3_config, mask_size_for, tiny_sam3_config
    from trainer.forward import QueryModel, text_backbone, vision_backbone
    from trainer.losses import LossWeights, SetCriterion
    from trainer.matcher import HungarianMatcher
    from trainer.types import ModelOutputs, QueryTargets

    torch.manual_seed(0)
    before = _rss()
    config = tiny_sam3_config(image_size) if kind == "tiny" else full_size_sam3_config(image_size)
    model = Sam3Model(config)
    n = batch * queries
    mask = mask_size_for(image_size)
    targets = []
    for _ in range(n):
        masks = torch.zeros(2, mask, mask)
        masks[0, : mask // 3, : mask // 3] = 1
        masks[1, mask // 2 :, mask // 2 :] = 1
        boxes = torch.tensor([[1 / 6, 1 / 6, 1 / 3, 1 / 3], [0.75, 0.75, 0.5, 0.5]])
        targets.append(QueryTargets(boxes=boxes, masks=masks))
    pixels = torch.randn(batch, 3, image_size, image_size)
    ids = torch.randint(1, 49000, (queries, 32))
    attn = torch.ones(queries, 32, dtype=torch.long)
    image_index = torch.arange(batch).repeat_interleave(queries)
    class_index = torch.arange(queries).repeat(batch)
    criterion = SetCriterion(HungarianMatcher(), LossWeights())
    qm = QueryModel(model).train()
    cached = text_hidden = None
    if mode == "decoder":
        for p in model.vision_encoder.backbone.parameters():
            p.requires_grad_(False)
        for p in model.text_encoder.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            cached = vision_backbone(model, pixels).to(torch.float16)
            text_hidden = text_backbone(model, ids, attn)
        del pixels
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here
    for _ in range(steps):
        backbone = None if cached is None else cached.float()  # the recipe loads the cache as float32
        out = qm(None if cached is not None else pixels, image_index, class_index, ids, attn,
                 backbone_hidden=backbone, text_hidden=text_hidden)  # fmt: skip
        loss, _ = criterion(ModelOutputs(*out), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        del out, loss, backbone
    return {"peak": _status("VmHWM") - before, "params": sum(p.numel() for p in model.parameters())}


def estimated(kind: str, mode: str, batch: int, image_size: int, queries: int) -> dict:
    from trainer.architecture import full_size_sam3_config, tiny_sam3_config
    from trainer.memory import architecture, estimate

    config = tiny_sam3_config(image_size) if kind == "tiny" else full_size_sam3_config(image_size)
    est = estimate(
        architecture(config), mode=mode, batch_size=batch, image_size=image_size, queries_per_image=queries
    )
    return {"total": est.total, "describe": est.describe()}


def run_case(kind: str, mode: str, batch: int, image_size: int, queries: int) -> dict:
    """`measure` in a fresh process (a clean heap), and the estimate beside it."""
    args = [sys.executable, __file__, "--measure", json.dumps([kind, mode, batch, image_size, queries])]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return {"kind": kind, "mode": mode, "batch": batch, "image_size": image_size, "queries": queries,
            "measured": measured["peak"], **estimated(kind, mode, batch, image_size, queries)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # one case, in this process, JSON out
    ap.add_argument(
        "--full-size",
        type=int,
        default=0,
        metavar="PX",
        help="also facebook/sam3's architecture (random weights), decoder mode, 1 image x 2 queries at PX",
    )
    ap.add_argument("--tiny-only", action="store_true")
    args = ap.parse_args()
    if args.measure:
        kind, mode, batch, size, queries = json.loads(args.measure)
        print(json.dumps(measure(kind, mode, batch, size, queries)))
        return
    cases = [("tiny", *c) for c in TINY_CASES]
    if args.full_size:
        cases.append(("sam3", "decoder", 1, args.full_size, 2))
    print("| model | mode | batch | px | queries/image | measured peak | estimate | estimate / measured |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in cases:
        r = run_case(*case)
        print(f"| {r['kind']} | {r['mode']} | {r['batch']} | {r['image_size']} | {r['queries']} | "
              f"{r['measured'] / 1e9:.3f} GB | {r['total'] / 1e9:.3f} GB | {r['total'] / r['measured']:.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
