"""Roboflow's Python package (`roboflow`, in .venv-roboflow made by `make install-dev`) against a real samtune
(`samtune up` on the embedded default: API, inference service, worker), with only API_URL and
INSTANCE_SEGMENTATION_URL pointed here: upload a COCO folder and one more image, generate a version, train it
to the end on the bundled base, predict and draw, download the version and import the download again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.servers import ServerProcess
from trainer.synth import HELD_OUT_DOMAINS, write_dataset

ROBOFLOW_PYTHON = Path(__file__).resolve().parents[2] / ".venv-roboflow" / "bin" / "python"
SAMTUNE = str(Path(sys.executable).with_name("samtune"))
PROJECT = "shapes-rf"

CLIENT = """
import json, sys, warnings
import roboflow
key, folder, extra_image, extra_annotation, probe, out = sys.argv[1:7]
rf = roboflow.Roboflow(api_key=key)
ws = rf.workspace()
ws.upload_dataset(folder, PROJECT, project_type="instance-segmentation")
project = ws.project(PROJECT)
uploaded = project.upload(extra_image, annotation_path=extra_annotation, split="train")
number = project.generate_version({"preprocessing": {"auto-orient": True,
                                   "resize": {"width": 112, "height": 112, "format": "Stretch to"}},
                                   "augmentation": {}})
version = project.version(number)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # version.model: the SDK's own deprecation
    # A model type is required (the SDK fails without one); 'sam3' is samtune's default base.
    model = version.train(model_type="sam3", epochs=EPOCHS)
