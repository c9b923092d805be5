"""Training data from a version snapshot (or any Roboflow / ODinW COCO export directory).

Each image becomes one query per class: present classes are positive queries with their instances as
targets, absent classes are negative queries (the model must say "none"), up to `max_negatives` of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils

from trainer.types import QueryTargets

SPLITS = ("train", "valid", "test")
ANNOTATIONS = "_annotations.coco.json"
# Written into a samtune version snapshot on the machine that trains on it: {"content_hash": ...}, the
# version's identity, so a model card names exactly the version it learned from.
SNAPSHOT_IDENTITY = "samtune_version.json"


@dataclass
class Instance:
    class_index: int
    bbox: tuple[float, float, float, float]  # xywh pixels of the stored image
    segmentation: list | dict | None


@dataclass
class Sample:
    image_id: int
    path: Path
    width: int
    height: int
    instances: list[Instance]
    _mask_cache: dict[tuple[int, int], dict[int, torch.Tensor]] = field(default_factory=dict, repr=False)

    def classes_present(self) -> set[int]:
        return {i.class_index for i in self.instances}


@dataclass
class SplitData:
    split: str
    classes: list[str]
    samples: list[Sample]
    coco: dict  # the annotations file as loaded, with category ids as in the file

    def category_id(self, class_index: int) -> int:
        return self._category_ids[class_index]

    def __post_init__(self) -> None:
        cats = sorted(self.coco["categories"], key=lambda c: c["id"])
        self._category_ids = [c["id"] for c in cats if c["name"] in self.classes]


def snapshot_content_hash(root: Path) -> str | None:
    """The samtune version's content hash when `root` is a version snapshot, else None (any other export)."""
    path = root / SNAPSHOT_IDENTITY
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get("content_hash")
    return value if isinstance(value, str) else None


def find_split_file(root: Path, split: str) -> Path | None:
    aliases = {"valid": ("valid", "val", "validation"), "train": ("train",), "test": ("test",)}[split]
    for name in aliases:
        candidate = root / name / ANNOTATIONS
        if candidate.is_file():
            return candidate
    return None


def dataset_classes(root: Path) -> list[str]:
    """Class names across the splits, by category id, without an unused parent placeholder (Roboflow's)."""
    names: dict[int, str] = {}
    used: set[int] = set()
    parents: set[str] = set()
    for split in SPLITS:
        path = find_split_file(root, split)
        if path is None:
            continue
        doc = json.loads(path.read_text())
        for c in doc["categories"]:
            names.setdefault(c["id"], c["name"])
            if c.get("supercategory") and c["supercategory"] != c["name"]:
                parents.add(c["supercategory"])
        used.update(a["category_id"] for a in doc["annotations"])
    return [n for cid, n in sorted(names.items()) if cid in used or n not in parents]


def load_split(root: Path, split: str, classes: list[str]) -> SplitData | None:
    path = find_split_file(root, split)
    if path is None:
        return None
    doc = json.loads(path.read_text())
    name_of = {c["id"]: c["name"] for c in doc["categories"]}
    index_of = {name: i for i, name in enumerate(classes)}
    by_image: dict[int, list[Instance]] = {im["id"]: [] for im in doc["images"]}
    for ann in doc["annotations"]:
        name = name_of.get(ann["category_id"])
        if name not in index_of or ann.get("iscrowd", 0):
            continue
        by_image[ann["image_id"]].append(
            Instance(index_of[name], tuple(ann["bbox"]), ann.get("segmentation") or None)
        )
    samples = [
        Sample(
            im["id"], path.parent / im["file_name"], int(im["width"]), int(im["height"]), by_image[im["id"]]
        )
        for im in sorted(doc["images"], key=lambda im: im["id"])
    ]
    return SplitData(split, classes, samples, doc)


# --- pixels and targets ---------------------------------------------------------------------------


