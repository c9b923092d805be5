"""The training configuration: what a user (or the worker) asks for, and the resolved values with the
reason for each, which the run records in `config_resolved.yaml` and the UI shows before a job starts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from trainer.memory import MemoryPlan

Mode = Literal["auto", "decoder", "full"]

# Images per optimizer step when the configuration does not say: what the memory fit keeps, accumulating
# gradients over smaller micro-batches when a batch this large does not fit.
DEFAULT_BATCH = {"cuda": 4, "cpu": 2}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        description="HF repo id, a local model directory, or a samtune fine-tuned model directory."
    )
    base_model_name: str | None = Field(
        default=None,
        description="The base model's name for the model card when base_model is where it lies (a local "
        "copy of a Hub repo, say); default: base_model.",
    )
    hub_download: bool = Field(
        default=False,
        description="When base_model is a Hugging Face repo id missing from the hub cache, download it (the "
        "endpoint and token from HF_ENDPOINT and HF_TOKEN; never with HF_HUB_OFFLINE set). Off: the cache only.",
    )
    data_dir: Path = Field(
        description="A version snapshot or Roboflow/ODinW export: {train,valid,test}/_annotations.coco.json"
    )
    output_dir: Path = Field(description="The run directory.")
    mode: Mode = "auto"

    # None = chosen by resolve() from the data and the device, with a reason.
    epochs: int | None = Field(default=None, ge=1, le=1000)
    batch_size: int | None = Field(
        default=None, ge=1, le=256, description="Images per forward pass (a micro-batch when accumulating)."
    )
    grad_accumulation: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Micro-batches per optimizer step: each step sees batch_size x grad_accumulation images.",
    )
    warmup_steps: int | None = Field(default=None, ge=0)
    early_stopping_patience: int | None = Field(
        default=None, ge=0, description="Epochs without a better valid mask AP."
    )
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")

    lr_heads: float = Field(default=8e-5, gt=0)
    lr_vision: float = Field(default=2.5e-5, gt=0)
    lr_text: float = Field(default=5e-6, gt=0)
    layer_decay: float = Field(default=0.9, gt=0, le=1)
    weight_decay: float = Field(default=0.1, ge=0)
    grad_clip: float = Field(default=0.1, gt=0)
    cooldown_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Share of steps of the final linear decay."
    )

    seed: int = 0
    max_negatives: int = Field(
        default=8, ge=0, description="Absent-class (negative) queries per image at most."
    )
    prompts: dict[str, str] = Field(
        default_factory=dict, description="Class name -> text prompt; default: the name."
    )
    scale_jitter: bool = Field(
        default=True, description="Random square 480..992 of 1008 padded (full mode only)."
    )
    cls_negative_queries: bool = Field(
        default=False, description="Classification loss on the slots of negative queries too (pretraining)."
    )
    one_to_many: float = Field(
        default=0.0, ge=0, description="Weight of Meta's one-to-many matching term (0 = off)."
    )
    box_exemplar_prob: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Chance that a positive query also gets one of its boxes as an exemplar prompt.",
    )
    image_size: int | None = Field(default=None, description="Model input size; default: the model's own.")
    recompute_activations: bool = Field(
        default=False,
        description="Recompute the heads' activations in the backward pass instead of keeping them: about a "
        "quarter less memory per query row for about a third more time per step (bench/train_memory.py).",
    )
    rows_per_pass: int | None = Field(
        default=None,
        ge=1,
        description="Query rows (an image asked about one prompt) run through the heads at once; a step over "
        "more runs them in passes and sums the gradients. Default: 1 on a CPU at 896 px and above (each row "
        "keeps about 1.9 GiB of activations at 1008 px), all at once otherwise.",
    )
    device: str = "auto"
    memory_budget_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Memory a run may use, for fitting the batch (trainer/memory.py); default: the GPU's "
        "total memory, or the machine's free RAM on the CPU.",
    )
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    checkpoint_every_steps: int = Field(default=100, ge=1)
    checkpoint_every_seconds: float = Field(
        default=300,
        ge=1,
        description="Also checkpoint once this many seconds have passed since the last checkpoint (or the "
        "start): a killed run loses at most about this much, however long its steps are.",
    )
    eval_every_epochs: int = Field(default=1, ge=1)
    eval_nms_iou: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Mask NMS at evaluation (and in the saved model's card): drop a mask whose IoU with a "
        "higher-scored one of the same prompt exceeds this. Off by default, as in SAM 3's own post-processing.",
    )
    eval_base_model: bool = Field(default=True, description="Also evaluate the base model zero-shot on test.")
    max_rollbacks: int = Field(default=3, ge=0)
    spike_factor: float = Field(
        default=10.0, gt=1, description="A loss this many times the recent median is a spike."
    )
    cache_dir: Path | None = Field(
        default=None, description="Decoder-mode embedding cache; default: output_dir/cache."
    )
    log_every_steps: int = Field(default=10, ge=1)
    progress_bar: bool = True
    tensorboard: bool | None = Field(
        default=None,
        description="TensorBoard event files under output_dir/tensorboard. None: when the [tensorboard] extra "
        "is installed; true: required (the run fails at once without it); false: off.",
    )

    @classmethod
    def from_yaml(cls, path: Path, overrides: list[str] | None = None) -> TrainConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not key=value")
            data[key.strip()] = yaml.safe_load(value)
        return cls.model_validate(data)


class Resolved(BaseModel):
    """A hyperparameter's value and why it is that value."""

    value: Any
    reason: str


