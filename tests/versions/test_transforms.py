"""Resize and annotation geometry: the annotations must land on the pixels they describe."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from app.images.decode import SOURCE_BOX_KEY, load_rgb, load_rgb_for_resize
from app.images.geometry import polygon_to_rle, rle_to_mask
from app.versions.schemas import Resize
from app.versions.transforms import Frame, Instance, frame_for, resize, transform_instances
from tests.factories import jpeg_of

# ------------------------------------------------------------------------------------------- helpers


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def instance_mask(inst: Instance, width: int, height: int) -> np.ndarray:
    if isinstance(inst.segmentation, dict):
        return rle_to_mask(inst.segmentation)
    assert isinstance(inst.segmentation, list)
    return rle_to_mask(polygon_to_rle(inst.segmentation, width, height))


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]), float(rows[-1] + 1 - rows[0]))


def reference_resize(mask: np.ndarray, frame: Frame) -> np.ndarray:
    """The mask resized the way the pixels are: onto the frame's content box, bilinear, at half."""
    height, width = mask.shape
    content_w = round(width * frame.scale_x)
    content_h = round(height * frame.scale_y)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (content_w, content_h), Image.Resampling.BILINEAR
    )
    canvas = Image.new("L", (frame.width, frame.height))
    canvas.paste(small, (round(frame.offset_x), round(frame.offset_y)))
    return np.asarray(canvas) >= 128


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


def star(cx: float, cy: float, radius: float, points: int, rng: np.random.Generator) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    radii = radius * rng.uniform(0.5, 1.0, size=points)
    xy = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return xy.ravel().tolist()


def make_instances(width: int, height: int, kind: str, seed: int = 0) -> list[Instance]:
    """Star-shaped objects of many sizes (one touching the image edge), as polygons or as RLE."""
    rng = np.random.default_rng(seed)
    scale = min(width, height)
    shapes = []
    for _ in range(8):
        radius = scale * rng.uniform(0.03, 0.25)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        shapes.append([star(cx, cy, radius, int(rng.integers(5, 14)), rng)])
    # A two-part object, and one hanging over the top-left corner.
    shapes.append(
        [
            star(width * 0.2, height * 0.7, scale * 0.05, 7, rng),
            star(width * 0.3, height * 0.8, scale * 0.04, 6, rng),
        ]
    )
    shapes.append([[-10.0, -10.0, width * 0.3, 0.0, width * 0.1, height * 0.2]])
    out = []
    for k, parts in enumerate(shapes):
        clipped = [np.clip(np.asarray(p).reshape(-1, 2), 0, [width, height]).ravel().tolist() for p in parts]
        if kind == "polygon":
            seg: list[list[float]] | dict = clipped
        else:
            seg = encode(rle_to_mask(polygon_to_rle(clipped, width, height)))
        out.append(Instance(class_id=k, bbox=(0.0, 0.0, 1.0, 1.0), segmentation=seg))
    return out


# ------------------------------------------------------------------------------ the key correctness test


@pytest.mark.parametrize("kind", ["polygon", "rle"])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize("size", [(640, 480), (1000, 3000), (4000, 3000), (333, 1201)])
def test_transformed_masks_match_the_resized_source_mask(size: tuple[int, int], mode: str, kind: str) -> None:
    width, height = size
    spec = Resize(mode=mode)
    frame = frame_for(width, height, spec)
    instances = make_instances(width, height, kind, seed=width + height)
    kept, dropped = transform_instances(instances, width, height, frame)
    assert dropped == 0
    assert len(kept) == len(instances)
    compared = 0
    for before, after in zip(instances, kept, strict=True):
        assert after.class_id == before.class_id
        out_mask = instance_mask(after, spec.width, spec.height)
        expected = reference_resize(instance_mask(before, width, height), frame)
        if kind == "rle":
            assert isinstance(after.segmentation, dict)
            assert isinstance(after.segmentation["counts"], str)
            assert after.segmentation["size"] == [spec.height, spec.width]
        else:
            assert isinstance(after.segmentation, list)
        assert after.bbox == mask_bbox(out_mask)
        assert after.area == pytest.approx(float(out_mask.sum()))
        ex_box = mask_bbox(expected) if expected.any() else (0, 0, 0, 0)
        if min(ex_box[2], ex_box[3]) > 16:
            compared += 1
            assert iou(out_mask, expected) >= 0.95, (before.class_id, iou(out_mask, expected))
    assert compared >= 5


