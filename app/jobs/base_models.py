"""Which base models this installation can fine-tune from, and what a job's `base_model` resolves to.

Meta's `facebook/sam3` is used whenever it is here (a configured local directory or the hub cache);
otherwise the bundled tiny model `samtune/sam3-tiny-shapes` is the default, and is named as such. With a
Hugging Face token configured (and HF_HUB_OFFLINE unset) `facebook/sam3` is also offered before it is here:
the first job that names it downloads it.

A job may also continue from a model of its own workspace (Roboflow's "train from a checkpoint"), named by its
id or by its version's `slug/N` (`for_job`). Its files live in object storage; the worker fetches them
(app/jobs/runner.py) and hands the trainer that directory.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.errors import NotFound, Unprocessable
from app.settings import Settings
from trainer.base_model import CARD_FILE, EMBEDDED_BASE, EMBEDDED_BASE_DIR, META_BASE, hub_cached
from trainer.hub_download import offline, token_configured


class BaseModelInfo(BaseModel):
    name: str
    description: str
    available: bool
    default: bool = False
    # What the trainer loads: a local directory or a repo id in the hub cache. Not shown to clients.
    location: str | None = None
    # Not here yet: the first job that uses it downloads it from the Hugging Face Hub (a token is configured).
    download: bool = False
    unavailable_reason: str | None = None
    # From the model's samtune card: values that suit it better than the recipe's defaults.
    recommended: dict[str, Any] = Field(default_factory=dict)
    # A workspace model as a base: its id and the classes it was trained on (a catalog base: None and []).
    model_id: uuid.UUID | None = None
    classes: list[str] = Field(default_factory=list)
    # Its own name, then its base's, and so on down to a catalog base model.
    lineage: list[str] = Field(default_factory=list)


def _meta(settings: Settings) -> BaseModelInfo:
    if settings.sam3_path is not None:
        if (settings.sam3_path / "config.json").exists():
            return BaseModelInfo(
                name=META_BASE,
                description=f"Meta's SAM 3 (840M parameters), from {settings.sam3_path}",
                available=True,
                location=str(settings.sam3_path),
            )
        reason = f"SAMTUNE_SAM3_PATH={settings.sam3_path} has no config.json"
    else:
        snapshot = hub_cached(META_BASE)
        if snapshot is not None:
            return BaseModelInfo(
                name=META_BASE,
                description="Meta's SAM 3 (840M parameters), from the Hugging Face cache",
                available=True,
                location=META_BASE,
            )
        if not offline() and token_configured():
            return BaseModelInfo(
                name=META_BASE,
                description="Meta's SAM 3 (840M parameters), downloaded from the Hugging Face Hub by the first "
                "job that uses it (about 3.4 GB; its licence must be accepted for this installation's token)",
                available=True,
                location=META_BASE,
                download=True,
            )
        reason = (
            "not in the Hugging Face cache and SAMTUNE_SAM3_PATH is not set: "
            "accept Meta's licence at huggingface.co/facebook/sam3, then configure a token (HF_TOKEN, or "
            "`hf auth login`) for jobs to download it on first use, or `hf download facebook/sam3` "
            + ("(HF_HUB_OFFLINE is set: downloads are off) " if offline() else "")
            + "(docs/base-models.md)"
        )
    return BaseModelInfo(
        name=META_BASE,
        description="Meta's SAM 3 (840M parameters)",
        available=False,
        unavailable_reason=reason,
    )


def _embedded() -> BaseModelInfo:
    present = (EMBEDDED_BASE_DIR / "model.safetensors").exists()
    card_path = EMBEDDED_BASE_DIR / CARD_FILE
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    return BaseModelInfo(
        name=EMBEDDED_BASE,
        description="samtune's tiny SAM 3 (4M parameters, 112 px) pretrained on synthetic coloured shapes; "
        "bundled so that fine-tuning works without Meta's weights. Not Meta's SAM 3.",
        available=present,
        location=str(EMBEDDED_BASE_DIR) if present else None,
        unavailable_reason=None if present else f"{EMBEDDED_BASE_DIR} is missing from this installation",
        recommended=card.get("recommended_hyperparameters") or {},
    )


def catalog(settings: Settings) -> list[BaseModelInfo]:
    """Every base model this installation knows, the default first. Meta's SAM 3 is the default once it is
    here; while it would still be downloaded it is listed but not chosen unasked, so a token in the
    environment never turns a laptop's first job into a 3.4 GB download and an 840M-parameter run."""
    meta, tiny = _meta(settings), _embedded()
    first, second = (
        (meta, tiny) if meta.available and not (meta.download and tiny.available) else (tiny, meta)
    )
    first.default = first.available
    return [first, second]