def _steps_target(num_images: int) -> int:
    # Meta's recipes: 20 epochs for ~100 images, 40 for 10-shot; aim at a few thousand image-steps at most.
    if num_images <= 20:
        return 40
    if num_images <= 200:
        return 20
    if num_images <= 2000:
        return 12
    return 6


def resolve(
    cfg: TrainConfig,
    *,
    num_train_images: int,
    device_type: str,
    gpu_memory_gb: float | None = None,
    batch_size_found: int | None = None,
    recommended: dict[str, Any] | None = None,
    memory: MemoryPlan | None = None,
    world: int = 1,
) -> dict[str, Resolved]:
    """Fill every `None` with a value and a reason. `batch_size_found` is the result of a CUDA memory preflight;
    `recommended` comes from the base model's card (`recommended_hyperparameters`) and wins over the recipe's
    defaults, never over what the configuration sets. With `memory` (the model, the step's shape and the
    device's budget) the batch is fitted to the estimate, and a configuration that cannot fit raises
    `trainer.preflight.DoesNotFit` saying what to change."""
    out: dict[str, Resolved] = {}

    if cfg.mode != "auto":
        out["mode"] = Resolved(value=cfg.mode, reason="set in the configuration")
    elif device_type != "cuda":
        out["mode"] = Resolved(
            value="decoder",
            reason="no GPU: the encoders are frozen and their outputs cached once, so each step runs the heads only",
        )
    elif num_train_images < 50 or (gpu_memory_gb is not None and gpu_memory_gb < 24):
        why = (
            f"{num_train_images} training images"
            if num_train_images < 50
            else f"{gpu_memory_gb:.0f} GB of GPU memory"
        )
        out["mode"] = Resolved(
            value="decoder", reason=f"{why}: a frozen backbone generalises better and fits"
        )
    else:
        out["mode"] = Resolved(
            value="full", reason=f"{num_train_images} images and a GPU: Meta's full fine-tuning recipe"
        )

    _resolve_batch(out, cfg, device_type, batch_size_found, memory)
    # Under DDP each of `world` processes takes batch_size x grad_accumulation images per step.
    batch = out["batch_size"].value * out["grad_accumulation"].value * world
    steps_per_epoch = max(1, math.ceil(num_train_images / batch))

    if cfg.epochs is not None:
        out["epochs"] = Resolved(value=cfg.epochs, reason="set in the configuration")
    else:
        epochs = _steps_target(num_train_images)
        out["epochs"] = Resolved(
            value=epochs,
            reason=f"{num_train_images} training images: {epochs} epochs, as Meta's recipes scale with data size",
        )
    total = steps_per_epoch * out["epochs"].value
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    per_epoch = f"{steps_per_epoch} steps per epoch" + (f" ({world} processes)" if world > 1 else "")
    out["total_steps"] = Resolved(value=total, reason=f"{per_epoch} x epochs, capped by max_steps")

    if cfg.warmup_steps is not None:
        out["warmup_steps"] = Resolved(value=cfg.warmup_steps, reason="set in the configuration")
    else:
        warm = min(200, max(1, total // 20))
        out["warmup_steps"] = Resolved(value=warm, reason="5% of the steps, at most 200")

    if cfg.early_stopping_patience is not None:
        out["early_stopping_patience"] = Resolved(
            value=cfg.early_stopping_patience, reason="set in the configuration"
        )
    else:
        patience = max(3, out["epochs"].value // 4)
        out["early_stopping_patience"] = Resolved(
            value=patience, reason="a quarter of the epochs (at least 3) without a better validation mask AP"
        )
    for name in ("lr_heads", "lr_vision", "lr_text", "layer_decay", "weight_decay", "grad_clip"):
        if name in cfg.model_fields_set:
            out[name] = Resolved(value=getattr(cfg, name), reason="set in the configuration")
        elif recommended and name in recommended:
            out[name] = Resolved(value=recommended[name], reason="recommended by the base model's card")
        else:
            out[name] = Resolved(value=getattr(cfg, name), reason="Meta's SAM 3 fine-tuning recipe")
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" else "fp32"
    out["precision"] = Resolved(
        value=precision, reason="bf16 autocast on CUDA, fp32 on CPU" if cfg.precision == "auto" else "set"
    )
    return out


def _resolve_batch(
    out: dict[str, Resolved],
    cfg: TrainConfig,
    device_type: str,
    batch_size_found: int | None,
    memory: MemoryPlan | None,
) -> None:
    """batch_size and grad_accumulation. Unset, the batch is the largest the memory estimate fits under the
    device default, and accumulation keeps the default's images per optimizer step."""
    default = DEFAULT_BATCH["cuda" if device_type == "cuda" else "cpu"]
    mode = out["mode"].value
    precision = cfg.precision if cfg.precision != "auto" else ("bf16" if device_type == "cuda" else "fp32")
    accumulation: Resolved | None = None
    if cfg.grad_accumulation is not None:
        accumulation = Resolved(value=cfg.grad_accumulation, reason="set in the configuration")
    if cfg.batch_size is not None:
        batch = Resolved(value=cfg.batch_size, reason="set in the configuration")
        if memory is not None:
            from trainer.memory import gb

            est = memory.check(mode, cfg.batch_size, precision)  # DoesNotFit names the numbers
            batch.reason += f"; estimated {gb(est.total)} of {gb(memory.budget.usable)} usable"
    elif batch_size_found is not None:
        batch = Resolved(value=batch_size_found, reason="largest that passed a real step in GPU memory")
        if accumulation is None and batch_size_found < default:
            steps = -(-default // batch_size_found)
            accumulation = Resolved(
                value=steps,
                reason=f"{batch_size_found} images per pass: accumulating {steps} to keep {default}",
            )
    elif memory is not None:
        fit = memory.fit(mode, default, precision)
        batch = Resolved(value=fit.batch_size, reason=fit.reason)
        if accumulation is None and fit.grad_accumulation > 1:
            accumulation = Resolved(value=fit.grad_accumulation, reason=fit.reason)
    elif device_type == "cuda":
        batch = Resolved(value=default, reason="GPU default before the memory preflight")
    else:
        batch = Resolved(value=default, reason="CPU: small batches keep steps short")
    out["batch_size"] = batch
    out["grad_accumulation"] = accumulation or Resolved(
        value=1, reason=f"no accumulation: {batch.value} images per optimizer step"
    )


def values(resolved: dict[str, Resolved]) -> dict[str, Any]:
    return {k: r.value for k, r in resolved.items()}


def explained(resolved: dict[str, Resolved]) -> dict[str, dict[str, Any]]:
    """Each value with its reason: config_resolved.yaml, the model card and the callbacks all show this."""
    return {k: {"value": r.value, "reason": r.reason} for k, r in resolved.items()}
