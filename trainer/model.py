"""SAM 3 models for samtune: a tiny configuration for tests and from-scratch runs, loading a base model
(Hugging Face repo id, local directory or an earlier samtune output) offline, and saving a fine-tuned one.

Everything here is transformers' own `Sam3Model` / `Sam3Config`; nothing is re-implemented.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import Sam3Config, Sam3Model

from trainer.tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, MAX_LENGTH, PAD_TOKEN_ID, VOCAB_SIZE, load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TINY_IMAGE_SIZE = 224
PATCH_SIZE = 14
MIN_IMAGE_SIZE = 112
MAX_IMAGE_SIZE = 1008
SAM3_IMAGE_MEAN = (0.5, 0.5, 0.5)  # Sam3ImageProcessor's defaults (IMAGENET_STANDARD_MEAN / _STD)
SAM3_IMAGE_STD = (0.5, 0.5, 0.5)
CARD_FILE = "samtune_model_card.json"
SAM3_MODEL_TYPES = (
    "sam3",
    "sam3_video",
)  # facebook/sam3's config.json is a sam3_video one holding the detector
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt"]  # never the original sam3.pt checkpoint

# Meta's released SAM 3, used whenever it is in the hub cache or configured as a local directory.
META_BASE = "facebook/sam3"
# samtune's own tiny SAM 3, pretrained on the synthetic shapes corpus (`python -m trainer.pretrain`) and
# committed with the code: the base model when Meta's weights are not available (no download here).
EMBEDDED_BASE = "samtune/sam3-tiny-shapes"
# In a checkout (or an editable install) the weights sit beside the code; an installed package (the Docker
# image) is told where they are.
EMBEDDED_BASE_DIR = Path(
    os.environ.get("SAMTUNE_EMBEDDED_BASE_DIR")
    or Path(__file__).resolve().parent.parent / "models" / "sam3-tiny-shapes"
)


# --------------------------------------------------------------------------------------------- config


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


def model_image_size(model: Sam3Model) -> int:
    size = model.config.vision_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def mask_size_for(image_size: int, patch_size: int = PATCH_SIZE) -> int:
    """Side of SAM 3's predicted masks: 4x the patch grid (288 for 1008 inputs)."""
    return image_size // patch_size * 4


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _format_params(n: int) -> str:
    return f"{n / 1e6:.0f}M" if n >= 100e6 else f"{n / 1e6:.1f}M"


# --------------------------------------------------------------------------------------------- loading


class BaseModelNotFound(Exception):
    """A base model could not be found; the message says where it looked and why it failed."""


@dataclass
class LoadedModel:
    model: Sam3Model
    tokenizer: PreTrainedTokenizerBase
    image_size: int
    source: str  # where it came from: "facebook/sam3 (hub cache at ...)" or the local directory
    description: str  # one human line for the UI/API
    image_mean: tuple[float, float, float] = SAM3_IMAGE_MEAN
    image_std: tuple[float, float, float] = SAM3_IMAGE_STD
    # samtune_model_card.json when the directory is a samtune output, else None
    card: dict[str, Any] | None = field(default=None)

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.model)


def _hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved now (not at import) from the usual environment variables."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?")


def _looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name and not name.endswith(".")


