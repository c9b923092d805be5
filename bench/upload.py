"""Upload throughput and API memory for a large zip.

Starts `samtune serve` (embedded default, fresh data dir), builds a zip of unique JPEGs of about
--size-mb megabytes, uploads it with a streaming client, and prints MB/s and the API process's peak RSS,
next to a baseline measured in the same run: copying the same zip file on the same disk.

    .venv/bin/python bench/upload.py --size-mb 1024
"""

from __future__ import annotations

import argparse
import io
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="samtune-bench-"))
    try:
        zpath = work / "upload.zip"
        t0 = time.perf_counter()
        n_images = build_zip(zpath, args.size_mb)
        size = zpath.stat().st_size
        print(
            f"built {zpath.name}: {size / 2**20:.0f} MiB, {n_images} JPEGs in {time.perf_counter() - t0:.0f}s"
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
            added = r.json()["added"]["train"]["images"]
            assert added == n_images, (added, n_images)
        finally:
            server.terminate()
            server.wait(timeout=60)

        mib = size / 2**20
        print()
        print("| measure | value |")
        print("| --- | --- |")
        print(f"| zip | {mib:.0f} MiB, {n_images} images |")
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
