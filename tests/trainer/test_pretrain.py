"""The pretraining command's pieces that do not need hours: the stage plan and the training curve."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from trainer.pretrain import STAGES, curve_points, draw_curve


def _metrics(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_stages_continue_at_a_lower_rate_and_cool_down() -> None:
    first, second = STAGES
    assert second.lr < first.lr and second.cooldown > 0 and first.cooldown == 0
    assert all(s.max_steps for s in STAGES)


def test_curve_points_continue_across_stages(tmp_path: Path) -> None:
    a = _metrics(tmp_path / "a.jsonl", [{"step": 10, "loss": 1.0}, {"step": 20, "valid_segm_AP50": 0.2}])
    b = _metrics(
        tmp_path / "b.jsonl", [{"step": 5, "valid_segm_AP50": 0.4}, {"step": 15, "valid_segm_AP50": 0.5}]
    )
    assert curve_points([a, b]) == [(20, 0.2), (25, 0.4), (35, 0.5)]


def test_draw_curve_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "curve.png"
    draw_curve([(0, 0.0), (50, 0.3), (100, 0.6)], out, title="valid mask AP50", boundaries=[50])
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (720, 360)
        # the curve is drawn in red somewhere
        assert (200, 40, 40) in {img.getpixel((x, y)) for x in range(60, 700, 3) for y in range(30, 320, 3)}
