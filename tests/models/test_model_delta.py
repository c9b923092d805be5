"""A decoder-mode model is stored as the tensors it changed plus a reference to its base (app/models/assembly.py),
and comes back whole: the assembled weights are the trainer's file byte for byte, the download loads with
from_pretrained, a model fine-tuned from it trains. A base that is gone or changed is an error naming it, never
a different model; full-mode models are stored whole."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Sam3Model

from app.core.storage import file_sha256
from app.models.assembly import DELTA_CARD, DELTA_FILE, _entries
from tests.support.jobs import JobKit
from trainer.base_model import EMBEDDED_BASE, EMBEDDED_BASE_DIR

FROZEN = ("vision_encoder.backbone.", "text_encoder.")


def _stored(kit: JobKit, model_id: str) -> dict[str, int]:
    """The model's stored objects: name under its prefix -> bytes."""
    prefix = f"models/{model_id}/"
    return {key[len(prefix) :]: len(kit.storage.get_bytes(key)) for key in kit.storage.list(prefix)}


def _trained(kit: JobKit, **body: object) -> str:
    job = kit.create(**body)
    assert kit.run(job["id"]) == "succeeded"
    return str(kit.get(job["id"])["model_id"])


def test_a_decoder_model_is_stored_as_its_changed_tensors(jobs_kit: JobKit, model_id: str) -> None:
    stored = _stored(jobs_kit, model_id)
    assert DELTA_FILE in stored and DELTA_CARD in stored and "model.safetensors" not in stored
    # Every other file is there as the trainer wrote it.
    assert {"config.json", "samtune_model_card.json", "tokenizer.json", "processor_config.json"} <= set(
        stored
    )
    base_weights = EMBEDDED_BASE_DIR / "model.safetensors"
    card = json.loads(jobs_kit.storage.get_bytes(f"models/{model_id}/{DELTA_CARD}"))
    assert card["base"] == {"name": EMBEDDED_BASE}
    assert card["base_weights_sha256"] == file_sha256(base_weights)
    # Only the heads changed: the frozen encoders are the base's and are not stored again.
    delta = load_file(str(_download(jobs_kit, model_id, DELTA_FILE)))
    assert delta and not [n for n in delta if n.startswith(FROZEN)]
    assert card["changed_tensors"] == len(delta) < len(_entries(json.loads(card["weights_header"])))
    # The tiny model's heads are a larger share of it than SAM 3's (bench/model_storage.py: facebook/sam3).
    assert stored[DELTA_FILE] < base_weights.stat().st_size


def _download(kit: JobKit, model_id: str, name: str) -> Path:
    path = kit.root / "downloaded" / model_id / name
    path.parent.mkdir(parents=True, exist_ok=True)
    kit.storage.download(f"models/{model_id}/{name}", path)
    return path


def test_the_download_is_the_trained_model(jobs_kit: JobKit, model_id: str, tmp_path: Path) -> None:
    r = jobs_kit.client.get(f"/api/v1/models/{model_id}/download", headers=jobs_kit.auth)
    assert r.status_code == 200, r.text
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    assert not (tmp_path / DELTA_FILE).exists() and not (tmp_path / DELTA_CARD).exists()
    # Byte for byte the weights file the trainer wrote (its sha256 was recorded before the delta was made).
    model = jobs_kit.client.get(f"/api/v1/models/{model_id}", headers=jobs_kit.auth).json()
    assert file_sha256(tmp_path / "model.safetensors") == model["checkpoint_sha256"]
    # It loads; its encoders are the base's and its heads the delta's.
    state = Sam3Model.from_pretrained(tmp_path).state_dict()
    base = load_file(str(EMBEDDED_BASE_DIR / "model.safetensors"))
    delta = load_file(str(_download(jobs_kit, model_id, DELTA_FILE)))
    frozen = [n for n in base if n.startswith(FROZEN)]
    assert frozen and all(torch.equal(state[n], base[n]) for n in frozen)
    assert all(torch.equal(state[n], delta[n]) for n in delta)


def test_a_model_fine_tuned_from_a_delta_is_a_delta_over_it(jobs_kit: JobKit, model_id: str) -> None:
    """The worker materialises its base through the same assembly; the new model's delta names that model."""
    child = _trained(jobs_kit, base_model=model_id)
    card = json.loads(jobs_kit.storage.get_bytes(f"models/{child}/{DELTA_CARD}"))
    parent = jobs_kit.client.get(f"/api/v1/models/{model_id}", headers=jobs_kit.auth).json()
    assert card["base"]["model_id"] == model_id and card["base_weights_sha256"] == parent["checkpoint_sha256"]
    r = jobs_kit.client.get(f"/api/v1/models/{child}/download", headers=jobs_kit.auth)
    assert r.status_code == 200, r.text


def test_a_full_mode_model_is_stored_whole(jobs_kit: JobKit) -> None:
    stored = _stored(jobs_kit, _trained(jobs_kit, mode="full"))
    assert "model.safetensors" in stored and DELTA_FILE not in stored and DELTA_CARD not in stored


@pytest.fixture(scope="module")
def tampered(jobs_kit: JobKit) -> str:
    """A decoder-mode model of its own, whose delta card the tests below rewrite (never fetched before)."""
    return _trained(jobs_kit)


def _rewrite_card(kit: JobKit, model_id: str, **changes: object) -> None:
    key = f"models/{model_id}/{DELTA_CARD}"
    card = json.loads(kit.storage.get_bytes(key))
    if "name" in changes:
        card["base"]["name"] = changes.pop("name")
    kit.storage.put_bytes(key, json.dumps(card | changes).encode())


def test_a_missing_base_is_503_naming_it(jobs_kit: JobKit, tampered: str, test_image: bytes) -> None:
    _rewrite_card(jobs_kit, tampered, name="samtune/no-such-base")
    r = jobs_kit.client.post(f"/api/v1/models/{tampered}/predict", headers=jobs_kit.auth,
                             files={"image": ("a.jpg", test_image, "image/jpeg")})  # fmt: skip
    assert r.status_code == 503, r.text
    assert "samtune/no-such-base" in r.json()["detail"] and "install" in r.json()["detail"]
    r = jobs_kit.client.get(f"/api/v1/models/{tampered}/download", headers=jobs_kit.auth)
    assert r.status_code == 503 and "samtune/no-such-base" in r.json()["detail"]


def test_a_changed_base_is_409_never_another_model(
    jobs_kit: JobKit, tampered: str, test_image: bytes
) -> None:
    _rewrite_card(jobs_kit, tampered, name=EMBEDDED_BASE, base_weights_sha256="0" * 64)
    r = jobs_kit.client.post(f"/api/v1/models/{tampered}/predict", headers=jobs_kit.auth,
                             files={"image": ("a.jpg", test_image, "image/jpeg")})  # fmt: skip
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert EMBEDDED_BASE in detail and "000000000000" in detail and "fine-tune a new model" in detail
    r = jobs_kit.client.get(f"/api/v1/models/{tampered}/download", headers=jobs_kit.auth)
    assert r.status_code == 409 and EMBEDDED_BASE in r.json()["detail"]
