"""Full-size SAM 3 (facebook/sam3's architecture; random weights unless --model points at the real ones) on a
lent GPU: batches of 1/4/8/16 images through `trainer.predict.Predictor.predict_many` (the call the inference
service makes for one batch), fp32 weights under bf16 autocast (the Predictor's default on CUDA, as training runs
there); images/s and p50 latency per batch. With --service, the same batch sizes through the whole inference
service in process (`app.inference.local.LocalInference`: JPEG decode, the check, the DynamicBatcher, the
forward, the answer's polygons and JSON), N requests at once. With --http, the whole inference service: the
model saved and loaded by the service's own path, uvicorn, the API's client; then fresh against asked-again
images and a request with an exemplar box. Compare with the SAM 3 paper's 30 ms per image on an H200.
`bench/gpu_session.sh` runs this with the other GPU checks (results: bench/RESULTS.md, "On a GPU").

A short prepared script for a lent GPU (about 1-2 minutes with the defaults: building the model is most of it):

    python bench/gpu_predict.py --service --http          # fp32 weights, bf16 autocast
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
from collections.abc import Awaitable, Callable  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    import torch

    from trainer.base_model import LoadedModel

PROMPTS = ["cat", "dog", "person", "car", "tree", "bicycle", "bottle", "chair"]


def bench_model(
    device: torch.device | str,
    *,
    tiny: bool = False,
    model: str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[LoadedModel, tuple[int, int]]:
    """What the one-off benchmarks run (this one, gpu_breakdown, gpu_batch_predict, predict_full_size), and the
    (width, height) of the images to feed it: the bundled tiny model (smoke tests), a SAM 3 directory (`model`),
    or facebook/sam3's architecture with random weights, initialised on `device` itself (840M parameters take
    minutes on a few CPU cores)."""
    import torch
    from transformers import Sam3Model

    from trainer.architecture import full_size_sam3_config
    from trainer.base_model import EMBEDDED_BASE, LoadedModel, load_base_model
    from trainer.tokenizer import load_tokenizer

    if tiny:
        return load_base_model(EMBEDDED_BASE, device=device, dtype=dtype), (150, 112)
    if model:
        return load_base_model(model, device=device, dtype=dtype), (1024, 768)
    torch.manual_seed(0)
    with torch.device(device):
        built = Sam3Model(full_size_sam3_config()).to(dtype or torch.float32).eval()
    loaded = LoadedModel(built, load_tokenizer(), 1008, "random weights", "facebook/sam3 architecture")
    return loaded, (1024, 768)


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
    ap.add_argument(
        "--http", action="store_true",
        help="also the whole inference service over HTTP: the model saved as SAMTUNE_SAM3_PATH, loaded by the "
        "service's own path, asked by the API's client; then fresh vs asked-again images, and exemplar boxes",
    )  # fmt: skip
    ap.add_argument("--save-dir", type=Path, help="--http: save the model here (default: a temporary folder)")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from trainer.predict import Ask, Predictor

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device (bench/predict.py measures the CPU; --device cpu --tiny smoke-tests this)"
        )
    batches = [int(b) for b in args.batches.split(",")]
    dtype = torch.bfloat16 if args.bf16_weights else torch.float32
    t = time.perf_counter()
    loaded, size = bench_model(device, tiny=args.tiny, model=args.model, dtype=dtype)
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
        # Resized beforehand, as the service does on each request's thread (LocalInference._decode).
        asks = [Ask(pool[i], prompts, 0.5, pixels=predictor.prepare(pool[i])) for i in range(b)]
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
    failed = []
    if args.service:
        failed += _stage("LocalInference", _service, args, loaded, predictor, pool, prompts, batches, device)
    if args.http:
        failed += _stage("HTTP service", _http, args, loaded, pool, prompts, batches, device)
    if device.startswith("cuda"):
        print()
        print(
            f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (SAM 3 paper: 30 ms per image, H200)"
        )
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


def _stage(name: str, fn, *args) -> list[str]:  # noqa: ANN001
    """One part of the run; a failure is printed and the rest still runs (a lent GPU's minutes are few)."""
    import traceback

    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - reported, and the run ends non-zero
        print(f"\n{name} FAILED:")
        traceback.print_exc(file=sys.stdout)
        return [name]
    return []


async def _rounds(
    args: argparse.Namespace, requests: Callable[[bool], list[Awaitable[tuple[float, str]]]]
) -> tuple[list[float], list[float], list[str]]:
    """`args.warmup` then `args.rounds` rounds, each the requests `requests(counted)` makes sent at once: the
    counted rounds' wall times, their requests' latencies and their Server-Timing headers."""
    walls: list[float] = []
    latencies: list[float] = []
    timings: list[str] = []
    for r in range(args.warmup + args.rounds):
        counted = r >= args.warmup
        sending = requests(counted)
        t = time.perf_counter()
        done = await asyncio.gather(*sending)
        wall = time.perf_counter() - t
        if counted:
            walls.append(wall)
            latencies += [d for d, _ in done]
            timings += [timing for _, timing in done]
    return walls, latencies, timings


def _batch_sizes(timings: list[str]) -> str:
    """How many requests ran in batches of each size (their Server-Timing `batch`), as `size: requests`."""
    seen = collections.Counter(_timing(t, "batch") or "?" for t in timings)
    return ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))


