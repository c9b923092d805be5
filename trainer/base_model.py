"""Loading a SAM 3 base model: a Hugging Face repo id from the hub cache (downloaded into it first when the
caller allows), samtune's bundled tiny model, a local directory, or an earlier samtune output.
`Sam3Model.from_pretrained` does the loading; this module finds the directory, checks it, and says where it
looked when it cannot.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import Sam3Model

from trainer.architecture import (
    SAM3_IMAGE_MEAN,
    SAM3_IMAGE_STD,
    count_parameters,
    format_parameters,
    model_image_size,
    to_device,
)
from trainer.hub_download import DownloadProgress, HubDownloadFailed, download_snapshot, offline
from trainer.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

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

    def class_prompts(self, classes: Sequence[str]) -> list[str]:
        """The prompts this model was trained to answer `classes` with (`class_prompts` of its card)."""
        return class_prompts(classes, self.card)


def class_prompts(classes: Sequence[str], card: Mapping[str, Any] | None) -> list[str]:
    """The text each class is asked with: the prompt the model was trained with, else the class name.

    `card` is a samtune model card (`prompts` a list aligned with its `classes`, as training writes it) or,
    while training, `{"prompts": TrainConfig.prompts}` (class -> text). Training, evaluation, prediction and
    batch prediction all ask through this, so a model is asked what it learned to answer ("violet blob"),
    never the bare class name it was trained to report ("purple shape").
    """
    info: Mapping[str, Any] = card or {}
    prompts, named = info.get("prompts"), info.get("classes")
    trained: dict[str, str] = {}
    if isinstance(prompts, Mapping):
        trained = {str(k): str(v) for k, v in prompts.items()}
    elif isinstance(prompts, list) and isinstance(named, list):
        trained = {str(c): str(p) for c, p in zip(named, prompts, strict=False)}
    return [trained.get(c) or c for c in classes]


def _hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved now (not at import) from the usual environment variables."""
    from huggingface_hub import constants

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_cached(repo_id: str) -> Path | None:
    """The snapshot directory of `repo_id` when the Hugging Face cache holds its config, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(_hub_cache_dir()))
    return Path(found).parent if isinstance(found, str) else None


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?")


def looks_like_repo_id(name: str) -> bool:
    """Whether `name` is spelled like a Hugging Face repo id (the Hub's model cards accept only those)."""
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
            m0, m1, m2 = (float(x) for x in mean)
            s0, s1, s2 = (float(x) for x in std)
            return (m0, m1, m2), (s0, s1, s2)
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
        # output_loading_info=True returns (model, info); transformers annotates the model alone
        model, info = cast(
            "tuple[Sam3Model, dict[str, Any]]",
            Sam3Model.from_pretrained(
                str(directory),
                local_files_only=True,
                dtype=dtype if dtype is not None else torch.float32,
                output_loading_info=True,
            ),
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
    to_device(model, device)

    card = _read_json(directory / CARD_FILE)
    n = format_parameters(count_parameters(model))
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


def _hub_snapshot(
    repo_id: str, *, local_files_only: bool, download_progress: DownloadProgress | None = None
) -> tuple[Path, Path]:
    """(snapshot directory, cache directory) of `repo_id`: from the cache, else (if allowed) downloaded."""
    from huggingface_hub import snapshot_download

    cache = _hub_cache_dir()
    repo_folder = cache / ("models--" + repo_id.replace("/", "--"))
    try:
        snapshot = snapshot_download(
            repo_id, cache_dir=str(cache), local_files_only=True, allow_patterns=_HUB_PATTERNS
        )
        return Path(snapshot), repo_folder
    except Exception as exc:  # LocalEntryNotFoundError: not (or not wholly) in the cache
        if local_files_only:
            raise BaseModelNotFound(
                f"base model {repo_id!r} not found: it is not in the Hugging Face cache (looked in "
                f"{repo_folder}; cache dir {cache}) and downloading is off here. Download it first, e.g. "
                f"`hf auth login` then `hf download {repo_id}` (a gated model needs its licence accepted "
                "on its hub page first), or pass a local directory"
            ) from exc
    if offline():
        raise BaseModelNotFound(
            f"base model {repo_id!r} is not in the Hugging Face cache ({repo_folder}) and HF_HUB_OFFLINE is set, "
            f"which forbids downloading it: unset HF_HUB_OFFLINE, or `hf download {repo_id}` where the Hub is "
            "reachable"
        )
    try:
        snapshot_dir = download_snapshot(
            repo_id, cache_dir=cache, allow_patterns=_HUB_PATTERNS, progress=download_progress
        )
    except HubDownloadFailed as exc:
        raise BaseModelNotFound(f"base model {repo_id!r} could not be downloaded: {exc}") from None
    return snapshot_dir, repo_folder


def load_base_model(
    name_or_path: str,
    *,
    device: str | torch.device = "cpu",
    local_files_only: bool = True,
    dtype: torch.dtype | None = None,
    download_progress: DownloadProgress | None = None,
) -> LoadedModel:
    """Load a SAM 3 detector (`Sam3Model`) with its tokenizer.

    `name_or_path`: a Hugging Face repo id (e.g. 'facebook/sam3'), EMBEDDED_BASE (the bundled tiny model), or a directory written by save_pretrained
    (config.json + model.safetensors), or one samtune saved (same layout + samtune_model_card.json). An
    existing directory wins over a repo id of the same spelling. Offline by default: with
    local_files_only=True a repo id must already be in the hub cache; with False one that is not is downloaded
    (HF_ENDPOINT, HF_TOKEN; never with HF_HUB_OFFLINE set), `download_progress` getting its bytes. dtype defaults to float32 (training
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
    if not looks_like_repo_id(name):
        raise BaseModelNotFound(
            f"local model directory {path.resolve()} does not exist (and {name!r} is not a Hugging Face repo id)"
        )
    snapshot, repo_folder = _hub_snapshot(
        name, local_files_only=local_files_only, download_progress=download_progress
    )
    source = f"{name} (hub cache at {repo_folder}, snapshot {snapshot.name})"
    return _load_from_directory(snapshot, source=source, hub_repo=name, device=device, dtype=dtype)
