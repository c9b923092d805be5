"""trainer.predict answers exactly what evaluation measured: same forward, same post-processing."""

from __future__ import annotations

import pytest
from PIL import Image

from trainer.base_model import EMBEDDED_BASE
from trainer.config import TrainConfig
from trainer.predict import Ask, Prediction, Predictor
from trainer.recipe import FineTuneRecipe
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> FineTuneRecipe:
    tmp = tmp_path_factory.mktemp("predict")
    # 150 px images for a 112 px model: the masks must come back at the original size.
    data = write_dataset(tmp / "data", list(PRETRAIN_CONCEPTS), {"train": 1, "test": 3}, size=150, seed=5)
    cfg = TrainConfig(base_model=EMBEDDED_BASE, data_dir=data, output_dir=tmp / "run", mode="full", epochs=1,
                      batch_size=1, eval_base_model=False, progress_bar=False)  # fmt: skip
    r = FineTuneRecipe(cfg)
    r.setup()
    return r


def test_predictions_match_evaluation(recipe: FineTuneRecipe) -> None:
    data = recipe.splits["test"]
    evaluated = recipe.predict_split("test")
    predictor = Predictor(recipe.loaded, recipe.device)
    for sample in data.samples:
        expected = sorted(
            (d.category_id, round(d.score, 5), d.rle["counts"], tuple(round(v, 3) for v in d.bbox))
            for d in evaluated
            if d.image_id == sample.image_id
        )
        with Image.open(sample.path) as img:
            # Evaluation keeps every slot (eval_nms_iou is off): so does prediction without NMS.
            got = predictor.predict(img, recipe.classes, confidence=0.0, max_detections=10_000, nms_iou=None)
        assert got and all(p.rle["size"] == [sample.height, sample.width] for p in got)
        actual = sorted(
            (
                data.category_id(p.prompt_index),
                round(p.score, 5),
                p.rle["counts"],
                tuple(round(v, 3) for v in p.bbox),
            )
            for p in got
        )
        assert actual == expected


def test_confidence_and_limit(recipe: FineTuneRecipe) -> None:
    predictor = Predictor(recipe.loaded, recipe.device)
    with Image.open(recipe.splits["test"].samples[0].path) as img:
        everything = predictor.predict(img, recipe.classes, confidence=0.0, max_detections=10_000)
        confident = predictor.predict(img, recipe.classes, confidence=0.5, max_detections=10_000)
        top3 = predictor.predict(img, recipe.classes, confidence=0.0, max_detections=3)
    assert all(p.score >= 0.5 for p in confident)
    assert len(confident) == sum(p.score >= 0.5 for p in everything)
    assert [p.score for p in top3] == [p.score for p in everything[:3]]
    with pytest.raises(ValueError):
        predictor.predict(img, [], confidence=0.5)


def test_box_exemplars_change_the_answer(recipe: FineTuneRecipe) -> None:
    """Boxes go through SAM 3's geometry encoder with the text: the answer depends on them, and boxes alone
    (no text) still answer, under SAM 3's "visual" prompt."""
    predictor = Predictor(recipe.loaded, recipe.device)
    sample = recipe.splits["test"].samples[0]
    ann = next(a for a in recipe.splits["test"].coco["annotations"] if a["image_id"] == sample.image_id)
    x, y, w, h = ann["bbox"]
    with Image.open(sample.path) as img:
        plain = predictor.predict(img, recipe.classes[:1], confidence=0.0, max_detections=5)
        guided = predictor.predict(
            img, recipe.classes[:1], confidence=0.0, max_detections=5, boxes=[(x, y, x + w, y + h)]
        )
        visual = predictor.predict(img, [], confidence=0.0, max_detections=5, boxes=[(x, y, x + w, y + h)])
    assert [p.score for p in plain] != [p.score for p in guided]
    assert visual and {p.prompt for p in visual} == {"visual"}


def _key(predictions: list[Prediction]) -> list[tuple[object, ...]]:
    return [(p.prompt, round(p.score, 4), tuple(round(v, 1) for v in p.bbox)) for p in predictions]


