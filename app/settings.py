"""Settings, validated once and passed in (never imported as a module global).

Every field reads from an environment variable with the `SAMTUNE_` prefix; docs/configuration.md lists them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, model_validator
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

    max_upload_bytes: int = Field(
        default=4 * 2**30, description="Largest request body accepted for an upload."
    )
    max_zip_entries: int = 100_000
    max_zip_uncompressed_bytes: int = 20 * 2**30
    max_zip_ratio: float = 200.0
    max_image_pixels: int = 64_000_000

    log_level: str = "info"

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
    def broker_dir(self) -> Path:
        path = self.data_dir / "broker"
        path.mkdir(parents=True, exist_ok=True)
        return path