def test_letterbox_frame_places_content_centred() -> None:
    frame = frame_for(4000, 3000, Resize(mode="letterbox"))
    assert (frame.scale_x, frame.scale_y) == pytest.approx((0.252, 0.252))
    assert (frame.offset_x, frame.offset_y) == (0.0, 126.0)
    frame = frame_for(1000, 3000, Resize(mode="letterbox"))
    assert frame.offset_y == 0.0
    assert frame.offset_x == (1008 - 336) // 2
    stretch = frame_for(640, 480, Resize(width=512, height=256))
    assert (stretch.scale_x, stretch.scale_y, stretch.offset_x, stretch.offset_y) == (
        0.8,
        256 / 480,
        0.0,
        0.0,
    )


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize("size", [(4001, 2999), (1000, 3000)])
def test_pixels_of_a_draft_decode_land_where_the_annotations_go(size: tuple[int, int], mode: str) -> None:
    """Paint each instance in its own colour, decode (at reduced scale), resize, and check that each
    transformed annotation covers its colour: resize() and frame_for() agree on the layout."""
    width, height = size
    instances = make_instances(width, height, "polygon", seed=7)
    palette = np.array(
        [[230, 25, 25], [25, 230, 25], [25, 25, 230], [230, 230, 25], [230, 25, 230], [25, 230, 230]]
    )
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    painted: list[tuple[Instance, np.ndarray]] = []
    taken = np.zeros((height, width), dtype=bool)
    for inst in instances:
        mask = instance_mask(inst, width, height).astype(bool)
        if (mask & taken).any() or len(painted) == len(palette):
            continue
        colour = palette[len(painted)]
        pixels[mask] = colour
        taken |= mask
        painted.append((inst, colour))
    assert len(painted) >= 3
    spec = Resize(mode=mode)
    img, orientation = load_rgb_for_resize(jpeg_of(pixels), (spec.width, spec.height))
    assert orientation == 1
    out, frame = resize(img, spec)
    assert out.size == (spec.width, spec.height)
    assert frame == frame_for(width, height, spec)
    out_pixels = np.asarray(out).astype(int)
    kept, _ = transform_instances([i for i, _ in painted], width, height, frame)
    for inst, (_, colour) in zip(kept, painted, strict=True):
        mask = instance_mask(inst, spec.width, spec.height).astype(bool)
        close = np.abs(out_pixels[mask] - colour).max(axis=1) < 60
        assert close.mean() >= 0.9, close.mean()
    if mode == "letterbox":
        frame = frame_for(width, height, spec)
        if frame.offset_y >= 2:
            assert out_pixels[: int(frame.offset_y) - 1].max() < 8  # black padding
        if frame.offset_x >= 2:
            assert out_pixels[:, : int(frame.offset_x) - 1].max() < 8


def test_resize_of_draft_decode_matches_full_decode() -> None:
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((100, 100, 1), dtype=np.uint8))[:2999, :3999]
    data = jpeg_of(pixels)
    spec = Resize(mode="letterbox")
    drafted, _ = load_rgb_for_resize(data, (spec.width, spec.height))
    assert drafted.width < 3999
    out_draft, frame_draft = resize(drafted, spec)
    full = load_rgb(data)
    out_full, frame_full = resize(full, spec)
    assert frame_full == frame_for(3999, 2999, spec)
    # Both frames are the annotations' (full-resolution) frame, whatever scale the pixels decoded at.
    assert frame_draft == frame_full
    assert frame_draft.offset_y == frame_full.offset_y
    # The draft decode records the full image's extent in its own (smaller) pixels, scaled by the draft
    # factor exactly (not by the rounded-up draft size), and resize lays the pixels out by it.
    box = drafted.info[SOURCE_BOX_KEY]
    ratio = 3999 / box[2]
    assert ratio == pytest.approx(round(ratio)) and round(ratio) in (2, 4, 8)
    assert 2999 / box[3] == pytest.approx(ratio)
    diff = np.abs(np.asarray(out_draft).astype(int) - np.asarray(out_full).astype(int))
    assert diff.mean() < 6


