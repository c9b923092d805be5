"""The tiny SAM 3 the model tests share: what it is asked, the card it is saved with, and one forward."""

from __future__ import annotations

import torch
from transformers import Sam3Model

from trainer.tokenizer import tokenize

# The default tiny model (image 224, hidden 64, 2 ViT / 2 text / 2 decoder layers, 20 queries) has
# 4,184,298 parameters, 3,162,112 of them CLIP's token embedding (49408 x 64); model.safetensors ~16.8 MB.
TINY_PARAMS = 4_184_298
PROMPTS = ["red circle", "traffic light"]
CARD = {
    "base_model": "facebook/sam3",
    "data_version": "sha256:0123abcd",
    "metrics": {"mask_mAP": 0.4213, "box_mAP": 0.5},
    "hyperparameters": {"lr": 1e-4, "epochs": 3, "batch_size": 8},
}


def forward_prompts(model: Sam3Model, tokenizer, image_size: int, seed: int = 0):
    """`Sam3Model.forward` on random pixels, one image per prompt of PROMPTS."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(PROMPTS), 3, image_size, image_size, generator=gen)
    with torch.no_grad():
        return model(pixel_values=pixels, **tokenize(tokenizer, PROMPTS))