prediction = model.predict(probe)
prediction.save(out + "/prediction.jpg")
dataset = version.download("coco", location=out + "/download")
print("RESULT " + json.dumps({
    "workspace": ws.url, "project": project.id, "project_type": project.type, "uploaded": uploaded[0],
    "version": number, "version_id": version.id, "model": type(model).__name__,
    "predictions": prediction.json()["predictions"], "download": dataset.location,
}))
"""
EPOCHS = 3


@dataclass
class Samtune:
    url: str
    key: str
    other_key: str
    env: dict[str, str]
    server: ServerProcess


def _new_key(env: dict[str, str], cwd: Path, workspace: str) -> str:
    made = subprocess.run([SAMTUNE, "keys", "create", "--workspace", workspace], env=env, check=True,
                          capture_output=True, cwd=cwd)  # fmt: skip
    return made.stdout.decode().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def samtune(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Samtune]:
    """`samtune up` in a data directory of its own, with a key in workspace 'alpha' and one in 'beta'."""
    base = tmp_path_factory.mktemp("rf-samtune")
    env = {**os.environ, "SAMTUNE_DATA_DIR": str(base / "data")}
    for name in ("SAMTUNE_DATABASE_URL", "SAMTUNE_STORAGE_URL", "SAMTUNE_BROKER_URL", "SAMTUNE_REDIS_URL"):
        env.pop(name, None)  # the embedded default: SQLite, a local folder, the server-less broker
    port = free_port()
    server = ServerProcess([SAMTUNE, "up", "--host", "127.0.0.1", "--port", str(port)], port=port, env=env,
                           log_path=base / "samtune.log", cwd=base, name="samtune up")  # fmt: skip
    with server.start(timeout=90, interval=0.3):
        yield Samtune(server.url, _new_key(env, base, "alpha"), _new_key(env, base, "beta"), env, server)


def _folder(root: Path) -> tuple[Path, Path, Path, Path]:
    """A COCO folder (train and valid, Roboflow's export layout) with an unlabeled image listed in its COCO file
    (the SDK sends its placeholder annotation) and one listed nowhere; one more image with its own COCO file; a
    test image to predict on."""
    concepts = list(HELD_OUT_DOMAINS["new-colours"])
    data = write_dataset(root / "synth", concepts, {"train": 7, "valid": 2, "test": 2}, size=112, seed=3,
                         max_objects=2)  # fmt: skip
    folder = root / "upload"
    for split in ("train", "valid", "test"):
        # As Roboflow's COCO export writes them (the SDK's folder parser reads `info` and `licenses`).
        path = data / split / "_annotations.coco.json"
        path.write_text(
            json.dumps(json.loads(path.read_text()) | {"info": {"description": "synth"}, "licenses": []})
        )
    for split in ("train", "valid"):
        shutil.copytree(data / split, folder / split)
    coco_path = folder / "train" / "_annotations.coco.json"
    coco = json.loads(coco_path.read_text())
    # train_00005.jpg stays listed without annotations; train_00006.jpg is listed nowhere (no annotation sent).
    listed = [im for im in coco["images"] if im["file_name"] != "train_00006.jpg"]
    unlabeled = next(im for im in listed if im["file_name"] == "train_00005.jpg")
    coco["images"] = listed
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != unlabeled["id"]
                           and a["image_id"] in {im["id"] for im in listed}]  # fmt: skip
    coco_path.write_text(json.dumps(coco))
    extra = root / "extra"
    extra.mkdir()
    shutil.copy(data / "test" / "test_00000.jpg", extra / "extra.jpg")
    test_coco = json.loads((data / "test" / "_annotations.coco.json").read_text())
    first = test_coco["images"][0]
    test_coco["images"] = [first | {"file_name": "extra.jpg"}]
    test_coco["annotations"] = [a for a in test_coco["annotations"] if a["image_id"] == first["id"]]
    (extra / "extra.json").write_text(json.dumps(test_coco))
    return folder, extra / "extra.jpg", extra / "extra.json", data / "test" / "test_00001.jpg"


@pytest.mark.timeout(420)
def test_the_roboflow_package_uploads_trains_predicts_and_downloads(samtune: Samtune, tmp_path: Path) -> None:
    assert ROBOFLOW_PYTHON.exists(), (
        "make install-dev creates .venv-roboflow with Roboflow's roboflow package"
    )
    folder, extra_image, extra_annotation, probe = _folder(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "client.py"
    script.write_text(CLIENT.replace("PROJECT", repr(PROJECT)).replace("EPOCHS", str(EPOCHS)))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "API_URL": samtune.url,
           "INSTANCE_SEGMENTATION_URL": samtune.url, "ROBOFLOW_CONFIG_DIR": str(tmp_path / "rf-config.json")}  # fmt: skip
    done = subprocess.run([str(ROBOFLOW_PYTHON), str(script), samtune.key, str(folder), str(extra_image),
                           str(extra_annotation), str(probe), str(out)], capture_output=True, text=True, env=env,
                          timeout=360, cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:] + "\n" + samtune.server.log_tail()
    # upload_dataset reports a failed image or annotation on stdout and carries on: none may have failed.
    assert "[ERR" not in output and "annotations = ERR" not in output, output[-4000:]
    assert samtune.key not in output, "the key was printed"
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    assert result["workspace"] == "alpha" and result["project"] == f"alpha/{PROJECT}"
    assert result["project_type"] == "instance-segmentation"
    assert result["model"] == "InstanceSegmentationModel"

    api = httpx.Client(base_url=samtune.url, headers={"Authorization": f"Bearer {samtune.key}"}, timeout=60)
    dataset = next(d for d in api.get("/api/v1/datasets").json()["items"] if d["slug"] == PROJECT)
    # 7 train images (one unlabeled, one without a COCO entry) + the extra one; 2 valid.
    assert dataset["splits"]["train"]["images"] == 8 and dataset["splits"]["valid"]["images"] == 2, dataset
    unlabeled = api.get(
        f"/api/v1/datasets/{dataset['id']}/images", params={"split": "train", "limit": 100}
    ).json()
    counts = {im["file_name"]: im["annotation_count"] for im in unlabeled["items"]}
    assert counts["train_00005.jpg"] == 0 and counts["train_00006.jpg"] == 0, counts
    assert counts["extra.jpg"] > 0 and sum(counts.values()) == dataset["splits"]["train"]["annotations"]
    assert {c["name"] for c in dataset["classes"]} == {c.name for c in HELD_OUT_DOMAINS["new-colours"]}

    # The training was a samtune job on that version, on the bundled base, run to the end.
    versions = api.get(f"/api/v1/datasets/{dataset['id']}/versions").json()["items"]
    version = next(v for v in versions if v["number"] == result["version"])
    assert version["status"] == "ready" and version["spec"]["preprocessing"]["resize"]["width"] == 112
    jobs = [j for j in api.get("/api/v1/jobs").json()["items"] if j["version_id"] == version["id"]]
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded", jobs
    assert jobs[0]["hyperparameters"]["epochs"]["value"] == EPOCHS
    # The version's model (what model.predict reached) is that job's. The upload has no test split, so there is
    # no base-vs-fine-tuned comparison that could hold it back as a regression, whatever three epochs achieve.
    model = api.get(f"/api/v1/models/{jobs[0]['model_id']}").json()
    assert model["version_name"] == f"{PROJECT}/{result['version']}" and model["regression"] is False, model

    # The prediction came back in Roboflow's shape and was drawn.
    for p in result["predictions"]:
        assert {"x", "y", "width", "height", "confidence", "class", "points"} <= p.keys()
        assert p["confidence"] >= 0.4  # the SDK's default confidence=40 is a percentage
    assert (out / "prediction.jpg").stat().st_size > 0

    # The download is the version's COCO export; imported again it holds the same images and annotations.
    downloaded = Path(result["download"])
    assert {p.name for p in downloaded.iterdir()} >= {"train", "valid"}
    archive = shutil.make_archive(str(tmp_path / "again"), "zip", downloaded)
    again = api.post("/api/v1/datasets", json={"name": "reimported"}).json()
    with open(archive, "rb") as f:
        up = api.post(f"/api/v1/datasets/{again['id']}/uploads", files={"file": ("again.zip", f)})
    assert up.status_code == 201, up.text
    reimported = api.get(f"/api/v1/datasets/{again['id']}").json()
    for split, counts_ in version["splits"].items():
        assert reimported["splits"][split]["images"] == counts_["images"], (split, reimported, version)
        assert reimported["splits"][split]["annotations"] == counts_["annotations"], (
            split,
            reimported,
            version,
        )
    api.close()
