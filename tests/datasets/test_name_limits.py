"""Names and class counts are bounded (issue 20): a 1 MB class name and 20,001 classes were accepted, and the
dataset list grew to 1.7 MB. Each limit is a 422 naming it, and nothing of a refused upload is written.
SQLite and PostgreSQL (the `client` fixture)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from app.settings import Settings
from tests.factories import simple_coco_zip


def _upload(client: TestClient, auth: dict[str, str], dataset_id: str, path: Path):
    with path.open("rb") as f:
        return client.post(
            f"/api/v1/datasets/{dataset_id}/uploads",
            files={"file": ("u.zip", f, "application/zip")},
            headers=auth,
        )


def _dataset(client: TestClient, auth: dict[str, str]) -> dict:
    r = client.post("/api/v1/datasets", json={"name": "limits"}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def _problem(r, fragment: str) -> dict:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert fragment in r.json()["detail"], r.json()
    return r.json()


def test_dataset_names_are_at_most_200_characters(client: TestClient, auth: dict[str, str]) -> None:
    _problem(client.post("/api/v1/datasets", json={"name": "n" * 201}, headers=auth), "200 characters")
    ok = client.post("/api/v1/datasets", json={"name": "n" * 200}, headers=auth)
    assert ok.status_code == 201, ok.text
    renamed = client.patch(f"/api/v1/datasets/{ok.json()['id']}", json={"name": "m" * 201}, headers=auth)
    _problem(renamed, "200 characters")


def test_a_long_class_name_is_refused_and_nothing_is_written(
    client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    ds = _dataset(client, auth)
    long = "x" * 201
    problem = _problem(_upload(client, auth, ds["id"], simple_coco_zip(tmp_path / "a.zip", classes=(long, "dog"))),
                       "at most 200 characters")  # fmt: skip
    assert "categories[0].name" in problem["detail"]
    after = client.get(f"/api/v1/datasets/{ds['id']}", headers=auth).json()
    assert after["classes"] == [] and after["image_count"] == 0
    # 200 is still a name.
    fits = _upload(client, auth, ds["id"], simple_coco_zip(tmp_path / "b.zip", classes=("y" * 200, "dog")))
    assert fits.status_code == 201, fits.text


def test_the_number_of_classes_is_bounded(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    ds = _dataset(client, auth)
    many = tuple(f"class{i}" for i in range(2001))
    _problem(_upload(client, auth, ds["id"], simple_coco_zip(tmp_path / "many.zip", n_images=1, classes=many)),
             "2001 classes, more than the limit of 2000")  # fmt: skip
    assert client.get(f"/api/v1/datasets/{ds['id']}", headers=auth).json()["classes"] == []


def test_the_class_limit_counts_the_dataset_not_only_the_upload(
    make_client, settings: Settings, auth: dict[str, str], tmp_path: Path
) -> None:
    client = make_client(settings.model_copy(update={"max_classes": 5}))
    ds = _dataset(client, auth)
    first = _upload(client, auth, ds["id"], simple_coco_zip(tmp_path / "a.zip", classes=("a", "b", "c")))
    assert first.status_code == 201, first.text
    second = simple_coco_zip(tmp_path / "b.zip", classes=("a", "d", "e", "f"), seed=1)
    _problem(
        _upload(client, auth, ds["id"], second),
        "has 3 classes and this upload adds 3, more than the limit of 5",
    )
    after = client.get(f"/api/v1/datasets/{ds['id']}", headers=auth).json()
    assert [c["name"] for c in after["classes"]] == ["a", "b", "c"] and after["image_count"] == 3
    # Names already there cost nothing.
    again = simple_coco_zip(tmp_path / "c.zip", classes=("a", "b", "c", "d", "e"), seed=2)
    assert _upload(client, auth, ds["id"], again).status_code == 201


def test_version_class_remaps_are_bounded(client: TestClient, auth: dict[str, str], tmp_path: Path) -> None:
    ds = _dataset(client, auth)
    assert _upload(client, auth, ds["id"], simple_coco_zip(tmp_path / "a.zip")).status_code == 201
    spec = {"preprocessing": {"classes": {"cat": "c" * 201}}}
    r = client.post(f"/api/v1/datasets/{ds['id']}/versions", json=spec, headers=auth)
    _problem(r, "200 characters")
