"""Offline augmentation: random copies of a resized training image, its annotations moved with it.

Every random choice comes from the seed passed in (a local numpy Generator, and a local
torch.Generator for the noise), never from a global RNG, so copies are reproducible and the builder
may run them in any order on any thread.

Geometry goes through torchvision.transforms.v2's functional API, with parameters drawn here, applied
to the image, to the masks (a `tv_tensors.Mask`) and to the boxes of box-only instances (a
`tv_tensors.BoundingBoxes`) alike. Masks only ever see nearest-neighbour sampling, which copies values
without mixing them, so up to eight binary masks travel packed as the bits of one uint8 channel:
exact, and eight times less work than one channel per instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from app.images.geometry import (
    clean_polygon,
    polygon_to_rle,
    rle_from_pycocotools,
    rle_to_compressed,
    rle_to_mask,
)
from app.versions.schemas import Augmentation
from app.versions.transforms import Instance

_MIN_BLUR_SIGMA = 0.2  # below this a gaussian blur barely changes uint8 pixels

# Slots in the vector of uniform draws; each op owns its slots, so turning one op on or off leaves
# the values every other op draws for a given seed unchanged.
_HFLIP, _VFLIP, _ROT90, _CROP_SCALE, _CROP_TOP, _CROP_LEFT, _ANGLE = range(7)
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE, _BLUR = range(7, 12)
_DRAWS = 12


def _entropy(value: int) -> int:
    """Fold any int onto the non-negative ints numpy's seeding accepts, one-to-one (zigzag)."""
    return 2 * value if value >= 0 else -2 * value - 1


def preview_seeds(seed: int, image_index: int, n: int) -> list[int]:
    """Seeds for the `n` augmented copies of image `image_index`, from the spec's seed alone: the same
    whatever order images are processed in, and copy j's seed does not depend on `n`."""
    entropy = [_entropy(seed), _entropy(image_index)]
    return [
        int(np.random.SeedSequence(entropy, spawn_key=(j,)).generate_state(1, dtype=np.uint64)[0])
        for j in range(n)
    ]


def augment(
    img: Image.Image, instances: Sequence[Instance], spec: Augmentation, seed: int
) -> tuple[Image.Image, list[Instance]]:
    """One random augmented copy of `img` (already resized) and its instances, same size as `img`.

    Polygon and RLE instances come back as compressed RLE, box-only ones as boxes; instances left
    with no pixels (or a box with no area) are dropped."""
    rng = np.random.default_rng(_entropy(seed))
    u = rng.random(_DRAWS)
    noise_seed = int(rng.integers(0, 2**63 - 1))

    rgb = img if img.mode == "RGB" else img.convert("RGB")
    width, height = rgb.size
    image = tv_tensors.Image(torch.from_numpy(np.array(rgb)).permute(2, 0, 1))

    mask_ids = [i for i, inst in enumerate(instances) if inst.segmentation is not None]
    box_ids = [i for i, inst in enumerate(instances) if inst.segmentation is None]
    masks = tv_tensors.Mask(torch.from_numpy(_pack_masks([instances[i] for i in mask_ids], width, height)))
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([_xyxy(instances[i].bbox) for i in box_ids], dtype=torch.float32).reshape(-1, 4),
        format=tv_tensors.BoundingBoxFormat.XYXY,
        canvas_size=(height, width),
        clamping_mode="hard",
    )

    # ---- geometry: the same op, with the same parameters, on pixels, masks and boxes
    if spec.flip_horizontal and u[_HFLIP] < 0.5:
        image, masks, boxes = (F.horizontal_flip(x) for x in (image, masks, boxes))
    if spec.flip_vertical and u[_VFLIP] < 0.5:
        image, masks, boxes = (F.vertical_flip(x) for x in (image, masks, boxes))
    if spec.rotate90:
        quarter_turns = min(3, int(u[_ROT90] * 4))
        if quarter_turns:
            angle = 90.0 * quarter_turns
            image, masks, boxes = (F.rotate(x, angle, expand=True) for x in (image, masks, boxes))
            if image.shape[-2:] != (height, width):
                # A quarter turn of a non-square image swaps its sides; it is resized back to the
                # input size (so the aspect ratio changes). Square images, 1008x1008 by default,
                # turn exactly.
                image, masks, boxes = _resize_all(image, masks, boxes, height, width)
    if spec.crop is not None:
        scale = spec.crop.min_scale + u[_CROP_SCALE] * (1.0 - spec.crop.min_scale)
        # One share for both sides, so the crop keeps the aspect ratio when resized back.
        crop_h = min(height, max(1, round(scale * height)))
        crop_w = min(width, max(1, round(scale * width)))
        top = min(height - crop_h, int(u[_CROP_TOP] * (height - crop_h + 1)))
        left = min(width - crop_w, int(u[_CROP_LEFT] * (width - crop_w + 1)))
        if (crop_h, crop_w) != (height, width):
            image, masks, boxes = (F.crop(x, top, left, crop_h, crop_w) for x in (image, masks, boxes))
            image, masks, boxes = _resize_all(image, masks, boxes, height, width)
    if spec.rotation_degrees > 0:
        angle = (2.0 * u[_ANGLE] - 1.0) * spec.rotation_degrees
        image = F.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=0)
        masks = F.rotate(masks, angle, fill=0)  # nearest, always, for masks
        boxes = F.rotate(boxes, angle)

    # ---- photometric: pixels only
    if spec.brightness > 0:
        image = F.adjust_brightness(image, 1.0 + (2.0 * u[_BRIGHTNESS] - 1.0) * spec.brightness)
    if spec.contrast > 0:
        image = F.adjust_contrast(image, 1.0 + (2.0 * u[_CONTRAST] - 1.0) * spec.contrast)
    if spec.saturation > 0:
        image = F.adjust_saturation(image, 1.0 + (2.0 * u[_SATURATION] - 1.0) * spec.saturation)
    if spec.hue > 0:
        image = F.adjust_hue(image, (2.0 * u[_HUE] - 1.0) * spec.hue)
    if spec.blur_sigma > 0:
        sigma = float(u[_BLUR] * spec.blur_sigma)
        if sigma >= _MIN_BLUR_SIGMA:
            # Pillow's blur (three extended box passes, integer arithmetic) costs the same at any
            # sigma; torchvision's convolves with a full 2-D kernel, seconds at sigma 10.
            blurred = _to_pil(image).filter(ImageFilter.GaussianBlur(sigma))
            image = tv_tensors.Image(torch.from_numpy(np.array(blurred)).permute(2, 0, 1))
    if spec.noise > 0:
        generator = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(image.shape, generator=generator, dtype=torch.float32)
        noisy = image.as_subclass(torch.Tensor).to(torch.float32).add_(noise.mul_(spec.noise * 255.0))
        image = tv_tensors.Image(noisy.round_().clamp_(0, 255).to(torch.uint8))

    out_img = _to_pil(image)

    out: dict[int, Instance] = {}
    for i, (rle, area, bbox) in zip(
        mask_ids, _unpack_masks(masks.as_subclass(torch.Tensor).numpy(), len(mask_ids)), strict=True
    ):
        if area > 0:
            inst = instances[i]
            out[i] = Instance(inst.class_id, bbox, rle, inst.iscrowd, area)
    box_values = F.clamp_bounding_boxes(boxes).as_subclass(torch.Tensor).tolist()
    for i, (x0, y0, x1, y1) in zip(box_ids, box_values, strict=True):
        if x1 > x0 and y1 > y0:
            inst = instances[i]
            bbox = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
            out[i] = Instance(inst.class_id, bbox, None, inst.iscrowd, bbox[2] * bbox[3])
    return out_img, [out[i] for i in sorted(out)]


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(image.as_subclass(torch.Tensor).permute(1, 2, 0).contiguous().numpy())


