"""What a prediction returns (issue 16): one mask per object (mask NMS, Roboflow's `iou_threshold` and
`class_agnostic_nms`, on every predict route and on batch prediction), the prompts a model was trained with
(its card's `prompts`), and Roboflow's defaults (`confidence` 0.4, `visualize_predictions`)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from app.inference.calls import ModelSpec, PredictCall
from app.inference.local import LocalInference
from app.models.masks import rle_json
from app.models.schemas import PredictOptions
from app.settings import Settings
from tests.support.jobs import JobKit
from trainer.base_model import EMBEDDED_BASE_DIR, LoadedModel, class_prompts, load_base_model
from trainer.evaluate import mask_nms
from trainer.predict import Predictor
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset

OVERRIDE = {"purple shape": "violet blob"}


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _square(y0: int, y1: int, x0: int, x1: int) -> dict:
    m = np.zeros((40, 40), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return _rle(m)


def _max_pair_iou(rles: list[dict]) -> float:
    if len(rles) < 2:
        return 0.0
    ious = np.asarray(mask_utils.iou(rles, rles, [0] * len(rles)), dtype=float)
    np.fill_diagonal(ious, 0.0)
    return float(ious.max())


def _drawn(rles: list[dict]) -> list[dict]:
    """The masks with pixels: an empty mask overlaps nothing, so NMS never merges it (its box may be right)."""
    return [r for r in rles if mask_utils.area(r) > 0]


def _overlaps_within_class(predictions: list[dict]) -> float:
    by_class: dict[str, list[dict]] = {}
    for p in predictions:
        by_class.setdefault(p["class"], []).append(p["rle"])
    return max((_max_pair_iou(r) for r in by_class.values()), default=0.0)


# --- the one mask NMS, at the function level ------------------------------------------------------------


def test_mask_nms_drops_duplicates_by_threshold_and_group() -> None:
    best = _square(0, 20, 0, 20)  # 400 px
    duplicate = _square(0, 20, 0, 18)  # IoU 0.9 with best
    half = _square(0, 20, 10, 30)  # IoU 1/3 with best
    elsewhere = _square(25, 40, 25, 40)
    rles = [best, duplicate, half, elsewhere]  # by descending score
    assert mask_nms(rles, 0.5) == [0, 2, 3]
    assert mask_nms(rles, 0.3) == [0, 3], "a lower threshold removes the partly overlapping one too"
    assert mask_nms(rles, 1.0) == [0, 1, 2, 3], "IoU never exceeds 1: every mask is kept"
    # Per class: a duplicate of another prompt's mask is not this prompt's duplicate.
    assert mask_nms(rles, 0.5, groups=[0, 1, 0, 0]) == [0, 1, 2, 3]
    assert mask_nms(rles, 0.5, groups=[0, 0, 1, 1]) == [0, 2, 3]
    with pytest.raises(ValueError):
        mask_nms(rles, 0.5, groups=[0, 1])


# --- the prompts a model was trained with ----------------------------------------------------------------


def test_class_prompts_from_card_or_training_overrides() -> None:
    classes = ["purple shape", "orange shape"]
    card = {"classes": classes, "prompts": ["violet blob", "orange shape"]}
    assert class_prompts(classes, card) == ["violet blob", "orange shape"]
    assert class_prompts(["orange shape", "purple shape"], card) == ["orange shape", "violet blob"]
    assert class_prompts(classes, {"prompts": OVERRIDE}) == ["violet blob", "orange shape"]  # TrainConfig's
    assert class_prompts(classes, None) == classes  # not a samtune output
    assert class_prompts(classes, {"classes": classes}) == classes  # a card from before prompts were kept
    assert class_prompts(["new class"], card) == ["new class"]


def _tiny_with_card(directory: Path, card: dict[str, Any]) -> Path:
    """The bundled tiny model, copied with a card of our own (as a fine-tuned model's directory is)."""
    shutil.copytree(EMBEDDED_BASE_DIR, directory)
    (directory / "samtune_model_card.json").write_text(json.dumps(card))
    return directory


@pytest.fixture(scope="module")
def shapes_image(tmp_path_factory: pytest.TempPathFactory) -> Image.Image:
    data = write_dataset(
        tmp_path_factory.mktemp("shapes"), list(PRETRAIN_CONCEPTS), {"test": 1}, size=112, seed=11
    )
    return Image.open(sorted((data / "test").glob("*.jpg"))[0]).convert("RGB")


def test_predict_asks_the_card_prompts_and_answers_class_names(
    tmp_path: Path, shapes_image: Image.Image
) -> None:
    """A model whose card says class "purple shape" was trained as "red shape" is asked "red shape" (what the
    bundled model knows) and answers "purple shape"; prompts sent are asked as given."""
    classes = ["purple shape", "green shape"]
    directory = _tiny_with_card(tmp_path / "m", {"classes": classes, "prompts": ["red shape", "green shape"]})
    loaded: LoadedModel = load_base_model(str(directory))
    assert loaded.class_prompts(classes) == ["red shape", "green shape"]
    reference = Predictor(loaded)
    settings = Settings(data_dir=tmp_path / "data")
    inference = LocalInference(settings, storage=None)  # type: ignore[arg-type]
    inference.cache.get(
        "card-test", lambda: directory
    )  # loaded from the directory, as if fetched from storage
    spec = ModelSpec(
        key="card-test", classes=classes, model_id=uuid.uuid4(), prefix="unused", sha256="unused"
    )
    png = io.BytesIO()
    shapes_image.save(png, format="PNG")

    def ask(prompts: list[str] | None) -> dict[str, Any]:
        options = PredictOptions(prompts=prompts, confidence=0.05, max_detections=100, mask_format="rle")
        found = asyncio.run(inference.predict(PredictCall(model=spec, options=options), png.getvalue()))
        assert found.status == 200, found.body
        return json.loads(found.body)

    answer = ask(None)
    trained = reference.predict(shapes_image, ["red shape", "green shape"], confidence=0.05)
    bare = reference.predict(shapes_image, classes, confidence=0.05)
    got = [(p["class"], p["class_id"], p["confidence"], p["rle"]["counts"]) for p in answer["predictions"]]
    assert got == [
        (classes[p.prompt_index], p.prompt_index, round(p.score, 4), rle_json(p.rle)["counts"])
        for p in trained
    ]
    assert any(p["class"] == "purple shape" for p in answer["predictions"])
    assert [round(p.score, 4) for p in bare] != [p["confidence"] for p in answer["predictions"]], (
        "not the bare names"
    )
    sent = ask(["purple shape"])
    assert [(p["class"], p["confidence"]) for p in sent["predictions"]] == [
        (p.prompt, round(p.score, 4))
        for p in reference.predict(shapes_image, ["purple shape"], confidence=0.05)
    ]


def test_predictor_nms_default_threshold_and_class_agnostic(shapes_image: Image.Image) -> None:
    predictor = Predictor(load_base_model(str(EMBEDDED_BASE_DIR)))
    names = [c.name for c in PRETRAIN_CONCEPTS]
    raw = predictor.predict(shapes_image, names, confidence=0.05, nms_iou=None)
    merged = predictor.predict(shapes_image, names, confidence=0.05)
    kept_all = predictor.predict(shapes_image, names, confidence=0.05, nms_iou=1.0)
    assert [p.score for p in kept_all] == [p.score for p in raw]
    for name in names:
        assert _max_pair_iou([p.rle for p in merged if p.prompt == name]) <= 0.5
    assert max(_max_pair_iou([p.rle for p in raw if p.prompt == n]) for n in names) > 0.5, "duplicates exist"
    assert len(merged) < len(raw)
    # The same prompt twice: per prompt, each copy keeps its masks; across prompts, one copy is left.
    twice = ["red shape", "red shape"]
    per_prompt = _drawn([p.rle for p in predictor.predict(shapes_image, twice, confidence=0.05)])
    agnostic = predictor.predict(shapes_image, twice, confidence=0.05, class_agnostic_nms=True)
    assert len(per_prompt) == 2 * len(_drawn([p.rle for p in agnostic])) > 0
    assert _max_pair_iou(per_prompt) == 1.0 and _max_pair_iou([p.rle for p in agnostic]) <= 0.5
    # The cap comes after NMS: the best distinct masks, as many as asked when there are that many.
    top = predictor.predict(shapes_image, names, confidence=0.0, max_detections=5)
    assert [p.score for p in top] == [
        p.score for p in predictor.predict(shapes_image, names, confidence=0.0)
    ][:5]


# --- on the routes ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompted_model(jobs_kit: JobKit) -> str:
    """A model of the kit's version trained with "purple shape" asked as "violet blob"."""
    hyperparameters = jobs_kit.job_body()["hyperparameters"] | {"prompts": OVERRIDE}
    job = jobs_kit.create(hyperparameters=hyperparameters)
    assert jobs_kit.run(job["id"]) == "succeeded"
    return str(jobs_kit.get(job["id"])["model_id"])


def _download(kit: JobKit, model_id: str, directory: Path) -> LoadedModel:
    r = kit.client.get(f"/api/v1/models/{model_id}/download", headers=kit.auth)
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(directory)
    return load_base_model(str(directory))


def test_native_predict_merges_duplicates(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    kit = jobs_kit
    url = f"/api/v1/models/{model_id}/predict"

    def ask(**options: Any) -> list[dict]:
        data = {"confidence": "0.0", "mask_format": "rle"} | {k: str(v) for k, v in options.items()}
        r = kit.client.post(url, headers=kit.auth, files={"image": ("x.jpg", test_image)}, data=data)
        assert r.status_code == 200, r.text
        return r.json()["predictions"]

    default, kept = ask(), ask(iou_threshold=1.0)
    assert _overlaps_within_class(default) <= 0.5
    assert _overlaps_within_class(kept) > 0.5 and len(kept) > len(default)
    assert len(ask(iou_threshold=0.2)) <= len(default)
    b64 = base64.b64encode(test_image).decode()
    twice = {
        "image": b64,
        "confidence": 0.0,
        "mask_format": "rle",
        "prompts": ["purple shape", "purple shape"],
    }
    per_class = kit.client.post(url, headers=kit.auth, json=twice).json()["predictions"]
    agnostic = kit.client.post(url, headers=kit.auth, json=twice | {"class_agnostic_nms": True}).json()[
        "predictions"
    ]
    per_class_masks, agnostic_masks = (
        _drawn([p["rle"] for p in per_class]),
        _drawn([p["rle"] for p in agnostic]),
    )
    assert len(per_class_masks) == 2 * len(agnostic_masks) > 0
    assert _max_pair_iou(agnostic_masks) <= 0.5 < _max_pair_iou(per_class_masks)
    bad = kit.client.post(url, headers=kit.auth, json=twice | {"iou_threshold": 0})
    assert bad.status_code == 422 and "iou_threshold" in bad.text


def test_base_model_predict_merges_duplicates(jobs_kit: JobKit, shapes_image: Image.Image) -> None:
    buf = io.BytesIO()
    shapes_image.save(buf, format="PNG")
    url = "/api/v1/base-models/samtune/sam3-tiny-shapes/predict"
    answers = [
        jobs_kit.client.post(url, headers=jobs_kit.auth, files={"image": ("x.png", buf.getvalue())},
                             data={"confidence": "0.05", "mask_format": "rle", "iou_threshold": t}).json()
        for t in ("0.5", "1")
    ]  # fmt: skip
    default, kept = (a["predictions"] for a in answers)
    assert _overlaps_within_class(default) <= 0.5 < _overlaps_within_class(kept)


def test_predict_asks_trained_prompts(jobs_kit: JobKit, prompted_model: str, test_image: bytes,
                                      tmp_path: Path) -> None:  # fmt: skip
    kit = jobs_kit
    loaded = _download(kit, prompted_model, tmp_path)
    classes = kit.client.get(f"/api/v1/models/{prompted_model}", headers=kit.auth).json()["classes"]
    assert loaded.card is not None and "purple shape" in classes
    prompts = [OVERRIDE.get(c, c) for c in classes]
    assert loaded.card["prompts"] == prompts and loaded.class_prompts(classes) == prompts
    image = Image.open(io.BytesIO(test_image))
    trained = Predictor(loaded).predict(image, prompts, confidence=0.05)
    bare = Predictor(loaded).predict(image, classes, confidence=0.05)
    assert [round(p.score, 4) for p in trained] != [round(p.score, 4) for p in bare]
    r = kit.client.post(f"/api/v1/models/{prompted_model}/predict", headers=kit.auth,
                        files={"image": ("x.jpg", test_image)}, data={"confidence": "0.05"})  # fmt: skip
    got = [(p["class"], p["class_id"], p["confidence"]) for p in r.json()["predictions"]]
    assert got == [(classes[p.prompt_index], p.prompt_index, round(p.score, 4)) for p in trained]
    assert "violet blob" not in {c for c, _, _ in got}


def test_batch_prediction_asks_trained_prompts_and_merges(jobs_kit: JobKit, prompted_model: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    from app.models.batches import PER_IMAGE, run_batch
    from app.versions.tables import DatasetVersion

    kit = jobs_kit
    version_id = kit.version["id"]
    loaded = _download(kit, prompted_model, tmp_path)
    classes = kit.client.get(f"/api/v1/models/{prompted_model}", headers=kit.auth).json()["classes"]
    with kit.factory() as session:  # the image as the batch reads it: from the version's snapshot
        prefix = session.get(DatasetVersion, uuid.UUID(version_id)).snapshot_prefix
    gt = json.loads(kit.storage.get_bytes(f"{prefix}test/_annotations.coco.json"))
    (only,) = gt["images"]
    image = Image.open(io.BytesIO(kit.storage.get_bytes(f"{prefix}test/{only['file_name']}"))).convert("RGB")
    results = {}
    for query in ("", "&iou_threshold=1", "&iou_threshold=0.5&class_agnostic_nms=true"):
        r = kit.client.post(f"/api/v1/models/{prompted_model}/predict-version/{version_id}?split=test{query}",
                            headers=kit.auth)  # fmt: skip
        assert r.status_code == 202, r.text
        batch = r.json()
        assert run_batch(kit.settings, uuid.UUID(batch["id"])) == "succeeded"
        done = kit.client.get(f"/api/v1/batch-predictions/{batch['id']}", headers=kit.auth).json()
        results[query] = (done, kit.client.get(done["results_url"], headers=kit.auth).json())
    (default, found), (kept, everything), (agnostic, _) = results.values()
    assert (default["iou_threshold"], default["class_agnostic_nms"]) == (0.5, False)
    assert (kept["iou_threshold"], agnostic["class_agnostic_nms"]) == (1.0, True)
    expected = Predictor(loaded).predict(image, [OVERRIDE.get(c, c) for c in classes], confidence=0.0,
                                         max_detections=PER_IMAGE)  # fmt: skip
    assert [(d["category_id"], d["score"]) for d in found] == [
        (p.prompt_index + 1, round(p.score, 5)) for p in expected
    ]
    assert len(everything) > len(found)
    for category in {d["category_id"] for d in found}:
        assert _max_pair_iou([d["segmentation"] for d in found if d["category_id"] == category]) <= 0.5
    bad = kit.client.post(f"/api/v1/models/{prompted_model}/predict-version/{version_id}?iou_threshold=2",
                          headers=kit.auth)  # fmt: skip
    assert bad.status_code == 422


# --- Roboflow's routes --------------------------------------------------------------------------------------


def _roboflow_ids(kit: JobKit, model_id: str) -> tuple[str, str, str]:
    """(Roboflow's id of the model, the id of the model it names, the API key). `slug/version` names the
    newest model of that version, which may be another test's."""
    name = kit.client.get(f"/api/v1/models/{model_id}", headers=kit.auth).json()["version_name"]
    page = kit.client.get("/api/v1/models", params={"limit": 500}, headers=kit.auth).json()
    listed = page["items"]  # newest first
    newest = next(m["id"] for m in listed if m["version_name"] == name)
    return name, newest, kit.auth["Authorization"].removeprefix("Bearer ")


def test_roboflow_defaults_nms_and_visualization(jobs_kit: JobKit, model_id: str, test_image: bytes) -> None:
    kit = jobs_kit
    name, model_id, key = _roboflow_ids(kit, model_id)
    b64 = base64.b64encode(test_image).decode()

    def native(**data: str) -> list[dict]:
        r = kit.client.post(f"/api/v1/models/{model_id}/predict", headers=kit.auth,
                            files={"image": ("x.jpg", test_image)}, data={"mask_format": "rle"} | data)  # fmt: skip
        return r.json()["predictions"]

    def v1(**options: Any) -> dict:
        body = {"model_id": name, "image": {"type": "base64", "value": b64}, "api_key": key,
                "response_mask_format": "rle"} | options  # fmt: skip
        r = kit.client.post("/infer/instance_segmentation", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    def v0(**params: str) -> dict:
        slug, version = name.split("/")
        r = kit.client.post(f"/{slug}/{version}", params={"api_key": key, "response_mask_format": "rle"} | params,
                            content=b64, headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()

    def seen(predictions: list[dict]) -> list[tuple[str, float, str]]:
        return [(p["class"], p["confidence"], p["rle"]["counts"]) for p in predictions]

    # Confidence 0.4 by default, as Roboflow's server; the native route keeps its 0.5.
    at_04 = seen(native(confidence="0.4"))
    assert seen(v1()["predictions"]) == at_04 == seen(v0()["predictions"])
    assert seen(native()) == seen(native(confidence="0.5")) != seen(native(confidence="0.05"))
    # iou_threshold on v1; `overlap` (Roboflow's hosted name, fraction or percent) on v0.
    merged, kept = native(confidence="0.05"), native(confidence="0.05", iou_threshold="1")
    assert len(kept) > len(merged)
    assert seen(v1(confidence=0.05)["predictions"]) == seen(merged)
    assert seen(v1(confidence=0.05, iou_threshold=1.0)["predictions"]) == seen(kept)
    assert seen(v0(confidence="5", overlap="100")["predictions"]) == seen(kept)
    assert seen(v0(confidence="5", overlap="50")["predictions"]) == seen(merged)
    twice = v1(confidence=0.05, class_filter=["purple shape", "purple shape"])["predictions"]
    once = v1(confidence=0.05, class_filter=["purple shape", "purple shape"], class_agnostic_nms=True)[
        "predictions"
    ]
    assert len(_drawn([p["rle"] for p in twice])) == 2 * len(_drawn([p["rle"] for p in once])) > 0
    # visualize_predictions: the image drawn, base64, in `visualization`; the predictions as asked.
    plain = Image.open(io.BytesIO(test_image)).convert("RGB")
    drawn_v1 = v1(confidence=0.05, visualize_predictions=True, response_mask_format="polygon")
    drawn_v0 = v0(confidence="5", visualize_predictions="true")
    for answer in (drawn_v1, drawn_v0):
        drawn = Image.open(io.BytesIO(base64.b64decode(answer["visualization"])))
        assert drawn.format == "JPEG" and drawn.size == plain.size
        assert np.abs(np.asarray(drawn.convert("RGB"), dtype=int) - np.asarray(plain, dtype=int)).mean() > 1
        assert answer["predictions"]
    assert all("points" in p and "rle" not in p for p in drawn_v1["predictions"])
    assert [p["confidence"] for p in drawn_v1["predictions"]] == [c for _, c, _ in seen(merged)]
    assert "visualization" not in v1(confidence=0.05)
