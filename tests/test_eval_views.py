"""View-synthesis evaluation: baselines, prediction files, failures and LPIPS (injected network)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.data.pairs import PairConfig, sample_pairs
from gst.data.scene import Scene
from gst.eval.baselines import CopyView, MeanColourView, ReconstructionCeilingView
from gst.eval.data import EvalSet
from gst.eval.lpips_metric import LpipsStatus, injected_lpips
from gst.eval.metrics import psnr
from gst.eval.nvs_eval import evaluate_views, summarize_views
from gst.eval.predictors import FAILED_VIEW_VALUE, FileViewPredictor


def _scene(root: Path, name: str, num_views: int = 6, hw=(16, 20)) -> Scene:
    """Cameras on a ring looking at the origin (OpenCV axes); images are random noise PNGs."""
    (root / name).mkdir(parents=True)
    rng = np.random.default_rng(7)
    w2c = []
    for a in np.arange(num_views) * 2 * math.pi / num_views:
        c = np.array([3 * math.cos(a), 3 * math.sin(a), 0.0])
        f = -c / np.linalg.norm(c)
        x = np.cross(f, [0.0, 0.0, 1.0])
        R = np.stack([x, np.cross(f, x), f])
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = R, -R @ c
        w2c.append(torch.from_numpy(m))
    paths = []
    for i in range(num_views):
        paths.append(root / name / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(paths[-1])
    K = torch.tensor([[20.0, 0, 9.5], [0, 20.0, 7.5], [0, 0, 1]], dtype=torch.float64).expand(num_views, 3, 3)
    return Scene(
        root=root / name, name=name, image_paths=tuple(paths), K=K.clone(), w2c=torch.stack(w2c), image_hw=hw
    )


@pytest.fixture
def evalset(tmp_path) -> EvalSet:
    scenes = [_scene(tmp_path, "a")]
    return EvalSet(
        scenes=scenes, pairs=sample_pairs(scenes, 5, seed=0, config=PairConfig(max_baseline_deg=130))
    )


def mean_abs_scorer(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A stand-in 'perceptual' network: a fixed random 1x1 conv, then mean absolute difference."""
    conv = torch.nn.Conv2d(3, 4, 1)
    torch.nn.init.constant_(conv.weight, 0.25)
    torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        return (conv(pred) - conv(target)).abs().mean(dim=(1, 2, 3))


def test_copy_view_scores_the_observed_image(evalset):
    status = injected_lpips(mean_abs_scorer, "test network")
    rows, kept = evaluate_views(evalset, CopyView(), status, keep_images=2)
    assert len(rows) == 5 and len(kept) == 2 and not any(r["failed"] for r in rows)
    for r, pair in zip(rows, evalset.pairs, strict=True):
        obs, tgt = evalset.image(0, pair.obs), evalset.image(0, pair.tgt)
        assert r["psnr"] == pytest.approx(float(psnr(obs[None], tgt[None])[0]))
        assert r["lpips"] == pytest.approx(float(mean_abs_scorer(obs[None], tgt[None])[0]), rel=1e-5)
    summary = summarize_views(rows, CopyView(), status)
    assert summary["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows]))
    assert summary["lpips"] == pytest.approx(np.mean([r["lpips"] for r in rows]))
    assert not summary["uses_target_image"]


def test_mean_colour_view_is_flat_at_the_observed_mean(evalset):
    pair = evalset.pairs[0]
    obs = evalset.image(0, pair.obs)
    view = MeanColourView().predict_view(obs, None, None, None, target_hw=(5, 7))
    assert view.shape == (3, 5, 7)
    for c in range(3):
        assert torch.allclose(view[c], torch.full((5, 7), float(obs[c].mean())))


def test_prediction_file_exact_views_and_a_missing_pair(evalset, tmp_path):
    pairs = evalset.pairs[:-1]  # the last pair is missing: it must be scored on grey and flagged
    images = np.stack(
        [(evalset.image(0, p.tgt).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for p in pairs]
    )
    np.savez(
        tmp_path / "views.npz",
        scene=np.array([p.scene for p in pairs]),
        obs=np.array([p.obs for p in pairs]),
        tgt=np.array([p.tgt for p in pairs]),
        images=images,
        method=np.array("exact"),
    )
    predictor = FileViewPredictor(tmp_path / "views.npz")
    unavailable = LpipsStatus(None, "LPIPS unavailable: test", "test")
    rows, _ = evaluate_views(evalset, predictor, unavailable)
    assert all(math.isinf(r["psnr"]) and r["ssim"] == pytest.approx(1.0, abs=1e-5) for r in rows[:-1])
    last, target = rows[-1], evalset.image(0, evalset.pairs[-1].tgt)
    assert last["failed"] and last["lpips"] is None
    grey = torch.full_like(target, FAILED_VIEW_VALUE)
    assert last["psnr"] == pytest.approx(float(psnr(grey[None], target[None])[0]))
    summary = summarize_views(rows, predictor, unavailable)
    assert summary["num_failed"] == 1 and summary["psnr_num_nonfinite"] == 4
    assert summary["psnr_mean_finite"] == pytest.approx(last["psnr"])
    assert summary["lpips"].startswith("LPIPS unavailable")


def test_reconstruction_ceiling_looks_at_the_target(evalset):
    ceiling = ReconstructionCeilingView(lambda x: (x * 3).round() / 3, name="quantise4")  # 4 grey levels
    rows, _ = evaluate_views(evalset, ceiling, injected_lpips(mean_abs_scorer, "test network"))
    # uniform noise quantised to 4 levels: error uniform in [-1/6, 1/6] -> MSE 1/108 -> PSNR ~20.3 dB
    np.testing.assert_allclose([r["psnr"] for r in rows], 10 * math.log10(108), atol=0.5)
    assert summarize_views(rows, ceiling, injected_lpips(mean_abs_scorer, "t"))["uses_target_image"]