def resolve(settings: Settings, name: str | None) -> BaseModelInfo:
    """The base model a job asks for (None: the default), or 422 saying what exists."""
    models = catalog(settings)
    if name is None:
        chosen = models[0]
        if not chosen.available:
            raise Unprocessable("no base model is available on this installation", source="base_model")
        return chosen.model_copy(update={"lineage": [chosen.name]})
    for info in models:
        if info.name == name:
            if not info.available:
                raise Unprocessable(f"base model {name!r} is not available: {info.unavailable_reason}",
                                    source="base_model")  # fmt: skip
            return info.model_copy(update={"lineage": [info.name]})
    known = ", ".join(repr(m.name) for m in models)
    raise Unprocessable(f"unknown base model {name!r}; this installation has {known}", source="base_model")


# How a job names a workspace model as its base: this module's own display name (`model_name`), a model id,
# or Roboflow's `slug/N` (N a number; "samtune/sam3-tiny-shapes" is not one, and is looked up first anyway).
_DISPLAY_NAME = re.compile(r"^.+ \(model (?P<id>[0-9a-fA-F-]{36})\)$")
_SLUG_N = re.compile(r"^[^/\s]+/\d+$")


def model_name(version_name: str, model_id: uuid.UUID) -> str:
    """A workspace model as a base model's name: its version's name, and its id (which stays exact after the
    version's `slug/N` moves on to a newer model)."""
    return f"{version_name} (model {model_id})"


def _model_reference(name: str) -> str | None:
    """The model id or `slug/N` that `name` names, or None when it names no workspace model."""
    if m := _DISPLAY_NAME.match(name):
        return m["id"]
    try:
        return str(uuid.UUID(name))
    except ValueError:
        pass
    return name if _SLUG_N.match(name) else None


def for_job(session: Session, settings: Settings, workspace_id: uuid.UUID, name: str | None) -> BaseModelInfo:
    """What a job's `base_model` names: a catalog base model (`resolve`) or a ready model of this workspace,
    by id or `slug/N` (the model that name serves). A model of another workspace, or none, is 404; one that
    is not ready is 422."""
    from app.models import service as models  # app.models imports this package: imported when first used

    if name is None or any(m.name == name for m in catalog(settings)):
        return resolve(settings, name)
    reference = _model_reference(name)
    if reference is None:
        try:
            return resolve(settings, name)
        except Unprocessable as exc:  # 422, listing what exists
            raise Unprocessable(
                f"{exc.detail}, or name a model of this workspace by its id or its version's 'slug/N'",
                source="base_model",
            ) from None
    try:
        model, job, version, _ = models.by_reference(session, workspace_id, reference)
    except NotFound as exc:
        raise NotFound(f"base model {name!r}: {exc.detail}", source="base_model") from None
    if model.status != "ready":
        raise Unprocessable(
            f"base model {name!r} (model {model.id}) is {model.status}, not ready: it cannot be trained from",
            source="base_model",
        )
    parent = list(job.base_lineage or [job.base_model])
    # A fine-tuned model keeps its architecture's recommended values (its card carries them forward).
    root = next((m for m in catalog(settings) if m.name == parent[-1]), None)
    display = model_name(model.version_name, model.id)
    return BaseModelInfo(
        name=display,
        description=f"model {model.id} of {model.version_name}: a model of this workspace, fine-tuned from "
        f"{' <- '.join(parent)}",
        available=True,
        recommended=root.recommended if root else {},
        model_id=model.id,
        classes=list(version.classes or []),
        lineage=[display, *parent],
    )


def classes(info: BaseModelInfo) -> list[str]:
    """The concepts a base model's samtune card lists (the bundled one: its four colours); else none."""
    if info.location is None:
        return []
    card = Path(info.location) / CARD_FILE
    if not card.exists():
        return []
    return list(json.loads(card.read_text()).get("classes") or [])
