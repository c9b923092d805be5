"""Training jobs: preview, create (and enqueue), read, stop, cancel. The worker side lives in
app/jobs/runner.py (one attempt) and app/jobs/reaper.py; both change a job's status only through `set_status`, which records the change as an
event and publishes it live."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.core.db import after_commit, utcnow
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.queue import TaskQueue, enqueue_after_commit
from app.core.tasks import SEND_WEBHOOK, TRAIN_JOB
from app.datasets.tables import Dataset
from app.jobs import base_models, repository, webhook_target
from app.jobs.base_models import BaseModelInfo
from app.jobs.estimate import estimate
from app.jobs.feed import Publisher
from app.jobs.memory import memory_plan
from app.jobs.schemas import (
    TERMINAL,
    BaseVsFineTuned,
    JobCreate,
    JobEventOut,
    JobOut,
    JobPreview,
    JobRequest,
    Progress,
    ResolvedValue,
)
from app.jobs.tables import TrainingJob
from app.settings import Settings
from app.versions import service as versions
from app.versions.tables import DatasetVersion
from app.workers.registry import check_devices
from trainer.config import TrainConfig, resolve
from trainer.preflight import DoesNotFit

STREAM_TTL_SECONDS = 7 * 24 * 3600

# What a user may set; the rest of TrainConfig is the worker's business (paths, device, logging).
OVERRIDABLE = frozenset(
    {
        "epochs", "batch_size", "warmup_steps", "early_stopping_patience", "max_steps", "lr_heads",
        "lr_vision", "lr_text", "layer_decay", "weight_decay", "grad_clip", "cooldown_fraction", "seed",
        "max_negatives", "prompts", "scale_jitter", "precision", "checkpoint_every_steps",
        "checkpoint_every_seconds", "eval_every_epochs", "eval_nms_iou", "eval_base_model", "one_to_many",
        "box_exemplar_prob", "grad_accumulation", "rows_per_pass", "recompute_activations",
    }
)  # fmt: skip


class JobNotFound(NotFound):
    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"training job {job_id} not found in this workspace")


def train_config(
    base: BaseModelInfo, mode: str, overrides: dict[str, Any], *, data_dir: Path, output_dir: Path
) -> TrainConfig:
    """The trainer's configuration for a job; a bad override is the user's to fix (422 naming it)."""
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise Unprocessable(
            f"unknown hyperparameter {unknown[0]!r}; settable: {', '.join(sorted(OVERRIDABLE))}",
            source=f"hyperparameters.{unknown[0]}",
        )
    try:
        return TrainConfig.model_validate(
            {"base_model": base.location or base.name, "base_model_name": base.name, "data_dir": data_dir,
             "output_dir": output_dir, "mode": mode, "hub_download": base.download, **overrides}
        )  # fmt: skip
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise Unprocessable(
            f"invalid hyperparameter {field}={err.get('input')!r}: {err['msg']}",
            source=f"hyperparameters.{field}",
        ) from None


def worker_device(settings: Settings) -> str:
    if settings.worker_device != "auto":
        return settings.worker_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def preview(session: Session, settings: Settings, workspace_id: uuid.UUID, req: JobRequest) -> JobPreview:
    """The hyperparameters a job would run with, each with its reason, and a rough duration."""
    return _preview(session, settings, workspace_id, req)[0]


def _preview(
    session: Session, settings: Settings, workspace_id: uuid.UUID, req: JobRequest
) -> tuple[JobPreview, BaseModelInfo, DatasetVersion]:
    version, dataset = versions.ready_version(session, workspace_id, req.version_id)
    base = base_models.for_job(session, settings, workspace_id, req.base_model)
    cfg = train_config(base, req.mode, req.hyperparameters, data_dir=Path("."), output_dir=Path("."))
    device = worker_device(settings)
    counts = version.split_counts or {}
    # The worker's memory, where it is known here (app/jobs/memory.py): a batch that cannot fit is a 422 now,
    # not an out-of-memory kill in the middle of the run.
    plan = memory_plan(settings, base, cfg, device, classes=len(version.classes or []), counts=counts)
    try:
        resolved = resolve(
            cfg,
            num_train_images=int(counts.get("train", {}).get("images", 0)),
            device_type=device,
            recommended=base.recommended,
            memory=plan,
            world=req.gpus or 1,
        )
    except DoesNotFit as exc:
        source = "hyperparameters.batch_size" if cfg.batch_size is not None else "mode"
        raise Unprocessable(f"does not fit the worker's memory: {exc}", source=source) from None
    # Devices: more than the largest live worker has is a 422 naming it (app/workers/registry.py).
    check_devices(session, req.gpus or 1)
    hp = {k: ResolvedValue(value=r.value, reason=r.reason) for k, r in resolved.items()}
    hp["gpus"] = gpus_value(req.gpus)
    name, resolved_mode = versions.version_name(dataset, version), str(hp["mode"].value)
    shown = JobPreview(
        base_model=base.name,
        base_model_description=base.description,
        version_name=name,
        requested_mode=req.mode,
        resolved_mode=resolved_mode,
        version=name,
        mode=resolved_mode,
        device=device,
        hyperparameters=hp,
        estimate=estimate(
            base.lineage[-1],  # a workspace model runs at the speed of the catalog model it descends from
            device,
            resolved_mode,
            total_steps=int(hp["total_steps"].value),
            batch_size=int(hp["batch_size"].value),
            epochs=int(hp["epochs"].value),
            eval_images=int(counts.get("valid", {}).get("images", 0))
            + int(counts.get("test", {}).get("images", 0)),
            cache_images=sum(int(c.get("images", 0)) for c in counts.values()),
        ),  # fmt: skip
    )
    return shown, base, version


def create(
    session: Session, settings: Settings, tasks: TaskQueue, publisher: Publisher, workspace_id: uuid.UUID,
    req: JobCreate,
) -> tuple[TrainingJob, str | None]:  # fmt: skip
    shown, base, version = _preview(session, settings, workspace_id, req)
    secret = None
    if req.webhook_url:
        # Checked here and again at each delivery (DNS may answer differently by then).
        webhook_target.resolve(str(req.webhook_url), settings.webhook_allowed_hosts)
        secret = webhook_target.new_secret()
    job = TrainingJob(
        workspace_id=workspace_id,
        version_id=req.version_id,
        base_model=shown.base_model,
        base_model_description=shown.base_model_description,
        base_model_id=base.model_id,
        base_lineage=base.lineage,
        mode=req.mode,
        gpus=req.gpus,
        # The preview's values until a worker resolves them on its own device; the overrides are kept apart.
        hyperparameters={k: v.model_dump() for k, v in shown.hyperparameters.items()},
        overrides=req.hyperparameters,
        progress={"step": 0, "total_steps": shown.estimate.steps},
        status="queued",
        attempt=0,
        max_restarts=req.max_restarts,
        webhook_url=str(req.webhook_url) if req.webhook_url else None,
        webhook_secret=secret,
        enqueued_at=utcnow(),
    )
    session.add(job)
    session.flush()
    record(session, publisher, job, "status", f"queued: {shown.base_model} on {shown.version_name}",
           {"status": "queued"})  # fmt: skip
    if base.model_id is not None:
        _warn_if_classes_changed(session, publisher, job, base, list(version.classes or []))
    enqueue_after_commit(session, tasks, TRAIN_JOB, [str(job.id)])
    return job, secret


CLASSES_CHANGED = "classes_changed"  # the job's warning: its base model was trained on other classes


def _warn_if_classes_changed(
    session: Session, publisher: Publisher, job: TrainingJob, base: BaseModelInfo, classes: list[str]
) -> None:
    """A workspace model trained on other classes may be a base: the version's classes win (prompts are text,
    so no head depends on the class list), and the job says which were added and removed."""
    added = [c for c in classes if c not in base.classes]
    removed = [c for c in base.classes if c not in classes]
    if not added and not removed:
        return
    change = "; ".join(
        part for part in (f"added {', '.join(added)}" if added else "",
                          f"removed {', '.join(removed)}" if removed else "") if part
    )  # fmt: skip
    record(session, publisher, job, CLASSES_CHANGED,
           f"the base model {base.name} was trained on other classes; this version's classes replace them "
           f"({change})",
           {"added": added, "removed": removed, "base_classes": base.classes, "classes": classes})  # fmt: skip


def get(
    session: Session, workspace_id: uuid.UUID, job_id: uuid.UUID
) -> tuple[TrainingJob, DatasetVersion, Dataset]:
    found = repository.get(session, workspace_id, job_id)
    if found is None:
        raise JobNotFound(job_id)
    return found


def record(
    session: Session, publisher: Publisher, job: TrainingJob, kind: str, message: str,
    data: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """An event in the job's history, published live once the transaction commits."""
    event = repository.add_event(session, job.id, kind, message, data, attempt=job.attempt)
    payload = {"kind": kind, "message": message, "attempt": job.attempt, **(data or {})}
    live_kind = "status" if kind == "status" else "event"
    job_id = job.id
    terminal = kind == "status" and (data or {}).get("status") in TERMINAL

    def publish() -> None:
        publisher.publish(job_id, live_kind, payload | {"event_id": event.id})
        if terminal:
            publisher.expire(job_id, STREAM_TTL_SECONDS)

    after_commit(session, publish)


