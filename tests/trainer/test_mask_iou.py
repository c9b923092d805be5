"""Mask IoU by RLE or by decoded masks: the same numbers, and each way taken where it is the cheaper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from trainer import mask_iou
from trainer.evaluate import mask_nms
from trainer.mask_iou import dense_is_cheaper, pairwise_iou


def _encode(masks: np.ndarray) -> list[dict]:
    return [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]


def _speckled(n: int, height: int, width: int, seed: int = 0) -> list[dict]:
    """What an untrained model draws: thresholded noise upsampled from a coarse grid, thousands of runs each."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.standard_normal((n, 1, 48, 48)).astype(np.float32))
    return _encode((F.interpolate(coarse, size=(height, width), mode="bilinear") > 0).numpy()[:, 0])


def _rectangles(n: int, height: int, width: int, seed: int = 0) -> list[dict]:
    """What a trained model draws: compact shapes, a few runs per column."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, height, width), dtype=bool)
    for m in masks:
        y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
        m[y : y + rng.integers(5, 40), x : x + rng.integers(5, 40)] = True
    return _encode(masks)


def _reference(rles: list[dict]) -> np.ndarray:
    n = len(rles)
    return np.asarray(mask_utils.iou(rles, rles, [0] * n), dtype=np.float64).reshape(n, n)


def test_each_way_is_taken_where_it_is_cheaper() -> None:
    assert dense_is_cheaper(_speckled(40, 300, 400))
    assert not dense_is_cheaper(_rectangles(40, 300, 400))


@pytest.mark.parametrize("make", [_speckled, _rectangles])
def test_both_ways_give_pycocotools_iou_exactly(make, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    rles = make(30, 120, 90)
    empty = _encode(np.zeros((2, 120, 90), dtype=bool))  # no pixels: IoU 0 with everything, itself included
    rles = rles[:10] + empty + rles[10:]
    reference = _reference(rles)
    monkeypatch.setattr(mask_iou, "_SLICE_PIXELS", 1000)  # the product summed over several slices
    for dense in (True, False):
        monkeypatch.setattr(mask_iou, "dense_is_cheaper", lambda _rles, dense=dense: dense)
        got = pairwise_iou(rles)
        assert got.shape == (32, 32)
        np.testing.assert_array_equal(got, reference)
    assert reference[10, 10] == 0 and reference[0, 0] == 1


def test_memory_bound_sends_large_sets_to_pycocotools(monkeypatch: pytest.MonkeyPatch) -> None:
    rles = _speckled(40, 300, 400)
    assert dense_is_cheaper(rles)
    monkeypatch.setattr(mask_iou, "DENSE_BYTES", 40 * 300 * 400 - 1)
    assert not dense_is_cheaper(rles)


def test_nms_over_speckled_masks_keeps_what_the_rle_way_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    rles = _speckled(60, 160, 120, seed=3)
    rles += rles[:5]  # exact duplicates, lower in the ranking
    groups = [i % 3 for i in range(len(rles))]
    dense = mask_nms(rles, 0.3), mask_nms(rles, 0.3, groups)
    monkeypatch.setattr(mask_iou, "dense_is_cheaper", lambda _rles: False)
    assert (mask_nms(rles, 0.3), mask_nms(rles, 0.3, groups)) == dense
    assert not set(range(60, 65)) & set(dense[0]), "a duplicate of a kept mask survived"


def test_no_masks() -> None:
    assert pairwise_iou([]).shape == (0, 0)
    assert mask_nms([], 0.5) == []
