"""The fine-tuning recipe, top to bottom: parse the config, set up (model, data, caches, optimizer, in
that order: the data decides the hyperparameters, the mode decides what is cached and what is trained),
train with the loop inline, evaluate, save.

Every random choice of a step (batch order, negatives, jitter, dropout) is derived from (seed, step), so a
run resumed from a checkpoint takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file, save_file
from transformers import Sam3Model

from trainer import data as D
from trainer.architecture import mask_size_for, to_device
from trainer.base_model import LoadedModel, class_prompts, load_base_model
from trainer.callbacks import NullCallbacks, TrainerCallbacks
from trainer.config import Resolved, TrainConfig, explained, resolve, values
from trainer.evaluate import Detection, EvalResult, coco_evaluate, limit_per_image, postprocess
from trainer.extras import installed, require
from trainer.forward import QueryModel, ask, recompute_head_activations, text_backbone
from trainer.losses import LossWeights, SetCriterion
from trainer.matcher import HungarianMatcher
from trainer.memory import Budget, MemoryPlan, architecture, default_rows_per_pass, device_budget
from trainer.preflight import DoesNotFit, find_batch_size
from trainer.save import save_model
from trainer.tokenizer import tokenize
from trainer.types import ModelOutputs
from trainer.vision_cache import VisionCache, backbone_fingerprint

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

logger = logging.getLogger("samtune.trainer")


class TrainingFailed(Exception):
    pass


# should_stop()'s answers as numbers that ranks can agree on (the largest wins: a cancel beats a stop).
STOP_CODES: dict[str | None, int] = {None: 0, "stop": 1, "cancel": 2}


class Cancelled(Exception):
    pass


@dataclass
class RunResult:
    status: str  # "succeeded" | "stopped"
    steps: int
    best_valid: dict[str, float] | None  # the validation summary at the best checkpoint
    # {"base": ..., "fine_tuned": ...}: each model's evaluation on the test split (summary and per class),
    # or None where it was not evaluated. The same keys as the model card's and the API's `test`.
    test: dict[str, dict[str, Any] | None]
    model_dir: Path | None
    resolved: dict[str, Resolved]
    events: list[dict[str, Any]] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class FineTuneRecipe:
    def __init__(self, cfg: TrainConfig, callbacks: TrainerCallbacks | None = None) -> None:
        self.cfg = cfg
        self.callbacks = callbacks or NullCallbacks()
        self.out = Path(cfg.output_dir)
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.events: list[dict[str, Any]] = []

    # --- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        if cfg.tensorboard:  # asked for explicitly: say what is missing before any work is done
            require("tensorboard", "tensorboard", "tensorboard=true (TensorBoard event files)")
        self.device = pick_device(cfg.device)
        for sub in ("checkpoints", "logs"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)

        # Data first: its size decides the hyperparameters.
        root = Path(cfg.data_dir)
        self.classes = D.dataset_classes(root)
        if not self.classes:
            raise TrainingFailed(f"{root} has no classes: expected {{train,valid,test}}/{D.ANNOTATIONS}")
        self.splits = {s: d for s in D.SPLITS if (d := D.load_split(root, s, self.classes)) is not None}
        if "train" not in self.splits or not self.splits["train"].samples:
            raise TrainingFailed(f"{root} has no train split with images")

        self.loaded: LoadedModel = self._load_base()
        self.image_size = cfg.image_size or self.loaded.image_size
        self.mask_size = mask_size_for(self.image_size)
        # Query rows through the heads at once: the memory estimate counts them, the loop runs them in passes.
        self.rows_per_pass: int | None = cfg.rows_per_pass
        self.rows_per_pass_reason = "set in the configuration"
        if cfg.rows_per_pass is None:
            self.rows_per_pass, self.rows_per_pass_reason = default_rows_per_pass(
                self.device.type, self.image_size
            )

        if self.rank == 0:
            (self.out / "config.yaml").write_text(
                yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)
            )
        self._resolve_hyperparameters()
        self.mode = self.hp["mode"]

        self.model = to_device(self.loaded.model, self.device)
        self.prompts = class_prompts(self.classes, {"prompts": cfg.prompts})
        self.text = tokenize(self.loaded.tokenizer, self.prompts)
        self.text = {k: v.to(self.device) for k, v in self.text.items()}

        # The mode decides what trains: `decoder` freezes both encoders and caches their outputs.
        if self.mode == "decoder":
            for p in self.model.vision_encoder.backbone.parameters():
                p.requires_grad_(False)
            for p in self.model.text_encoder.parameters():
                p.requires_grad_(False)
            fingerprint = backbone_fingerprint(self.model, cfg.base_model, self.image_size)
            self.vision_cache = VisionCache(Path(cfg.cache_dir or self.out / "cache") / fingerprint)
            self._fill_vision_cache()
            # The base's values of what this run trains (4% of SAM 3): enough to evaluate or restore the base
            # in place, where a second copy of the model would cost 3.4 GB.
            self.initial_trainable = {
                name: p.detach().to("cpu", copy=True)
                for name, p in self.model.named_parameters()
                if p.requires_grad
            }
        self.text_hidden = self._text_hidden()

        weights = LossWeights(cls_negative_queries=cfg.cls_negative_queries, one_to_many=cfg.one_to_many)
        self.criterion = SetCriterion(HungarianMatcher(), weights)
        self.optimizer = torch.optim.AdamW(self._param_groups(), betas=(0.9, 0.999))
        self.lr_scale = 1.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.query_model = QueryModel(self.model)
        self._plan_head_passes()
        self.train_model: torch.nn.Module = self.query_model
        if self.world > 1:
            # Unused parameters are normal here: the geometry encoder idles without box prompts.
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.query_model, find_unused_parameters=True
            )

        self.step = 0
        self.best_metric = -1.0
        self.best_valid: dict[str, float] | None = None
        self.epochs_without_gain = 0
        self.rollbacks = 0
        self.history: list[float] = []
        if self.device.type == "cuda" and cfg.batch_size is None:
            self._preflight()
        self._resume_if_possible()
        self.writer = self._tensorboard()
        self.callbacks.on_setup(explained(self.resolved), self.step)

    def _plan_head_passes(self) -> None:
        """How many query rows go through the heads at once, and whether their activations are kept. At 1008 px
        a row keeps about 1.9 GiB (bench/train_memory.py): a CPU step of 2 images x 3 classes needed 20 GiB."""
        rows, why = self.rows_per_pass, self.rows_per_pass_reason
        if self.cfg.recompute_activations:
            recompute_head_activations(self.model)
        if rows is not None or self.cfg.recompute_activations:
            said = [f"{rows} query row(s) at a time through the heads ({why})"] if rows is not None else []
            if self.cfg.recompute_activations:
                said.append("their activations recomputed in the backward pass")
            self._event("head_passes", "; ".join(said), {"rows_per_pass": rows,
                        "recompute_activations": self.cfg.recompute_activations})  # fmt: skip

    def _resolve_hyperparameters(self, batch_size_found: int | None = None) -> None:
        """Every `None` of the config gets a value and a reason, recorded in config_resolved.yaml. Called
        again once the CUDA preflight has found the batch size. The batch is fitted to the device's memory by
        the estimate (trainer/memory.py); a configuration that cannot fit fails here, before any step."""
        gpu_gb = (
            torch.cuda.get_device_properties(self.device).total_memory / 2**30
            if self.device.type == "cuda"
            else None
        )
        try:
            self.resolved = resolve(
                self.cfg,
                num_train_images=len(self.splits["train"].samples),
                device_type=self.device.type,
                gpu_memory_gb=gpu_gb,
                batch_size_found=batch_size_found,
                recommended=(self.loaded.card or {}).get("recommended_hyperparameters"),
                memory=self._memory_plan(),
                world=self.world,
            )
        except DoesNotFit as exc:
            raise TrainingFailed(str(exc)) from None
        self.hp = values(self.resolved)
        if self.rank == 0:
            resolved_yaml = yaml.safe_dump(explained(self.resolved), sort_keys=False)
            (self.out / "config_resolved.yaml").write_text(resolved_yaml)

    def _memory_plan(self) -> MemoryPlan:
        """The step's shape for the memory estimate: the most queries any training image makes (its present
        classes and up to max_negatives absent ones), against the device's budget (a configured budget wins).
        On the CPU the base model's weights are resident already, so they count as available."""
        samples = self.splits["train"].samples
        k = len(self.classes)
        queries = max(min(k, len(s.classes_present()) + self.cfg.max_negatives) for s in samples)
        held = sum(p.numel() * p.element_size() for p in self.loaded.model.parameters())
        budget = device_budget(self.device, already_held=held if self.device.type == "cpu" else 0)
        if self.cfg.memory_budget_bytes is not None:
            budget = Budget(self.cfg.memory_budget_bytes, "memory_budget_bytes")
        return MemoryPlan(
            arch=architecture(self.loaded.model.config), image_size=self.image_size,
            queries_per_image=max(1, queries), prompts=k, budget=budget, device_type=self.device.type,
            rows_per_pass=self.rows_per_pass,
        )  # fmt: skip

    def _preflight(self) -> None:
        """One real step per candidate batch size from the estimate's choice down, halving on out-of-memory:
        a confirmation of the estimate on the GPU itself. The winner goes into the resolved hyperparameters
        with its reason."""
        n = len(self.splits["train"].samples)

        def trial(size: int) -> None:
            indices = list(range(min(size, n)))
            batch = D.make_batch(
                self.splits["train"], indices, size=self.image_size, mask_size=self.mask_size,
                max_negatives=self.cfg.max_negatives, rng=np.random.default_rng(0), mean=self.loaded.image_mean,
                std=self.loaded.image_std, with_pixels=self.mode != "decoder", jitter=False,
            )  # fmt: skip
            try:
                with self._autocast():
                    loss, _ = self.criterion(self._forward(batch, "train", train=True), batch.targets)
                loss.backward()
            finally:
                self.optimizer.zero_grad(set_to_none=True)

        try:
            found = find_batch_size(trial, start=min(self.hp["batch_size"], max(1, n)))
        except DoesNotFit as exc:
            raise TrainingFailed(str(exc)) from None
        self._resolve_hyperparameters(batch_size_found=found)

    def _param_groups(self) -> list[dict[str, Any]]:
        """Meta's recipe: three learning rates (heads, vision, text), layer-wise decay down the ViT, no weight
        decay on biases and norms."""
        cfg, hp = self.cfg, self.hp
        vit_layers = len(self.model.vision_encoder.backbone.layers)
        groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("vision_encoder.backbone."):
                depth = vit_layers  # embeddings sit below every block
                if ".layers." in name:
                    depth = vit_layers - 1 - int(name.split(".layers.")[1].split(".")[0])
                elif "embeddings" in name:
                    depth = vit_layers
                else:
                    depth = 0
                lr = hp["lr_vision"] * hp["layer_decay"] ** depth
            elif name.startswith("text_encoder."):
                lr = hp["lr_text"]
            else:
                lr = hp["lr_heads"]
            wd = 0.0 if p.ndim <= 1 or name.endswith(".bias") else cfg.weight_decay
            groups.setdefault((lr, wd), []).append(p)
        return [
            {"params": ps, "lr": lr, "weight_decay": wd, "initial_lr": lr} for (lr, wd), ps in groups.items()
        ]

    def _lr_lambda(self, step: int) -> float:
        """Linear warmup, then inverse square root, then a linear cooldown to zero."""
        warm, total = self.hp["warmup_steps"], self.hp["total_steps"]
        if warm and step < warm:
            factor = (step + 1) / warm
        else:
            factor = math.sqrt(max(warm, 1) / max(step + 1, 1))
        cool = int(total * self.cfg.cooldown_fraction)
        if cool and step >= total - cool:
            factor *= max(0.0, (total - step) / cool)
        return factor * self.lr_scale

    def _load_base(self) -> LoadedModel:
        """The base model; a Hub repo missing from the cache is downloaded first when the config allows,
        which at SAM 3's size is minutes before anything else: a phase of its own (bytes, with an ETA) between
        events at its start and end, reported by rank 0 (the other ranks wait on huggingface_hub's file locks
        and find the files there)."""
        from trainer.callbacks import DOWNLOADING, PhaseProgress

        phase: PhaseProgress | None = None
        lead = self.rank == 0

        def progress(done: int, total: int) -> None:
            nonlocal phase
            if (
                lead and self.callbacks.should_stop() == "cancel"
            ):  # minutes of bytes: a cancel is not kept waiting
                raise Cancelled("cancelled")
            if phase is None:
                self._event(
                    "download_start",
                    f"downloading {self.cfg.base_model} from the Hugging Face Hub ({total / 1e9:.2f} GB)",
                    {"repo": self.cfg.base_model, "bytes": total},
                )
                phase = PhaseProgress(self.callbacks if lead else NullCallbacks(), DOWNLOADING, total)
            phase.advance(done)

        loaded = load_base_model(
            self.cfg.base_model,
            device="cpu",
            local_files_only=not self.cfg.hub_download,
            download_progress=progress,
        )
        if phase is not None:
            seconds = phase.finish()
            self._event(
                "download",
                f"downloaded {self.cfg.base_model} ({phase.total / 1e9:.2f} GB) in {seconds:.1f} s",
                {"repo": self.cfg.base_model, "bytes": phase.total, "seconds": round(seconds, 1)},
            )
        return loaded

    # --- caches (decoder mode) ---------------------------------------------------------------------

    def _fill_vision_cache(self) -> None:
        """Each rank runs the frozen ViT on its share of the images not cached yet; all then wait for the
        whole cache, since any rank's batches may use any image. At SAM 3's size this takes minutes before
        step 0, so it is a phase of its own: events at its start and end, progress with an ETA (rank 0's
        count times the ranks) through the callbacks, and a bar of its own on the command line."""
        from trainer.callbacks import CACHING, PhaseProgress

        todo = self.vision_cache.missing(self.splits)
        if not todo:
            return
        self._event(
            "cache_start",
            f"caching the vision encoder's output for {len(todo)} images",
            {"images": len(todo)},
        )
        lead = self.rank == 0
        phase = PhaseProgress(self.callbacks if lead else NullCallbacks(), CACHING, len(todo))
        bar = None
        if self.cfg.progress_bar and lead:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="caching image embeddings", unit="image", dynamic_ncols=True)

        def on_image(n: int) -> None:
            if lead and self.callbacks.should_stop() == "cancel":  # minutes at SAM 3's size: not kept waiting
                raise Cancelled("cancelled")
            phase.advance(n * self.world)
            if bar is not None:
                bar.update(min(n * self.world, len(todo)) - bar.n)

        self.model.eval()
        with self._autocast():
            self.vision_cache.fill(
                self.model, todo[self.rank :: self.world], image_size=self.image_size,
                mean=self.loaded.image_mean, std=self.loaded.image_std, device=self.device, on_image=on_image,
            )  # fmt: skip
        if self.world > 1:
            dist.barrier()
        seconds = phase.finish()
        if bar is not None:
            bar.update(len(todo) - bar.n)
            bar.close()
        self._event(
            "cache",
            f"cached the vision encoder's output for {len(todo)} images in {seconds:.1f} s",
            {"seconds": round(seconds, 1), "images": len(todo)},
        )

    def _text_hidden(self) -> torch.Tensor:
        """CLIP's output per class prompt; with a frozen text encoder this is computed once for the run."""
        grad = self.mode != "decoder"
        with torch.set_grad_enabled(grad):
            return text_backbone(self.model, self.text["input_ids"], self.text["attention_mask"])

    # --- the loop ----------------------------------------------------------------------------------

    def _autocast(self) -> AbstractContextManager[object]:
        if self.device.type == "cuda" and self.hp["precision"] == "bf16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _batches_per_epoch(self) -> int:
        """Optimizer steps per epoch: each takes batch_size x grad_accumulation images per rank."""
        n = len(self.splits["train"].samples)
        return max(1, math.ceil(n / (self.hp["batch_size"] * self.hp["grad_accumulation"] * self.world)))

    def _batch_indices(self, step: int, micro: int = 0) -> list[int]:
        per_epoch = self._batches_per_epoch()
        epoch, pos = divmod(step, per_epoch)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.splits["train"].samples))
        size = self.hp["batch_size"]
        start = ((pos * self.hp["grad_accumulation"] + micro) * self.world + self.rank) * size
        chunk = order[start : start + size].tolist()
        return chunk or order[:size].tolist()

    def train(self) -> RunResult:
        cfg = self.cfg
        total = self.hp["total_steps"]
        per_epoch = self._batches_per_epoch()
        split = self.splits["train"]
        progress = self._progress_bar(total)
        stop_reason = None
        # Checkpoints come by steps and by time, whichever says so first.
        self.last_checkpoint_at = time.monotonic()
        while self.step < total:
            request = self._agreed(STOP_CODES[self.callbacks.should_stop()])
            if request == STOP_CODES["cancel"]:
                raise Cancelled("cancelled")
            if request == STOP_CODES["stop"]:
                stop_reason = "stopped"
                self._event(
                    "stop", f"stop requested at step {self.step}: finishing with the best checkpoint", {}
                )
                break

            step = self.step
            # One optimizer step over `accumulation` micro-batches. Each micro-batch's loss is scaled by its
            # share of the step's queries, with the box and mask terms normalised by the step's target count
            # (scaled alike), so the summed gradient is the one a single batch of them all would give.
            accumulation = self.hp["grad_accumulation"]
            micro_batches = []
            for micro in range(accumulation):
                # Micro-batch 0 keeps the (seed, step) derivation of a run without accumulation.
                key = [cfg.seed, 1, step] if micro == 0 else [cfg.seed, 1, step, micro]
                micro_batches.append(D.make_batch(
                    split, self._batch_indices(step, micro), size=self.image_size, mask_size=self.mask_size,
                    max_negatives=cfg.max_negatives, rng=np.random.default_rng(key), mean=self.loaded.image_mean,
                    std=self.loaded.image_std, with_pixels=self.mode != "decoder",
                    jitter=cfg.scale_jitter and self.mode != "decoder", box_exemplar_prob=cfg.box_exemplar_prob,
                ))  # fmt: skip
            if self.rows_per_pass is not None:
                micro_batches = [piece for b in micro_batches for piece in b.row_chunks(self.rows_per_pass)]
            passes = len(micro_batches)
            queries = sum(len(b.targets) for b in micro_batches)
            instances = float(sum(t.num for b in micro_batches for t in b.targets))
            if self.world > 1:
                # Each rank normalises by the mean instance count over ranks (Meta's recipe), so DDP's average of
                # the ranks' gradients is the gradient of one batch of all their instances.
                counted = torch.tensor([instances], device=self.device)
                dist.all_reduce(counted)
                instances = float(counted.item()) / self.world
            instances = max(1.0, instances)
            self.train_model.train()
            self.optimizer.zero_grad(set_to_none=True)
            loss_value, parts = 0.0, dict[str, torch.Tensor]()
            for micro, batch in enumerate(micro_batches):
                share = len(batch.targets) / queries
                # Dropout, independent of where a run resumed; micro-batch 0 as without accumulation.
                torch.manual_seed(cfg.seed * 1_000_003 + step + micro * 1_000_000_007)
                last = micro == passes - 1
                sync = nullcontext() if last or self.world == 1 else self.train_model.no_sync()  # type: ignore[operator]
                with sync:
                    with self._autocast():
                        outputs = self._forward(batch, "train", train=True)
                        if passes == 1 and self.world == 1:  # exactly the step without accumulation
                            loss, micro_parts = self.criterion(outputs, batch.targets)
                        else:
                            loss, micro_parts = self.criterion(outputs, batch.targets, instances * share)
                    if passes > 1:
                        loss = loss * share
                    loss.backward()
                loss_value += float(loss.detach())
                for k, v in micro_parts.items():
                    parts[k] = parts.get(k, 0.0) + v * (share if passes > 1 else 1.0)
                del outputs, loss
            if self._diverged(loss_value):
                self.optimizer.zero_grad(set_to_none=True)
                self._rollback(loss_value)
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.hp["grad_clip"])
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self.history.append(loss_value)

            epoch = self.step / per_epoch
            if self.step % cfg.log_every_steps == 0 or self.step == total:
                metrics = {
                    "loss": loss_value,
                    "lr": metrics_lr(self.optimizer),
                    "grad_norm": float(grad_norm),
                }
                self._metrics(self.step, epoch, metrics | {k: float(v) for k, v in parts.items()})
            if progress is not None:
                progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{metrics_lr(self.optimizer):.2e}")
                progress.update(1)
            # Validate before checkpointing the same step: a run resumed from that checkpoint starts after
            # this step and would never run (or record) its validation, nor know the best it found.
            if self.step % (per_epoch * cfg.eval_every_epochs) == 0 or self.step == total:
                if self._agreed(int(self._validate(epoch))):
                    stop_reason = "early_stopped"
                    break  # the checkpoint after the loop follows
            if (
                self.step % cfg.checkpoint_every_steps == 0
                or time.monotonic() - self.last_checkpoint_at >= cfg.checkpoint_every_seconds
            ):
                self._save_checkpoint()
        if progress is not None:
            progress.close()
        if stop_reason != "early_stopped" and self.step % (per_epoch * cfg.eval_every_epochs) != 0:
            self._validate(self.step / per_epoch)
        self._save_checkpoint()
        return self._finish("stopped" if stop_reason == "stopped" else "succeeded")

    def _forward(self, batch: D.Batch, split: str, *, train: bool) -> ModelOutputs:
        model = self.train_model if train else self.query_model
        decoder = self.mode == "decoder"
        samples = self.splits[split].samples
        return ask(
            model,
            self.text["input_ids"],
            self.text["attention_mask"],
            pixel_values=None if decoder else batch.pixel_values.to(self.device),  # type: ignore[union-attr]
            backbone_hidden=self.vision_cache.load(
                split, [samples[i] for i in batch.sample_index], self.device
            )
            if decoder
            else None,
            text_hidden=self.text_hidden if decoder else None,
            image_index=batch.image_index.to(self.device),
            class_index=batch.class_index.to(self.device),
            input_boxes=None if batch.input_boxes is None else batch.input_boxes.to(self.device),
            input_boxes_labels=None
            if batch.input_boxes_labels is None
            else batch.input_boxes_labels.to(self.device),
        )

    # --- divergence --------------------------------------------------------------------------------

    def _diverged(self, loss: float) -> bool:
        if not math.isfinite(loss):
            return True
        recent = self.history[-50:]
        if self.step < max(self.hp["warmup_steps"], 20) or len(recent) < 20:
            return False
        return loss > self.cfg.spike_factor * statistics.median(recent)

    def _rollback(self, loss: float) -> None:
        """Back to the last good checkpoint with half the learning rate, at most `max_rollbacks` times."""
        if self.rollbacks >= self.cfg.max_rollbacks:
            raise TrainingFailed(
                f"the loss diverged ({loss}) at step {self.step} after {self.rollbacks} rollbacks; "
                "try a lower learning rate"
            )
        self.rollbacks += 1
        at = self.step
        if (self.out / "checkpoints" / "last" / "trainer_state.pt").exists():
            self._load_checkpoint(self.out / "checkpoints" / "last")
        else:
            self._reload_initial_weights()
        self.lr_scale *= 0.5
        # The scheduler's lambda reads lr_scale; apply it now rather than from the next step on.
        for group, base_lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base_lr * self._lr_lambda(self.step)
        self._event(
            "divergence_rollback",
            f"loss {loss:.4g} at step {at} diverged: rolled back to step {self.step} with half the learning rate",
            {
                "loss": loss if math.isfinite(loss) else str(loss),
                "from_step": at,
                "to_step": self.step,
                "lr_scale": self.lr_scale,
            },
        )

    def _reload_initial_weights(self) -> None:
        if self.mode == "decoder":
            self.model.load_state_dict(self.initial_trainable, strict=False)
        else:
            fresh = load_base_model(self.cfg.base_model, device="cpu").model
            self.model.load_state_dict(fresh.state_dict())
        self.step = 0
        self.history.clear()

    # --- evaluation --------------------------------------------------------------------------------

    def evaluate(self, split: str, *, model: Sam3Model | None = None, use_cache: bool = True) -> EvalResult:
        """COCO bbox and segm AP on a split: every image asked about every class."""
        detections = self.predict_split(split, model=model, use_cache=use_cache)
        return coco_evaluate(self.splits[split].coco, limit_per_image(detections))

    @torch.no_grad()
    def predict_split(
        self, split: str, *, model: Sam3Model | None = None, use_cache: bool = True
    ) -> list[Detection]:
        """Every detection (top 100 slots per image and class, any score) on a split, as evaluation sees them."""
        data = self.splits[split]
        query_model = QueryModel(model) if model is not None else self.query_model
        query_model.eval()
        k = len(self.classes)
        cached = self.mode == "decoder" and use_cache
        text_hidden = text_backbone(query_model.model, self.text["input_ids"], self.text["attention_mask"])
        detections = []
        for sample in data.samples:
            pixels = None
            if not cached:
                pixels = D.load_pixels(sample.path, self.image_size, self.image_size, self.loaded.image_mean,
                                       self.loaded.image_std)[None].to(self.device)  # fmt: skip
            with self._autocast():
                out = ask(
                    query_model,
                    self.text["input_ids"],
                    self.text["attention_mask"],
                    pixel_values=pixels,
                    backbone_hidden=self.vision_cache.load(split, [sample], self.device) if cached else None,
                    text_hidden=text_hidden,
                )
            for c in range(k):
                detections += postprocess(
                    out.logits[-1, c].float(), out.presence[-1, c].float(), out.boxes[-1, c].float(),
                    out.masks[c].float(),
                    image_id=sample.image_id, category_id=data.category_id(c), orig_size=(sample.height, sample.width),
                    nms_iou=self.cfg.eval_nms_iou,
                )  # fmt: skip
        return detections

    def _evaluate_base(self, split: str) -> dict[str, Any]:
        """The base model's evaluation. `decoder` mode: this model with the base's values of the trained
        parameters put back for the evaluation (everything else is the base's already), then its own again;
        `full` mode: a second copy of the base."""
        if self.mode != "decoder":
            base = load_base_model(self.cfg.base_model, device=self.device).model
            try:
                return self.evaluate(split, model=base, use_cache=False).to_dict()
            finally:
                del base
        trained = {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}
        self.model.load_state_dict(self.initial_trainable, strict=False)
        try:
            return self.evaluate(split).to_dict()
        finally:
            self.model.load_state_dict(trained, strict=False)

    def _agreed(self, code: int) -> int:
        """The largest `code` of all ranks. What rank 0 alone decides (a stop or cancel request reaches its
        callbacks only; early stopping reads its validation only) is taken by every rank at the same step:
        a rank that went on alone would wait forever in the next step's gradient all-reduce."""
        if self.world == 1:
            return code
        flag = torch.tensor([code], device=self.device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def _validate(self, epoch: float) -> bool:
        """Evaluate on valid, keep the best weights; True when early stopping says enough."""
        if "valid" not in self.splits or not self.splits["valid"].samples or self.rank != 0:
            return False
        result = self.evaluate("valid").summary
        self._metrics(self.step, epoch, {f"valid_{k}": v for k, v in result.items()})
        score = result["segm_AP"] + 1e-3 * result["segm_AP50"]
        if score > self.best_metric:
            self.best_metric, self.best_valid = score, result
            self.epochs_without_gain = 0
            self._save_weights(self.out / "checkpoints" / "best")
            self.callbacks.on_checkpoint(self.step, self.out / "checkpoints" / "best", True)
        else:
            self.epochs_without_gain += 1
        patience = self.hp["early_stopping_patience"]
        if patience and self.epochs_without_gain >= patience:
            self._event(
                "early_stopping",
                f"no better validation mask AP for {patience} evaluations",
                {"step": self.step},
            )
            return True
        return False

    # --- checkpoints ---------------------------------------------------------------------------------

    def _checkpoint_weights(self) -> dict[str, torch.Tensor]:
        """What a checkpoint's weights hold. `decoder` mode: the trainable parameters only (both encoders are
        frozen, so they are the base model's, which setup loads again on resume; SAM 3's 840M parameters are
        3.4 GB, of which a decoder-mode run trains about 4%). `full` mode: the whole state dict."""
        if self.mode == "decoder":
            state = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        else:
            state = self.model.state_dict()
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def _load_weights(self, path: Path) -> None:
        """Checkpoint weights (all, or the trainable ones) over the model as it is: what a checkpoint leaves
        out must be what this run does not train."""
        result = self.model.load_state_dict(load_file(str(path)), strict=False)
        trainable = {name for name, p in self.model.named_parameters() if p.requires_grad}
        missing = sorted(trainable & set(result.missing_keys))
        if missing or result.unexpected_keys:
            raise TrainingFailed(
                f"{path} does not fit this run: missing trainable {missing[:3]}, "
                f"unexpected {sorted(result.unexpected_keys)[:3]}"
            )

    def _save_weights(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = self._checkpoint_weights()
        tmp = directory / "model.safetensors.tmp"
        save_file(state, str(tmp))
        os.replace(tmp, directory / "model.safetensors")

    def _save_checkpoint(self) -> None:
        self.last_checkpoint_at = time.monotonic()
        if self.rank != 0:
            return
        directory = self.out / "checkpoints" / "last"
        self._save_weights(directory)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "weights": "trainable" if self.mode == "decoder" else "all",  # what model.safetensors holds
            "epoch": self.step / self._batches_per_epoch(),
            "best_metric": self.best_metric,
            "best_valid": self.best_valid,
            "epochs_without_gain": self.epochs_without_gain,
            "rollbacks": self.rollbacks,
            "lr_scale": self.lr_scale,
            "history": self.history[-100:],
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }
        tmp = directory / "trainer_state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, directory / "trainer_state.pt")
        self.callbacks.on_checkpoint(self.step, directory, False)

    def _load_checkpoint(self, directory: Path) -> None:
        self._load_weights(directory / "model.safetensors")
        state = torch.load(directory / "trainer_state.pt", map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.best_metric = state["best_metric"]
        self.best_valid = state["best_valid"]
        self.epochs_without_gain = state["epochs_without_gain"]
        self.rollbacks = max(self.rollbacks, state["rollbacks"])
        self.lr_scale = state["lr_scale"]
        self.history = list(state["history"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        # Only a CUDA run saved these; a machine with fewer GPUs than the one that saved them restores its own.
        cuda_states = state["rng"].get("cuda")
        if cuda_states is not None and torch.cuda.is_available():
            for index, cuda_state in enumerate(cuda_states[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, index)

    def _resume_if_possible(self) -> None:
        last = self.out / "checkpoints" / "last"
        if (last / "trainer_state.pt").exists():
            self._load_checkpoint(last)
            self._event("resumed", f"resumed from the checkpoint at step {self.step}", {"step": self.step})

    # --- the end -------------------------------------------------------------------------------------

    def _finish(self, status: str) -> RunResult:
        best = self.out / "checkpoints" / "best" / "model.safetensors"
        if best.exists():
            self._load_weights(best)
        test: dict[str, dict[str, Any] | None] = {"base": None, "fine_tuned": None}
        model_dir = None
        if self.rank == 0:
            if "test" in self.splits and self.splits["test"].samples:
                test["fine_tuned"] = self.evaluate("test").to_dict()
                if self.cfg.eval_base_model:
                    test["base"] = self._evaluate_base("test")
            model_dir = self.out / "model"
            if model_dir.exists():
                shutil.rmtree(model_dir)
            base_card = self.loaded.card or {}
            # The base, then its own lineage (a samtune fine-tune made before cards kept one: its base_model;
            # a pretrained or Meta base: nothing below it). A fine-tune keeps its architecture's recommended values.
            below = base_card.get("lineage") or (
                [base_card["base_model"]] if "resolved_mode" in base_card else []
            )
            recommended = base_card.get("recommended_hyperparameters")
            card = {
                "base_model": self.cfg.base_model_name or self.cfg.base_model,
                "base_model_location": self.cfg.base_model,
                "base_model_description": self.loaded.description,
                "lineage": [self.cfg.base_model_name or self.cfg.base_model, *below],
                **({"recommended_hyperparameters": recommended} if recommended else {}),
                "data": str(self.cfg.data_dir),
                "content_hash": D.snapshot_content_hash(Path(self.cfg.data_dir)),
                "annotations_sha256": _annotations_sha256(Path(self.cfg.data_dir)),
                "classes": self.classes,
                "prompts": self.prompts,
                "requested_mode": self.cfg.mode,
                "resolved_mode": self.mode,
                "steps": self.step,
                "hyperparameters": explained(self.resolved),
                "metrics": {"best_valid": self.best_valid, "test": test},
                "events": self.events,
            }
            save_model(self.model, self.loaded.tokenizer, model_dir, image_size=self.image_size, card=card)
            self.callbacks.on_checkpoint(self.step, model_dir, True)
        return RunResult(status, self.step, self.best_valid, test, model_dir, self.resolved, self.events)

    # --- reporting -----------------------------------------------------------------------------------

    def _metrics(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        if self.rank != 0:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "epoch": round(epoch, 4), **metrics}) + "\n")
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
        self.callbacks.on_metrics(step, epoch, metrics)

    def _event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        record = {"kind": kind, "message": message, "step": getattr(self, "step", 0), **data}
        self.events.append(record)
        with open(self.out / "logs" / "events.jsonl", "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
        logger.info("%s: %s", kind, message)
        self.callbacks.on_event(kind, message, data)

    def _tensorboard(self) -> SummaryWriter | None:
        wanted = self.cfg.tensorboard
        if wanted is None:
            wanted = installed("tensorboard")
            if not wanted:
                logger.info("TensorBoard files off: pip install 'samtune[tensorboard]' to write them")
        if not wanted or self.rank != 0:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.out / "tensorboard"))

    def _progress_bar(self, total: int) -> tqdm[NoReturn] | None:
        if not self.cfg.progress_bar or self.rank != 0:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=self.step, desc="fine-tuning", unit="step", dynamic_ncols=True)

    def cleanup(self) -> None:
        if (writer := getattr(self, "writer", None)) is not None:
            writer.close()


def metrics_lr(optimizer: torch.optim.Optimizer) -> float:
    return max(g["lr"] for g in optimizer.param_groups)


def _annotations_sha256(root: Path) -> str:
    """The data's annotation files, hashed: identifies any data directory, a samtune snapshot or not."""
    h = hashlib.sha256()
    for split in D.SPLITS:
        path = D.find_split_file(root, split)
        if path is not None:
            h.update(path.read_bytes())
    return h.hexdigest()


def run(cfg: TrainConfig, callbacks: TrainerCallbacks | None = None) -> RunResult:
    recipe = FineTuneRecipe(cfg, callbacks)
    try:
        recipe.setup()
        return recipe.train()
    finally:
        recipe.cleanup()
