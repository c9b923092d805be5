"""A seeded generator of synthetic instance-segmentation datasets: scenes of coloured shapes over varied
backgrounds, written as a COCO export (`{train,valid,test}/_annotations.coco.json` + images).

    python -m trainer.synth OUT_DIR --shapes circle,square --images 40,10,10 --size 224 --seed 0
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30),
    "purple": (140, 60, 170), "orange": (245, 130, 30), "white": (245, 245, 245), "black": (20, 20, 20),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")


@dataclass(frozen=True)
class Concept:
    shape: str  # a kind from SHAPES, or "any": a random kind, named by colour ("red shape")
    colour: str | None = None  # None: any colour, named by shape only

    @property
    def name(self) -> str:
        if self.shape == "any":
            return f"{self.colour} shape"
        return f"{self.colour} {self.shape}" if self.colour else self.shape


# The pretraining corpus's concepts, and held-out domains whose shape words pretraining never shows.
# Colour words are what a tiny model learns within the CPU budget (telling shape kinds apart at 8x8 patches
# is much slower); held-out domains bring colour words pretraining never shows, or new shape kinds.
PRETRAIN_CONCEPTS = (
    Concept("any", "red"),
    Concept("any", "green"),
    Concept("any", "blue"),
    Concept("any", "yellow"),
)
HELD_OUT_DOMAINS = {
    "new-colours": (Concept("any", "purple"), Concept("any", "orange")),
    "tools": (Concept("ring"), Concept("cross")),
    "gems": (Concept("diamond"), Concept("hexagon")),
}


def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Outline of a shape; rings are drawn as a thick outline but annotated by their outer outline."""

    def ngon(n: int, radius: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(angle + offset + 2 * math.pi * k / n),
                 cy + radius * math.sin(angle + offset + 2 * math.pi * k / n)) for k in range(n)]  # fmt: skip

    if kind in ("circle", "ring"):
        return ngon(32, r)
    if kind == "square":
        return ngon(4, r * 1.2, math.pi / 4)
    if kind == "triangle":
        return ngon(3, r * 1.2, -math.pi / 2)
    if kind == "diamond":
        return ngon(4, r * 1.2)
    if kind == "hexagon":
        return ngon(6, r)
    if kind == "star":
        outer, inner = ngon(5, r * 1.25, -math.pi / 2), ngon(5, r * 0.5, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if kind == "cross":
        a, b = r, r * 0.35
        local = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]
    raise ValueError(f"unknown shape {kind!r}")


def background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(0, 3)
    if kind == 0:  # noise
        arr = rng.integers(60, 200, size=(size // 8 + 1, size // 8 + 1, 3)).astype(np.uint8)
        return Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
    if kind == 1:  # gradient
        a, b = rng.integers(40, 215, size=3), rng.integers(40, 215, size=3)
        t = np.linspace(0, 1, size)[None, :, None]
        ramp = (a * (1 - t) + b * t).repeat(size, axis=0)
        return Image.fromarray(ramp.astype(np.uint8))
    # stripes texture
    arr = np.zeros((size, size, 3), np.uint8) + rng.integers(80, 180, size=3).astype(np.uint8)
    period = int(rng.integers(6, 20))
    arr[:, (np.arange(size) // period) % 2 == 0] = np.clip(arr[0, 0].astype(int) + 30, 0, 255)
    return Image.fromarray(arr)


def scene(
    rng: np.random.Generator, size: int, concepts: list[Concept], max_objects: int
) -> tuple[Image.Image, list[dict]]:
    img = background(rng, size)
    draw = ImageDraw.Draw(img)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        ci = int(rng.integers(0, len(concepts)))
        concept = concepts[ci]
        if concept.colour:
            colour = concept.colour
        else:
            # Colours that concept names use are left out, so an unnamed-colour object never looks like "a red shape".
            named = {c.colour for c in concepts if c.colour}
            colour = str(rng.choice([c for c in COLOURS if c not in named]))
        kind = str(rng.choice(SHAPES)) if concept.shape == "any" else concept.shape
        r = float(rng.uniform(0.06, 0.16) * size)
        cx, cy = rng.uniform(r, size - r, size=2)
        poly = shape_polygon(kind, float(cx), float(cy), r, float(rng.uniform(0, 2 * math.pi)))
        if kind == "ring":
            draw.polygon(poly, outline=COLOURS[colour], width=max(2, int(r * 0.35)))
        else:
            draw.polygon(poly, fill=COLOURS[colour])
        objects.append({"concept": ci, "polygon": poly})
    return img, objects


def write_dataset(out: Path, concepts: list[Concept], counts: dict[str, int], *, size: int = 224,
                  seed: int = 0, max_objects: int = 4) -> Path:  # fmt: skip
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        images: list[dict[str, object]] = []
        annotations: list[dict[str, object]] = []
        for i in range(n):
            img, objects = scene(rng, size, concepts, max_objects)
            name = f"{split}_{i:05d}.jpg"
            img.save(folder / name, quality=92)
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            # Later shapes occlude earlier ones: each object's mask is what stays visible (RLE), from painting order.
            masks = [mask_utils.decode(mask_utils.frPyObjects([[c for p in o["polygon"] for c in p]], size, size))[:, :, 0]
                     for o in objects]  # fmt: skip
            cover = np.zeros((size, size), bool)
            for o, m in reversed(list(zip(objects, masks, strict=True))):
                visible = m.astype(bool) & ~cover
                cover |= m.astype(bool)
                if visible.sum() < 16:
                    continue
                rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": o["concept"] + 1,
                                    "bbox": bbox, "area": float(mask_utils.area(rle)), "iscrowd": 0,
                                    "segmentation": {"size": [size, size], "counts": rle["counts"].decode()}})  # fmt: skip
        categories = [
            {"id": k + 1, "name": c.name, "supercategory": "shapes"} for k, c in enumerate(concepts)
        ]
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (folder / "_annotations.coco.json").write_text(json.dumps(doc))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.synth")
    p.add_argument("out", type=Path)
    p.add_argument("--shapes", default="circle,square,triangle")
    p.add_argument(
        "--colours", default="", help="comma list: one concept per shape x colour; empty = by shape"
    )
    p.add_argument("--images", default="40,10,10", help="train,valid,test")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-objects", type=int, default=4)
    a = p.parse_args(argv)
    shapes = [s for s in a.shapes.split(",") if s]
    colours = [c for c in a.colours.split(",") if c]
    concepts = [Concept(s, c) for s in shapes for c in colours] if colours else [Concept(s) for s in shapes]
    n = [int(x) for x in a.images.split(",")]
    write_dataset(a.out, concepts, dict(zip(("train", "valid", "test"), n, strict=False)), size=a.size,
                  seed=a.seed, max_objects=a.max_objects)  # fmt: skip
    print(f"wrote {a.out}: {', '.join(c.name for c in concepts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
