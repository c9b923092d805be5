"""Roboflow's REST API routes (app/roboflow_api) through the app, with a recording task queue so that a version's
build and a job's run happen when the test says: routing beside the UI and /api/v1, reserved workspace names,
Roboflow's error member, the export's 202 then its signed link, annotations, and the hosted predict form's
confidence scale. The whole flow with Roboflow's own package is tests/roboflow/test_roboflow_sdk.py."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from app.core.db import transaction
from app.core.errors import Unprocessable
from app.keys.service import create_key_for_workspace
from app.main import create_app
from app.roboflow_api import links
from app.roboflow_api.spec import version_spec
from app.versions.builder import build_version
from app.workspaces.service import RESERVED_NAMES
from tests.factories import jpeg_bytes
from tests.support.jobs import JobKit
from tests.support.servers import LiveServer

WORKSPACE = "jobs-kit"  # the kit's key's workspace


def _key(kit: JobKit) -> str:
    return kit.auth["Authorization"].removeprefix("Bearer ")


def test_every_fixed_first_path_segment_is_a_reserved_workspace_name(jobs_kit: JobKit) -> None:
    """A page or API added later must reserve its word, or `/{workspace}` would answer for it in some cases."""
    app = create_app(jobs_kit.settings)
    firsts = set()
    for route in app.routes:
        path = route.path if isinstance(route, APIRoute | Mount) else getattr(route, "path", "")
        first = path.strip("/").split("/")[0]
        if first and not first.startswith("{"):
            firsts.add(first)
    assert firsts, "no fixed routes found"
    assert firsts <= RESERVED_NAMES, firsts - RESERVED_NAMES


@pytest.mark.parametrize("name", ["datasets", "Models", "api", "dataset", "docs", "a/b"])
def test_reserved_words_are_refused_as_new_workspace_names(jobs_kit: JobKit, name: str) -> None:
    with (
        pytest.raises(Unprocessable, match="cannot be a workspace name"),
        transaction(jobs_kit.factory) as session,
    ):
        create_key_for_workspace(session, name)


def test_pages_and_the_native_api_answer_as_before(jobs_kit: JobKit) -> None:
    c = jobs_kit.client
    for page in ("/", "/datasets", "/keys", "/jobs", "/models", "/train", "/compare",
                 f"/datasets/{jobs_kit.dataset_id}", f"/versions/{jobs_kit.version['id']}"):  # fmt: skip
        r = c.get(page, follow_redirects=False)  # no session: every page sends to the sign-in form
        assert r.status_code == 303 and r.headers["location"].startswith("/signin"), (
            page,
            r.status_code,
            r.text,
        )
    for public in ("/signin", "/docs", "/healthz", "/openapi.json"):
        assert c.get(public).status_code == 200, public
    assert c.get("/api/v1/datasets", headers=jobs_kit.auth).status_code == 200
    assert (
        c.get(f"/api/v1/versions/{jobs_kit.version['id']}", headers=jobs_kit.auth).json()["status"] == "ready"
    )
    assert c.get("/model/registry", headers=jobs_kit.auth).status_code == 200
    # Unknown paths under /api/v1 stay plain 404s, not Roboflow's workspace look-up.
    r = c.get("/api/v1/nothing-here", headers=jobs_kit.auth)
    assert r.status_code == 404 and "error" not in r.json()


def test_errors_carry_roboflow_s_member_and_never_the_key(jobs_kit: JobKit) -> None:
    key = _key(jobs_kit)
    c = jobs_kit.client
    r = c.get(f"/{WORKSPACE}/no-such-project", params={"api_key": key})
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert (
        r.json()["error"]["message"]
        == r.json()["detail"]
        == "project 'no-such-project' not found in this workspace"
    )
    r = c.get("/someone-else", params={"api_key": key})
    assert r.status_code == 404 and "someone-else" in r.json()["error"]["message"]
    bad = c.post(
        f"/{WORKSPACE}/projects", params={"api_key": key}, json={"name": "x", "type": "classification"}
    )
    assert bad.status_code == 422 and "classification" in bad.json()["error"]["message"]
    wrong = "st_" + "0" * 48
    r = c.get(f"/{WORKSPACE}", params={"api_key": wrong})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    for answer in (r, bad):
        assert key not in answer.text and wrong not in answer.text


def test_a_project_from_upload_to_export(jobs_kit: JobKit) -> None:
    c, key = jobs_kit.client, _key(jobs_kit)
    q = {"api_key": key}
    made = c.post(
        f"/{WORKSPACE}/projects", params=q, json={"name": "Route Shapes", "type": "object-detection"}
    )
    assert made.status_code == 200, made.text
    project = made.json()
    assert project["id"] == f"{WORKSPACE}/route-shapes" and project["type"] == "instance-segmentation"
    slug = "route-shapes"

    image = jpeg_bytes(64, 48, seed=7)
    files = {"file": ("cat.jpg", image, "image/jpeg")}
    up = c.post(f"/dataset/{slug}/upload", params=q, files=files, data={"name": "cat.jpg", "split": "valid"})
    assert up.status_code == 200 and up.json()["success"], up.text
    image_id = up.json()["id"]
    again = c.post(
        f"/dataset/{slug}/upload", params=q, files=files, data={"name": "cat.jpg", "split": "valid"}
    )
    assert again.json() == {"duplicate": True, "id": image_id}

    def coco(annotations: list[dict]) -> str:
        return json.dumps({"images": [{"id": 4, "file_name": "cat.jpg", "width": 64, "height": 48}],
                           "categories": [{"id": 0, "name": "animals"}, {"id": 1, "name": "cat"}],
                           "annotations": annotations, "info": {}, "licenses": []})  # fmt: skip

    box = {"id": 1, "image_id": 4, "category_id": 1, "bbox": [4, 4, 20, 10], "area": 200,
           "segmentation": [[4, 4, 24, 4, 24, 14, 4, 14]], "iscrowd": 0}  # fmt: skip
    placeholder = {"id": 999999999, "image_id": 999999999, "category_id": 0, "area": 1, "segmentation": [],
                   "iscrowd": 0}  # fmt: skip
    url = f"/dataset/{slug}/annotate/{image_id}"
    none = c.post(
        url, params=q | {"name": "annotation.coco.json"}, json={"annotationFile": coco([placeholder])}
    )
    assert none.status_code == 200 and none.json()["annotations"] == 0, none.text
    one = c.post(url, params=q | {"name": "annotation.coco.json"}, json={"annotationFile": coco([box])})
    assert one.status_code == 200 and one.json()["annotations"] == 1, one.text
    twice = c.post(
        url,
        params=q | {"name": "annotation.coco.json"},
        json={"annotationFile": coco([box, box | {"id": 2}])},
    )
    assert twice.status_code == 409 and "already annotated" in twice.json()["error"]["message"]
    over = c.post(url, params=q | {"name": "annotation.coco.json", "overwrite": "true"},
                  json={"annotationFile": coco([box, box | {"id": 2}])})  # fmt: skip
    assert over.status_code == 200 and over.json()["annotations"] == 2
    shown = c.get(f"/{WORKSPACE}/{slug}", params=q).json()
    assert shown["project"]["classes"] == {"cat": 2} and shown["project"]["splits"]["valid"] == 1
    assert shown["versions"] == []

    refused = c.post(f"/{WORKSPACE}/{slug}/generate", params=q,
                     json={"preprocessing": {"grayscale": True}, "augmentation": {}})  # fmt: skip
    assert refused.status_code == 422 and "grayscale" in refused.json()["error"]["message"]
    gen = c.post(f"/{WORKSPACE}/{slug}/generate", params=q,
                 json={"preprocessing": {"resize": {"width": 64, "height": 64, "format": "Stretch to"}},
                       "augmentation": {}})  # fmt: skip
    assert gen.status_code == 200 and gen.json()["version"] == 1, gen.text

    # Not built yet (the queue only records): generating, and the export answers 202 with the build's progress.
    v = c.get(f"/{WORKSPACE}/{slug}/1", params=q | {"nocache": "true"}).json()["version"]
    assert v["generating"] is True and v["images"] == 0
    assert c.get(f"/{WORKSPACE}/{slug}/1/coco", params=q).status_code == 202
    assert c.get(f"/{WORKSPACE}/{slug}/1/coco", params=q).json() == {"ready": False, "progress": 0.0}
    assert c.get(f"/{WORKSPACE}/{slug}/1/yolov8", params=q).status_code == 400

    dataset_id = next(
        d["id"] for d in c.get("/api/v1/datasets", headers=jobs_kit.auth).json()["items"] if d["slug"] == slug
    )
    version_id = next(
        x["id"]
        for x in c.get(f"/api/v1/datasets/{dataset_id}/versions", headers=jobs_kit.auth).json()["items"]
    )
    assert (
        build_version(jobs_kit.factory, jobs_kit.storage, jobs_kit.settings, uuid.UUID(version_id)) == "ready"
    )
    v = c.get(f"/{WORKSPACE}/{slug}/1", params=q).json()["version"]
    assert v["generating"] is False and v["splits"] == {"train": 0, "valid": 1, "test": 0}
    assert v["preprocessing"]["resize"]["width"] == 64 and "coco" in v["exports"] and "model" not in v

    ready = c.get(f"/{WORKSPACE}/{slug}/1/coco", params=q)
    assert ready.status_code == 200, ready.text
    link = ready.json()["export"]["link"]
    assert key not in link and "token=" in link
    zipped = c.get(link)  # no key: the link's token is the permission
    assert zipped.status_code == 200 and int(zipped.headers["content-length"]) == len(zipped.content)
    names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
    assert "valid/_annotations.coco.json" in names and any(n.endswith(".jpg") for n in names)
    path = link.split("?")[0].removeprefix("http://testserver")
    assert c.get(path).status_code == 401  # neither token nor key
    other_version = links.issue(jobs_kit.settings.signing_key, uuid.UUID(jobs_kit.version["id"]))
    assert c.get(path, params={"token": other_version}).status_code == 401
    expired = links.issue(jobs_kit.settings.signing_key, uuid.UUID(version_id), now=0)
    assert "expired" in c.get(path, params={"token": expired}).json()["error"]["message"]
    assert c.get(path, params={"token": link.split("token=")[1][:-2] + "xx"}).status_code == 401

    other = jobs_kit.new_auth()
    assert c.get(link.replace(WORKSPACE, "nobody")).status_code == 401
    for method, route in (("GET", f"/{WORKSPACE}"), ("GET", f"/{WORKSPACE}/{slug}"), ("GET", f"/{WORKSPACE}/{slug}/1"),
                          ("GET", f"/{WORKSPACE}/{slug}/1/coco"), ("GET", path), ("POST", f"/{WORKSPACE}/{slug}/1/train"),
                          ("POST", f"/{WORKSPACE}/{slug}/generate")):  # fmt: skip
        r = c.request(method, route, headers=other, json={} if method == "POST" else None)
        assert r.status_code == 404, (route, r.status_code, r.text)


def test_version_settings_map_onto_a_version_spec() -> None:
    spec = version_spec({
        "preprocessing": {"auto-orient": False, "resize": {"width": 320, "height": 240, "format": "Fit (black edges) in"},
                          "filter-null": {"percent": 25}, "remap": {"dog": "animal"}},
        "augmentation": {"flip": {"horizontal": True, "vertical": False}, "rotate": {"degrees": 10},
                         "brightness": {"brighten": True, "darken": True, "percent": 20}},
    })  # fmt: skip
    assert (spec.preprocessing.resize.width, spec.preprocessing.resize.height) == (320, 240)
    assert spec.preprocessing.resize.mode == "letterbox" and spec.preprocessing.auto_orient is False
    assert spec.preprocessing.filter_null == 0.25 and spec.preprocessing.classes == {"dog": "animal"}
    assert spec.augmentation.flip_horizontal and spec.augmentation.rotation_degrees == 10
    assert spec.augmentation.brightness == 0.2 and spec.augmentation.outputs_per_image == 3
    assert (
        version_spec(
            {"preprocessing": {}, "augmentation": {"image": {"versions": 2}}}
        ).augmentation.outputs_per_image
        == 2
    )
    refused = [
        ({"mosaic": True}, {}, "mosaic"),
        ({}, {"resize": {"format": "Fill (with center crop) in"}}, "format"),
        ({"rotate": {"degrees": 90}}, {}, "rotation_degrees"),
    ]
    for augmentation, preprocessing, culprit in refused:
        with pytest.raises(Unprocessable, match=culprit):
            version_spec({"augmentation": augmentation, "preprocessing": preprocessing})


@pytest.mark.timeout(300)
def test_hosted_multipart_confidence_is_a_percentage(jobs_kit: JobKit) -> None:
    """The `roboflow` package's model.predict: multipart `file`, confidence 0-100. confidence=1 there is 1%; in
    the base64 form (Roboflow's inference server) 1 is 100%."""
    job = jobs_kit.create()
    assert jobs_kit.run(job["id"]) == "succeeded"
    jobs_kit.dataset_zip()
    image = sorted((jobs_kit.root / "synth" / "test").glob("*.jpg"))[0].read_bytes()
    c, q = jobs_kit.client, {"api_key": _key(jobs_kit)}
    model = f"shapes/{jobs_kit.version['number']}"

    def multipart(confidence: str) -> list[dict]:
        r = c.post(
            f"/{model}", params=q | {"confidence": confidence}, files={"file": ("x.jpg", image, "image/jpeg")}
        )
        assert r.status_code == 200, r.text
        return [p | {"detection_id": None} for p in r.json()["predictions"]]  # a fresh uuid per answer

    def b64(confidence: str) -> list[dict]:
        r = c.post(f"/{model}", params=q | {"confidence": confidence}, content=base64.b64encode(image),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status_code == 200, r.text
        return [p | {"detection_id": None} for p in r.json()["predictions"]]

    low = multipart("1")
    assert low, "at 1% the fine-tuned model finds something"
    assert min(p["confidence"] for p in low) >= 0.01
    assert b64("1") == []  # 100%
    assert multipart("40") == b64("0.4") == b64("40")
    assert all(p["confidence"] >= 0.4 for p in multipart("40"))
    assert multipart("0.5") == b64("0.005")  # a percentage however small
    r = c.post(f"/{model}", params=q, files={"other": ("x.jpg", image, "image/jpeg")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


def test_the_cli_refuses_a_reserved_workspace_name_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SAMTUNE_DATA_DIR": str(tmp_path / "data")}
    env.pop("SAMTUNE_DATABASE_URL", None)
    samtune = str(Path(sys.executable).with_name("samtune"))
    subprocess.run([samtune, "bootstrap"], env=env, check=True, capture_output=True, cwd=tmp_path)
    made = subprocess.run([samtune, "keys", "create", "--workspace", "datasets"], env=env, capture_output=True,
                          text=True, cwd=tmp_path)  # fmt: skip
    assert made.returncode == 1 and "'datasets' cannot be a workspace name" in made.stderr, made.stderr
    assert "Traceback" not in made.stderr and not made.stdout


def test_the_same_picture_uploaded_at_once_is_stored_once(jobs_kit: JobKit) -> None:
    """upload_dataset sends ten images at a time; a folder holding one picture twice must neither fail nor lose
    the stored object (one key per content) to the other upload's rollback."""
    q = {"api_key": _key(jobs_kit)}
    slug = (
        jobs_kit.client.post(
            f"/{WORKSPACE}/projects", params=q, json={"name": f"twice-{uuid.uuid4().hex[:6]}"}
        )
        .json()["id"]
        .split("/")[1]
    )
    image = jpeg_bytes(40, 40, seed=11)
    with (
        LiveServer(jobs_kit.make_app(jobs_kit.settings)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):

        def upload(i: int) -> httpx.Response:
            return http.post(f"/dataset/{slug}/upload", params=q, data={"name": f"copy{i}.jpg", "split": "train"},
                             files={"file": (f"copy{i}.jpg", image, "image/jpeg")})  # fmt: skip

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(upload, range(8)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    bodies = [a.json() for a in answers]
    assert (
        sum(1 for b in bodies if b.get("success")) == 1 and sum(1 for b in bodies if b.get("duplicate")) == 7
    )
    assert len({b["id"] for b in bodies}) == 1
    dataset = next(
        d
        for d in jobs_kit.client.get("/api/v1/datasets", headers=jobs_kit.auth).json()["items"]
        if d["slug"] == slug
    )
    assert dataset["image_count"] == 1
    shown = jobs_kit.client.get(
        f"/api/v1/datasets/{dataset['id']}/images/{bodies[0]['id']}/file", headers=jobs_kit.auth
    )
    assert shown.status_code == 200 and shown.content == image


def test_annotations_keep_the_class_limit(jobs_kit: JobKit) -> None:
    """SAMTUNE_MAX_CLASSES holds for classes an annotation brings, as for a zip's."""
    client = jobs_kit.make_client(jobs_kit.make_settings(max_classes=1))
    q = {"api_key": _key(jobs_kit)}
    slug = client.post(
        f"/{WORKSPACE}/projects", params=q, json={"name": f"few-{uuid.uuid4().hex[:6]}"}
    ).json()["id"]
    slug = slug.split("/")[1]
    ids = [client.post(f"/dataset/{slug}/upload", params=q, files={"file": (f"{i}.jpg", jpeg_bytes(30, 30, seed=i))},
                       data={"name": f"{i}.jpg"}).json()["id"] for i in (1, 2)]  # fmt: skip

    def coco(image: str, cls: str) -> dict:
        return {"annotationFile": json.dumps({
            "images": [{"id": 1, "file_name": image, "width": 30, "height": 30}],
            "categories": [{"id": 1, "name": cls}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100}],
        })}  # fmt: skip

    assert (
        client.post(f"/dataset/{slug}/annotate/{ids[0]}", params=q, json=coco("1.jpg", "cat")).status_code
        == 200
    )
    r = client.post(f"/dataset/{slug}/annotate/{ids[1]}", params=q, json=coco("2.jpg", "dog"))
    assert r.status_code == 422 and "SAMTUNE_MAX_CLASSES" in r.json()["error"]["message"], r.text
    assert (
        client.post(f"/dataset/{slug}/annotate/{ids[1]}", params=q, json=coco("2.jpg", "cat")).status_code
        == 200
    )