def _resize_all(
    image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    size = [height, width]
    image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    # NEAREST_EXACT samples at pixel centres, as the bilinear resize of the pixels does; torch's
    # plain NEAREST is shifted by up to half a source pixel.
    masks = F.resize(masks, size, interpolation=InterpolationMode.NEAREST_EXACT)
    boxes = F.resize(boxes, size)
    return image, masks, boxes


def _xyxy(bbox: Sequence[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


def _instance_mask(inst: Instance, width: int, height: int) -> np.ndarray | None:
    seg = inst.segmentation
    if isinstance(seg, dict):
        return rle_to_mask(rle_to_compressed(seg, width, height))
    parts = clean_polygon(list(seg or []), width, height).parts
    if not parts:
        return None
    return rle_to_mask(polygon_to_rle(parts, width, height))


def _pack_masks(instances: Sequence[Instance], width: int, height: int) -> np.ndarray:
    """(ceil(n / 8), height, width) uint8: instance i is bit 7 - i % 8 of channel i // 8."""
    packed = np.zeros(((len(instances) + 7) // 8, height, width), dtype=np.uint8)
    for i, inst in enumerate(instances):
        mask = _instance_mask(inst, width, height)
        if mask is not None:
            packed[i >> 3] |= mask << np.uint8(7 - (i & 7))
    return packed


def _unpack_masks(
    packed: np.ndarray, count: int
) -> list[tuple[dict, float, tuple[float, float, float, float]]]:
    """Compressed RLE (str counts), area and box of each of the `count` packed masks."""
    if count == 0:
        return []
    # Unpacking a (channels, width, height) array gives (count, width, height), whose transpose is
    # the Fortran-ordered (height, width, count) stack pycocotools encodes without a copy.
    columns = np.ascontiguousarray(packed.transpose(0, 2, 1))
    stack = np.unpackbits(columns, axis=0, count=count).transpose(2, 1, 0)
    encoded = mask_utils.encode(stack)
    areas = mask_utils.area(encoded)
    boxes = mask_utils.toBbox(encoded)
    return [
        (
            rle_from_pycocotools(rle),
            float(area),
            (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        )
        for rle, area, box in zip(encoded, areas, boxes, strict=True)
    ]
