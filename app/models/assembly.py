"""A decoder-mode model stored as the tensors it changed plus a reference to its base, and put back together.

A decoder-mode job trains SAM 3's heads only: the vision backbone and the text encoder stay the base's, so of
facebook/sam3's 840M parameters (3.4 GB) about 4% differ. `store_model` therefore keeps, instead of the
model's `model.safetensors`, a `delta.safetensors` of exactly the tensors that differ from its base's (found by
comparing the two files tensor by tensor, so nothing is assumed about which ones were trained) and a small
`samtune_delta.json` naming the base (a catalog name, or the workspace model it was fine-tuned from: id,
prefix and sha256) with the sha256 of the base's weights file. Every other file is stored as it was.

`assemble` is the one place a stored model's files come back to a local directory (the inference cache, the
batch worker, the download and a job fine-tuning from this model all reach it through
`app/models/serving.py` `ModelCache.fetch`): for a delta, the base's tensors overlaid with the delta's,
written as `model.safetensors` with the trainer's own metadata, which makes it the very file the trainer wrote
(the caller checks it against the model's recorded sha256). A base that is gone, or whose weights changed, is
an error naming it and what to do, never a different model. A model stored whole (every model of a full-mode
job, and those registered before deltas) has no `samtune_delta.json` and is fetched as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from safetensors import safe_open
from safetensors.torch import save_file

from app.core.errors import AppError
from app.core.storage import ObjectStorage, file_sha256
from app.settings import Settings
from trainer.base_model import CARD_FILE, hub_cached

logger = logging.getLogger("samtune.models.assembly")

WEIGHTS_FILE = "model.safetensors"
DELTA_FILE = "delta.safetensors"
DELTA_CARD = "samtune_delta.json"
FORMAT = "samtune-delta/1"


class BaseUnavailable(AppError):
    """The model's base is not on this installation (a catalog model not installed, a parent model deleted)."""

    status_code = 503
    kind = "base-model-unavailable"


class BaseChanged(AppError):
    """The model's base is here but its weights are not the ones the model was fine-tuned from."""

    status_code = 409
    kind = "base-model-changed"


@dataclass(frozen=True)
class BaseRef:
    """A job's base as registration records it: the catalog name, or a workspace model's display name with its
    stored files (id, prefix, sha256 of its full weights); `location` is the directory the trainer loaded."""

    name: str
    location: str | None
    model: tuple[uuid.UUID, str, str] | None = None


# --- the base's weights and their hash --------------------------------------------------------------------

_hashes: dict[tuple[str, int, int], str] = {}
_hashes_lock = threading.Lock()


