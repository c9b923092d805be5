"""Saving a fine-tuned SAM 3 as a self-contained model directory: the weights, the tokenizer and processor
files `Sam3Processor.from_pretrained` reads, samtune's JSON card and a Markdown model card rendered from it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import Sam3Model

from trainer.architecture import (
    SAM3_IMAGE_MEAN,
    SAM3_IMAGE_STD,
    backbone_config,
    count_parameters,
    format_parameters,
    mask_size_for,
    model_image_size,
)
from trainer.base_model import CARD_FILE, looks_like_repo_id

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def _md_cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _md_cell(value)


def _title(key: str) -> str:
    return key.replace("_", " ").strip().capitalize() or key


def render_model_card(card: dict[str, Any], *, image_size: int, num_parameters: int | None = None) -> str:
    """README.md for a saved model: YAML front matter for the Hub, a summary of the scalar entries of `card`,
    then one table per dict entry (e.g. metrics, hyperparameters) and one list per list entry; keys as given."""
    base = card.get("base_model")
    front = ["---", "library_name: transformers", "pipeline_tag: mask-generation", "tags:"]
    front += ["- sam3", "- instance-segmentation", "- samtune"]
    if isinstance(base, str) and looks_like_repo_id(base):  # the Hub only accepts repo ids here
        front.append(f"base_model: {json.dumps(base)}")
    front.append("---")

    lines = [*front, "", f"# {card.get('name') or 'samtune fine-tuned SAM 3 model'}", ""]
    lines.append(
        "A SAM 3 detector (transformers `Sam3Model`) fine-tuned for instance segmentation with samtune. "
        f"Input size {image_size}x{image_size}"
        + (f", {format_parameters(num_parameters)} parameters." if num_parameters else ".")
    )
    lines.append("")
    scalars = [(k, v) for k, v in card.items() if not isinstance(v, (dict, list, tuple))]
    if scalars:
        lines += ["## Summary", ""]
        lines += [f"- **{k}**: {_md_value(v)}" for k, v in scalars]
        lines.append("")
    for key, value in card.items():
        if isinstance(value, dict):
            lines += [f"## {_title(key)}", "", f"| {key} | value |", "| --- | --- |"]
            lines += [f"| {_md_cell(k)} | {_md_value(v)} |" for k, v in value.items()]
            lines.append("")
        elif isinstance(value, (list, tuple)):
            lines += [f"## {_title(key)}", ""]
            lines += [f"- {_md_value(v)}" for v in value]
            lines.append("")
    lines += [
        "## Usage",
        "",
        "```python",
        "from transformers import Sam3Model, Sam3Processor",
        "",
        'model = Sam3Model.from_pretrained("path/to/this/directory")',
        'processor = Sam3Processor.from_pretrained("path/to/this/directory")',
        "```",
        "",
        f"The full card is in `{CARD_FILE}`.",
        "",
    ]
    return "\n".join(lines)


def _write_processor_files(
    out_dir: Path,
    tokenizer: PreTrainedTokenizerBase,
    image_size: int,
    mask_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> None:
    """Tokenizer files + processor_config.json (Sam3Processor) + preprocessor_config.json (image processor)."""
    tokenizer.save_pretrained(str(out_dir))
    try:
        from transformers import Sam3ImageProcessor, Sam3Processor

        image_processor = Sam3ImageProcessor(
            size={"height": image_size, "width": image_size},
            mask_size={"height": mask_size, "width": mask_size},
            image_mean=list(mean),
            image_std=list(std),
        )
        image_processor.save_pretrained(str(out_dir))
        Sam3Processor(
            image_processor=image_processor, tokenizer=tokenizer, target_size=image_size
        ).save_pretrained(str(out_dir))
        return
    except Exception as exc:  # e.g. torchvision missing: write the same keys by hand
        log.warning("Sam3Processor could not be built (%s); writing the processor configs by hand", exc)
    image_cfg = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(mean),
        "image_std": list(std),
        "image_processor_type": "Sam3ImageProcessor",
        "mask_size": {"height": mask_size, "width": mask_size},
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": image_size, "width": image_size},
    }
    processor_cfg = {
        "image_processor": image_cfg,
        "point_pad_value": -10,
        "processor_class": "Sam3Processor",
        "target_size": image_size,
    }
    (out_dir / "preprocessor_config.json").write_text(
        json.dumps(image_cfg, indent=2) + "\n", encoding="utf-8"
    )
    (out_dir / "processor_config.json").write_text(
        json.dumps(processor_cfg, indent=2) + "\n", encoding="utf-8"
    )


def save_model(
    model: Sam3Model,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    *,
    image_size: int,
    card: dict[str, Any],
    image_mean: tuple[float, float, float] = SAM3_IMAGE_MEAN,
    image_std: tuple[float, float, float] = SAM3_IMAGE_STD,
) -> Path:
    """Write a self-contained model directory; returns it.

    Contents: config.json + model.safetensors (save_pretrained), the tokenizer files, processor_config.json
    and preprocessor_config.json (Sam3Processor / Sam3ImageProcessor at `image_size`, masks at 4x the patch
    grid), samtune_model_card.json (`card` verbatim) and a README.md model card rendered from `card`. It loads
    with Sam3Model.from_pretrained / Sam3Processor.from_pretrained and with load_base_model.

    A new `out_dir` is written in a temporary sibling and renamed into place, so it never exists half-written;
    an existing one is written into (files of the same name replaced).
    """
    configured = model_image_size(model)
    if image_size != configured:
        raise ValueError(
            f"image_size {image_size} differs from the model's configured image size {configured}"
        )
    patch = backbone_config(model.config).patch_size
    patch = int(patch[0] if isinstance(patch, (list, tuple)) else patch)
    card_json = (
        json.dumps(card, indent=2, default=str, ensure_ascii=False) + "\n"
    )  # fail early if unserialisable

    out_dir = Path(out_dir)
    fresh = not out_dir.exists()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent)) if fresh else out_dir
    try:
        if fresh:
            target.chmod(0o755)  # mkdtemp makes it private; servers may run as another user
        model.save_pretrained(str(target))
        _write_processor_files(
            target, tokenizer, image_size, mask_size_for(image_size, patch), image_mean, image_std
        )
        (target / CARD_FILE).write_text(card_json, encoding="utf-8")
        readme = render_model_card(card, image_size=image_size, num_parameters=count_parameters(model))
        (target / "README.md").write_text(readme, encoding="utf-8")
        if fresh:
            os.rename(target, out_dir)
    finally:
        if fresh and target.exists():
            shutil.rmtree(target, ignore_errors=True)
    return out_dir
