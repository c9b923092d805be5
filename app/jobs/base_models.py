"""Which base models this installation can fine-tune from, and what a job's `base_model` resolves to.

Meta's `facebook/sam3` is used whenever it is here (a configured local directory or the hub cache);
otherwise the bundled tiny model `samtune/sam3-tiny-shapes` is the default, and is named as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from app.core.errors import Unprocessable
from app.settings import Settings
from trainer.base_model import CARD_FILE, EMBEDDED_BASE, EMBEDDED_BASE_DIR, META_BASE, hub_cached


class BaseModelInfo(BaseModel):
    name: str
    description: str
    available: bool
    default: bool = False
    # What the trainer loads: a local directory or a repo id in the hub cache. Not shown to clients.
    location: str | None = None
    unavailable_reason: str | None = None
    # From the model's samtune card: values that suit it better than the recipe's defaults.
    recommended: dict[str, Any] = Field(default_factory=dict)


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
        reason = (
            "not in the Hugging Face cache and SAMTUNE_SAM3_PATH is not set: "
            "accept Meta's licence at huggingface.co/facebook/sam3, then run `hf auth login` and "
            "`hf download facebook/sam3` (docs/base-models.md)"
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
    """Every base model this installation knows, the default first."""
    meta, tiny = _meta(settings), _embedded()
    first, second = (meta, tiny) if meta.available else (tiny, meta)
    first.default = first.available
    return [first, second]


def resolve(settings: Settings, name: str | None) -> BaseModelInfo:
    """The base model a job asks for (None: the default), or 422 saying what exists."""
    models = catalog(settings)
    if name is None:
        chosen = models[0]
        if not chosen.available:
            raise Unprocessable("no base model is available on this installation", source="base_model")
        return chosen
    for info in models:
        if info.name == name:
            if not info.available:
                raise Unprocessable(f"base model {name!r} is not available: {info.unavailable_reason}",
                                    source="base_model")  # fmt: skip
            return info
    known = ", ".join(repr(m.name) for m in models)
    raise Unprocessable(f"unknown base model {name!r}; this installation has {known}", source="base_model")


def classes(info: BaseModelInfo) -> list[str]:
    """The concepts a base model's samtune card lists (the bundled one: its four colours); else none."""
    if info.location is None:
        return []
    card = Path(info.location) / CARD_FILE
    if not card.exists():
        return []
    return list(json.loads(card.read_text()).get("classes") or [])
