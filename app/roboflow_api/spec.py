"""Roboflow's version settings (`project.generate_version({"preprocessing": ..., "augmentation": ...})`) as a
samtune VersionSpec. What samtune has an equivalent for is mapped; anything else is refused by name (422)
rather than silently left out, so a version never differs from what its settings asked for."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.core.errors import Unprocessable
from app.versions.schemas import VersionSpec

# Roboflow's resize formats that samtune's two modes reproduce.
RESIZE_FORMATS = {"stretch to": "stretch", "fit (black edges) in": "letterbox"}


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Unprocessable(f"{where} must be an object, got {type(value).__name__}", source=where)
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unprocessable(f"{where} must be a number", source=where)
    return float(value)


def _preprocessing(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"preprocessing.{name}"
        if name == "auto-orient":
            out["auto_orient"] = bool(value)
        elif name == "resize":
            resize = _object(value, where)
            fmt = str(resize.get("format", "Stretch to"))
            mode = RESIZE_FORMATS.get(fmt.strip().lower())
            if mode is None:
                raise Unprocessable(f"{where}.format {fmt!r} is not offered here: 'Stretch to' or "
                                    "'Fit (black edges) in'", source=where)  # fmt: skip
            out["resize"] = {
                "width": resize.get("width", 1008),
                "height": resize.get("height", 1008),
                "mode": mode,
            }
        elif name == "filter-null":
            out["filter_null"] = _number(_object(value, where).get("percent", 0), f"{where}.percent") / 100
        elif name == "remap":
            out["classes"] = _object(value, where)
        else:
            raise Unprocessable(f"{where}: samtune has no {name!r} preprocessing step (it offers auto-orient, "
                                "resize, filter-null and remap)", source=where)  # fmt: skip
    return out


def _augmentation(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in raw.items():
        where = f"augmentation.{name}"
        if name == "image":
            out["outputs_per_image"] = _object(value, where).get("versions", 1)
        elif name == "flip":
            flip = _object(value, where)
            out["flip_horizontal"] = bool(flip.get("horizontal"))
            out["flip_vertical"] = bool(flip.get("vertical"))
        elif name == "ninety":
            out["rotate90"] = any(bool(v) for v in _object(value, where).values())
        elif name == "rotate":
            out["rotation_degrees"] = _number(_object(value, where).get("degrees", 0), f"{where}.degrees")
        elif name == "brightness":
            out["brightness"] = _number(_object(value, where).get("percent", 0), f"{where}.percent") / 100
        elif name == "saturation":
            out["saturation"] = _number(_object(value, where).get("percent", 0), f"{where}.percent") / 100
        elif name == "hue":
            out["hue"] = _number(_object(value, where).get("degrees", 0), f"{where}.degrees") / 360
        elif name == "blur":
            out["blur_sigma"] = _number(_object(value, where).get("pixels", 0), f"{where}.pixels")
        elif name == "noise":
            out["noise"] = _number(_object(value, where).get("percent", 0), f"{where}.percent") / 100
        elif name == "crop":
            # Roboflow crops away between min and max percent; samtune keeps at least min_scale of each side.
            most = _number(_object(value, where).get("max", 0), f"{where}.max")
            out["crop"] = {"min_scale": 1 - most / 100}
        else:
            raise Unprocessable(f"{where}: samtune has no {name!r} augmentation (it offers image, flip, ninety, "
                                "rotate, brightness, saturation, hue, blur, noise and crop)", source=where)  # fmt: skip
    # Roboflow makes 3 outputs per image when augmentations are asked for without a count; samtune augments
    # only when there is more than one output.
    if len(out) > ("outputs_per_image" in out) and "outputs_per_image" not in out:
        out["outputs_per_image"] = 3
    return out


def version_spec(settings: dict[str, Any]) -> VersionSpec:
    """The VersionSpec for Roboflow's `{"preprocessing": {...}, "augmentation": {...}}`; 422 naming the first
    setting samtune cannot honour or whose value is out of range."""
    preprocessing = _preprocessing(_object(settings.get("preprocessing") or {}, "preprocessing"))
    augmentation = _augmentation(_object(settings.get("augmentation") or {}, "augmentation"))
    try:
        return VersionSpec.model_validate({"preprocessing": preprocessing, "augmentation": augmentation})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise Unprocessable(f"{field}: {err['msg']} (from Roboflow's settings)", source=field) from None
