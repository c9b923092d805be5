"""`decoder` mode's cache: the frozen ViT's output for every image, computed once and kept on disk in fp16.

The ViT is most of a step's cost and, frozen, gives the same output every epoch; each step then runs only the
neck and the heads. Entries live under a fingerprint of the base model, the input size and the backbone's
first weights, so a run on another base or size never reads stale features from a shared cache directory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Sam3Model

from trainer import data as D
from trainer.forward import vision_backbone


def backbone_fingerprint(model: Sam3Model, base_model: str, image_size: int) -> str:
    """16 hex digits naming this backbone at this input size; reading a few weights is enough to tell bases
    apart without hashing hundreds of megabytes."""
    h = hashlib.sha256(f"{base_model}|{image_size}".encode())
    for name, p in list(model.vision_encoder.backbone.state_dict().items())[:8]:
        h.update(name.encode())
        h.update(p.detach().float().flatten()[:256].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class VisionCache:
    """One safetensors file per (split, image id) under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, split: str, image_id: int) -> Path:
        return self.directory / split / f"{image_id}.safetensors"

    def missing(self, splits: dict[str, D.SplitData]) -> list[tuple[str, D.Sample]]:
        """Every (split, sample) whose entry is not on disk yet."""
        return [(s, smp) for s, d in splits.items() for smp in d.samples
                if not self.path(s, smp.image_id).exists()]  # fmt: skip

    @torch.no_grad()
    def fill(
        self,
        model: Sam3Model,
        todo: Sequence[tuple[str, D.Sample]],
        *,
        image_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        device: torch.device,
        on_image: Callable[[int], None] | None = None,
    ) -> None:
        """Run the ViT on each image of `todo` and write its output. Each file is written under a temporary
        name and renamed, so ranks sharing the directory (or a run killed mid-write) never leave a torn one.
        `on_image(n)` is called once the n-th image's file is in place (the phase's progress)."""
        for n, (split, sample) in enumerate(todo, start=1):
            pixels = D.load_pixels(sample.path, image_size, image_size, mean, std)[None].to(device)
            hidden = vision_backbone(model, pixels)[0]
            path = self.path(split, sample.image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({"hidden": hidden.to(torch.float16).cpu().contiguous()}, str(tmp))
            os.replace(tmp, path)
            if on_image is not None:
                on_image(n)

    def load(self, split: str, samples: Sequence[D.Sample], device: torch.device) -> torch.Tensor:
        """[len(samples), tokens, channels] in float32 on `device`, for the neck."""
        rows = [load_file(str(self.path(split, s.image_id)))["hidden"] for s in samples]
        return torch.stack(rows).to(device, torch.float32)
