"""Prediction on one image with text prompts, by the same forward pass and post-processing as evaluation,
so a served model answers what its evaluation measured. One difference by default: overlapping masks of one
prompt are merged by mask NMS (`DEFAULT_IOU_THRESHOLD`), since SAM 3 often finds one object in several slots;
evaluation keeps every slot unless `TrainConfig.eval_nms_iou` asks otherwise (`nms_iou=None` here matches)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from trainer import data as D
from trainer.architecture import to_device
from trainer.base_model import LoadedModel
from trainer.evaluate import mask_nms, postprocess
from trainer.forward import QueryModel, ask, text_backbone
from trainer.tokenizer import tokenize

# Roboflow's default `iou_threshold`: a mask overlapping a better one of its prompt by more is a duplicate.
DEFAULT_IOU_THRESHOLD = 0.5


@dataclass
class Prediction:
    prompt_index: int
    prompt: str
    score: float
    bbox: tuple[float, float, float, float]  # xywh, original image pixels
    rle: dict  # COCO compressed RLE of the mask, original image size


class Predictor:
    """A loaded model ready to answer; one forward per image covers every prompt."""

    def __init__(self, loaded: LoadedModel, device: str | torch.device = "cpu") -> None:
        self.loaded = loaded
        self.device = torch.device(device)
        self.model = to_device(loaded.model, self.device).eval()
        self.query_model = QueryModel(self.model)
        self.dtype = next(self.model.parameters()).dtype  # bf16 weights take bf16 pixels
        self._text: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _prompts(self, prompts: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The text side depends on the prompts only: the same classes, asked again and again, are encoded once.
        if prompts not in self._text:
            text = tokenize(self.loaded.tokenizer, list(prompts))
            ids, mask = text["input_ids"].to(self.device), text["attention_mask"].to(self.device)
            if len(self._text) > 64:
                self._text.clear()
            self._text[prompts] = (ids, mask, text_backbone(self.model, ids, mask))
        return self._text[prompts]

    def class_prompts(self, classes: list[str]) -> list[str]:
        """What to ask for `classes`: the prompts the model was trained with (its card), else the names."""
        return self.loaded.class_prompts(classes)

    @torch.inference_mode()
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
    ) -> list[Prediction]:
        """`boxes`: exemplars (xyxy, original pixels) of what to find, shown with every prompt: SAM 3 finds
        things like them. With boxes and no text, the prompt is SAM 3's own "visual".

        `nms_iou`: drop a mask whose IoU with a higher-scored one exceeds it (`mask_nms`), among the masks of
        its own prompt, or among all of them with `class_agnostic_nms`; None keeps every mask."""
        if not prompts and boxes:
            prompts = ["visual"]
        if not prompts:
            raise ValueError("at least one prompt is needed")
        size = self.loaded.image_size
        width, height = image.size
        pixels = D.pixels_from_image(image, size, size, self.loaded.image_mean, self.loaded.image_std)
        ids, mask, text_hidden = self._prompts(tuple(prompts))
        k = len(prompts)
        exemplars = labels = None
        if boxes:
            xyxy = torch.tensor(boxes, dtype=torch.float32) / torch.tensor([width, height, width, height])
            cxcywh = torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                                  xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=-1).clamp(0, 1)  # fmt: skip
            exemplars = cxcywh[None].expand(k, -1, -1).to(self.device, self.dtype)
            labels = torch.ones(k, len(boxes), dtype=torch.long, device=self.device)
        found = ask(
            self.query_model,
            ids,
            mask,
            pixel_values=pixels[None].to(self.device, self.dtype),
            text_hidden=text_hidden,
            input_boxes=exemplars,
            input_boxes_labels=labels,
        )
        # NMS before the cap: a prompt's duplicates must not take the places of its next distinct masks.
        candidates = found.logits.shape[-1] if nms_iou is not None else max_detections
        out: list[Prediction] = []
        for c, prompt in enumerate(prompts):
            for det in postprocess(
                found.logits[-1, c].float(), found.presence[-1, c].float(), found.boxes[-1, c].float(),
                found.masks[c].float(),
                image_id=0, category_id=c, orig_size=(height, width), score_threshold=confidence,
                top_k=candidates,
            ):  # fmt: skip
                out.append(Prediction(c, prompt, det.score, det.bbox, det.rle))
        out.sort(key=lambda p: -p.score)
        if nms_iou is not None:
            groups = None if class_agnostic_nms else [p.prompt_index for p in out]
            out = [out[i] for i in mask_nms([p.rle for p in out], nms_iou, groups)]
        return out[:max_detections]
