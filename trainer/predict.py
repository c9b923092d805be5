"""Prediction on one image with text prompts, by the same forward pass and post-processing as evaluation,
so a served model answers what its evaluation measured. One difference by default: overlapping masks of one
prompt are merged by mask NMS (`DEFAULT_IOU_THRESHOLD`), since SAM 3 often finds one object in several slots;
evaluation keeps every slot unless `TrainConfig.eval_nms_iou` asks otherwise (`nms_iou=None` here matches)."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from PIL import Image

from trainer import data as D
from trainer.architecture import to_device
from trainer.base_model import LoadedModel
from trainer.evaluate import mask_nms, postprocess
from trainer.forward import QueryModel, ask, text_backbone, vision_backbone
from trainer.tokenizer import tokenize
from trainer.types import ModelOutputs

# Roboflow's default `iou_threshold`: a mask overlapping a better one of its prompt by more is a duplicate.
DEFAULT_IOU_THRESHOLD = 0.5


def _autocast_context(
    device: torch.device, dtype: torch.dtype, enabled: bool
) -> AbstractContextManager[object]:
    """bf16 autocast for fp32 weights on CUDA, as training runs there (trainer/recipe.py): bf16 matmuls while
    the stored weights stay fp32. Elsewhere nothing: answers on the CPU must stay exactly evaluation's (the
    tests compare RLEs), and bf16 weights need no autocast."""
    if enabled and device.type == "cuda" and dtype == torch.float32:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True)
class Ask:
    """One request of a batch: an image and what to ask of it (`Predictor.predict`'s arguments)."""

    image: Image.Image
    prompts: list[str]
    confidence: float = 0.5
    max_detections: int = 100
    nms_iou: float | None = DEFAULT_IOU_THRESHOLD
    class_agnostic_nms: bool = False
    boxes: list[tuple[float, float, float, float]] | None = None
    image_key: str | None = None
    # The image already resized for the model (`Predictor.prepare`, done by the caller off the model's thread).
    pixels: torch.Tensor | None = None


@dataclass
class Prediction:
    prompt_index: int
    prompt: str
    score: float
    bbox: tuple[float, float, float, float]  # xywh, original image pixels
    rle: dict  # COCO compressed RLE of the mask, original image size


class Predictor:
    """A loaded model ready to answer; one forward per image covers every prompt. `autocast`: the model runs
    under bf16 autocast on CUDA when its weights are fp32 (`_autocast_context`); post-processing stays fp32."""

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | torch.device = "cpu",
        *,
        embedding_cache_size: int = 8,
        autocast: bool = True,
    ) -> None:
        self.loaded = loaded
        self.device = torch.device(device)
        self.model = to_device(loaded.model, self.device).eval()
        self.query_model = QueryModel(self.model)
        self.dtype = next(self.model.parameters()).dtype  # bf16 weights take bf16 pixels
        self.autocast = autocast
        self._text: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        # Recent images' vision embeddings, by the caller's key: an interactive client asks one image again
        # and again with new prompts, as SAM is used. Full-size SAM 3: about 20 MB each in fp32, half that
        # under autocast (kept as the encoder left them: used again only by this predictor, same autocast).
        self.embedding_cache_size = embedding_cache_size
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _model_precision(self) -> AbstractContextManager[object]:
        return _autocast_context(self.device, self.dtype, self.autocast)

    def _prompts(self, prompts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The text side depends on the prompts only: the same classes, asked again and again, are encoded once.
        if prompts not in self._text:
            text = tokenize(self.loaded.tokenizer, list(prompts))
            ids, mask = text["input_ids"].to(self.device), text["attention_mask"].to(self.device)
            if len(self._text) > 64:
                self._text.clear()
            self._text[prompts] = (ids, mask, text_backbone(self.model, ids, mask))
        return self._text[prompts]

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The image resized for this model (uint8): the CPU half of the preprocessing, which a server does
        on each request's own thread so that the model's thread only feeds the device (`Ask.pixels`)."""
        return D.resized_rgb(image, self.loaded.image_size)

    def has_embedding(self, image_key: str) -> bool:
        """Whether the image named so would skip the vision encoder now (its embedding is cached)."""
        return image_key in self._embeddings

    def class_prompts(self, classes: list[str]) -> list[str]:
        """What to ask for `classes`: the prompts the model was trained with (its card), else the names."""
        return self.loaded.class_prompts(classes)

    def predict(
        self,
        image: Image.Image,
        prompts: list[str],
        *,
        confidence: float = 0.5,
        max_detections: int = 100,
        nms_iou: float | None = DEFAULT_IOU_THRESHOLD,
        class_agnostic_nms: bool = False,
        boxes: list[tuple[float, float, float, float]] | None = None,
        image_key: str | None = None,
    ) -> list[Prediction]:
        """`boxes`: exemplars (xyxy, original pixels) of what to find, shown with every prompt: SAM 3 finds
        things like them. With boxes and no text, the prompt is SAM 3's own "visual".

        `nms_iou`: drop a mask whose IoU with a higher-scored one exceeds it (`mask_nms`), among the masks of
        its own prompt, or among all of them with `class_agnostic_nms`; None keeps every mask.

        `image_key` (the image's hash, say): its vision embedding is kept, and the same image asked again with
        other prompts skips the vision encoder, SAM 3's expensive part."""
        ask_one = Ask(
            image, prompts, confidence, max_detections, nms_iou, class_agnostic_nms, boxes, image_key
        )
        result = self.predict_many([ask_one])[0]
        if isinstance(result, Exception):
            raise result
        return result

    @torch.inference_mode()
    def predict_many(self, asks: list[Ask]) -> list[list[Prediction] | Exception]:
        """Several requests in one pass: the vision encoder runs once over every image not in the embedding
        cache, then the heads once over every (image, prompt) pair of the requests without exemplar boxes
        (those with boxes, whose prompts carry their boxes, go one request at a time). Each request gets its
        own answer, or the error that concerns it alone (a request without prompts)."""
        out: list[list[Prediction] | Exception] = []
        valid: list[int] = []
        for i, a in enumerate(asks):
            if not a.prompts and not a.boxes:
                out.append(ValueError("at least one prompt is needed"))
            else:
                out.append([])
                valid.append(i)
        if not valid:
            return out
        with self._model_precision():
            hidden = self._embed([asks[i] for i in valid])
        row = {i: r for r, i in enumerate(valid)}
        plain = [i for i in valid if not asks[i].boxes]
        if plain:
            # One text encoding for the union of the prompts; each query names its image and its prompt.
            union = list(dict.fromkeys(p for i in plain for p in asks[i].prompts))
            image_index = [row[i] for i in plain for _ in asks[i].prompts]
            class_index = [union.index(p) for i in plain for p in asks[i].prompts]
            with self._model_precision():
                ids, mask, text_hidden = self._prompts(tuple(union))
                found = ask(self.query_model, ids, mask, backbone_hidden=hidden, text_hidden=text_hidden,
                            image_index=torch.tensor(image_index, device=self.device),
                            class_index=torch.tensor(class_index, device=self.device))  # fmt: skip
            first = 0
            for i in plain:
                k = len(asks[i].prompts)
                out[i] = self._answer(asks[i], asks[i].prompts, found, first)
                first += k
        for i in valid:
            if asks[i].boxes:
                out[i] = self._ask_with_boxes(asks[i], hidden[row[i] : row[i] + 1])
        return out

    def _embed(self, asks: list[Ask]) -> torch.Tensor:
        """The vision backbone's output for each request's image, [N, tokens, C]: from the cache where the
        request names its image, the rest encoded together in one batch."""
        rows: list[torch.Tensor | None] = [None] * len(asks)
        todo: dict[str, list[int]] = {}  # an image asked twice in one batch is encoded once
        for n, a in enumerate(asks):
            key = a.image_key if a.image_key is not None else f"#{n}"
            if a.image_key is not None and key in self._embeddings:
                self._embeddings.move_to_end(key)
                rows[n] = self._embeddings[key]
            else:
                todo.setdefault(key, []).append(n)
        if todo:
            size = self.loaded.image_size
            mean, std = self.loaded.image_mean, self.loaded.image_std
            firsts = [ns[0] for ns in todo.values()]
            rgb = torch.stack([self._resized(asks[n]) for n in firsts])
            # Normalised on the device: a quarter of the bytes travel, and the float work is the device's.
            pixels = D.normalised(rgb.to(self.device), size, mean, std).to(self.dtype)
            computed = vision_backbone(self.model, pixels)
            for (key, ns), encoded in zip(todo.items(), computed, strict=True):
                for n in ns:
                    rows[n] = encoded[None]
                if not key.startswith("#") and self.embedding_cache_size > 0:
                    self._embeddings[key] = encoded[None]
                    while len(self._embeddings) > self.embedding_cache_size:
                        self._embeddings.popitem(last=False)
        return torch.cat([r for r in rows if r is not None])

    def _resized(self, a: Ask) -> torch.Tensor:
        size = self.loaded.image_size
        if (
            a.pixels is not None
            and tuple(a.pixels.shape) == (3, size, size)
            and a.pixels.dtype == torch.uint8
        ):
            return a.pixels
        return self.prepare(a.image)

    def _ask_with_boxes(self, a: Ask, hidden: torch.Tensor) -> list[Prediction]:
        prompts = a.prompts or ["visual"]
        width, height = a.image.size
        k = len(prompts)
        assert a.boxes
        xyxy = torch.tensor(a.boxes, dtype=torch.float32) / torch.tensor([width, height, width, height])
        cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                              xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=-1).clamp(0, 1)  # fmt: skip
        exemplars = cxcywh[None].expand(k, -1, -1).to(self.device, self.dtype)
        labels = torch.ones(k, len(a.boxes), dtype=torch.long, device=self.device)
        with self._model_precision():
            ids, mask, text_hidden = self._prompts(tuple(prompts))
        # The heads run in the weights' dtype here, not under autocast: transformers' SAM 3 geometry encoder
        # hands roi_align bf16 features as fp16, and autocast(bf16) refuses fp16 tensors ("Unexpected floating
        # ScalarType in at::autocast::prioritize"). The vision backbone, the expensive part, did run under it.
        found = ask(self.query_model, ids, mask, backbone_hidden=hidden.to(self.dtype),
                    text_hidden=text_hidden.to(self.dtype), input_boxes=exemplars,
                    input_boxes_labels=labels)  # fmt: skip
        return self._answer(a, prompts, found, 0)

    def _answer(self, a: Ask, prompts: list[str], found: ModelOutputs, first: int) -> list[Prediction]:
        """Request `a`'s predictions from the outputs' queries first .. first + len(prompts)."""
        width, height = a.image.size
        # NMS before the cap: a prompt's duplicates must not take the places of its next distinct masks.
        candidates = found.logits.shape[-1] if a.nms_iou is not None else a.max_detections
        out: list[Prediction] = []
        for c, prompt in enumerate(prompts):
            q = first + c
            for det in postprocess(
                found.logits[-1, q].float(), found.presence[-1, q].float(), found.boxes[-1, q].float(),
                found.masks[q].float(),
                image_id=0, category_id=c, orig_size=(height, width), score_threshold=a.confidence,
                top_k=candidates,
            ):  # fmt: skip
                out.append(Prediction(c, prompt, det.score, det.bbox, det.rle))
        out.sort(key=lambda p: -p.score)
        if a.nms_iou is not None:
            groups = None if a.class_agnostic_nms else [p.prompt_index for p in out]
            out = [out[i] for i in mask_nms([p.rle for p in out], a.nms_iou, groups)]
        return out[: a.max_detections]
