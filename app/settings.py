"""Settings, validated once and passed in (never imported as a module global).

Every field reads from an environment variable with the `SAMTUNE_` prefix; docs/configuration.md lists them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAMTUNE_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Root of everything samtune keeps on disk.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default: SQLite in DATA_DIR.")
    storage_url: str = Field(
        default="", description="file:///path or s3://bucket[/prefix]; default: DATA_DIR/objects."
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO, moto); None = AWS.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    broker_url: str = Field(
        default="", description="Celery broker; default: server-less filesystem transport."
    )
    redis_url: str | None = Field(default=None, description="Redis for live metrics; None = database only.")
    # Per-key rate limits (app/core/rate_limits.py), counted in REDIS_URL's Redis when it is set, else in each
    # API process's memory.
    rate_limit_uploads: str = Field(
        default="",
        description="Rate of dataset uploads per API key (like 60/minute); empty: no limit.",
    )
    rate_limit_jobs: str = Field(
        default="",
        description="Rate of training jobs, version builds and batch predictions per API key; empty: no limit.",
    )
    rate_limit_predict: str = Field(
        default="",
        description="Rate of predictions per API key (like 600/minute); empty: no limit.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a process remembers a checked API key (and a model's serving spec) before asking "
        "the database again; a key revoked in another process works there for at most this long. 0: never.",
    )

    max_upload_bytes: int = Field(
        default=4 * 2**30,
        gt=0,
        description="Largest request body of a dataset upload (the only route this large).",
    )
    max_request_bytes: int = Field(
        default=2**20,
        gt=0,
        description="Largest request body of every route that is neither a dataset upload nor a prediction.",
    )
    max_zip_entries: int = 100_000
    max_zip_uncompressed_bytes: int = 20 * 2**30
    max_zip_ratio: float = 200.0
    max_classes: int = Field(
        default=2000,
        gt=0,
        description="Most classes a dataset may have (an upload adding more is refused with 422).",
    )
    max_image_pixels: int = Field(
        default=64_000_000, gt=0, description="Largest image (width x height, read from its header) decoded."
    )

    log_level: str = "info"

    secret_key: str = Field(
        default="",
        description="Signs short-lived event-stream tokens; default: a random key kept in DATA_DIR/secret_key. "
        "Set the same value on every API process of a deployment.",
    )
    sam3_path: Path | None = Field(
        default=None,
        description="A local directory holding Meta's facebook/sam3 (else the hub cache is used).",
    )
    worker_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="The device the training workers have, for previews made by the API."
    )
    worker_memory_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Memory one training worker may use (its GPU's, or its RAM on a CPU worker), for the "
        "API's memory check of a job at preview and creation; unset: this machine's free RAM for CPU workers, "
        "no check for GPU workers (the worker fits the batch to its own device).",
    )
    job_lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A running job whose worker is silent this long is resumed elsewhere.",
    )
    worker_devices: int | None = Field(
        default=None,
        gt=0,
        description="Devices a training worker offers one job (DDP processes): unset, every CUDA device it sees, "
        "or 1 on a CPU worker; on a CPU worker N means N gloo processes.",
    )
    job_heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker renews its lease."
    )
    job_requeue_after_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A job or batch prediction still queued this long after its last enqueue is sent again.",
    )
    reaper_interval_seconds: float = Field(default=30.0, gt=0, description="How often beat runs the reapers.")
    metrics_flush_seconds: float = Field(
        default=2.0, gt=0, description="Batching window of the metric writes to the database."
    )
    webhook_max_retries: int = Field(default=6, ge=0)
    webhook_allowed_hosts: str = Field(
        default="",
        description="Webhook destinations allowed although they are not public addresses, comma-separated host "
        "names, addresses or networks (hooks.internal,10.0.5.0/24); empty: only public addresses.",
    )
    model_cache_bytes: int = Field(
        default=8 * 2**30,
        gt=0,
        description="Memory budget (device memory on a GPU) of the models kept loaded for prediction (LRU).",
    )
    batch_max_size: int = Field(
        default=8,
        gt=0,
        le=64,
        description="Most requests (or batch-prediction images) one batched forward takes.",
    )
    batch_max_wait_ms: float = Field(
        default=15.0,
        ge=0,
        le=1000,
        description="How long a prediction waits for others to share its batched forward (milliseconds); only "
        "while other predictions are, or lately were, in flight: a lone client never waits.",
    )
    inference_device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="The device an inference service owns: auto (the first GPU, else the CPU), cpu, cuda or cuda:N.",
    )
    inference_urls: str = Field(
        default="",
        description="The inference services the API forwards predictions to, comma-separated "
        "(http://host:port,...); empty: the API predicts in its own process.",
    )
    inference_token: str = Field(
        default="",
        description="Authenticates the API to its inference services; default: derived from SECRET_KEY "
        "(set the same SECRET_KEY, or this, on the API and every inference service).",
    )
    inference_timeout_seconds: float = Field(
        default=300.0, gt=0, description="How long the API waits for an inference service's answer."
    )
    max_predict_bytes: int = Field(
        default=32 * 2**20,
        gt=0,
        description="Largest request body of a prediction route (the image, base64 or not, and its options).",
    )
    # Each bounds the work one prediction request can ask of the one inference thread every prediction shares.
    max_prompts: int = Field(
        default=64, gt=0, description="Most text prompts (or class_filter names) per request."
    )
    max_prompt_chars: int = Field(default=256, gt=0, description="Longest text prompt, in characters.")
    max_boxes: int = Field(default=64, gt=0, description="Most exemplar boxes per predict request.")
    max_detections: int = Field(
        default=1000,
        gt=0,
        le=1000,
        description="Largest max_detections a request may ask for (1000 at most).",
    )
    max_infer_images: int = Field(default=16, gt=0, description="Most images per Roboflow /infer request.")
    max_visualize_pixels: int = Field(
        default=4_000_000,
        gt=0,
        description="Largest image (width x height) a ?visualize=true prediction draws on; larger ones are refused.",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="Where every process of this machine writes its Prometheus samples, for /metrics to add up "
        "(prometheus-client's multiprocess mode); default: DATA_DIR/metrics.",
    )
    metrics_token: str = Field(
        default="",
        description="A bearer token that opens /metrics from anywhere; empty: only the networks of METRICS_ALLOW.",
    )
    metrics_allow: str = Field(
        default="127.0.0.0/8,::1/128",
        description="Networks /metrics answers without the token, comma-separated addresses or CIDRs; "
        "default: loopback only; empty: none.",
    )
    ui_vendor_dir: Path = Field(
        default=Path(__file__).resolve().parent.parent / "node_modules",
        description="The web UI's third-party browser files (`npm ci` at the repository root makes them); "
        "only an allow-list of files in it is served, at /static/vendor/.",
    )

    @field_validator("rate_limit_uploads", "rate_limit_jobs", "rate_limit_predict")
    @classmethod
    def _one_rate(cls, value: str, info: ValidationInfo) -> str:
        # Imported here: the rate-limit module imports the error classes, which settings need not load.
        from app.core.rate_limits import parse_rate

        parse_rate(value, f"SAMTUNE_{str(info.field_name).upper()}")
        return value.strip()

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'samtune.db'}"
        if not self.storage_url:
            self.storage_url = (self.data_dir / "objects").as_uri()
        if not self.broker_url:
            self.broker_url = "filesystem://"
        return self

    @cached_property
    def tmp_dir(self) -> Path:
        """Staging space for uploads being validated; on the same filesystem as DATA_DIR so that
        local storage can move files in with a rename."""
        path = self.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def signing_key(self) -> bytes:
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Processes starting together (uvicorn workers, worker and beat) must end up with one key: the first
            # link wins, a later one finds the file there and reads the winner's key.
            tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()

    @cached_property
    def inference_urls_list(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.inference_urls.split(",") if u.strip()]

    @cached_property
    def internal_token(self) -> str:
        """What the API presents to its inference services (header X-Samtune-Internal-Token)."""
        if self.inference_token:
            return self.inference_token
        return hmac.new(self.signing_key, b"samtune inference service", hashlib.sha256).hexdigest()

    @cached_property
    def metrics_path(self) -> Path:
        """METRICS_DIR, or DATA_DIR/metrics; made when first asked for."""
        path = (self.metrics_dir or self.data_dir / "metrics").expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def broker_dir(self) -> Path:
        path = self.data_dir / "broker"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @cached_property
    def broker_control_dir(self) -> Path:
        """The filesystem transport's exchange bindings (worker control, broadcasts). Beside broker_dir, not in
        it: that folder is read as a queue of messages. Its default is `control/` in the current directory."""
        path = self.data_dir / "broker-control"
        path.mkdir(parents=True, exist_ok=True)
        return path
