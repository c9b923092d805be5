"""How much memory a training step needs, estimated before the run from the model's configuration, and the
largest batch that fits a device's budget (with gradient accumulation keeping the effective batch).

The estimate counts what a step holds at its peak (the end of the forward pass, when every activation that the
backward pass needs is alive, plus the gradients and AdamW's two moments of the trainable parameters):

* weights: every parameter, fp32 (autocast does not change the stored dtype); the frozen encoders of `decoder`
  mode stay loaded, since evaluation and the final model need them;
* gradients (fp32) and AdamW state (2 x fp32) for the trainable parameters only, plus one fp32 transient of
  their size (the optimizer's update);
* activations, counted per structure of SAM 3's forward (`trainer/forward.py`), in elements, times the bytes
  of an activation (4 in fp32, 3 under bf16 autocast: matmul outputs in bf16, norms and losses in fp32):
  - per image: the ViT (`full` mode only: in `decoder` mode it ran once, without gradients, when the cache was
    filled) and the neck (the FPN at 4g, 2g, g, g/2 for a g x g patch grid, g = image_size / 14);
  - per query (one (image, class prompt) pair): the neck's rows copied for it, the DETR encoder on the g x g
    tokens, the DETR decoder's queries with their box-relative position bias (heads x queries x tokens per
    layer), the mask decoder at 4g x 4g and the predicted masks with their loss;
  - attention matrices only when the model asks for eager attention: with SDPA (transformers' default) the
    CPU's flash kernel and CUDA's fused kernels keep only the output and a log-sum-exp per row (measured on
    this CPU: 16 heads x 5184 tokens, fp32 with gradients, 29 MB instead of the 1.7 GB a materialised matrix
    takes).

The coefficients (elements saved per token and channel of each block) are counted from the blocks' saved tensors
and then checked against measured peaks by `bench/memory_estimate.py` (bench/RESULTS.md): the estimate is
meant to be an upper bound within a small factor, never an exact figure.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from transformers import Sam3Config, Sam3Model

from trainer.architecture import PATCH_SIZE, backbone_config, vision_config
from trainer.preflight import DoesNotFit

GB = 1e9
# Use at most this share of what the device reports: allocator fragmentation, the data loader's images and
# the operating system's own needs live in the rest.
SAFETY = 0.85
# Fixed costs outside the tensors counted: on CUDA the context and the caching allocator's reserve (not
# measured here; CUDA contexts take 0.3-0.6 GB on recent drivers), on the CPU the kernels' scratch space and
# the allocator's slack (measured: bench/memory_estimate.py, tiny model).
RUNTIME_BYTES = {"cuda": int(1.0 * GB), "cpu": int(0.25 * GB)}
# Bytes of one activation element: fp32, or bf16 autocast (bf16 matmul outputs, fp32 norms, softmax and losses).
ACTIVATION_BYTES = {"fp32": 4.0, "bf16": 3.0}

# Elements saved per token per channel, per block, counted from the saved tensors of each block's forward.
VIT_PER_LAYER_HIDDEN = 14  # 2 layer norms in and out, q, k, v, RoPE'd q and k, attention output, projection,
# 2 residuals, window partition and un-partition copies
VIT_PER_LAYER_MLP = 2  # fc1 output and GELU output (intermediate_size wide)
NECK_PER_VIT_CHANNEL = 7  # the transposed convolutions' outputs at 4g and 2g (1/2 and 1/4 of the ViT width)
NECK_PER_FPN_CHANNEL = 3  # per FPN level: 1x1 and 3x3 convolution outputs and the sine position encoding
DETR_ENCODER_PER_LAYER = 16  # self-attention (q, k with positions, v, output), text cross-attention,
# 3 layer norms, dropout masks
DETR_FFN = 3  # the FFN's two intermediate tensors and its dropout mask (intermediate_size wide)
# The box-relative position bias per decoder layer: x and y terms, their sum, its gradient's input.
DECODER_BIAS_COPIES = 4
# The pixel decoder's convolutions, norms and upsampling at 4g x 4g, and the mask embedding.
MASK_DECODER_AT_4G = 8
MASK_OUTPUT_COPIES = 4  # the predicted masks, their sigmoid and the focal loss terms (queries x 4g x 4g)
TEXT_PER_LAYER = 16  # CLIP layer: as a ViT layer, without RoPE or windows


@dataclass(frozen=True)
class Architecture:
    """The sizes of a SAM 3 configuration that memory depends on."""

    params: int
    vit_params: int
    text_params: int
    vit_hidden: int
    vit_mlp: int
    vit_layers: int
    vit_heads: int
    vit_window: int
    vit_global_layers: int
    fpn_hidden: int
    detr_encoder_layers: int
    detr_decoder_layers: int
    detr_ffn: int
    detr_heads: int
    num_queries: int
    text_hidden: int
    text_mlp: int
    text_layers: int
    text_tokens: int
    eager_attention: bool

    def trainable(self, mode: str) -> int:
        """Parameters that train: everything in `full` mode; without both encoders in `decoder` mode."""
        return self.params if mode == "full" else self.params - self.vit_params - self.text_params


def architecture(config: Sam3Config) -> Architecture:
    """The sizes of `config`; parameter counts from the model built on the meta device (no memory used)."""
    return _architecture(config.to_json_string(use_diff=False))


@lru_cache(maxsize=8)
def _architecture(config_json: str) -> Architecture:
    config = Sam3Config.from_dict(json.loads(config_json))
    with torch.device("meta"):
        model = Sam3Model(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    vit = backbone_config(config)
    text, detr_enc, detr_dec = config.text_config, config.detr_encoder_config, config.detr_decoder_config
    return Architecture(
        params=count(model),
        vit_params=count(model.vision_encoder.backbone),
        text_params=count(model.text_encoder),
        vit_hidden=vit.hidden_size,
        vit_mlp=vit.intermediate_size,
        vit_layers=vit.num_hidden_layers,
        vit_heads=vit.num_attention_heads,
        vit_window=vit.window_size,
        vit_global_layers=len(vit.global_attn_indexes or []),
        fpn_hidden=vision_config(config).fpn_hidden_size,
        detr_encoder_layers=detr_enc.num_layers,  # type: ignore[union-attr]
        detr_decoder_layers=detr_dec.num_layers,  # type: ignore[union-attr]
        detr_ffn=detr_dec.intermediate_size,  # type: ignore[union-attr]
        detr_heads=detr_dec.num_attention_heads,  # type: ignore[union-attr]
        num_queries=detr_dec.num_queries,  # type: ignore[union-attr]
        text_hidden=text.hidden_size,  # type: ignore[union-attr]
        text_mlp=text.intermediate_size,  # type: ignore[union-attr]
        text_layers=text.num_hidden_layers,  # type: ignore[union-attr]
        text_tokens=text.max_position_embeddings,  # type: ignore[union-attr]
        eager_attention=config._attn_implementation == "eager",
    )


def gb(n: float) -> str:
    """Bytes in GB for a message: two decimals below 10 GB, one above."""
    return f"{n / GB:.2f} GB" if n < 10 * GB else f"{n / GB:.1f} GB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step needs at its peak, by part."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.runtime

    def describe(self) -> str:
        return (
            f"{gb(self.total)} (weights {self.weights / GB:.2f}, gradients and AdamW state "
            f"{(self.gradients + self.optimizer) / GB:.2f}, activations {self.activations / GB:.2f}, "
            f"runtime {self.runtime / GB:.2f})"
        )


def activation_elements(
    arch: Architecture, *, mode: str, image_size: int, queries_per_image: int, prompts: int
) -> tuple[float, float, float]:
    """(per image, per query, per step) activation elements alive at the end of a training forward."""
    g = image_size // PATCH_SIZE
    tokens = g * g
    fpn_tokens = tokens * (16 + 4 + 1 + 0.25)  # levels at 4g, 2g, g, g/2
    per_image: float = (
        tokens * arch.vit_hidden
    )  # the ViT output the neck reads (the cache's rows, or the ViT's)
    per_image += (
        tokens * NECK_PER_VIT_CHANNEL * arch.vit_hidden + fpn_tokens * NECK_PER_FPN_CHANNEL * arch.fpn_hidden
    )
    per_step = 0.0
    if mode == "full":
        per_layer = tokens * (VIT_PER_LAYER_HIDDEN * arch.vit_hidden + VIT_PER_LAYER_MLP * arch.vit_mlp)
        per_image += arch.vit_layers * per_layer + 3 * image_size * image_size
        if arch.eager_attention:
            windowed = arch.vit_layers - arch.vit_global_layers
            w = min(arch.vit_window, g) if arch.vit_window else g
            per_image += 2 * arch.vit_heads * (windowed * tokens * w * w + arch.vit_global_layers * tokens**2)
        # CLIP runs with gradients on every class prompt once per step.
        text = arch.text_tokens * (TEXT_PER_LAYER * arch.text_hidden + 2 * arch.text_mlp)
        per_step += prompts * arch.text_layers * text
    d, q = arch.fpn_hidden, arch.num_queries
    per_query = 2 * fpn_tokens * d  # the neck's features and positions, copied per query (index_select)
    per_query += arch.detr_encoder_layers * tokens * (DETR_ENCODER_PER_LAYER * d + DETR_FFN * arch.detr_ffn)
    per_query += arch.detr_decoder_layers * (
        q * (DETR_ENCODER_PER_LAYER * d + DETR_FFN * arch.detr_ffn)
        + DECODER_BIAS_COPIES * arch.detr_heads * q * tokens
    )
    per_query += MASK_DECODER_AT_4G * 16 * tokens * d + MASK_OUTPUT_COPIES * q * 16 * tokens
    if arch.eager_attention:
        per_query += (
            2 * arch.detr_heads * tokens * (arch.detr_encoder_layers * tokens + arch.detr_decoder_layers * q)
        )
    return per_image, per_query, per_step


def estimate(
    arch: Architecture,
    *,
    mode: str,
    batch_size: int,
    image_size: int,
    queries_per_image: int,
    prompts: int | None = None,
    precision: str = "fp32",
    device_type: str = "cpu",
    rows_per_pass: int | None = None,
) -> MemoryEstimate:
    """The peak of one training step of `batch_size` images with `queries_per_image` queries each. With
    `rows_per_pass`, the heads see at most that many queries at once (the recipe runs the rest in passes)."""
    trainable = arch.trainable(mode)
    per_image, per_query, per_step = activation_elements(
        arch,
        mode=mode,
        image_size=image_size,
        queries_per_image=queries_per_image,
        prompts=prompts if prompts is not None else queries_per_image,
    )
    rows = batch_size * queries_per_image
    if rows_per_pass is not None:
        rows = min(rows, rows_per_pass)
    elements = batch_size * per_image + rows * per_query + per_step
    return MemoryEstimate(
        weights=arch.params * 4,
        gradients=trainable * 4,
        optimizer=trainable * 8 + trainable * 4,  # two moments, and the update's transient
        activations=int(elements * ACTIVATION_BYTES.get(precision, 4.0)),
        runtime=RUNTIME_BYTES["cuda" if device_type == "cuda" else "cpu"],
    )


@dataclass(frozen=True)
class Budget:
    """Bytes a training run may use on its device, and where the figure comes from."""

    bytes: int
    source: str  # "free RAM (MemAvailable)", "GPU memory", "SAMTUNE_WORKER_MEMORY_BYTES"

    @property
    def usable(self) -> int:
        return int(self.bytes * SAFETY)


def available_ram() -> int:
    """MemAvailable from /proc/meminfo: what the kernel says can be allocated without swapping (page cache it
    can drop included). Elsewhere than Linux: the free physical pages. psutil is not a runtime dependency."""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def device_budget(device: torch.device, *, already_held: int = 0) -> Budget:
    """The memory a run on `device` may use: the GPU's total memory (a worker runs one job at a time, so the
    whole GPU is the job's), or the machine's free RAM plus `already_held` (what this process holds already
    and the estimate counts again: the base model's weights, loaded before the hyperparameters are resolved)."""
    if device.type == "cuda":
        return Budget(torch.cuda.get_device_properties(device).total_memory, "GPU memory")
    return Budget(available_ram() + already_held, "free RAM (MemAvailable)")


@dataclass(frozen=True)
class Fit:
    batch_size: int
    grad_accumulation: int
    estimate: MemoryEstimate
    reason: str


@dataclass(frozen=True)
class MemoryPlan:
    """What `resolve` needs to fit a batch to the device: the architecture, the step's shape, the budget."""

    arch: Architecture
    image_size: int
    queries_per_image: int
    prompts: int
    budget: Budget
    device_type: str
    rows_per_pass: int | None = None

    def estimate(self, mode: str, batch_size: int, precision: str) -> MemoryEstimate:
        return estimate(
            self.arch, mode=mode, batch_size=batch_size, image_size=self.image_size,
            queries_per_image=self.queries_per_image, prompts=self.prompts, precision=precision,
            device_type=self.device_type, rows_per_pass=self.rows_per_pass,
        )  # fmt: skip

    def _numbers(self, est: MemoryEstimate, batch: int) -> str:
        return (
            f"estimated {gb(est.total)} of {gb(self.budget.usable)} usable "
            f"({SAFETY:.0%} of {gb(self.budget.bytes)} {self.budget.source}) at batch {batch}"
        )

    def fit(self, mode: str, default_batch: int, precision: str) -> Fit:
        """The largest batch <= `default_batch` that fits, and the accumulation that keeps `default_batch`
        images per optimizer step."""
        for batch in range(default_batch, 0, -1):
            est = self.estimate(mode, batch, precision)
            if est.total <= self.budget.usable:
                accumulation = math.ceil(default_batch / batch)
                why = self._numbers(est, batch)
                if accumulation > 1:
                    why += f"; accumulating {accumulation} to keep {batch * accumulation}"
                return Fit(batch, accumulation, est, why)
        raise DoesNotFit(self.too_big(mode, 1, precision))

    def check(self, mode: str, batch: int, precision: str) -> MemoryEstimate:
        """The estimate of a batch the configuration set, or DoesNotFit saying what to change."""
        est = self.estimate(mode, batch, precision)
        if est.total > self.budget.usable:
            raise DoesNotFit(self.too_big(mode, batch, precision))
        return est

    def too_big(self, mode: str, batch: int, precision: str) -> str:
        est = self.estimate(mode, batch, precision)
        fits = next(
            (
                b
                for b in range(batch - 1, 0, -1)
                if self.estimate(mode, b, precision).total <= self.budget.usable
            ),
            None,
        )
        advice = []
        if fits is not None:
            advice.append(
                f"batch_size {fits} (with grad_accumulation {math.ceil(batch / fits)} to keep {batch} "
                "images per step), or leave batch_size unset to have it chosen"
            )
        if mode == "full":
            advice.append("mode 'decoder' (frozen encoders) needs far less")
        advice.append(f"fewer queries per image (max_negatives; {self.queries_per_image} now)")
        if self.device_type != "cuda":
            advice.append("a GPU worker")
        else:
            advice.append("a GPU with more memory")
        return (
            f"{mode} mode at batch {batch}, {self.image_size} px and {self.queries_per_image} queries per image "
            f"needs an estimated {est.describe()}, but {gb(self.budget.usable)} is usable "
            f"({SAFETY:.0%} of {gb(self.budget.bytes)} {self.budget.source}); try: " + "; ".join(advice)
        )


# At 1008 px a query row keeps about 1.9 GiB of activations in the heads (bench/train_memory.py); below 896 px
# (the tiny base's 112-224 px, SAM 3 at reduced sizes) rows are cheap and run together.
ROWS_BOUNDED_FROM_IMAGE_SIZE = 896


def default_rows_per_pass(device_type: str, image_size: int) -> tuple[int | None, str]:
    """How many query rows the recipe runs through the heads at once when the configuration does not say, and
    why: one at a time on a CPU at SAM 3's size (a GPU's batch is fitted to its memory instead)."""
    if device_type != "cuda" and image_size >= ROWS_BOUNDED_FROM_IMAGE_SIZE:
        return 1, f"{image_size} px on a CPU: each row keeps gigabytes of activations"
    return None, "all at once"


def config_image_size(config: Sam3Config) -> int:
    """The input size a configuration was made for (its ViT's)."""
    size = backbone_config(config).image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)
