from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.core.storage import make_storage
from app.settings import Settings
from app.versions.builder import build_version


class VersionKit:
    """Drives datasets and versions through the API; builds run in-process with the real builder."""

    def __init__(
        self, client: TestClient, auth: dict[str, str], settings: Settings, factory: sessionmaker[Session]
    ):
        self.client, self.auth, self.settings, self.factory = client, auth, settings, factory
        self.storage = make_storage(settings)

    def dataset(self, *zips: Path, name: str = "d") -> str:
        r = self.client.post("/api/v1/datasets", json={"name": name}, headers=self.auth)
        assert r.status_code == 201, r.text
        for z in zips:
            self.upload(r.json()["id"], z)
        return r.json()["id"]

    def upload(self, dataset_id: str, path: Path) -> dict:
        with open(path, "rb") as f:
            r = self.client.post(
                f"/api/v1/datasets/{dataset_id}/uploads", files={"file": (path.name, f)}, headers=self.auth
            )
        assert r.status_code == 201, r.text
        return r.json()

    def create(self, dataset_id: str, spec: dict | None = None) -> dict:
        r = self.client.post(f"/api/v1/datasets/{dataset_id}/versions", json=spec or {}, headers=self.auth)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "building"
        return r.json()

    def build(self, version_id: str) -> dict:
        build_version(self.factory, self.storage, self.settings, uuid.UUID(version_id))
        return self.get(version_id)

    def version(self, dataset_id: str, spec: dict | None = None) -> dict:
        v = self.build(self.create(dataset_id, spec)["id"])
        assert v["status"] == "ready", v
        return v

    def get(self, version_id: str) -> dict:
        r = self.client.get(f"/api/v1/versions/{version_id}", headers=self.auth)
        assert r.status_code == 200, r.text
        return r.json()

    def coco(self, version: dict, split: str) -> dict:
        import json

        prefix = self._prefix(version)
        return json.loads(self.storage.get_bytes(f"{prefix}{split}/_annotations.coco.json"))

    def snapshot_keys(self, version: dict) -> list[str]:
        return sorted(self.storage.list(self._prefix(version)))

    def _prefix(self, version: dict) -> str:
        from app.versions.tables import DatasetVersion

        with self.factory() as session:
            row = session.get(DatasetVersion, uuid.UUID(version["id"]))
            assert row is not None and row.snapshot_prefix
            return row.snapshot_prefix


@pytest.fixture
def kit(
    client: TestClient, auth: dict[str, str], settings: Settings, session_factory: sessionmaker[Session]
) -> VersionKit:
    return VersionKit(client, auth, settings, session_factory)
