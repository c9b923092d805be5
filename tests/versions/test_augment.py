"""Augmentation: masks and boxes must move exactly as the pixels do; randomness comes from the seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from app.images.geometry import polygon_to_rle, rle_to_mask
from app.versions.augment import augment, preview_seeds
from app.versions.schemas import Augmentation, Crop
from app.versions.transforms import Instance

PALETTE = np.array(
    [
        [230, 20, 20],
        [20, 230, 20],
        [20, 20, 230],
        [230, 230, 20],
        [230, 20, 230],
        [20, 230, 230],
        [240, 140, 20],
        [120, 20, 200],
        [250, 250, 250],
        [20, 110, 60],
    ]
)
BACKGROUND = 110
GEOMETRY_OFF = {"outputs_per_image": 2}


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_of(inst: Instance, width: int, height: int) -> np.ndarray:
    if isinstance(inst.segmentation, dict):
        return rle_to_mask(inst.segmentation).astype(bool)
    assert isinstance(inst.segmentation, list)
    return rle_to_mask(polygon_to_rle(inst.segmentation, width, height)).astype(bool)


def scene(width: int = 1008, height: int = 1008) -> tuple[Image.Image, list[Instance]]:
    """Non-overlapping objects, each painted in its own colour; half polygons, half RLE, one box-only."""
    pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    instances: list[Instance] = []
    cols, rows = 4, 3
    cell_w, cell_h = width / cols, height / rows
    for k in range(len(PALETTE)):
        cx, cy = (k % cols + 0.5) * cell_w, (k // cols + 0.5) * cell_h
        rx, ry = cell_w * 0.3, cell_h * 0.28
        angles = np.linspace(0, 2 * np.pi, 5 + k, endpoint=False)
        radii = np.where(np.arange(angles.size) % 2, 0.6, 1.0)
        xy = np.stack([cx + rx * radii * np.cos(angles), cy + ry * radii * np.sin(angles)], axis=1)
        polygon = [xy.ravel().tolist()]
        mask = rle_to_mask(polygon_to_rle(polygon, width, height)).astype(bool)
        pixels[mask] = PALETTE[k]
        seg: list[list[float]] | dict = polygon if k % 2 == 0 else encode(mask)
        instances.append(Instance(k, (0.0, 0.0, 1.0, 1.0), seg, area=float(mask.sum())))
    instances.append(Instance(99, (10.0, 20.0, 30.0, 40.0), None))
    return Image.fromarray(pixels), instances


def assert_masks_cover_their_colours(img: Image.Image, instances: list[Instance], min_kept: int) -> None:
    pixels = np.asarray(img).astype(int)
    kept = [inst for inst in instances if inst.segmentation is not None]
    assert len(kept) >= min_kept
    for inst in kept:
        mask = mask_of(inst, img.width, img.height)
        assert mask.any()
        assert inst.area == float(mask.sum())
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        assert inst.bbox == (cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0])
        if min(inst.bbox[2], inst.bbox[3]) < 8:
            continue  # a sliver left by a crop is all edge, where pixels blend with the background
        close = np.abs(pixels[mask] - PALETTE[inst.class_id]).max(axis=1) < 40
        assert close.mean() >= 0.9, (inst.class_id, close.mean())


GEOMETRIC_OPS = {
    "hflip": {"flip_horizontal": True},
    "vflip": {"flip_vertical": True},
    "rotate90": {"rotate90": True},
    "crop": {"crop": Crop(min_scale=0.5)},
    "rotation": {"rotation_degrees": 30.0},
}


@pytest.mark.parametrize("size", [(1008, 1008), (640, 480)])
@pytest.mark.parametrize("op", list(GEOMETRIC_OPS))
def test_each_geometric_op_moves_masks_with_pixels(op: str, size: tuple[int, int]) -> None:
    img, instances = scene(*size)
    spec = Augmentation(outputs_per_image=2, **GEOMETRIC_OPS[op])
    changed = 0
    for seed in range(6):
        out, out_instances = augment(img, instances, spec, seed)
        assert out.size == img.size
        assert out.mode == "RGB"
        changed += not np.array_equal(np.asarray(out), np.asarray(img))
        assert_masks_cover_their_colours(out, out_instances, min_kept=1 if op == "crop" else len(PALETTE))
        for inst in out_instances:
            assert isinstance(inst.segmentation, dict | None)
            if isinstance(inst.segmentation, dict):
                assert isinstance(inst.segmentation["counts"], str)
                assert inst.segmentation["size"] == [size[1], size[0]]
    assert changed >= 2  # the op did something for most seeds


def test_all_ops_together_keep_masks_on_their_colours() -> None:
    img, instances = scene()
    spec = Augmentation(
        outputs_per_image=3,
        flip_horizontal=True,
        flip_vertical=True,
        rotate90=True,
        crop=Crop(min_scale=0.7),
        rotation_degrees=10.0,
    )
    for seed in (11, 12):
        out, out_instances = augment(img, instances, spec, seed)
        assert_masks_cover_their_colours(out, out_instances, min_kept=3)


def test_same_seed_same_output_and_different_seeds_differ() -> None:
    img, instances = scene()
    spec = Augmentation(
        outputs_per_image=3,
        flip_horizontal=True,
        rotate90=True,
        crop=Crop(),
        rotation_degrees=15.0,
        brightness=0.3,
        contrast=0.3,
        saturation=0.3,
        hue=0.1,
        blur_sigma=2.0,
        noise=0.05,
    )
    first = augment(img, instances, spec, 1234)
    again = augment(img, instances, spec, 1234)
    assert first[0].tobytes() == again[0].tobytes()
    assert first[1] == again[1]
    other = augment(img, instances, spec, 1235)
    assert first[0].tobytes() != other[0].tobytes()
    assert [i.segmentation for i in first[1]] != [i.segmentation for i in other[1]]


def test_augment_leaves_global_rngs_alone() -> None:
    import torch

    img, instances = scene(320, 240)
    spec = Augmentation(outputs_per_image=2, flip_horizontal=True, crop=Crop(), noise=0.1, rotation_degrees=5)
    torch.manual_seed(5)
    np.random.seed(5)
    expected_torch = torch.rand(3)
    expected_np = np.random.rand(3)
    torch.manual_seed(5)
    np.random.seed(5)
    augment(img, instances, spec, 3)
    assert torch.equal(torch.rand(3), expected_torch)
    assert np.array_equal(np.random.rand(3), expected_np)


def test_photometric_ops_leave_masks_untouched() -> None:
    img, instances = scene()
    spec = Augmentation(
        outputs_per_image=2, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2, blur_sigma=3.0, noise=0.05
    )
    for seed in range(3):
        out, out_instances = augment(img, instances, spec, seed)
        assert out.size == img.size
        assert not np.array_equal(np.asarray(out), np.asarray(img))
        assert len(out_instances) == len(instances)
        for before, after in zip(instances, out_instances, strict=True):
            if before.segmentation is None:
                assert after.segmentation is None
                assert after.bbox == before.bbox
                continue
            assert isinstance(after.segmentation, dict)
            assert after.segmentation == encode(mask_of(before, img.width, img.height))
            assert after.area == before.area


@pytest.mark.parametrize("kind", ["polygon", "rle", "box"])
def test_instances_cropped_away_are_dropped(kind: str) -> None:
    width = height = 400
    img = Image.new("RGB", (width, height), (BACKGROUND,) * 3)
    corner = np.zeros((height, width), dtype=np.uint8)
    corner[0:80, 0:80] = 1
    seg: list[list[float]] | dict | None = {
        "polygon": [[0.0, 0.0, 80.0, 0.0, 80.0, 80.0, 0.0, 80.0]],
        "rle": encode(corner),
        "box": None,
    }[kind]
    small = Instance(1, (0.0, 0.0, 80.0, 80.0), seg)
    centre = Instance(
        2, (150.0, 150.0, 100.0, 100.0), [[150.0, 150.0, 250.0, 150.0, 250.0, 250.0, 150.0, 250.0]]
    )
    spec = Augmentation(outputs_per_image=2, crop=Crop(min_scale=0.5))
    dropped = kept = 0
    for seed in range(20):
        _, out_instances = augment(img, [small, centre], spec, seed)
        ids = [i.class_id for i in out_instances]
        assert 2 in ids  # the centre of the image survives any crop of at least half of each side
        if 1 in ids:
            kept += 1
            survivor = out_instances[ids.index(1)]
            assert survivor.bbox[2] > 0 and survivor.bbox[3] > 0
            assert survivor.area > 0
        else:
            dropped += 1
    assert dropped >= 3 and kept >= 1


def test_box_only_instance_follows_hflip() -> None:
    img = Image.new("RGB", (200, 100))
    box = Instance(3, (10.0, 20.0, 30.0, 40.0), None, iscrowd=False, area=1200.0)
    spec = Augmentation(outputs_per_image=2, flip_horizontal=True)
    flipped = unflipped = 0
    for seed in range(8):
        marker = np.zeros((100, 200, 3), dtype=np.uint8)
        marker[:, :5] = 255  # to tell whether this seed flipped
        out, out_instances = augment(Image.fromarray(marker), [box], spec, seed)
        assert len(out_instances) == 1 and out_instances[0].segmentation is None
        if np.asarray(out)[0, -1, 0] == 255:
            flipped += 1
            assert out_instances[0].bbox == pytest.approx((160.0, 20.0, 30.0, 40.0))
        else:
            unflipped += 1
            assert out_instances[0].bbox == pytest.approx((10.0, 20.0, 30.0, 40.0))
        assert out_instances[0].area == pytest.approx(1200.0)
    assert flipped and unflipped
    assert img.size == (200, 100)


def test_box_only_instance_follows_rotate90() -> None:
    size = 300
    pixels = np.zeros((size, size, 3), dtype=np.uint8)
    pixels[20:60, 10:40] = 255  # x 10..40, y 20..60
    box = Instance(3, (10.0, 20.0, 30.0, 40.0), None)
    spec = Augmentation(outputs_per_image=2, rotate90=True)
    for seed in range(6):
        out, out_instances = augment(Image.fromarray(pixels), [box], spec, seed)
        white = np.asarray(out)[..., 0] > 128
        rows = np.flatnonzero(white.any(axis=1))
        cols = np.flatnonzero(white.any(axis=0))
        expected = (cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0])
        assert out_instances[0].bbox == pytest.approx(expected, abs=0.5)


def test_preview_seeds() -> None:
    seeds = preview_seeds(42, 7, 5)
    assert seeds == preview_seeds(42, 7, 5)
    assert len(set(seeds)) == 5
    assert preview_seeds(42, 7, 3) == seeds[:3]  # a copy's seed does not depend on how many copies
    assert set(preview_seeds(42, 8, 5)).isdisjoint(seeds)
    assert set(preview_seeds(43, 7, 5)).isdisjoint(seeds)
    assert preview_seeds(-1, 0, 2) != preview_seeds(1, 0, 2)
    assert all(isinstance(s, int) and s >= 0 for s in seeds)
    assert preview_seeds(0, 0, 0) == []


def test_threads_give_the_same_copies_as_one_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    img, instances = scene(512, 384)
    spec = Augmentation(
        outputs_per_image=4, flip_horizontal=True, rotate90=True, crop=Crop(), rotation_degrees=20, noise=0.05
    )
    seeds = preview_seeds(spec.seed, 0, 4) * 2
    sequential = [augment(img, instances, spec, s) for s in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda s: augment(img, instances, spec, s), seeds))
    for (img_a, inst_a), (img_b, inst_b) in zip(sequential, parallel, strict=True):
        assert img_a.tobytes() == img_b.tobytes()
        assert inst_a == inst_b


def test_large_blur_takes_the_box_pass_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blur at sigma 10 must not become a full 61x61 convolution (torchvision's gaussian_blur: 3.4 s per
    1008 px image here, against 0.1 s for Pillow's three box passes, whose cost does not grow with sigma).
    Checked by the path taken, not by a clock: a timing bound failed on a busy machine."""
    import torchvision.transforms.v2.functional as TF
    from PIL import ImageFilter

    sigmas: list[float] = []
    pillow_blur = ImageFilter.GaussianBlur

    def spy(radius: float = 2) -> ImageFilter.GaussianBlur:
        sigmas.append(float(radius))
        return pillow_blur(radius)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a 2-D convolution blur was used")

    monkeypatch.setattr(ImageFilter, "GaussianBlur", spy)
    monkeypatch.setattr(TF, "gaussian_blur", refuse)
    monkeypatch.setattr(TF, "gaussian_blur_image", refuse, raising=False)
    img, instances = scene()
    spec = Augmentation(outputs_per_image=2, blur_sigma=10.0, hue=0.5, rotation_degrees=45.0, noise=0.5)
    for seed in range(8):
        augment(img, instances, spec, seed)
    assert sigmas and max(sigmas) > 5.0, sigmas  # large blurs were drawn, and took the box-pass path
