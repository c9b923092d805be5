"""Tensor conventions shared by the forward pass, the matcher, the losses and evaluation.

A *query* is one (image, text prompt) pair: the prompt is a class name, and the query asks the model to
find every instance of that class in the image (zero instances = a negative query). A batch holds
B queries; queries of the same image share its vision features.

Boxes are normalised to [0, 1] of the model's input frame, in (cx, cy, w, h) unless a name says xyxy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModelOutputs:
    """What the forward pass returns for B queries with Q object slots each, over L decoder layers."""

    logits: torch.Tensor  # [L, B, Q] classification logits per decoder layer (last = final)
    boxes: torch.Tensor  # [L, B, Q, 4] cxcywh in [0, 1] per decoder layer
    presence: torch.Tensor  # [L, B] presence logits ("is the concept in the image at all")
    masks: torch.Tensor  # [B, Q, H, W] mask logits of the final layer, at the model's mask resolution

    @property
    def num_layers(self) -> int:
        return self.logits.shape[0]


@dataclass
class QueryTargets:
    """Ground truth of one query: N instances of its class in its image (N may be 0)."""

    boxes: torch.Tensor  # [N, 4] cxcywh in [0, 1]
    masks: torch.Tensor  # [N, H, W] float {0, 1}, at the model's mask resolution

    @property
    def num(self) -> int:
        return self.boxes.shape[0]


@dataclass
class Match:
    """For one query: prediction slot `pred[i]` is matched to target `target[i]`."""

    pred: torch.Tensor  # [K] long
    target: torch.Tensor  # [K] long
