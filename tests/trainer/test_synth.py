from __future__ import annotations

import json
from pathlib import Path

from pycocotools.coco import COCO

from trainer.synth import HELD_OUT_DOMAINS, PRETRAIN_CONCEPTS, Concept, write_dataset


def test_seeded_coco_export_with_occlusion_aware_masks(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", list(PRETRAIN_CONCEPTS), {"train": 6, "valid": 2}, size=112, seed=4)
    b = write_dataset(tmp_path / "b", list(PRETRAIN_CONCEPTS), {"train": 6, "valid": 2}, size=112, seed=4)
    for split in ("train", "valid"):
        assert (a / split / "_annotations.coco.json").read_bytes() == (
            b / split / "_annotations.coco.json"
        ).read_bytes()
    doc = json.loads((a / "train" / "_annotations.coco.json").read_text())
    assert [c["name"] for c in doc["categories"]] == [
        "red shape",
        "green shape",
        "blue shape",
        "yellow shape",
    ]
    coco = COCO(str(a / "train" / "_annotations.coco.json"))
    for ann in coco.loadAnns(coco.getAnnIds()):
        mask = coco.annToMask(ann)
        assert mask.sum() == ann["area"] >= 16  # the visible part only, after occlusion


def test_held_out_domains_share_no_concept_with_pretraining() -> None:
    seen = {c.name for c in PRETRAIN_CONCEPTS}
    words = {w for c in PRETRAIN_CONCEPTS for w in c.name.split()} - {"shape"}
    for concepts in HELD_OUT_DOMAINS.values():
        assert not {c.name for c in concepts} & seen
        assert not {w for c in concepts for w in c.name.split()} & words
    assert Concept("ring").name == "ring" and Concept("any", "purple").name == "purple shape"