def _jpeg(picture) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _timing(header: str, name: str) -> str | None:
    """A value of a Server-Timing header: `dur` for a duration, else `desc`."""
    for part in header.split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0] == name and len(fields) > 1:
            return fields[1].split("=", 1)[1]
    return None


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
    jpegs = [_jpeg(picture) for picture in pool]

    async def one(data: bytes) -> tuple[float, str]:
        t = time.perf_counter()
        answer = await inference.predict(call, data)
        if answer.status != 200:
            raise RuntimeError(answer.body[:500])
        return time.perf_counter() - t, answer.timing

    async def run() -> None:
        for b in batches:
            walls, latencies, timings = await _rounds(
                args, lambda _counted, b=b: [one(jpegs[i]) for i in range(b)]
            )
            p50, p95 = _p50_p95(latencies)
            print(f"| LocalInference, {b} at once (batches {_batch_sizes(timings)}) | {b} | "
                  f"{statistics.median(walls) * 1e3:.1f} | {p95 * 1e3:.1f} (request) | {p50 * 1e3:.1f} (request) | "
                  f"{b * len(walls) / sum(walls):.1f} |")  # fmt: skip

    asyncio.run(run())


def _http(args: argparse.Namespace, loaded, pool, prompts, batches, device) -> None:  # noqa: ANN001
    """The inference service as deployed, in this process: its model saved where SAMTUNE_SAM3_PATH points (as
    Meta's facebook/sam3 would be), loaded by the service's own path (an internal load call: from disk to the
    CPU, checked against the cache's budget, then to the device), served by uvicorn on 127.0.0.1 and asked by
    the API's client (`RemoteInference`), N requests at once. Then the same image asked again with new prompts
    against fresh images (the embedding cache), and a request with exemplar boxes."""
    import socket
    import threading

    import numpy as np
    import uvicorn
    from PIL import Image

    from app.inference.calls import ModelSpec, PredictCall
    from app.inference.remote import RemoteInference
    from app.inference.service import create_inference_app
    from app.models.schemas import PredictOptions
    from app.settings import Settings
    from trainer.base_model import META_BASE

    root = Path(tempfile.mkdtemp(prefix="samtune-gpu-http-"))
    where = args.save_dir or root / "sam3"
    t = time.perf_counter()
    loaded.model.save_pretrained(str(where))
    saved = time.perf_counter() - t
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=root / "data", sam3_path=where, inference_device=device,
                        batch_max_size=max(batches), inference_urls=f"http://127.0.0.1:{port}")  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(create_inference_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the inference service did not start within 60 s")
        time.sleep(0.05)
    model = ModelSpec(key=f"base:{META_BASE}", classes=prompts, base_name=META_BASE)
    jpegs = [_jpeg(picture) for picture in pool]
    rng = np.random.default_rng(1)
    size = pool[0].size

    def fresh_image() -> bytes:
        return _jpeg(Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)))

    async def run() -> None:
        client = RemoteInference(settings)
        try:
            t = time.perf_counter()
            await client.load(model)
            print(f"\nHTTP service on 127.0.0.1:{port}: model saved in {saved:.1f} s, loaded by the service "
                  f"(internal load call: disk, CPU, {device}) in {time.perf_counter() - t:.1f} s\n")  # fmt: skip
            print("| path | batch | p50 ms per round | p95 ms (request) | p50 ms (request) | images/s | "
                  "p50 decode / predict / encode ms |")  # fmt: skip
            print("| --- | --- | --- | --- | --- | --- | --- |")

            async def one(data: bytes, options: PredictOptions) -> tuple[float, str]:
                t = time.perf_counter()
                answer = await client.predict(PredictCall(model=model, options=options), data)
                if answer.status != 200:
                    raise RuntimeError(f"HTTP {answer.status}: {answer.body[:500]!r}")
                return time.perf_counter() - t, answer.timing

            def parts(timings: list[str]) -> str:
                return " / ".join(
                    f"{statistics.median(float(_timing(t, n) or 'nan') for t in timings):.1f}"
                    for n in ("decode", "predict", "encode")
                )

            options = PredictOptions(prompts=prompts, confidence=0.5)
            for b in batches:
                # Fresh bytes in every counted round: the service would otherwise reuse the embeddings of the last.
                walls, latencies, timings = await _rounds(args, lambda counted, b=b: [
                    one(fresh_image() if counted else jpegs[i], options) for i in range(b)])  # fmt: skip
                p50, p95 = _p50_p95(latencies)
                print(f"| HTTP service, {b} at once (batches {_batch_sizes(timings)}) | {b} | "
                      f"{statistics.median(walls) * 1e3:.1f} | {p95 * 1e3:.1f} | {p50 * 1e3:.1f} | "
                      f"{b * len(walls) / sum(walls):.1f} | {parts(timings)} |")  # fmt: skip

            # One client, as the UI's "try it": a fresh image, then the same image with other prompts.
            other = PredictOptions(prompts=[p + " part" for p in prompts], confidence=0.5)
            fresh, again, unexpected = [], [], 0
            for r in range(args.warmup + args.rounds):
                data = fresh_image()
                first, t1 = await one(data, options)
                second, t2 = await one(data, other)
                if r >= args.warmup:
                    unexpected += (_timing(t1, "embedding"), _timing(t2, "embedding")) != (
                        "computed",
                        "reused",
                    )
                    fresh.append(first)
                    again.append(second)
            f50, a50 = statistics.median(fresh), statistics.median(again)
            print(f"\nOne client: a fresh image p50 {f50 * 1e3:.1f} ms; the same image asked again with new "
                  f"prompts p50 {a50 * 1e3:.1f} ms ({f50 / a50:.1f}x faster; pairs not computed-then-reused: "
                  f"{unexpected})")  # fmt: skip

            w, h = size
            boxed = PredictOptions(
                prompts=prompts, boxes=[(w * 0.2, h * 0.2, w * 0.5, h * 0.6)], confidence=0.5
            )
            took = []
            for r in range(args.warmup + args.rounds):
                d, _ = await one(fresh_image(), boxed)
                if r >= args.warmup:
                    took.append(d)
            print(
                f"With an exemplar box: p50 {statistics.median(took) * 1e3:.1f} ms (one client, fresh images)"
            )
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    finally:
        server.should_exit = True


if __name__ == "__main__":
    main()