def weights_sha256(path: Path, cache_dir: Path | None = None) -> str:
    """sha256 of a weights file, remembered by (real path, size, mtime): hashing facebook/sam3's 3.4 GB takes
    seconds to tens of seconds, and the worker is a fresh process per job, so the figure is also kept in
    `cache_dir` (one small file per weights file) when one is given."""
    real = path.resolve()
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    with _hashes_lock:
        if key in _hashes:
            return _hashes[key]
    record = None
    if cache_dir is not None:
        record = cache_dir / (hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".json")
        try:
            saved = json.loads(record.read_text())
            if [saved["path"], saved["size"], saved["mtime_ns"]] == list(key):
                with _hashes_lock:
                    _hashes[key] = str(saved["sha256"])
                return str(saved["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = file_sha256(real)
    with _hashes_lock:
        _hashes[key] = digest
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps({"path": key[0], "size": key[1], "mtime_ns": key[2], "sha256": digest}))
        os.replace(tmp, record)
    return digest


def _catalog_weights(settings: Settings, name: str) -> Path:
    """The weights file of catalog base `name` on this installation, or BaseUnavailable saying why not."""
    from app.jobs import base_models  # app.jobs imports app.models: imported when first used

    info = next((m for m in base_models.catalog(settings) if m.name == name), None)
    if info is None or not info.available or info.location is None:
        why = info.unavailable_reason if info is not None else "this installation does not know it"
        raise BaseUnavailable(
            f"this model was fine-tuned in decoder mode and is stored as its changes to its base {name!r}, "
            f"which is not available here ({why}); install that base model to use it"
        )
    directory = Path(info.location)
    if not directory.is_dir():
        directory = hub_cached(info.location) or directory
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise BaseUnavailable(
            f"this model is stored as its changes to its base {name!r}, whose weights file {weights} is "
            "missing; install that base model again to use it"
        )
    return weights


# --- storing --------------------------------------------------------------------------------------------


_CHUNK = 8 << 20


def _header(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A safetensors file's JSON header, as stored and parsed. Tensors are then read as byte ranges with plain
    file reads: neither loaded whole nor memory-mapped (a mapped 3.4 GB file counts in a worker's RSS)."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        raw = f.read(size)
    return raw, json.loads(raw)


def _entries(header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: entry for name, entry in header.items() if name != "__metadata__"}


def _same_bytes(a: BinaryIO, a_at: int, b: BinaryIO, b_at: int, size: int) -> bool:
    a.seek(a_at)
    b.seek(b_at)
    while size > 0:
        n = min(_CHUNK, size)
        if a.read(n) != b.read(n):
            return False
        size -= n
    return True


def _copy(src: BinaryIO, at: int, size: int, dst: BinaryIO) -> None:
    src.seek(at)
    while size > 0:
        chunk = src.read(min(_CHUNK, size))
        if not chunk:
            raise BaseChanged("a weights file ended before its header said it would")
        dst.write(chunk)
        size -= len(chunk)


def _changed_tensors(model_file: Path, base_file: Path) -> tuple[list[str], bytes]:
    """(the tensors of `model_file` that `base_file` lacks or holds otherwise, bit for bit: dtype, shape and
    bytes; `model_file`'s header as stored), comparing the two files a chunk at a time."""
    raw, header = _header(model_file)
    base_raw, base_header = _header(base_file)
    tuned, base = _entries(header), _entries(base_header)
    changed = []
    with open(model_file, "rb") as t, open(base_file, "rb") as b:
        for name, entry in tuned.items():
            other = base.get(name)
            begin, end = entry["data_offsets"]
            if (
                other is None
                or (other["dtype"], other["shape"]) != (entry["dtype"], entry["shape"])
                or not _same_bytes(
                    t, 8 + len(raw) + begin, b, 8 + len(base_raw) + other["data_offsets"][0], end - begin
                )  # fmt: skip
            ):
                changed.append(name)
    return changed, raw


def store_model(
    storage: ObjectStorage, model_dir: Path, prefix: str, base: BaseRef, settings: Settings
) -> tuple[str, bool]:
    """Upload a finished model directory under `prefix`; (sha256 of its full `model.safetensors`, whether it
    was stored as a delta). A decoder-mode model whose base's weights are at hand is stored as a delta, once a
    trial assembly has given back its exact weights file; anything else is stored whole."""
    model_dir = Path(model_dir)
    weights = model_dir / WEIGHTS_FILE
    sha = file_sha256(weights)
    card = json.loads((model_dir / CARD_FILE).read_text()) if (model_dir / CARD_FILE).exists() else {}
    delta = None
    if card.get("resolved_mode") == "decoder":
        try:
            delta = _write_delta(model_dir, base, settings, sha)
        except AppError as exc:  # its base is not at hand: stored whole, as before
            logger.warning("model under %s stored whole: %s", prefix, exc.detail)
    for path in sorted(model_dir.rglob("*")):
        if not path.is_file() or path.name.endswith(".tmp") or (delta is not None and path == weights):
            continue
        storage.put_file(f"{prefix}/{path.relative_to(model_dir).as_posix()}", path)
    if delta is not None:
        for path in delta:
            storage.put_file(f"{prefix}/{path.name}", path)
        shutil.rmtree(delta[0].parent, ignore_errors=True)
    return sha, delta is not None


def _write_delta(model_dir: Path, base: BaseRef, settings: Settings, sha: str) -> list[Path] | None:
    """The delta and its card, written beside `model_dir` (not in it); None when the trial assembly does not
    give back the trainer's file byte for byte (then the model is stored whole)."""
    if base.model is not None:
        if base.location is None:
            raise BaseUnavailable(f"base {base.name!r} has no local directory")
        base_file = Path(base.location) / WEIGHTS_FILE
        model_id, model_prefix, base_sha = base.model
        reference: dict[str, Any] = {"name": base.name, "model_id": str(model_id), "prefix": model_prefix,
                                     "sha256": base_sha}  # fmt: skip
    else:
        base_file = _catalog_weights(settings, base.name)
        base_sha = weights_sha256(base_file, _hash_dir(settings))
        reference = {"name": base.name}
    work = Path(tempfile.mkdtemp(prefix=".delta-", dir=model_dir.parent))
    try:
        return _write_delta_into(work, model_dir, base_file, reference, base_sha, sha)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _write_delta_into(
    work: Path, model_dir: Path, base_file: Path, reference: dict[str, Any], base_sha: str, sha: str
) -> list[Path] | None:
    changed, raw = _changed_tensors(model_dir / WEIGHTS_FILE, base_file)
    delta_path, card_path = work / DELTA_FILE, work / DELTA_CARD
    with safe_open(str(model_dir / WEIGHTS_FILE), "pt") as tuned:
        save_file(
            {name: tuned.get_tensor(name) for name in changed}, str(delta_path), metadata={"format": "pt"}
        )
    card = {
        "format": FORMAT,
        "base": reference,
        "base_weights_sha256": base_sha,
        "model_sha256": sha,
        # The trainer's header as it wrote it: assembly writes it back and each tensor's bytes in its order,
        # which gives back the trainer's file byte for byte without holding it in memory.
        "weights_header": raw.decode("utf-8"),
        "changed_tensors": len(changed),
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    trial = work / "trial"
    trial.mkdir()
    _overlay(base_file, delta_path, card, trial / WEIGHTS_FILE)
    same = file_sha256(trial / WEIGHTS_FILE) == sha
    (trial / WEIGHTS_FILE).unlink()
    if not same:
        logger.warning("the delta of %s does not assemble to its weights file; stored whole", model_dir)
        shutil.rmtree(work, ignore_errors=True)
        return None
    return [delta_path, card_path]


def _hash_dir(settings: Settings) -> Path:
    """Where base weights' hashes are remembered: beside the model cache, which uses the same (ModelCache)."""
    return settings.data_dir / "cache" / "models" / ".sha256"


# --- assembling -----------------------------------------------------------------------------------------


def _overlay(base_file: Path, delta_file: Path, card: dict[str, Any], out: Path) -> None:
    """`out`: the trainer's header, then each tensor's bytes in its order, the delta's where it has the tensor,
    else the base's (same dtype and shape, or the base is not the one it was fine-tuned from). Streamed: a
    chunk in memory at a time."""
    raw = card["weights_header"].encode("utf-8")
    entries = sorted(_entries(json.loads(raw)).items(), key=lambda item: item[1]["data_offsets"][0])
    base_raw, base_header = _header(base_file)
    delta_raw, delta_header = _header(delta_file)
    in_delta, in_base = _entries(delta_header), _entries(base_header)
    with open(out, "wb") as dst, open(delta_file, "rb") as delta, open(base_file, "rb") as base:
        dst.write(len(raw).to_bytes(8, "little"))
        dst.write(raw)
        for name, entry in entries:
            if name in in_delta:
                src, data_start, spec = delta, 8 + len(delta_raw), in_delta[name]
            elif name in in_base:
                src, data_start, spec = base, 8 + len(base_raw), in_base[name]
            else:
                raise BaseChanged(f"the base's weights lack tensor {name!r}")
            if (spec["dtype"], spec["shape"]) != (entry["dtype"], entry["shape"]):
                raise BaseChanged(f"the base's tensor {name!r} is {spec['dtype']} {spec['shape']}, not "
                                  f"{entry['dtype']} {entry['shape']}")  # fmt: skip
            begin, end = spec["data_offsets"]
            _copy(src, data_start + begin, end - begin, dst)


ParentFetch = Callable[[uuid.UUID, str, str], Path]


def assemble(
    storage: ObjectStorage, prefix: str, into: Path, settings: Settings, fetch_parent: ParentFetch,
    hash_dir: Path | None = None,
) -> None:  # fmt: skip
    """The stored model under `prefix` as a full model directory in `into` (which the caller renames into
    place): its files downloaded and, for a delta, `model.safetensors` assembled from its base's weights
    (a catalog base found through `settings`; a workspace model through `fetch_parent(id, prefix, sha256)`,
    itself assembled the same way) after checking they are the ones it was fine-tuned from (a catalog base's
    hash remembered in `hash_dir`). The caller checks the result against the model's sha256."""
    prefix = prefix.rstrip("/") + "/"
    for key in storage.list(prefix):
        dest = into / key[len(prefix) :].lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        storage.download(key, dest)
    if not (into / DELTA_CARD).exists():
        return  # stored whole
    card = json.loads((into / DELTA_CARD).read_text())
    if card.get("format") != FORMAT:
        raise BaseChanged(f"{DELTA_CARD} has format {card.get('format')!r}; this version reads {FORMAT!r}")
    reference = card["base"]
    name = reference["name"]
    if "model_id" in reference:
        try:
            base_dir = fetch_parent(
                uuid.UUID(reference["model_id"]), reference["prefix"], reference["sha256"]
            )
        except AppError as exc:
            raise BaseUnavailable(
                f"this model is stored as its changes to its base {name}, which cannot be fetched "
                f"({exc.detail}); a model cannot be used once the model it was fine-tuned from is deleted"
            ) from None
        base_file = base_dir / WEIGHTS_FILE
        if not base_file.exists():
            raise BaseUnavailable(
                f"this model is stored as its changes to its base {name}, whose files are gone; "
                "a model cannot be used once the model it was fine-tuned from is deleted"
            )
        found = reference["sha256"]  # fetch_parent checked the parent's file against this
    else:
        base_file = _catalog_weights(settings, name)
        found = weights_sha256(base_file, hash_dir)
    if found != card["base_weights_sha256"]:
        raise BaseChanged(
            f"this model was fine-tuned in decoder mode from {name!r} whose weights had sha256 "
            f"{card['base_weights_sha256'][:12]}..., and is stored as its changes to them; the {name!r} "
            f"installed here has sha256 {found[:12]}... ({base_file}). Install the base it was trained from "
            "again (the same revision), or fine-tune a new model from the installed one"
        )
    _overlay(base_file, into / DELTA_FILE, card, into / WEIGHTS_FILE)
    (into / DELTA_FILE).unlink()
    (into / DELTA_CARD).unlink()
