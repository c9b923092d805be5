"""Fine-tuning quality on a domain the base model never saw, in one process.

Base zero-shot on the held-out domain's test split; then fine-tuning on its train split through the same
`trainer.recipe.run` the worker calls, in `decoder` mode and in `full` mode; each evaluated on test.

    .venv/bin/python bench/quality.py --base models/sam3-tiny-shapes --domain tools

Goals (issue 5): fine-tuning at least triples the base's mask AP50 in under 15 minutes on CPU, and `decoder`
reaches at least 80% of `full`'s AP in less than half its time.
"""

from __future__ import annotations

import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from trainer.base_model import load_base_model  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.recipe import FineTuneRecipe, run  # noqa: E402
from trainer.synth import HELD_OUT_DOMAINS, write_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--domain", default="tools", choices=sorted(HELD_OUT_DOMAINS))
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--valid", type=int, default=20)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    size = load_base_model(args.base).image_size
    work = Path(tempfile.mkdtemp(prefix="samtune-quality-"))
    data = write_dataset(work / "data", list(HELD_OUT_DOMAINS[args.domain]),
                         {"train": args.train, "valid": args.valid, "test": args.test}, size=size, seed=args.seed)  # fmt: skip

    def config(mode: str) -> TrainConfig:
        return TrainConfig(base_model=args.base, data_dir=data, output_dir=work / mode, mode=mode, epochs=args.epochs,
                           batch_size=4, eval_base_model=False, progress_bar=False, seed=args.seed)  # fmt: skip

    rows = []
    t0 = time.perf_counter()
    zero = FineTuneRecipe(config("decoder").model_copy(update={"output_dir": work / "zero-shot"}))
    zero.setup()
    base = zero.evaluate("test").summary
    rows.append(("base, zero-shot", base, time.perf_counter() - t0))
    for mode in ("decoder", "full"):
        t0 = time.perf_counter()
        result = run(config(mode))
        rows.append(
            (
                f"fine-tuned, {mode}",
                (result.test["fine_tuned"] or {}).get("summary", {}),
                time.perf_counter() - t0,
            )
        )

    print(f"domain {args.domain!r} ({', '.join(c.name for c in HELD_OUT_DOMAINS[args.domain])}), base {args.base}, "
          f"{args.train}/{args.valid}/{args.test} images at {size} px")  # fmt: skip
    print()
    print("| model | mask AP | mask AP50 | box AP | minutes |")
    print("| --- | --- | --- | --- | --- |")
    for name, m, seconds in rows:
        print(
            f"| {name} | {m.get('segm_AP', 0):.3f} | {m.get('segm_AP50', 0):.3f} | {m.get('bbox_AP', 0):.3f} | {seconds / 60:.1f} |"
        )
    b, d, f = (r[1] for r in rows)
    print()
    lift = (
        f"{f['segm_AP50'] / b['segm_AP50']:.1f}x" if b["segm_AP50"] > 0 else "from 0 (the base finds nothing)"
    )
    print(f"full mask AP50 / base: {lift} (goal >= 3x)")
    print(f"decoder mask AP / full: {d['segm_AP'] / max(f['segm_AP'], 1e-9):.2f} (goal >= 0.8) "
          f"in {rows[1][2] / rows[2][2]:.2f} of its time (goal < 0.5)")  # fmt: skip


if __name__ == "__main__":
    main()