def _missing_files(directory: Path) -> list[str]:
    missing = []
    if not (directory / "config.json").is_file():
        missing.append("config.json")
    if not any((directory / f).is_file() for f in _WEIGHT_FILES):
        missing.append("model.safetensors")
    return missing


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _normalisation(directory: Path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """image_mean / image_std from preprocessor_config.json or processor_config.json, else SAM 3's defaults."""
    candidates = []
    pre = _read_json(directory / "preprocessor_config.json")
    if pre:
        candidates.append(pre)
    proc = _read_json(directory / "processor_config.json")
    if proc and isinstance(proc.get("image_processor"), dict):
        candidates.append(proc["image_processor"])
    for cfg in candidates:
        mean, std = cfg.get("image_mean"), cfg.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == 3 and len(std) == 3:
            return tuple(float(x) for x in mean), tuple(float(x) for x in std)  # type: ignore[return-value]
    return SAM3_IMAGE_MEAN, SAM3_IMAGE_STD


def _load_tokenizer_from(directory: Path) -> PreTrainedTokenizerBase:
    if any((directory / f).is_file() for f in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as exc:
            log.warning("tokenizer files in %s did not load (%s); using the offline CLIP BPE", directory, exc)
    return load_tokenizer()


def _load_from_directory(
    directory: Path,
    *,
    source: str,
    hub_repo: str | None,
    device: str | torch.device,
    dtype: torch.dtype | None,
) -> LoadedModel:
    missing = _missing_files(directory)
    if missing:
        present = sorted(p.name for p in directory.iterdir())[:20] if directory.is_dir() else []
        raise BaseModelNotFound(
            f"{source}: {directory} lacks {' and '.join(missing)} (a SAM 3 model directory needs config.json and "
            f"model.safetensors as written by save_pretrained); it holds {present or 'nothing'}"
        )
    config_json = _read_json(directory / "config.json") or {}
    model_type = config_json.get("model_type")
    if model_type not in SAM3_MODEL_TYPES:
        raise BaseModelNotFound(
            f"{source}: {directory / 'config.json'} is not a SAM 3 config (model_type={model_type!r}, "
            f"expected one of {SAM3_MODEL_TYPES})"
        )
    try:
        model, info = Sam3Model.from_pretrained(
            str(directory),
            local_files_only=True,
            dtype=dtype if dtype is not None else torch.float32,
            output_loading_info=True,
        )
    except (OSError, ValueError) as exc:
        raise BaseModelNotFound(f"{source}: {directory} could not be loaded as a SAM 3 model: {exc}") from exc
    if info.get("missing_keys"):
        keys = sorted(info["missing_keys"])
        log.warning(
            "%s: %d weights missing from the checkpoint (freshly initialised): %s",
            source,
            len(keys),
            keys[:10],
        )
    model.to(device)

    card = _read_json(directory / CARD_FILE)
    n = _format_params(count_parameters(model))
    if hub_repo == EMBEDDED_BASE:
        description = (
            f"{EMBEDDED_BASE} (samtune's tiny SAM 3 pretrained on synthetic shapes, bundled; "
            f"not Meta's weights; {n} params)"
        )
    elif card is not None:
        base = card.get("base_model")
        description = f"samtune fine-tuned model {directory}" + (
            f" (from {base}, {n} params)" if base else f" ({n} params)"
        )
    elif hub_repo is not None:
        kind = "Meta SAM 3" if hub_repo == "facebook/sam3" else "SAM 3"
        description = f"{hub_repo} ({kind}, {n} params)"
    else:
        description = f"local: {directory} (SAM 3, {n} params)"
    mean, std = _normalisation(directory)
    return LoadedModel(
        model=model,
        tokenizer=_load_tokenizer_from(directory),
        image_size=model_image_size(model),
        source=source,
        description=description,
        image_mean=mean,
        image_std=std,
        card=card,
    )


def _hub_snapshot(repo_id: str, *, local_files_only: bool) -> tuple[Path, Path]:
    """(snapshot directory, cache directory) of `repo_id`, from the cache or (if allowed) downloaded."""
    from huggingface_hub import snapshot_download

    cache = _hub_cache_dir()
    repo_folder = cache / ("models--" + repo_id.replace("/", "--"))
    try:
        snapshot = snapshot_download(
            repo_id, cache_dir=str(cache), local_files_only=local_files_only, allow_patterns=_HUB_PATTERNS
        )
    except (
        Exception
    ) as exc:  # LocalEntryNotFoundError, GatedRepoError, RepositoryNotFoundError, HTTP errors...
        if local_files_only:
            why = (
                f"it is not in the Hugging Face cache (looked in {repo_folder}; cache dir {cache}) and "
                "local_files_only=True forbids downloading. Download it first, e.g. "
                f"`hf auth login` then `hf download {repo_id}` (a gated model needs its licence accepted "
                "on its hub page first), or pass a local directory"
            )
        else:
            why = f"downloading into {repo_folder} failed: {type(exc).__name__}: {exc}"
        raise BaseModelNotFound(f"base model {repo_id!r} not found: {why}") from exc
    return Path(snapshot), repo_folder


def load_base_model(
    name_or_path: str,
    *,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load a SAM 3 detector (`Sam3Model`) with its tokenizer.

    `name_or_path`: a Hugging Face repo id (e.g. 'facebook/sam3'), EMBEDDED_BASE (the bundled tiny model), or a directory written by save_pretrained
    (config.json + model.safetensors), or one samtune saved (same layout + samtune_model_card.json). An
    existing directory wins over a repo id of the same spelling. Offline by default: with
    local_files_only=True a repo id must already be in the hub cache. dtype defaults to float32 (training
    keeps float32 master weights). The tokenizer comes from the directory when it has tokenizer files, else
    it is the offline CLIP BPE of `trainer.tokenizer`. The model is returned as from_pretrained leaves it
    (eval mode). Raises BaseModelNotFound naming the paths it checked.
    """
    name = str(name_or_path).strip()
    if not name:
        raise BaseModelNotFound("no base model given (empty name or path)")
    path = Path(name).expanduser()
    if name == EMBEDDED_BASE and not path.is_dir():
        source = f"{EMBEDDED_BASE} (bundled at {EMBEDDED_BASE_DIR})"
        return _load_from_directory(
            EMBEDDED_BASE_DIR, source=source, hub_repo=EMBEDDED_BASE, device=device, dtype=dtype
        )
    if path.is_dir():
        resolved = path.resolve()
        return _load_from_directory(resolved, source=str(resolved), hub_repo=None, device=device, dtype=dtype)
    if path.exists():
        raise BaseModelNotFound(f"base model path {path.resolve()} is a file, not a model directory")
    if not _looks_like_repo_id(name):
        raise BaseModelNotFound(
            f"local model directory {path.resolve()} does not exist (and {name!r} is not a Hugging Face repo id)"
        )
    snapshot, repo_folder = _hub_snapshot(name, local_files_only=local_files_only)
    source = f"{name} (hub cache at {repo_folder}, snapshot {snapshot.name})"
    return _load_from_directory(snapshot, source=source, hub_repo=name, device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------- saving


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
    if isinstance(base, str) and _looks_like_repo_id(base):  # the Hub only accepts repo ids here
        front.append(f"base_model: {json.dumps(base)}")
    front.append("---")

    lines = [*front, "", f"# {card.get('name') or 'samtune fine-tuned SAM 3 model'}", ""]
    lines.append(
        "A SAM 3 detector (transformers `Sam3Model`) fine-tuned for instance segmentation with samtune. "
        f"Input size {image_size}x{image_size}"
        + (f", {_format_params(num_parameters)} parameters." if num_parameters else ".")
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
    patch = model.config.vision_config.backbone_config.patch_size
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


# --------------------------------------------------------------------------------------------- init


@torch.no_grad()
def reinit_for_pretraining(model: Sam3Model, seed: int = 0) -> None:
    """Re-initialise `model` for training from scratch, deterministically.

    transformers' default init (normal, std 0.02) leaves a narrow model blind: presence logits constant, masks
    independent of the prompt. Here every nn.Linear, nn.Conv2d and nn.ConvTranspose2d weight gets
    xavier_uniform_ (bias 0), every nn.Embedding N(0, 1) (its padding row, if any, 0), and LayerNorm /
    GroupNorm are set to ones / zeros. The ViT's position table (a bare Parameter) is redrawn
    N(0, initializer_range) so that nothing depends on the global RNG. The
    values are drawn on the CPU from a torch.Generator seeded by `seed`, in module order, then copied to the
    parameters' device and dtype, so the result does not depend on the device.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def assign(param: torch.Tensor, value: torch.Tensor) -> None:
        param.copy_(value.to(device=param.device, dtype=param.dtype))

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            weight = torch.empty(module.weight.shape, dtype=torch.float32)
            nn.init.xavier_uniform_(weight, generator=gen)
            assign(module.weight, weight)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            weight = torch.empty(module.weight.shape, dtype=torch.float32)
            weight.normal_(0.0, 1.0, generator=gen)
            if module.padding_idx is not None:
                weight[module.padding_idx] = 0.0
            assign(module.weight, weight)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()
        else:
            # A learned position table kept as a bare Parameter (the ViT's): redrawn at transformers' scale
            # (N(0, initializer_range)) from the same generator, so the whole model depends on `seed` only.
            table = module._parameters.get("position_embeddings")
            if isinstance(table, nn.Parameter):
                std = float(getattr(model.config, "initializer_range", 0.02))
                weight = torch.empty(table.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
                assign(table, weight)


__all__ = [
    "TINY_IMAGE_SIZE",
    "BaseModelNotFound",
    "LoadedModel",
    "count_parameters",
    "load_base_model",
    "mask_size_for",
    "model_image_size",
    "reinit_for_pretraining",
    "render_model_card",
    "save_model",
    "tiny_sam3_config",
]


def full_size_sam3_config(image_size: int = 1008) -> Sam3Config:
    """facebook/sam3's architecture (ViT-L/14 with 32 layers, CLIP-L text, 256-wide heads, 200 queries) at a
    chosen input size, for benchmarks with random weights. At 1008 it is SAM 3's own configuration."""
    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
    config = Sam3Config()
    grid = image_size // PATCH_SIZE
    backbone = config.vision_config.backbone_config
    backbone.image_size = image_size
    if grid % backbone.window_size:
        backbone.window_size = _window_size(grid)
    config.vision_config.backbone_feature_sizes = [[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]]
    return config


def hub_cached(repo_id: str) -> Path | None:
    """The snapshot directory of `repo_id` when the Hugging Face cache holds its config, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(_hub_cache_dir()))
    return Path(found).parent if isinstance(found, str) else None
