"""Upload throughput and API memory for a large zip.

Starts `samtune serve` (embedded default, fresh data dir), builds a zip of unique JPEGs of about
--size-mb megabytes, uploads it with a streaming client, and prints MB/s and the API process's peak RSS,
next to a baseline measured in the same run: copying the same zip file on the same disk.

    .venv/bin/python bench/upload.py --size-mb 1024

With --coco-mb the zip is a COCO dataset instead: a generated annotation file of about that many megabytes
(polygons of 20 points, about 2,170 annotations per MB, as in the file issue 20 measured: 433k in 200 MB) and
small unique JPEGs it refers to. The goal (issue 20): a 200 MB COCO file raises the API's RSS by at most 500 MB.

    .venv/bin/python bench/upload.py --coco-mb 200
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image


def build_zip(path: Path, size_mb: int) -> int:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(1200, 1600, 3), dtype=np.uint8)
    target = size_mb * 2**20
    n = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        while path.stat().st_size < target:
            # A different patch per image: every file is unique, so deduplication stores each one.
            img = base.copy()
            img[(n * 7) % 1100 : (n * 7) % 1100 + 100, :100] = n % 256
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=92)
            zf.writestr(f"images/{n:05d}.jpg", buf.getvalue())
            n += 1
            if n % 100 == 0:
                zf.fp.flush()
    return n


def write_coco(path: Path, json_mb: float, n_images: int, seed: int = 0) -> int:
    """A COCO file of about `json_mb` MB over `n_images` 640x480 images named NNNNN.jpg; the annotation count."""
    rng = np.random.default_rng(seed)
    target = int(json_mb * 1_000_000)
    n = 0
    with path.open("w") as f:
        images = [
            {"id": i, "file_name": f"{i:05d}.jpg", "width": 640, "height": 480} for i in range(n_images)
        ]
        categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(10)]
        f.write('{"info": {"description": "bench/upload.py"}, "images": ' + json.dumps(images))
        f.write(', "categories": ' + json.dumps(categories) + ', "annotations": [')
        while f.tell() < target:
            pts = rng.uniform(10, 470, 40).round(2)
            xs, ys = pts[0::2], pts[1::2]
            box = [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
            f.write(("," if n else "") + json.dumps({
                "id": n, "image_id": n % n_images, "category_id": n % 10, "iscrowd": 0, "area": 1000.0,
                "bbox": [round(float(v), 2) for v in box], "segmentation": [[float(v) for v in pts]],
            }))  # fmt: skip
            n += 1
        f.write("]}")
    return n


def build_coco_zip(path: Path, json_mb: float, n_images: int) -> tuple[int, int]:
    """A zip of a COCO file (deflated) and its unique JPEGs: (images, annotations)."""
    coco = path.with_suffix(".json")
    n_annotations = write_coco(coco, json_mb, n_images)
    base = np.full((480, 640, 3), 128, dtype=np.uint8)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(coco, "train/_annotations.coco.json")
        for i in range(n_images):
            img = base.copy()
            img[:16, :16] = np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=80)
            zf.writestr(f"train/{i:05d}.jpg", buf.getvalue(), compress_type=zipfile.ZIP_STORED)
    coco.unlink()
    return n_images, n_annotations


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--coco-mb", type=float, default=None, help="upload a COCO file this large instead")
    parser.add_argument("--coco-images", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="samtune-bench-"))
    try:
        zpath = work / "upload.zip"
        t0 = time.perf_counter()
        n_annotations = 0
        if args.coco_mb:
            n_images, n_annotations = build_coco_zip(zpath, args.coco_mb, args.coco_images)
            with zipfile.ZipFile(zpath) as zf:
                json_bytes = zf.getinfo("train/_annotations.coco.json").file_size
        else:
            n_images = build_zip(zpath, args.size_mb)
        size = zpath.stat().st_size
        print(
            f"built {zpath.name}: {size / 2**20:.0f} MiB, {n_images} JPEGs, {n_annotations} annotations "
            f"in {time.perf_counter() - t0:.0f}s"
        )

        t0 = time.perf_counter()
        shutil.copyfile(zpath, work / "copy.zip")
        os.sync()
        copy_s = time.perf_counter() - t0
        (work / "copy.zip").unlink()

        env = {
            **os.environ,
            "SAMTUNE_DATA_DIR": str(work / "data"),
            "SAMTUNE_MAX_UPLOAD_BYTES": str(8 * 2**30),
        }
        cli = [sys.executable, "-m", "app.cli"]
        key = subprocess.run([*cli, "bootstrap"], env=env, check=True, capture_output=True, text=True)
        key = key.stdout.strip().splitlines()[-1]
        port = free_port()
        server = subprocess.Popen(
            [*cli, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            proc = psutil.Process(server.pid)
            idle_rss = proc.memory_info().rss
            peak = [idle_rss]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    try:
                        peak[0] = max(peak[0], proc.memory_info().rss)
                    except psutil.NoSuchProcess:
                        return
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            headers = {"Authorization": f"Bearer {key}"}
            ds = httpx.post(f"{base}/api/v1/datasets", json={"name": "bench"}, headers=headers).json()
            t0 = time.perf_counter()
            with open(zpath, "rb") as f:
                r = httpx.post(
                    f"{base}/api/v1/datasets/{ds['id']}/uploads",
                    files={"file": ("upload.zip", f, "application/zip")},
                    headers=headers,
                    timeout=3600,
                )
            upload_s = time.perf_counter() - t0
            done.set()
            sampler.join()
            r.raise_for_status()
            added = r.json()["added"]["train"]
            assert added["images"] == n_images, (added, n_images)
            assert added["annotations"] == n_annotations, (added, n_annotations)
        finally:
            server.terminate()
            server.wait(timeout=60)

        mib = size / 2**20
        grew = peak[0] - idle_rss
        print()
        print("| measure | value |")
        print("| --- | --- |")
        print(f"| zip | {mib:.0f} MiB, {n_images} images |")
        if args.coco_mb:
            print(f"| COCO file | {json_bytes / 1e6:.0f} MB, {n_annotations} annotations |")
            print(
                f"| API RSS growth / COCO file size | {grew / json_bytes:.2f}x (goal: +500 MB for 200 MB) |"
            )
        print(f"| upload (HTTP, validate, store, insert) | {upload_s:.1f} s = {mib / upload_s:.1f} MiB/s |")
        print(f"| baseline: copy the zip on the same disk | {copy_s:.1f} s = {mib / copy_s:.1f} MiB/s |")
        print(f"| upload time / copy time | {upload_s / copy_s:.1f}x |")
        print(
            f"| API RSS idle -> peak | {idle_rss / 2**20:.0f} MiB -> {peak[0] / 2**20:.0f} MiB "
            f"(+{(peak[0] - idle_rss) / 2**20:.0f} MiB, {(peak[0] - idle_rss) / size * 100:.1f}% of the zip) |"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
