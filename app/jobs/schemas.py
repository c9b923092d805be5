"""Training jobs as the API takes and shows them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
Mode = Literal["auto", "decoder", "full"]


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version_id: uuid.UUID
    base_model: str | None = Field(
        default=None,
        description="A name from GET /api/v1/base-models, or a ready model of this workspace by its id or its "
        "version's 'slug/N' (training continues from its weights); default: the installation's default.",
    )
    mode: Mode = Field(
        default="auto",
        description="decoder: encoders frozen and cached, heads trained (fast); full: Meta's full fine-tuning; "
        "auto: chosen from the data size and the worker's GPU, with the reason shown.",
    )
    gpus: int | None = Field(
        default=None,
        gt=0,
        description="Devices to train on, one DDP process each (batch_size is per device); default 1. More than "
        "the largest live worker has is a 422 naming it.",
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description='Overrides of the automatic values, e.g. {"epochs": 10, "lr_heads": 1e-4}; '
        "POST /api/v1/jobs/preview lists every one with its reason.",
    )


class JobCreate(JobRequest):
    webhook_url: AnyHttpUrl | None = Field(
        default=None,
        description="POSTed when the job succeeds or fails, signed the Standard Webhooks way (webhook-id, "
        "webhook-timestamp, webhook-signature; docs/api.md). Its host must resolve to public addresses "
        "unless the operator allows it (SAMTUNE_WEBHOOK_ALLOWED_HOSTS).",
    )
    max_restarts: int = Field(
        default=3, ge=0, le=20, description="Resumes after a lost worker before giving up."
    )


class ResolvedValue(BaseModel):
    value: Any
    reason: str


class Estimate(BaseModel):
    steps: int
    seconds: float
    basis: str = Field(description="What the estimate assumes.")


class JobPreview(BaseModel):
    base_model: str
    base_model_description: str
    version_name: str = Field(description="'{dataset slug}/{number}' of the data version to train on.")
    requested_mode: Mode
    resolved_mode: str = Field(description="The mode it would train in on this installation's workers.")
    device: str
    hyperparameters: dict[str, ResolvedValue]
    estimate: Estimate

    # Deprecated names, kept for one release (docs/api.md, "Deprecated fields").
    version: str = Field(deprecated="use version_name", description="Deprecated: version_name.")
    mode: str = Field(deprecated="use resolved_mode", description="Deprecated: resolved_mode.")


class Phase(BaseModel):
    """A phase of the run before its first step that takes long enough to show."""

    name: str = Field(
        description="'downloading': the base model is fetched from the Hugging Face Hub (first use; items are "
        "bytes). 'caching': decoder mode runs the frozen vision encoder over every image of every split "
        "(image embeddings), once per worker and base model."
    )
    done: int = Field(description="Items done so far: bytes while downloading, images while caching.")
    total: int
    eta_seconds: float | None = Field(
        default=None, description="From this phase's own measured rate so far; null before the first item."
    )


class Progress(BaseModel):
    step: int = 0
    total_steps: int | None = None
    epoch: float = 0.0
    eta_seconds: float | None = None
    steps_per_second: float | None = None
    phase: Phase | None = Field(
        default=None,
        description="While the running job is in a phase before training (downloading, caching); null once "
        "training began. `eta_seconds` above is the training's.",
    )


class JobEventOut(BaseModel):
    id: int
    kind: str
    message: str
    data: dict[str, Any]
    attempt: int
    created_at: datetime


class BaseVsFineTuned(BaseModel):
    """Each model's COCO evaluation on the test split (a summary and per-class AP), or null where not run."""

    base: dict[str, Any] | None = Field(default=None, description="The base model, zero-shot.")
    fine_tuned: dict[str, Any] | None = Field(default=None, description="The fine-tuned model.")


class JobOut(BaseModel):
    id: uuid.UUID
    status: JobStatus
    version_id: uuid.UUID
    version_name: str = Field(description="'{dataset slug}/{number}' of the data version trained on.")
    dataset_id: uuid.UUID
    base_model: str = Field(
        description="The base model's name: a catalog base model, or a workspace model as "
        "'{slug}/{number} (model {id})'."
    )
    base_model_description: str
    base_model_id: uuid.UUID | None = Field(
        default=None, description="The workspace model it continues from; null for a catalog base model."
    )
    mode: Mode = Field(description="The training mode asked for: auto, decoder or full.")
    resolved_mode: str = Field(
        description="The mode it trains in (decoder or full): the preview's until a worker resolves it."
    )
    hyperparameters: dict[str, ResolvedValue]
    attempt: int
    max_restarts: int
    queue_position: int | None = Field(description="1 = next to run; None unless queued.")
    progress: Progress
    metrics: dict[str, float] = Field(description="The latest value of every metric.")
    best_valid: dict[str, float] | None = Field(
        description="The validation summary at the best checkpoint so far; null before the first evaluation."
    )
    events: list[JobEventOut] = Field(
        description="Status changes, restarts, rollbacks, stops; not log lines."
    )
    test: BaseVsFineTuned = Field(
        default_factory=BaseVsFineTuned,
        description="After success: the base model (zero-shot) and the fine-tuned one evaluated on the test "
        "split, so the lift is plain.",
    )
    error: str | None
    stop_requested: bool
    cancel_requested: bool
    model_id: uuid.UUID | None
    webhook_url: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    # Deprecated names, kept for one release (docs/api.md, "Deprecated fields").
    version: str = Field(deprecated="use version_name", description="Deprecated: version_name.")
    best_metrics: dict[str, float] = Field(
        deprecated="use best_valid", description="Deprecated: best_valid ({} where that is null)."
    )
    test_metrics: dict[str, dict[str, float] | None] = Field(
        default_factory=dict,
        deprecated="use test",
        description="Deprecated: test, summaries only ({'base': summary, 'fine_tuned': summary}).",
    )


class JobCreated(JobOut):
    webhook_secret: str | None = Field(
        default=None, description="Shown once: verify webhook signatures with it."
    )


class MetricPoint(BaseModel):
    step: int
    epoch: float
    name: str
    value: float


class LogLine(BaseModel):
    id: int
    time: datetime
    attempt: int
    message: str


class EventsToken(BaseModel):
    token: str
    expires_at: datetime
    url: str = Field(description="The event stream URL with the token, for EventSource.")
