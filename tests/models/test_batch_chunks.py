"""Batch prediction's images go through `Predictor.predict_many` a chunk at a time (`batch_max_size`), and the
results are those of asking `Predictor.predict` one image at a time, exactly (scores, boxes, RLEs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from app.models.batches import PER_IMAGE, coco_results, prepared_chunks
from app.models.masks import rle_json
from trainer.base_model import EMBEDDED_BASE_DIR, load_base_model
from trainer.predict import Ask, Prediction, Predictor
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset

IMAGES = 5


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], list[str]]:
    """A test split of IMAGES images (150 px, for the 112 px bundled model), its COCO image entries, classes."""
    data = write_dataset(tmp_path_factory.mktemp("chunks") / "data", list(PRETRAIN_CONCEPTS),
                         {"test": IMAGES}, size=150, seed=11, max_objects=3)  # fmt: skip
    coco = json.loads((data / "test" / "_annotations.coco.json").read_text())
    assert len(coco["images"]) == IMAGES
    # Sizes differ within a chunk, as in a real split: each answer must come back at its own image's size.
    for img, size in ((coco["images"][1], (200, 130)), (coco["images"][2], (96, 120))):
        path = data / "test" / img["file_name"]
        with Image.open(path) as picture:
            picture.resize(size).save(path)
        img["width"], img["height"] = size
    return data / "test", coco["images"], [c["name"] for c in coco["categories"]]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(load_base_model(str(EMBEDDED_BASE_DIR)))


def _one_by_one(
    predictor: Predictor,
    folder: Path,
    images: list[dict[str, Any]],
    prompts: list[str],
    nms: tuple[float, bool],
) -> list[dict[str, Any]]:
    """What batch prediction wrote before it was batched: one `predict` per image."""
    results: list[dict[str, Any]] = []
    for img in images:
        with Image.open(folder / img["file_name"]) as picture:
            found = predictor.predict(picture.convert("RGB"), prompts, confidence=0.0, max_detections=PER_IMAGE,
                                      nms_iou=nms[0], class_agnostic_nms=nms[1])  # fmt: skip
        results += [
            {"image_id": img["id"], "category_id": p.prompt_index + 1, "bbox": [round(v, 2) for v in p.bbox],
             "score": round(p.score, 5), "segmentation": rle_json(p.rle)}
            for p in found
        ]  # fmt: skip
    return results


def _closed(image: Image.Image) -> bool:
    try:
        image.getpixel((0, 0))
    except ValueError:  # Pillow: "Operation on closed image"
        return True
    return False


@pytest.mark.parametrize("nms", [(0.5, False), (0.3, True), (1.0, False)])
@pytest.mark.parametrize(("chunk_size", "chunks"), [(2, [2, 2, 1]), (1, [1] * IMAGES), (8, [IMAGES])])
def test_chunked_batch_equals_one_by_one(
    predictor: Predictor,
    split: tuple[Path, list[dict[str, Any]], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    nms: tuple[float, bool],
    chunk_size: int,
    chunks: list[int],
) -> None:
    folder, images, classes = split
    prompts = predictor.class_prompts(classes)
    expected = _one_by_one(predictor, folder, images, prompts, nms)
    assert len({r["image_id"] for r in expected}) == IMAGES, "every image found something"

    # A spy around the real predict_many: it still answers, and says how it was called.
    real = predictor.predict_many
    calls: list[list[Ask]] = []

    def spy(asks: list[Ask]) -> list[list[Prediction] | Exception]:
        assert all(_closed(a.image) for earlier in calls for a in earlier), "one chunk decoded at a time"
        calls.append(list(asks))
        return real(asks)

    monkeypatch.setattr(predictor, "predict_many", spy)
    got = coco_results(predictor, folder, images, prompts, nms, chunk_size)
    assert [len(c) for c in calls] == chunks
    assert all(_closed(a.image) for c in calls for a in c), "the last chunk's pixels are freed too"
    assert [a.image.size for c in calls for a in c] == [(img["width"], img["height"]) for img in images]
    assert got == expected


def test_an_error_of_the_batch_is_raised(
    predictor: Predictor, split: tuple[Path, list[dict[str, Any]], list[str]]
) -> None:
    """No prompts is the request's error in predict_many; for a batch it is the batch's (as predict raised)."""
    folder, images, _ = split
    with pytest.raises(ValueError, match="prompt"):
        coco_results(predictor, folder, images, [], (0.5, False), 2)


def test_chunks_prepared_ahead_on_another_thread_are_the_same(
    predictor: Predictor, split: tuple[Path, list[dict[str, Any]], list[str]]
) -> None:
    """On a GPU the next chunk is decoded and resized on another thread during this one's forward (`ahead`):
    the same chunks, in order, with the same pixels, as preparing each in turn."""
    folder, images, _ = split
    in_turn = list(prepared_chunks(predictor, folder, images, 2, ahead=False))
    got = []
    for chunk, prepared in prepared_chunks(predictor, folder, images, 2, ahead=True):
        got.append((chunk, prepared))
        for picture, _ in prepared:
            picture.close()
    assert [c for c, _ in got] == [c for c, _ in in_turn] == [images[0:2], images[2:4], images[4:5]]
    for (_, a), (_, b) in zip(got, in_turn, strict=True):
        assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