def set_status(
    session: Session, publisher: Publisher, job: TrainingJob, status: str, message: str,
    data: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    job.status = status
    if status in TERMINAL:
        job.finished_at = utcnow()
        job.lease_token = None
        job.lease_expires_at = None
    record(session, publisher, job, "status", message, {"status": status, **(data or {})})


def notify_end(session: Session, tasks: TaskQueue, job: TrainingJob) -> None:
    """The job has ended: its webhook (if it has one) goes out once this transaction commits. A cancelled job
    sends none: the user who cancelled it knows."""
    if job.webhook_url and job.status in TERMINAL and job.status != "cancelled":
        enqueue_after_commit(session, tasks, SEND_WEBHOOK, [str(job.id)])


def request_stop(session: Session, publisher: Publisher, workspace_id: uuid.UUID, job_id: uuid.UUID, *,
                 cancel: bool) -> TrainingJob:  # fmt: skip
    """Stop (keep the best checkpoint, evaluate, register the model) or cancel (discard). A queued job
    has nothing to keep: both end it at once. A running one is told through a flag its worker reads."""
    job, _, _ = get(session, workspace_id, job_id)
    verb = "cancel" if cancel else "stop"
    if job.status in TERMINAL:
        raise Conflict(f"job {job.id} already {job.status}; nothing to {verb}")
    # Conditional, so a worker claiming the job at this instant cannot slip between read and write.
    ended = session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job.id, TrainingJob.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    session.refresh(job)
    if ended:
        why = "cancelled while queued" if cancel else "stopped while queued: no training had run, so no model"
        record(session, publisher, job, "status", why, {"status": "cancelled"})
        return job
    if cancel:
        job.cancel_requested = True
    else:
        job.stop_requested = True
    record(session, publisher, job, verb, f"{verb} requested; the worker acts on it within seconds")
    return job


def gpus_value(gpus: int | None) -> ResolvedValue:
    """A job's devices as the resolved hyperparameters show them (kept in a column of its own: the worker
    replaces the rest of the resolved values with its own)."""
    if gpus is None:
        return ResolvedValue(value=1, reason="one device per job unless asked")
    return ResolvedValue(value=gpus, reason=f"asked for: {gpus} DDP processes, batch_size each")


def describe(session: Session, job: TrainingJob, version: DatasetVersion, dataset: Dataset) -> JobOut:
    progress = dict(job.progress or {})
    model = repository.model_row(session, job.id)
    test = ((model.eval_results or {}).get("test") if model else None) or {}
    best_valid = progress.get("best_valid")
    name = versions.version_name(dataset, version)
    return JobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        version_id=version.id,
        version_name=name,
        dataset_id=dataset.id,
        base_model=job.base_model,
        base_model_description=job.base_model_description or job.base_model,
        base_model_id=job.base_model_id,
        mode=job.mode,  # type: ignore[arg-type]
        resolved_mode=str((job.hyperparameters or {}).get("mode", {}).get("value", job.mode)),
        hyperparameters={k: ResolvedValue(**v) for k, v in (job.hyperparameters or {}).items()}
        | {"gpus": gpus_value(job.gpus)},
        attempt=job.attempt,
        max_restarts=job.max_restarts,
        queue_position=repository.queue_position(session, job),
        progress=Progress(**{k: progress[k] for k in Progress.model_fields if k in progress}),
        metrics=repository.latest_metrics(session, job.id),
        best_valid=best_valid,
        events=[
            JobEventOut(
                id=e.id,
                kind=e.kind,
                message=e.message,
                data=e.data,
                attempt=e.attempt,
                created_at=e.created_at,
            )  # fmt: skip
            for e in repository.events(session, job.id)
        ],
        test=BaseVsFineTuned(base=test.get("base"), fine_tuned=test.get("fine_tuned")),
        error=job.error,
        stop_requested=job.stop_requested,
        cancel_requested=job.cancel_requested,
        model_id=model.id if model else None,
        webhook_url=job.webhook_url,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        version=name,
        best_metrics=best_valid or {},
        test_metrics={k: (test.get(k) or {}).get("summary") for k in ("base", "fine_tuned") if k in test},
    )
