"""Version build speed and memory against a naive baseline, in one run.

Generates N JPEGs of mixed sizes (up to 4000x3000) with polygon annotations, uploads them into a dataset
(embedded default: SQLite + local storage), then times in the same process:
  - baseline: for each image, PIL open, resize to 1008x1008, save as JPEG; one thread;
  - samtune: VersionBuilder.build (JPEG draft decoding, reducing_gap, a thread pool over the cores,
    annotations transformed, COCO files written).
Peak RSS above the starting point is sampled for both. A second, smaller build shows that memory does
not grow with the number of images.

    .venv/bin/python bench/versions.py --images 500
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import psutil
from fastapi.testclient import TestClient
from PIL import Image

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, transaction
from app.core.storage import make_storage
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.settings import Settings
from app.versions.builder import VersionBuilder

SIZES = [(4000, 3000), (3000, 4000), (2048, 1536), (1920, 1080), (1280, 960), (800, 600), (640, 480)]


def make_zip(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            w, h = SIZES[i % len(SIZES)]
            # Smooth content with some texture compresses like a photo, unlike pure noise.
            small = rng.integers(0, 255, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((w, h), Image.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            zf.writestr(f"images/{i:04d}.jpg", buf.getvalue())
            images.append({"id": i + 1, "file_name": f"{i:04d}.jpg", "width": w, "height": h})
            for _ in range(3):
                cx, cy, r = (
                    rng.uniform(0.2, 0.8) * w,
                    rng.uniform(0.2, 0.8) * h,
                    rng.uniform(0.05, 0.15) * min(w, h),
                )
                angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
                poly = (
                    np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel().round(1).tolist()
                )
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                    "bbox": [cx - r, cy - r, 2 * r, 2 * r], "segmentation": [poly],
                                    "area": np.pi * r * r, "iscrowd": 0})  # fmt: skip
        doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "blob"}]}
        zf.writestr("annotations.json", json.dumps(doc))


class PeakRSS:
    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def naive_baseline(sources: list[bytes], out_dir: Path) -> float:
    t0 = time.perf_counter()
    for i, data in enumerate(sources):
        img = Image.open(io.BytesIO(data)).convert("RGB")
        img.resize((1008, 1008)).save(out_dir / f"{i}.jpg", format="JPEG", quality=95)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--small", type=int, default=100, help="a second build, to compare memory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="samtune-bench-versions-"))
    try:
        settings = Settings(data_dir=work / "data")
        migrate.upgrade(settings.database_url)
        factory = make_sessionmaker(make_engine(settings.database_url))
        with transaction(factory) as session:
            _, key = create_key_for_workspace(session, "bench")
        auth = {"Authorization": f"Bearer {key}"}
        storage = make_storage(settings)
        results = {}
        with TestClient(create_app(settings)) as client:
            for label, n in (("small", args.small), ("full", args.images)):
                zpath = work / f"{label}.zip"
                t0 = time.perf_counter()
                make_zip(zpath, n, seed=n)
                print(
                    f"generated {n} images ({zpath.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f}s"
                )
                ds = client.post("/api/v1/datasets", json={"name": label}, headers=auth).json()
                with open(zpath, "rb") as f:
                    r = client.post(
                        f"/api/v1/datasets/{ds['id']}/uploads", files={"file": (zpath.name, f)}, headers=auth
                    )
                r.raise_for_status()
                version = client.post(f"/api/v1/datasets/{ds['id']}/versions", json={}, headers=auth).json()
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    status = VersionBuilder(factory, storage, settings).build(uuid.UUID(version["id"]))
                    built = time.perf_counter() - t0
                assert status == "ready", client.get(f"/api/v1/versions/{version['id']}", headers=auth).json()
                results[label] = (n, built, mem.delta_mib)

                if label == "full":
                    with zipfile.ZipFile(zpath) as zf:
                        sources = [zf.read(name) for name in zf.namelist() if name.endswith(".jpg")]
                    out = work / "naive"
                    out.mkdir()
                    with PeakRSS() as base_mem:
                        naive = naive_baseline(sources, out)
                    results["naive"] = (len(sources), naive, base_mem.delta_mib)
                    del sources

        n, built, mem = results["full"]
        n_base, naive, base_mem = results["naive"]
        ns, small_s, small_mem = results["small"]
        print()
        print("| run | images | seconds | images/s | peak RSS above start |")
        print("| --- | --- | --- | --- | --- |")
        print(
            f"| naive baseline (PIL open, resize, save; one thread) | {n_base} | {naive:.1f} | {n_base / naive:.1f} | {base_mem:.0f} MiB |"
        )
        print(f"| samtune VersionBuilder | {n} | {built:.1f} | {n / built:.1f} | {mem:.0f} MiB |")
        print(
            f"| samtune VersionBuilder (smaller dataset) | {ns} | {small_s:.1f} | {ns / small_s:.1f} | {small_mem:.0f} MiB |"
        )
        print()
        print(f"speed-up over the baseline: {naive / built:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