def test_a_batch_answers_what_each_request_alone_does(recipe: FineTuneRecipe) -> None:
    """Several requests in one pass (images encoded together, the text-only requests' queries together, a
    request with boxes on its own) answer each what it gets alone, to float tolerance; a request without
    prompts fails alone."""
    predictor = Predictor(recipe.loaded, recipe.device)
    samples = recipe.splits["test"].samples
    ann = next(a for a in recipe.splits["test"].coco["annotations"] if a["image_id"] == samples[0].image_id)
    x, y, w, h = ann["bbox"]
    images = [Image.open(s.path).convert("RGB") for s in samples]
    asks = [
        Ask(images[0], recipe.classes, confidence=0.0, max_detections=20),
        Ask(images[1], recipe.classes[:1], confidence=0.0, max_detections=20, nms_iou=None),
        Ask(images[2], list(reversed(recipe.classes)), confidence=0.1, max_detections=5),
        Ask(images[0], recipe.classes[:1], confidence=0.0, max_detections=5, boxes=[(x, y, x + w, y + h)]),
        Ask(images[1], [], confidence=0.0),
    ]
    batched = predictor.predict_many(asks)
    assert isinstance(batched[4], ValueError)
    for a, together in zip(asks[:4], batched[:4], strict=True):
        alone = predictor.predict(a.image, a.prompts, confidence=a.confidence, max_detections=a.max_detections,
                                  nms_iou=a.nms_iou, boxes=a.boxes)  # fmt: skip
        assert isinstance(together, list) and together, a
        assert _key(together) == _key(alone)
        assert [p.rle["counts"] for p in together] == [p.rle["counts"] for p in alone]


def test_an_image_asked_again_reuses_its_embedding(recipe: FineTuneRecipe) -> None:
    """With `image_key`, the vision encoder runs once for an image asked again with new prompts, and the
    answers equal uncached ones; the cache keeps the most recent `embedding_cache_size` images."""
    predictor = Predictor(recipe.loaded, recipe.device, embedding_cache_size=2)
    encoded: list[int] = []
    backbone = predictor.model.vision_encoder.backbone
    hook = backbone.register_forward_hook(lambda _m, inputs, _o: encoded.append(inputs[0].shape[0]))
    samples = recipe.splits["test"].samples
    try:
        with Image.open(samples[0].path) as img:
            first = predictor.predict(img, recipe.classes[:1], confidence=0.0, image_key="a")
            again = predictor.predict(img, recipe.classes[1:], confidence=0.0, image_key="a")
            assert encoded == [1], "the second ask reused the embedding"
            uncached = predictor.predict(img, recipe.classes[1:], confidence=0.0)
            assert encoded == [1, 1]
        assert first and _key(again) == _key(uncached)
        for key, sample in (("b", samples[1]), ("c", samples[2])):
            with Image.open(sample.path) as img:
                predictor.predict(img, recipe.classes, image_key=key)
        assert list(predictor._embeddings) == ["b", "c"], "the least recently used went first"
    finally:
        hook.remove()


def test_an_image_resized_beforehand_answers_the_same(recipe: FineTuneRecipe) -> None:
    """`Predictor.prepare` (the CPU half of the preprocessing, which a server runs on the request's own thread)
    handed in as `Ask.pixels` gives the same masks, bit for bit, as the predictor resizing the image itself;
    pixels of another size or type are not trusted and the image is resized again."""
    predictor = Predictor(recipe.loaded, recipe.device)
    images = [Image.open(s.path).convert("RGB") for s in recipe.splits["test"].samples]
    prepared = [predictor.prepare(img) for img in images]
    size = recipe.loaded.image_size
    assert prepared[0].shape == (3, size, size) and str(prepared[0].dtype) == "torch.uint8"
    plain = predictor.predict_many([Ask(img, recipe.classes, confidence=0.0) for img in images])
    ready = predictor.predict_many(
        [Ask(img, recipe.classes, confidence=0.0, pixels=p) for img, p in zip(images, prepared, strict=True)]
    )
    wrong = predictor.predict_many(
        [Ask(images[0], recipe.classes, confidence=0.0, pixels=prepared[0][:, :-1, :-1])]
        + [Ask(images[1], recipe.classes, confidence=0.0, pixels=prepared[1].float())]
    )
    for a, b in zip(plain, ready, strict=True):
        assert isinstance(a, list) and isinstance(b, list) and a
        assert [(p.score, p.rle["counts"]) for p in a] == [(p.score, p.rle["counts"]) for p in b]
    assert [[p.rle["counts"] for p in r] for r in wrong] == [[p.rle["counts"] for p in r] for r in plain[:2]]  # type: ignore[union-attr]
