"""Bytes a decoder-mode model takes in object storage, stored as its changed tensors over its base
(app/models/assembly.py), against its base's bytes; seconds to store it and to assemble it back.

facebook/sam3's architecture (trainer/architecture.py `full_size_sam3_config`, ~840M parameters) with random
weights is saved as the base (`SAMTUNE_SAM3_PATH`, so it is the catalog's `facebook/sam3`); a copy whose
trainable parameters in `decoder` mode (everything but `vision_encoder.backbone.*` and `text_encoder.*`) are
perturbed, with a card saying `resolved_mode: decoder`, stands for a fine-tuned model. Registration's own
`store_model` puts it in a local object store; `ModelCache.fetch` (what predict, download and fine-tuning from
it use) assembles it. All in a temporary folder, deleted afterwards.

    .venv/bin/python bench/model_storage.py            # real size: ~10 GB of RAM, ~17 GB of disk
    .venv/bin/python bench/model_storage.py --tiny     # the tests' tiny model
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would hide the `trainer` package.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))
import torch  # noqa: E402
from transformers import Sam3Model  # noqa: E402

from app.core.storage import LocalStorage, file_sha256  # noqa: E402
from app.models import assembly  # noqa: E402
from app.models.assembly import BaseRef, store_model  # noqa: E402
from app.models.serving import ModelCache  # noqa: E402
from app.settings import Settings  # noqa: E402
from trainer.architecture import full_size_sam3_config, tiny_sam3_config  # noqa: E402
from trainer.base_model import CARD_FILE, META_BASE  # noqa: E402

FROZEN = ("vision_encoder.backbone.", "text_encoder.")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model instead of the real size")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (a temporary folder in it)")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="model-storage-", dir=args.dir) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model = Sam3Model(tiny_sam3_config() if args.tiny else full_size_sam3_config())
        total = sum(p.numel() for p in model.parameters())
        model.save_pretrained(str(root / "base"))
        with torch.no_grad():  # the fine-tune: decoder mode's trainable parameters moved
            trainable = 0
            for name, p in model.named_parameters():
                if not name.startswith(FROZEN):
                    p.add_(torch.randn_like(p) * 1e-3)
                    trainable += p.numel()
        model.save_pretrained(str(root / "tuned"))
        (root / "tuned" / CARD_FILE).write_text(json.dumps({"resolved_mode": "decoder"}))
        del model
        print(f"model: {total / 1e6:.1f}M parameters, {trainable / 1e6:.1f}M trained in decoder mode; "
              f"built and saved twice in {time.perf_counter() - t0:.1f} s")  # fmt: skip

        settings = Settings(data_dir=root / "data", sam3_path=root / "base",
                            storage_url=(root / "objects").as_uri())  # fmt: skip
        storage = LocalStorage(root / "objects")
        base_bytes = (root / "base" / "model.safetensors").stat().st_size
        tuned_bytes = sum(p.stat().st_size for p in (root / "tuned").iterdir())

        t0 = time.perf_counter()
        sha, as_delta = store_model(storage, root / "tuned", "models/m", BaseRef(META_BASE, str(root / "base")),
                                    settings)  # fmt: skip
        stored_s = time.perf_counter() - t0
        assert as_delta, "stored whole"
        stored = {p.name: p.stat().st_size for p in (root / "objects" / "models" / "m").iterdir()}

        cache = ModelCache(storage, root / "data" / "cache" / "models", 1 << 40, torch.device("cpu"),
                           settings=settings)  # fmt: skip
        assembly._hashes.clear()  # the base's hash is remembered on disk, as across worker processes
        t0 = time.perf_counter()
        directory = cache.fetch(uuid.uuid4(), "models/m", sha)
        assembled_s = time.perf_counter() - t0
        assert file_sha256(directory / "model.safetensors") == file_sha256(
            root / "tuned" / "model.safetensors"
        )

        print(f"base model.safetensors: {base_bytes / 1e9:.3f} GB; fine-tuned directory whole: "
              f"{tuned_bytes / 1e9:.3f} GB")  # fmt: skip
        print(f"stored: {sum(stored.values()) / 1e9:.4f} GB = {sum(stored.values()) / base_bytes:.2%} of the base "
              f"({', '.join(f'{k} {v / 1e6:.2f} MB' for k, v in sorted(stored.items()))})")  # fmt: skip
        print(f"seconds to store (hash base and model, compare, write delta, trial assembly): {stored_s:.1f}")
        print(f"seconds to fetch and assemble (base hash cached on disk; includes the final sha256 check): "
              f"{assembled_s:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
