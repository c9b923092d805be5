"""Pairwise IoU of masks given as COCO compressed RLEs, exact, by whichever of two ways costs less.

pycocotools compares two RLEs run by run, so its cost grows with the number of runs: nothing for the compact
masks a trained model draws, and minutes for the speckled masks of an untrained or weakly trained one at
confidence 0 (200 candidates of a 1024x768 image took 97 s). Decoding the masks and counting intersections as
one matrix product costs the same whatever the masks look like: it takes over when it is the cheaper one and
the decoded masks fit `DENSE_BYTES`. Both count pixels, so both give the same IoUs, to the last bit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils

# At most this many bytes of decoded masks (one byte a pixel) for the dense way; beyond it, pycocotools.
DENSE_BYTES = 256 * 2**20
# Pixels per slice of the matrix product: float32 sums of 0/1 stay exact far beyond this (2**24).
_SLICE_PIXELS = 1 << 16
# Nanoseconds per unit of work, measured on the development CPU (bench/mask_nms.py): pycocotools per pair of
# masks per character of their compressed counts (7.7-12), decoding per mask pixel (4-7), the product per mask
# pair per pixel (about 0.03). Only their ratio matters, and the dense way must win twice over to be taken.
_RLE_NS, _DECODE_NS, _PRODUCT_NS = 8.0, 7.0, 0.04


def pairwise_iou(rles: Sequence[dict]) -> np.ndarray:
    """IoU of every mask with every mask, [N, N], as `pycocotools.mask.iou(rles, rles, [0] * N)` gives it (0
    where neither mask has a pixel). All masks must be of one size."""
    n = len(rles)
    if n == 0:
        return np.zeros((0, 0))
    if dense_is_cheaper(rles):
        return _dense_iou(rles)
    return rle_iou(rles)


def rle_iou(rles: Sequence[dict]) -> np.ndarray:
    """pycocotools' way, on the compressed RLEs, [N, N]."""
    n = len(rles)
    return np.asarray(mask_utils.iou(list(rles), list(rles), [0] * n), dtype=np.float64).reshape(n, n)


def dense_is_cheaper(rles: Sequence[dict]) -> bool:
    n = len(rles)
    height, width = rles[0]["size"]
    pixels = height * width
    if n * pixels > DENSE_BYTES:
        return False
    chars = sum(len(r["counts"]) for r in rles) / n
    rle_ns = _RLE_NS * n * n * chars
    dense_ns = _DECODE_NS * n * pixels + _PRODUCT_NS * n * n * pixels
    return 2 * dense_ns < rle_ns


def _dense_iou(rles: Sequence[dict]) -> np.ndarray:
    decoded = mask_utils.decode(list(rles))  # [H, W, N], column-major
    n = decoded.shape[-1]
    # One column per mask, its pixels in whichever fixed order the array already has (no copy).
    flat = torch.from_numpy(decoded.reshape(-1, n, order="A"))
    intersections = torch.zeros(n, n, dtype=torch.float64)
    for start in range(0, flat.shape[0], _SLICE_PIXELS):
        part = flat[start : start + _SLICE_PIXELS].float()
        intersections += (part.T @ part).double()
    areas = intersections.diagonal()  # a mask's intersection with itself
    unions = areas[:, None] + areas[None, :] - intersections
    return torch.where(unions > 0, intersections / unions.clamp(min=1), 0.0).numpy()