def test_resize_of_a_draft_decode_fills_the_output() -> None:
    pixels = np.zeros((3000, 4000, 3), dtype=np.uint8)
    pixels[:, 2000:] = 200
    img, _ = load_rgb_for_resize(jpeg_of(pixels), (1008, 1008))
    assert img.width < 4000  # decoded at reduced scale (tests/images/test_decode.py)
    out, frame = resize(img, Resize())
    assert out.size == (1008, 1008)
    # The frame is the full-resolution one; the reduced pixels span the output all the same.
    assert frame == frame_for(4000, 3000, Resize())
    assert frame.scale_x * 4000 == pytest.approx(1008)
    draft = 4000 / img.info[SOURCE_BOX_KEY][2]  # full-resolution pixels per decoded pixel
    assert frame.scale_x * draft * img.width == pytest.approx(1008)


# ------------------------------------------------------------------------------------------ unorient


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_unorient_puts_annotations_on_the_stored_pixels(orientation: int, mode: str) -> None:
    raw = np.full((300, 500, 3), 90, dtype=np.uint8)  # stored 500 wide, 300 high
    raw[40:120, 300:460] = (255, 0, 0)  # off-centre and not square, so every orientation differs
    data = jpeg_of(raw, orientation=orientation, quality=95)
    # The annotation, as stored in the database: found on the displayed (oriented) image.
    displayed = np.asarray(load_rgb(data)).astype(int)
    red_shown = (displayed[..., 0] > 180) & (displayed[..., 1] < 80)
    oriented_h, oriented_w = red_shown.shape
    x, y, w, h = mask_bbox(red_shown)
    polygon = Instance(1, (x, y, w, h), [[x, y, x + w, y, x + w, y + h, x, y + h]])
    rle = Instance(2, (x, y, w, h), encode(red_shown))
    box = Instance(3, (x, y, w, h), None)

    spec = Resize(width=256, height=320, mode=mode)
    img, found = load_rgb_for_resize(data, (spec.width, spec.height), auto_orient=False)
    assert found == orientation
    assert img.size == (500, 300)
    out, frame = resize(img, spec)
    out_pixels = np.asarray(out).astype(int)
    red_out = (out_pixels[..., 0] > 180) & (out_pixels[..., 1] < 80)
    assert frame == frame_for(500, 300, spec)  # the stored pixels' frame
    kept, dropped = transform_instances(
        [polygon, rle, box], oriented_w, oriented_h, frame, unorient=orientation
    )
    assert dropped == 0
    for inst in kept[:2]:
        mask = instance_mask(inst, spec.width, spec.height).astype(bool)
        assert iou(mask, red_out) >= 0.9
    bx, by, bw, bh = kept[2].bbox
    assert (bx, by, bw, bh) == pytest.approx(mask_bbox(red_out), abs=1.5)


def test_unorient_none_or_one_is_identity() -> None:
    inst = Instance(0, (10.0, 20.0, 30.0, 40.0), None)
    frame = frame_for(100, 200, Resize(width=100, height=200))
    for unorient in (None, 1):
        kept, _ = transform_instances([inst], 100, 200, frame, unorient=unorient)
        assert kept[0].bbox == pytest.approx((10.0, 20.0, 30.0, 40.0))


# ------------------------------------------------------------------------------------- what is dropped


