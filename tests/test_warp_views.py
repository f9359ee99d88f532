"""scripts/warp_views.py: its generated view is the one `gst eval nvs` scores, and the warped variants
paste the observed pixels where they land."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_api import MODEL_HW, make_checkpoint  # tests/ is on sys.path (pytest rootdir import)

from gst.api import GST, GSTViewPredictor
from gst.eval.data import build_evalset
from gst.eval.lpips_metric import LpipsStatus
from gst.eval.nvs_eval import evaluate_views
from gst.model import SamplingConfig

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "warp_views.py"


def _script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import warp_views
    finally:
        sys.path.pop(0)
    return warp_views


@pytest.fixture(scope="module")
def gst(tmp_path_factory) -> GST:
    return GST.from_pretrained(make_checkpoint(tmp_path_factory.mktemp("warp_views")))


def test_generated_scores_match_gst_eval_nvs_and_warps_cover(gst: GST, two_tiny_scenes, monkeypatch) -> None:
    grid = gst.sequence.image_grid
    # depth 3 world units per cell, all ground: the micro model reads none of its own
    monkeypatch.setattr(gst, "observed_depth", lambda prepared: (torch.full(grid, 3.0), torch.ones(grid)))
    evalset = build_evalset(two_tiny_scenes, num_pairs=3, seed=0, resolution=MODEL_HW[1])
    script = _script()
    rows = script.score_pairs(gst, evalset, samples=2, temperature=0.7, seed=0)
    predictor = GSTViewPredictor(
        gst, sampling=SamplingConfig(temperature=0.7, top_k=0), num_samples=2, seed=0
    )
    scored, _ = evaluate_views(evalset, predictor, LpipsStatus(None, "off", "not needed"))
    assert [r["generated_psnr"] for r in rows] == pytest.approx([r["psnr"] for r in scored], abs=1e-5)
    assert [r["generated_ssim"] for r in rows] == pytest.approx([r["ssim"] for r in scored], abs=1e-5)
    assert max(r["plane_no_limit_covered"] for r in rows) > 0.0  # the 50 and 57 deg pairs: about a third
    for r in rows:
        assert 0.0 <= r["plane_no_limit_covered"] <= 1.0
        assert r["plane_stretch2_covered"] <= r["plane_no_limit_covered"]
        if r["plane_covered"] == 0.0:  # nothing lands (the 73 deg pair): the generated view itself
            assert r["plane_psnr"] == r["generated_psnr"]
    summary = script.summarize(rows)
    assert summary["generated"]["all"]["num_pairs"] == 3
    assert summary["plane"]["all"]["psnr"] == pytest.approx(np.mean([r["plane_psnr"] for r in rows]))


def test_orbit_figure(gst: GST, two_tiny_scenes, monkeypatch, tmp_path) -> None:
    grid = gst.sequence.image_grid
    monkeypatch.setattr(gst, "observed_depth", lambda prepared: (torch.full(grid, 3.0), torch.ones(grid)))
    out = tmp_path / "orbit.png"
    _script().orbit_figure(gst, str(two_tiny_scenes), 2, str(out))
    from PIL import Image

    assert Image.open(out).size[0] > 400
