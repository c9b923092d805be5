"""Predictor's bf16 autocast: chosen only for fp32 weights on CUDA, around the model (vision backbone, text
encoder, heads) and never around post-processing; on the CPU answers stay exactly what they were."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from PIL import Image

import trainer.predict as predict_module
from trainer.base_model import EMBEDDED_BASE_DIR, LoadedModel, load_base_model
from trainer.predict import Ask, Predictor, _autocast_context
from trainer.synth import PRETRAIN_CONCEPTS, write_dataset


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_base_model(str(EMBEDDED_BASE_DIR))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    data = write_dataset(tmp_path_factory.mktemp("autocast") / "data", list(PRETRAIN_CONCEPTS), {"test": 2},
                         size=150, seed=3, max_objects=3)  # fmt: skip
    out = []
    for path in sorted((data / "test").glob("*.jpg")):
        with Image.open(path) as picture:
            out.append(picture.convert("RGB"))
    return out


def test_autocast_only_for_fp32_weights_on_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert isinstance(_autocast_context(cpu, torch.float32, True), nullcontext)
    assert isinstance(_autocast_context(cpu, torch.bfloat16, True), nullcontext)
    assert isinstance(_autocast_context(cuda, torch.bfloat16, True), nullcontext), "bf16 weights: no cast"
    assert isinstance(_autocast_context(cuda, torch.float32, False), nullcontext), "turned off"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without a GPU torch warns that CUDA autocast would be disabled
        chosen = _autocast_context(cuda, torch.float32, True)
    assert isinstance(chosen, torch.autocast)
    assert chosen.device == "cuda" and chosen.fast_dtype == torch.bfloat16


def _asks(images: list[Image.Image]) -> list[Ask]:
    box = (20.0, 20.0, 90.0, 90.0)
    return [
        Ask(images[0], ["circle", "square"], confidence=0.0, max_detections=20),
        Ask(images[1], ["triangle"], confidence=0.0, max_detections=20, nms_iou=None),
        Ask(images[0], ["circle"], confidence=0.0, max_detections=5, boxes=[box]),
        Ask(images[1], [], confidence=0.0, max_detections=5, boxes=[box]),
    ]


def _answers(predictor: Predictor, asks: list[Ask]) -> list[list[tuple[Any, ...]]]:
    out = []
    for found in predictor.predict_many(asks):
        assert isinstance(found, list)
        out.append([(p.prompt_index, p.score, p.bbox, p.rle["counts"]) for p in found])
    return out


def test_cpu_answers_do_not_depend_on_the_flag(loaded: LoadedModel, images: list[Image.Image]) -> None:
    on = _answers(Predictor(loaded, "cpu", autocast=True), _asks(images))
    off = _answers(Predictor(loaded, "cpu", autocast=False), _asks(images))
    assert all(on) and on == off, "bit-identical: scores, boxes and RLEs"


def test_the_model_runs_under_autocast_and_postprocessing_does_not(
    loaded: LoadedModel, images: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA's autocast stood in by the CPU's (there is no GPU here): where the predictor puts the context, and
    that every path (batched text queries, exemplar boxes, cached embeddings) runs in bf16."""
    chosen: list[tuple[str, torch.dtype, bool]] = []

    def cpu_autocast(device: torch.device, dtype: torch.dtype, enabled: bool) -> Any:
        chosen.append((device.type, dtype, enabled))
        return torch.autocast("cpu", dtype=torch.bfloat16)

    seen: dict[str, list[bool]] = {"vision": [], "text": [], "heads": [], "postprocess": []}
    real_postprocess = predict_module.postprocess

    def postprocess(*args: Any, **kwargs: Any) -> Any:
        seen["postprocess"].append(torch.is_autocast_enabled("cpu"))
        assert all(a.dtype == torch.float32 for a in args if isinstance(a, torch.Tensor))
        return real_postprocess(*args, **kwargs)

    monkeypatch.setattr(predict_module, "_autocast_context", cpu_autocast)
    monkeypatch.setattr(predict_module, "postprocess", postprocess)
    predictor = Predictor(loaded, "cpu")
    model = predictor.model
    hooks = [
        module.register_forward_pre_hook(lambda _m, _a, name=name: seen[name].append(torch.is_autocast_enabled("cpu")))
        for name, module in (("vision", model.vision_encoder.backbone), ("text", model.text_encoder),
                             ("heads", model.detr_decoder))
    ]  # fmt: skip
    try:
        answers = _answers(predictor, _asks(images))
        again = predictor.predict(images[0], ["square"], confidence=0.0, image_key="first")
        again_cached = predictor.predict(images[0], ["circle"], confidence=0.0, image_key="first")
    finally:
        for hook in hooks:
            hook.remove()
    assert chosen and all(c == ("cpu", torch.float32, True) for c in chosen)
    assert all(answers) and again and again_cached
    assert seen["vision"] == [True, True], "the batch's images together, the keyed image once (then cached)"
    assert seen["text"] and all(seen["text"])
    # The text-only requests' heads together, then each exemplar-box request's alone and without autocast
    # (transformers' geometry encoder gives roi_align fp16 tensors, which autocast(bf16) refuses), then the
    # two single requests.
    assert seen["heads"] == [True, False, False, True, True]
    assert seen["postprocess"] and not any(seen["postprocess"])