def test_min_instance_px_drops_and_counts() -> None:
    spec = Resize()  # 1008 x 1008
    frame = frame_for(2016, 2016, spec)  # halves everything
    wide = Instance(0, (100.0, 100.0, 40.0, 40.0), [[100, 100, 140, 100, 140, 140, 100, 140]])  # -> 20 x 20
    narrow = Instance(
        1, (300.0, 100.0, 10.0, 200.0), [[300, 100, 310, 100, 310, 300, 300, 300]]
    )  # -> 5 x 100
    short_mask = np.zeros((2016, 2016), dtype=np.uint8)
    short_mask[500:510, 500:800] = 1  # -> 150 x 5
    short = Instance(2, (500.0, 500.0, 300.0, 10.0), encode(short_mask))
    box = Instance(3, (900.0, 900.0, 12.0, 400.0), None)  # -> 6 x 200
    kept, dropped = transform_instances([wide, narrow, short, box], 2016, 2016, frame, min_instance_px=8)
    assert [i.class_id for i in kept] == [0]
    assert dropped == 3
    assert kept[0].bbox == pytest.approx((50.0, 50.0, 20.0, 20.0))
    assert kept[0].area == 400.0
    kept, dropped = transform_instances([wide, narrow, short, box], 2016, 2016, frame)
    assert dropped == 0
    assert [i.class_id for i in kept] == [0, 1, 2, 3]
    assert kept[2].bbox == pytest.approx((250.0, 250.0, 150.0, 5.0))
    assert kept[3].bbox == pytest.approx((450.0, 450.0, 6.0, 200.0))
    assert kept[3].area == pytest.approx(1200.0)


def test_vanishing_instances_are_dropped_and_counted() -> None:
    size = 3024
    frame = frame_for(size, size, Resize())  # a third
    thin = np.zeros((size, size), dtype=np.uint8)
    thin[100:900, 301] = 1  # one source pixel wide: a third of an output pixel
    thick = np.zeros((size, size), dtype=np.uint8)
    thick[100:900, 300:303] = 1  # exactly one output pixel wide
    instances = [
        Instance(0, (301.0, 100.0, 1.0, 800.0), encode(thin)),
        Instance(1, (300.0, 100.0, 3.0, 800.0), encode(thick)),
        Instance(2, (0.0, 0.0, 0.0, 0.0), encode(np.zeros((size, size), dtype=np.uint8))),
        Instance(3, (5.0, 5.0, 0.0, 10.0), None),  # zero-width box
        Instance(4, (0.0, 0.0, 1.0, 1.0), [[3100, 10, 3200, 10, 3200, 90]]),  # wholly outside the image
        Instance(5, (0.0, 0.0, 1.0, 1.0), [[10, 10, 20, 10, 30, 10]]),  # no area
        Instance(6, (0.0, 0.0, 1.0, 1.0), [[10, 10, 20]]),  # not a polygon at all
    ]
    kept, dropped = transform_instances(instances, size, size, frame)
    assert [i.class_id for i in kept] == [1]
    assert dropped == 6
    assert kept[0].bbox == pytest.approx((100.0, 33.0, 1.0, 267.0), abs=1.0)


def test_thin_parts_survive_area_resampling() -> None:
    """A downscaled mask keeps a part where it covers at least half an output pixel, unlike nearest
    sampling, which keeps or loses a thin part depending on where the sample points fall."""
    size = 2016
    frame = frame_for(size, size, Resize())  # a half
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[200:400, 200:400] = 1
    mask[299, 400:900] = 1  # a one-pixel arm at an odd row: nearest sampling of even rows misses it
    kept, _ = transform_instances([Instance(0, (0, 0, 1, 1), encode(mask))], size, size, frame)
    out = rle_to_mask(kept[0].segmentation)
    assert out[149, 200:450].all()
    assert kept[0].bbox == pytest.approx((100.0, 100.0, 350.0, 100.0))


def test_bad_rle_size_is_refused() -> None:
    inst = Instance(0, (0, 0, 1, 1), encode(np.ones((10, 10), dtype=np.uint8)))
    with pytest.raises(ValueError):
        transform_instances([inst], 20, 10, frame_for(20, 10, Resize()))


def test_iscrowd_and_uncompressed_rle_are_kept() -> None:
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[10:50, 20:60] = 1
    runs = {"size": [100, 100], "counts": _runs(mask)}
    inst = Instance(4, (20.0, 10.0, 40.0, 40.0), runs, iscrowd=True)
    kept, dropped = transform_instances([inst], 100, 100, frame_for(100, 100, Resize(width=200, height=200)))
    assert dropped == 0
    assert kept[0].iscrowd is True
    assert kept[0].bbox == (40.0, 20.0, 80.0, 80.0)
    assert kept[0].area == 6400.0


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.T.ravel()
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs
