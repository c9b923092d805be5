"""SAM 3's forward pass in stages, so that training can (a) cache what a frozen encoder computes and
(b) supervise every decoder layer, which `Sam3Model.forward` computes but does not return.

The stages call the model's own submodules in the order `Sam3Model.forward` does; a test checks that the
final layer matches `Sam3Model.forward` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers import Sam3Model
from transformers.models.sam3.modeling_sam3 import inverse_sigmoid

from trainer.types import ModelOutputs


@dataclass
class VisionFeatures:
    """The neck's output for a batch of images: what the heads read."""

    fpn: tuple[torch.Tensor, ...]  # per level [B, D, H_l, W_l]
    pos: tuple[torch.Tensor, ...]  # per level position encodings, same shapes

    def select(self, index: torch.Tensor) -> VisionFeatures:
        """Rows for the given images, once per query that looks at them."""
        return VisionFeatures(
            tuple(f.index_select(0, index) for f in self.fpn),
            tuple(p.index_select(0, index) for p in self.pos),
        )


def vision_backbone(model: Sam3Model, pixel_values: torch.Tensor) -> torch.Tensor:
    """The ViT: [B, 3, S, S] -> [B, (S/patch)^2, C]. This is the expensive part that `decoder` mode caches."""
    return model.vision_encoder.backbone(pixel_values).last_hidden_state


def vision_neck(model: Sam3Model, backbone_hidden: torch.Tensor) -> VisionFeatures:
    encoder = model.vision_encoder
    batch, tokens, channels = backbone_hidden.shape
    side = int(round(tokens**0.5))
    spatial = backbone_hidden.view(batch, side, side, channels).permute(0, 3, 1, 2)
    fpn, pos = encoder.neck(spatial)
    return VisionFeatures(tuple(fpn), tuple(pos))


def text_backbone(model: Sam3Model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """CLIP's text transformer: [P, T] -> [P, T, Dt]. Cached in `decoder` mode (the text encoder is frozen)."""
    return model.text_encoder(
        input_ids=input_ids, attention_mask=attention_mask, return_dict=True
    ).last_hidden_state


def project_text(model: Sam3Model, text_hidden: torch.Tensor) -> torch.Tensor:
    return model.text_projection(text_hidden)


def heads(
    model: Sam3Model,
    vision: VisionFeatures,
    text_features: torch.Tensor,
    text_mask: torch.Tensor,
    input_boxes: torch.Tensor | None = None,
    input_boxes_labels: torch.Tensor | None = None,
) -> ModelOutputs:
    """Everything after the encoders, for B queries: vision rows, text rows and masks aligned by query."""
    fpn = vision.fpn[:-1]
    pos = vision.pos[:-1]
    prompt, prompt_mask = text_features, text_mask.bool()
    if input_boxes is not None and input_boxes.numel() > 0:
        labels = (
            input_boxes_labels
            if input_boxes_labels is not None
            else torch.ones_like(input_boxes[..., 0]).long()
        )
        box_mask = labels != -10
        geometry = model.geometry_encoder(
            box_embeddings=input_boxes,
            box_mask=box_mask,
            box_labels=torch.where(labels == -10, 0, labels),
            img_feats=fpn,
            img_pos_embeds=pos,
        )
        prompt = torch.cat([prompt, geometry.last_hidden_state], dim=1)
        prompt_mask = torch.cat([prompt_mask, geometry.attention_mask.bool()], dim=1)

    encoded = model.detr_encoder(
        vision_features=[fpn[-1]], text_features=prompt, vision_pos_embeds=[pos[-1]], text_mask=prompt_mask
    )
    decoded = model.detr_decoder(
        vision_features=encoded.last_hidden_state,
        text_features=encoded.text_features,
        vision_pos_encoding=encoded.pos_embeds_flattened,
        text_mask=prompt_mask,
        spatial_shapes=encoded.spatial_shapes,
    )
    hidden = decoded.intermediate_hidden_states  # [L, B, Q, D]
    boxes = (inverse_sigmoid(decoded.reference_boxes) + model.detr_decoder.box_head(hidden)).sigmoid()
    logits = model.dot_product_scoring(
        decoder_hidden_states=hidden, text_features=encoded.text_features, text_mask=prompt_mask
    ).squeeze(-1)
    masks = model.mask_decoder(
        decoder_queries=hidden[-1],
        backbone_features=list(fpn),
        encoder_hidden_states=encoded.last_hidden_state,
        prompt_features=prompt,
        prompt_mask=prompt_mask,
    ).pred_masks
    return ModelOutputs(logits=logits, boxes=boxes, presence=decoded.presence_logits.squeeze(-1), masks=masks)


def forward_queries(
    model: Sam3Model,
    pixel_values: torch.Tensor | None,
    image_index: torch.Tensor,
    text_hidden: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    backbone_hidden: torch.Tensor | None = None,
    input_boxes: torch.Tensor | None = None,
    input_boxes_labels: torch.Tensor | None = None,
) -> ModelOutputs:
    """B queries over a batch of images: `image_index[b]` names query b's image, `text_hidden[b]` its prompt.
    Pass `pixel_values` (full mode) or the cached `backbone_hidden` (decoder mode)."""
    if backbone_hidden is None:
        assert pixel_values is not None
        backbone_hidden = vision_backbone(model, pixel_values)
    vision = vision_neck(model, backbone_hidden).select(image_index)
    return heads(model, vision, project_text(model, text_hidden), text_mask, input_boxes, input_boxes_labels)


def _recomputed(forward: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        # Non-reentrant: it takes keyword arguments and any output structure, and works under DDP. The RNG
        # state is saved and restored, so dropout draws the same mask when the layer runs again.
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    run.samtune_recomputed = True  # type: ignore[attr-defined]
    return run


def recompute_head_activations(model: Sam3Model) -> None:
    """Keep only each head layer's inputs for the backward pass and run the layer again there.

    At 1008 px every query row of a step carries 5184 image tokens through six DETR encoder layers, the decoder
    and the mask decoder's 288 x 288 pixel decoder. Kept, their activations cost about 1.9 GiB per row in fp32;
    recomputed, about 1.4 GiB, for about a third more time per step (bench/train_memory.py). The recipe bounds
    memory by running few rows at a time instead (`rows_per_pass`); this is the further option. Idempotent; a
    no-op without gradients.
    """
    # The decoder as a whole: between its layers it builds a box-relative position bias per layer
    # ([rows, heads, queries, tokens]) that recomputing layer by layer would still keep.
    modules: list[torch.nn.Module] = [*model.detr_encoder.layers, model.detr_decoder, model.mask_decoder]
    for module in modules:
        if not getattr(module.forward, "samtune_recomputed", False):
            module.forward = _recomputed(module.forward)


class QueryModel(torch.nn.Module):
    """The training forward as one module, so DistributedDataParallel sees every parameter that takes part
    (text encoder included) and can synchronise their gradients. Returns a tuple: DDP looks for tensors in
    tuples, not in dataclasses."""

    def __init__(self, model: Sam3Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        pixel_values: torch.Tensor | None,
        image_index: torch.Tensor,
        class_index: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        backbone_hidden: torch.Tensor | None = None,
        text_hidden: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_boxes_labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if text_hidden is None:
            text_hidden = text_backbone(self.model, input_ids, attention_mask)
        out = forward_queries(
            self.model,
            pixel_values,
            image_index,
            text_hidden.index_select(0, class_index),
            attention_mask.index_select(0, class_index),
            backbone_hidden=backbone_hidden,
            input_boxes=input_boxes,
            input_boxes_labels=input_boxes_labels,
        )
        return out.logits, out.boxes, out.presence, out.masks


def ask(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pixel_values: torch.Tensor | None = None,
    backbone_hidden: torch.Tensor | None = None,
    text_hidden: torch.Tensor | None = None,
    image_index: torch.Tensor | None = None,
    class_index: torch.Tensor | None = None,
    input_boxes: torch.Tensor | None = None,
    input_boxes_labels: torch.Tensor | None = None,
) -> ModelOutputs:
    """Run `model`, a QueryModel or DistributedDataParallel around one: the wrapper's own forward must be the
    one called, or DDP would not synchronise the gradients. Without `image_index` / `class_index`, every
    prompt is asked once of a single image, as evaluation and prediction do."""
    if class_index is None or image_index is None:
        k = input_ids.shape[0]
        image_index = torch.zeros(k, dtype=torch.long, device=input_ids.device)
        class_index = torch.arange(k, device=input_ids.device)
    logits, boxes, presence, masks = model(
        pixel_values,
        image_index,
        class_index,
        input_ids,
        attention_mask,
        backbone_hidden=backbone_hidden,
        text_hidden=text_hidden,
        input_boxes=input_boxes,
        input_boxes_labels=input_boxes_labels,
    )
    return ModelOutputs(logits=logits, boxes=boxes, presence=presence, masks=masks)