def load_pixels(
    path: Path, size: int, side: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """The image squashed to side x side, at the top-left of a size x size canvas (zeros after normalising):
    SAM 3's stretch resize, with Meta's scale jitter when side < size."""
    with Image.open(path) as img:
        return pixels_from_image(img, size, side, mean, std)


def pixels_from_image(
    img: Image.Image, size: int, side: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """`load_pixels` for an image already open (the predict path gets bytes, not a file)."""
    return normalised(resized_rgb(img, side), size, mean, std)


def resized_rgb(img: Image.Image, side: int) -> torch.Tensor:
    """The first half of `pixels_from_image`: the image squashed to side x side, uint8 [3, side, side]. The
    predict path does this on the request's own thread, and the rest (`normalised`) on the model's device,
    where the 4x larger float tensor is cheap to make."""
    rgb = img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


def normalised(
    rgb: torch.Tensor, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> torch.Tensor:
    """The second half of `pixels_from_image`: uint8 [..., 3, side, side] to normalised float32 on the size x
    size canvas, on the tensor's own device (the same operations in the same order wherever it runs)."""
    pixels = rgb.float().div_(255.0)
    pixels = (pixels - torch.tensor(mean, device=rgb.device).view(3, 1, 1)) / torch.tensor(
        std, device=rgb.device
    ).view(3, 1, 1)
    side = rgb.shape[-1]
    if side == size:
        return pixels
    canvas = pixels.new_zeros((*pixels.shape[:-2], size, size))
    canvas[..., :side, :side] = pixels
    return canvas


def _instance_mask(inst: Instance, width: int, height: int, out: int) -> torch.Tensor:
    """The instance's mask squashed to out x out (soft edges by area resampling, then thresholded)."""
    seg = inst.segmentation
    if isinstance(seg, list) and seg:
        scaled = [(np.asarray(p, dtype=np.float64).reshape(-1, 2) * (out / width, out / height)).ravel().tolist()
                  for p in seg if len(p) >= 6]  # fmt: skip
        if scaled:
            rle = mask_utils.merge(mask_utils.frPyObjects(scaled, out, out))
            return torch.from_numpy(mask_utils.decode(rle).astype(np.float32))
    if isinstance(seg, dict):
        rle = dict(seg)
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        elif isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode()
        full = torch.from_numpy(mask_utils.decode(rle).astype(np.float32))[None, None]
        return (F.interpolate(full, size=(out, out), mode="area")[0, 0] >= 0.5).float()
    # Box only: the box is the mask.
    x, y, w, h = inst.bbox
    m = torch.zeros(out, out)
    x0, y0 = int(math.floor(x * out / width)), int(math.floor(y * out / height))
    x1, y1 = int(math.ceil((x + w) * out / width)), int(math.ceil((y + h) * out / height))
    m[y0:y1, x0:x1] = 1.0
    return m


def query_targets(sample: Sample, class_index: int, size: int, side: int, mask_size: int) -> QueryTargets:
    """Targets of one (image, class) query in the padded frame: boxes normalised cxcywh, masks at mask_size."""
    insts = [(k, i) for k, i in enumerate(sample.instances) if i.class_index == class_index]
    if not insts:
        return QueryTargets(boxes=torch.zeros(0, 4), masks=torch.zeros(0, mask_size, mask_size))
    frac = side / size
    boxes = torch.tensor([i.bbox for _, i in insts], dtype=torch.float32)
    scale = torch.tensor([frac / sample.width, frac / sample.height] * 2)
    xywh = boxes * scale
    cxcywh = torch.stack(
        [xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2, xywh[:, 2], xywh[:, 3]], 1
    )
    inner = max(1, round(mask_size * frac))
    # Masks depend only on (image, inner size): cache them, jitter only changes the inner size.
    cache = sample._mask_cache.setdefault((inner, mask_size), {})
    masks = torch.zeros(len(insts), mask_size, mask_size)
    for row, (key, inst) in enumerate(insts):
        if key not in cache:
            cache[key] = _instance_mask(inst, sample.width, sample.height, inner)
        masks[row, :inner, :inner] = cache[key]
    return QueryTargets(boxes=cxcywh.clamp(0, 1), masks=masks)


@dataclass
class Batch:
    image_ids: list[int]
    pixel_values: torch.Tensor | None  # [I, 3, S, S] (None in decoder mode)
    image_index: torch.Tensor  # [B] which image each query reads
    class_index: torch.Tensor  # [B] which prompt each query asks
    targets: list[QueryTargets]
    sample_index: list[int]  # index into the split's samples, per image
    # Box exemplar prompts (Sam3Model's input_boxes): [B, 1, 4] cxcywh and labels [B, 1], -10 = no exemplar.
    input_boxes: torch.Tensor | None = None
    input_boxes_labels: torch.Tensor | None = None

    def row_chunks(self, max_rows: int) -> list[Batch]:
        """This batch as consecutive pieces of at most `max_rows` query rows, each reading the same images.

        A row (one image asked about one prompt) carries the whole image through the heads: at 1008 px its
        activations are gigabytes, so a step over many rows runs them a few at a time and sums the gradients."""
        rows = len(self.targets)
        if rows <= max_rows:
            return [self]
        pieces = []
        for start in range(0, rows, max_rows):
            part = slice(start, start + max_rows)
            pieces.append(
                Batch(
                    image_ids=self.image_ids,
                    pixel_values=self.pixel_values,
                    image_index=self.image_index[part],
                    class_index=self.class_index[part],
                    targets=self.targets[part],
                    sample_index=self.sample_index,
                    input_boxes=None if self.input_boxes is None else self.input_boxes[part],
                    input_boxes_labels=None
                    if self.input_boxes_labels is None
                    else self.input_boxes_labels[part],
                )
            )
        return pieces


def choose_queries(
    sample: Sample, num_classes: int, max_negatives: int, rng: np.random.Generator
) -> list[int]:
    present = sorted(sample.classes_present())
    absent = [c for c in range(num_classes) if c not in present]
    if len(absent) > max_negatives:
        absent = sorted(rng.choice(absent, size=max_negatives, replace=False).tolist())
    return present + absent


def make_batch(
    split: SplitData,
    indices: list[int],
    *,
    size: int,
    mask_size: int,
    max_negatives: int,
    rng: np.random.Generator,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    with_pixels: bool,
    jitter: bool,
    box_exemplar_prob: float = 0.0,
) -> Batch:
    pixels, image_index, class_index, targets = [], [], [], []
    for slot, idx in enumerate(indices):
        sample = split.samples[idx]
        # Meta's scale jitter: a random square of 480..992 (of 1008) at the top-left, padded.
        side = int(round(size * rng.uniform(480 / 1008, 992 / 1008))) if jitter else size
        if with_pixels:
            pixels.append(load_pixels(sample.path, size, side, mean, std))
        for c in choose_queries(sample, len(split.classes), max_negatives, rng):
            image_index.append(slot)
            class_index.append(c)
            targets.append(query_targets(sample, c, size, side, mask_size))
    boxes = labels = None
    if box_exemplar_prob > 0:
        # SAM 3 takes "find things like this box" as well as text: show one target box as an exemplar sometimes.
        boxes = torch.zeros(len(targets), 1, 4)
        labels = torch.full((len(targets), 1), -10, dtype=torch.long)
        for q, t in enumerate(targets):
            if t.num and rng.uniform() < box_exemplar_prob:
                boxes[q, 0] = t.boxes[int(rng.integers(0, t.num))]
                labels[q, 0] = 1
    return Batch(
        image_ids=[split.samples[i].image_id for i in indices],
        pixel_values=torch.stack(pixels) if with_pixels else None,
        image_index=torch.tensor(image_index, dtype=torch.long),
        class_index=torch.tensor(class_index, dtype=torch.long),
        targets=targets,
        sample_index=list(indices),
        input_boxes=boxes,
        input_boxes_labels=labels,
    )
