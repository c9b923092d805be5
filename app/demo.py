"""`samtune demo`: the whole product on a domain the base model has never seen, through the public API.

It makes a dataset of the held-out "new-colours" concepts (purple and orange shapes: the bundled base
was pretrained on red, green, blue and yellow only), uploads it, freezes a version, previews and starts a
fine-tuning job, follows its live event stream, and prints the base model's and the fine-tuned model's
mask AP on the test split. Everything goes over HTTP, as any client would do it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from trainer.synth import HELD_OUT_DOMAINS, write_dataset

DOMAIN = "new-colours"
SPLITS = {"train": 60, "valid": 20, "test": 40}


class DemoFailed(Exception):
    pass


def _check(response: httpx.Response, expected: int) -> Any:  # the JSON body: an object or a list
    if response.status_code != expected:
        raise DemoFailed(f"{response.request.method} {response.request.url.path} answered "
                         f"{response.status_code}: {response.text[:500]}")  # fmt: skip
    return response.json()


def _sse(client: httpx.Client, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a Server-Sent Events stream, reconnecting with Last-Event-ID if it drops."""
    last_id: str | None = None
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream("GET", path, headers=headers, timeout=httpx.Timeout(10.0, read=60.0)) as r:
                if r.status_code != 200:
                    raise DemoFailed(f"event stream answered {r.status_code}")
                event, data = "message", ""
                for line in r.iter_lines():
                    if line.startswith("id:"):
                        last_id = line[3:].strip()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
                    elif not line and data:
                        yield event, json.loads(data)
                        event, data = "message", ""
            return
        except httpx.TransportError:
            time.sleep(1.0)


def run_demo(
    url: str, api_key: str, *, say: Callable[[str], None] = print, size: int = 112
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
        base = next(m for m in _check(client.get("/api/v1/base-models"), 200) if m["default"])
        say(f"base model: {base['name']}: {base['description']}")

        work = Path(tempfile.mkdtemp(prefix="samtune-demo-"))
        try:
            concepts = list(HELD_OUT_DOMAINS[DOMAIN])
            folder = write_dataset(work / DOMAIN, concepts, SPLITS, size=size, seed=2026)
            archive = shutil.make_archive(str(work / DOMAIN), "zip", folder)
            say(f"dataset: {sum(SPLITS.values())} synthetic images of {', '.join(c.name for c in concepts)} "
                "(concepts the base model never saw)")  # fmt: skip
            dataset = _check(
                client.post("/api/v1/datasets", json={"name": f"demo {DOMAIN} {int(time.time())}"}), 201
            )
            with open(archive, "rb") as f:
                _check(
                    client.post(
                        f"/api/v1/datasets/{dataset['id']}/uploads", files={"file": (f"{DOMAIN}.zip", f)}
                    ),
                    201,
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)

        # The bundled base works at 112 px: a version at that size keeps the demo to minutes on a CPU.
        spec = {"preprocessing": {"resize": {"width": size, "height": size}}}
        version = _check(client.post(f"/api/v1/datasets/{dataset['id']}/versions", json=spec), 202)
        while version["status"] == "building":
            time.sleep(0.5)
            version = _check(client.get(f"/api/v1/versions/{version['id']}"), 200)
        if version["status"] != "ready":
            raise DemoFailed(f"version build {version['status']}: {version.get('error')}")
        say(f"version {version['name']} ready: {json.dumps(version['splits'])}")

        request = {"version_id": version["id"], "base_model": base["name"]}
        preview = _check(client.post("/api/v1/jobs/preview", json=request), 200)
        hp = preview["hyperparameters"]
        say(f"plan: {preview['mode']} mode on {preview['device']}, {hp['epochs']['value']} epochs, "
            f"{hp['total_steps']['value']} steps, about {preview['estimate']['seconds']:.0f} s "
            f"({hp['mode']['reason']})")  # fmt: skip
        job = _check(client.post("/api/v1/jobs", json=request), 201)
        say(f"job {job['id']} queued (position {job['queue_position']})")

        started = time.monotonic()
        for event, data in _sse(client, f"/api/v1/jobs/{job['id']}/events"):
            if event == "metrics" and "valid_segm_AP50" in data["metrics"]:
                say(f"  step {data['step']:>5}  epoch {data['epoch']:5.1f}  "
                    f"valid mask AP50 {data['metrics']['valid_segm_AP50']:.3f}")  # fmt: skip
            elif event in ("status", "event"):
                say(f"  [{data.get('kind')}] {data.get('message')}")
        job = _check(client.get(f"/api/v1/jobs/{job['id']}"), 200)
        if job["status"] != "succeeded":
            raise DemoFailed(f"job {job['status']}: {job.get('error')}")
        base_m, tuned = job["test"]["base"]["summary"], job["test"]["fine_tuned"]["summary"]
        lift = tuned["segm_AP50"] / base_m["segm_AP50"] if base_m["segm_AP50"] > 0 else float("inf")
        say(
            f"\ntest split ({SPLITS['test']} images), {time.monotonic() - started:.0f} s of training and evaluation:"
        )
        say("| model | mask AP | mask AP50 | box AP50 |\n| --- | --- | --- | --- |")
        say(
            f"| {job['base_model']} (zero-shot) | {base_m['segm_AP']:.3f} | {base_m['segm_AP50']:.3f} | {base_m['bbox_AP50']:.3f} |"
        )
        say(
            f"| fine-tuned ({job['model_id']}) | {tuned['segm_AP']:.3f} | {tuned['segm_AP50']:.3f} | {tuned['bbox_AP50']:.3f} |"
        )
        say(f"lift: mask AP50 {base_m['segm_AP50']:.3f} -> {tuned['segm_AP50']:.3f}"
            + (f" ({lift:.1f}x)" if lift != float("inf") else " (the base found none of these objects)"))  # fmt: skip
        return {"job": job, "lift": lift}
