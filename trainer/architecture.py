"""SAM 3's architecture as samtune uses it: a tiny configuration for tests and from-scratch runs,
facebook/sam3's own at any input size for benchmarks, and the sizes derived from a configuration.

Everything here is transformers' own `Sam3Config`; nothing is re-implemented.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from transformers import Sam3Config, Sam3Model, Sam3VisionConfig, Sam3ViTConfig

from trainer.tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, MAX_LENGTH, PAD_TOKEN_ID, VOCAB_SIZE

TINY_IMAGE_SIZE = 224
PATCH_SIZE = 14
MIN_IMAGE_SIZE = 112
MAX_IMAGE_SIZE = 1008
SAM3_IMAGE_MEAN = (0.5, 0.5, 0.5)  # Sam3ImageProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD)
SAM3_IMAGE_STD = (0.5, 0.5, 0.5)


def _window_size(grid: int) -> int:
    """ViT window for a `grid` x `grid` patch grid: the largest divisor of the grid that is at most 24 (SAM 3's
    window) and at most half the grid, so there are several windows; a grid without one gets a single window."""
    for d in range(min(24, grid // 2), 1, -1):
        if grid % d == 0:
            return d
    return grid


def tiny_sam3_config(
    image_size: int = TINY_IMAGE_SIZE,
    *,
    hidden: int = 64,
    vit_layers: int = 2,
    decoder_layers: int = 2,
    num_queries: int = 20,
    text_layers: int = 2,
) -> Sam3Config:
    """The same Sam3Config classes as facebook/sam3, with tiny sizes.

    image_size: a multiple of 14 in [112, 1008]; the patch grid g = image_size // 14 gives the backbone
    feature sizes (4g, 2g, g) and the ViT window (see `_window_size`). Every head shares `hidden` (the FPN
    width), which must be a multiple of 8; attention heads have 32 channels each. The text encoder is a full
    tiny CLIP text config (49408 tokens, 32 positions, SAM 3's gelu) whose special ids match
    `trainer.tokenizer`. Inputs must be image_size x image_size.
    """
    if image_size % PATCH_SIZE or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be a multiple of {PATCH_SIZE} in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {image_size}"
        )
    if hidden < 32 or hidden % 8:
        raise ValueError(f"hidden must be a multiple of 8 and at least 32, got {hidden}")
    if min(vit_layers, decoder_layers, num_queries, text_layers) < 1:
        raise ValueError("layer and query counts must be positive")
    grid = image_size // PATCH_SIZE
    heads = max(1, hidden // 32)
    while hidden % heads or (hidden // heads) % 4:  # RoPE needs head_dim divisible by 4
        heads -= 1
    ffn = 2 * hidden
    # Global attention every few layers ending on the last one, as SAM 3 does (7, 15, 23, 31 of 32 layers).
    spacing = max(2, vit_layers // 4)
    global_layers = [i for i in range(vit_layers) if (i + 1) % spacing == 0] or [vit_layers - 1]

    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(
                model_type="sam3_vit_model",
                hidden_size=hidden,
                intermediate_size=ffn,
                num_hidden_layers=vit_layers,
                num_attention_heads=heads,
                image_size=image_size,
                patch_size=PATCH_SIZE,
                window_size=_window_size(grid),
                global_attn_indexes=global_layers,
                pretrain_image_size=image_size,
            ),
            fpn_hidden_size=hidden,
            backbone_feature_sizes=[[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]],
        ),
        # A text_config dict replaces SAM 3's text defaults entirely, so it is complete here.
        text_config=dict(
            model_type="clip_text_model",
            vocab_size=VOCAB_SIZE,
            hidden_size=hidden,
            intermediate_size=ffn,
            num_hidden_layers=text_layers,
            num_attention_heads=heads,
            max_position_embeddings=MAX_LENGTH,
            projection_dim=hidden,
            hidden_act="gelu",
            bos_token_id=BOS_TOKEN_ID,
            eos_token_id=EOS_TOKEN_ID,
            pad_token_id=PAD_TOKEN_ID,
        ),
        geometry_encoder_config=dict(
            hidden_size=hidden, num_layers=1, num_attention_heads=heads, intermediate_size=ffn
        ),
        detr_encoder_config=dict(
            hidden_size=hidden, num_layers=1, num_attention_heads=heads, intermediate_size=ffn
        ),
        detr_decoder_config=dict(
            hidden_size=hidden,
            num_layers=decoder_layers,
            num_queries=num_queries,
            num_attention_heads=heads,
            intermediate_size=ffn,
        ),
        mask_decoder_config=dict(hidden_size=hidden, num_upsampling_stages=3, num_attention_heads=heads),
    )


def full_size_sam3_config(image_size: int = 1008) -> Sam3Config:
    """facebook/sam3's architecture (ViT-L/14 with 32 layers, CLIP-L text, 256-wide heads, 200 queries) at a
    chosen input size, for benchmarks with random weights. At 1008 it is SAM 3's own configuration."""
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
    config = Sam3Config()
    grid = image_size // PATCH_SIZE
    backbone = backbone_config(config)
    backbone.image_size = image_size
    if grid % backbone.window_size:
        backbone.window_size = _window_size(grid)
    vision_config(config).backbone_feature_sizes = [[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]]
    return config


# transformers declares the sub-configurations `dict | PreTrainedConfig | None` (what __init__ accepts); a
# built Sam3Config always holds the classes themselves.
def vision_config(config: Sam3Config) -> Sam3VisionConfig:
    return cast(Sam3VisionConfig, config.vision_config)


def backbone_config(config: Sam3Config) -> Sam3ViTConfig:
    return cast(Sam3ViTConfig, vision_config(config).backbone_config)


def to_device(model: Sam3Model, device: torch.device | str) -> Sam3Model:
    """`model.to(device)`: transformers decorates `to` with functools.wraps, whose type drops the bound self."""
    return model.to(device)  # type: ignore[arg-type]


def model_image_size(model: Sam3Model) -> int:
    size = vision_config(model.config).image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def mask_size_for(image_size: int, patch_size: int = PATCH_SIZE) -> int:
    """Side of SAM 3's predicted masks: 4x the patch grid (288 for 1008 inputs)."""
    return image_size // patch_size * 4


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def format_parameters(n: int) -> str:
    """A parameter count for people: '4.2M', '840M'."""
    return f"{n / 1e6:.0f}M" if n >= 100e6 else f"{n / 1e6:.1f}M"
