"""The SIFT + essential-matrix baseline: estimator fallback, and its score on NeRF-synthetic lego.

How the matcher and estimator were chosen: SIFT matches of 60 lego pairs (10-30 degree baseline,
200 px, pair seed 0), then each estimator on the same matches (OpenCV 5.1.0, ratio 0.85, contrast
0.01, threshold 1 px, no refinement unless stated). Choice made on the train views, confirmed on the
val views. Matchers: A = SIFT, 3 octave layers, ratio test (before); B = RootSIFT, 5 octave layers,
ratio test and mutual check.

| matcher | estimator                             | val solved | val med rot | train solved | train med rot |
|---------|---------------------------------------|-----------:|------------:|-------------:|--------------:|
| A       | RANSAC, normalised coords (before)    |      0.750 |       12.74 |              |               |
| A       | RANSAC                                |      0.733 |       13.14 |        0.667 |         20.57 |
| A       | USAC_DEFAULT (= USAC_ACCURATE)        |      0.967 |        7.47 |        0.933 |          6.91 |
| A       | USAC_MAGSAC                           |      0.950 |        7.31 |        0.950 |          5.17 |
| A       | RANSAC, then USAC_MAGSAC              |      0.983 |        8.24 |        0.950 |          9.29 |
| A       | USAC_MAGSAC, USAC_DEFAULT, RANSAC     |      1.000 |        6.35 |        0.950 |          5.17 |
| B       | RANSAC                                |      0.967 |        5.28 |        0.950 |          3.98 |
| B       | USAC_DEFAULT (= USAC_ACCURATE)        |      0.967 |        3.09 |        0.983 |          2.50 |
| B       | USAC_MAGSAC                           |      0.967 |        2.55 |        0.983 |          2.07 |
| B       | RANSAC, then USAC_MAGSAC              |      0.967 |        5.28 |        0.983 |          3.69 |
| B       | USAC_MAGSAC, USAC_DEFAULT, RANSAC     |      0.967 |        2.55 |        0.983 |          2.07 |
| B       | the same, then LM refinement (final)  |      0.967 |        2.63 |        0.983 |          1.88 |

(median rotation error in degrees, failures counted as 180.) With matcher A many pairs have half or
more of their matches off the true epipolar geometry and only 10-30 on it, and a wrong essential
matrix often explains the matches better than the true one: no estimator recovers those, better
matches do. The two val pairs still failing (views 79->96, 36->82) have 16 matches each, of which 5
and 7 lie within 1 px of the TRUE epipolar geometry: fewer than the 8 the baseline requires. The
fallback chain changes nothing at 200 px on these pairs; on val pair seed 1 it solves one more pair,
at 800 px one more too. The final Levenberg-Marquardt refinement is about neutral here (val pair
seed 1: 2.67 -> 2.12 degrees; 800 px: 0.72 -> 0.63) and makes exact matches give the exact pose
(USAC alone: up to 5e-4 degrees off).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gst.data.pairs import PairConfig
from gst.eval.baselines import SiftEssentialPose
from gst.eval.data import build_evalset
from gst.eval.pose_eval import evaluate_pose, summarize_pose
from gst.geometry.conventions import intrinsics_matrix, project_points, relative_w2c
from gst.geometry.errors import rotation_error_deg
from gst.geometry.rotations import axis_angle_to_matrix

LEGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic_lego"


def _known_pair() -> tuple[np.ndarray, np.ndarray, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Exact correspondences of 150 random points seen by two different cameras.

    Returns pixels (150, 2) in each image, the true w2c_rel (4, 4) and the two intrinsics (3, 3).
    """
    rng = np.random.default_rng(0)
    points = torch.tensor(rng.uniform(-1, 1, (150, 3)))
    K1 = intrinsics_matrix(100.0, 100.0, 63.5, 63.5)
    K2 = intrinsics_matrix(120.0, 118.0, 60.0, 65.0)
    w2c_1 = torch.eye(4, dtype=torch.float64)
    w2c_1[2, 3] = 4.0
    w2c_2 = torch.eye(4, dtype=torch.float64)
    w2c_2[:3, :3] = axis_angle_to_matrix(torch.tensor([0.1, 0.5, 0.05], dtype=torch.float64))
    w2c_2[:3, 3] = torch.tensor([-1.0, 0.2, 4.2], dtype=torch.float64)
    p1 = project_points(K1, w2c_1, points)[:, :2].numpy()
    p2 = project_points(K2, w2c_2, points)[:, :2].numpy()
    return p1, p2, relative_w2c(w2c_1, w2c_2), (K1, K2)


def test_a_failing_estimator_is_retried_with_the_next(monkeypatch):
    p1, p2, true, (K1, K2) = _known_pair()
    real = cv2.findEssentialMat

    def magsac_asserts(*args, method, **kwargs):
        if method == cv2.USAC_MAGSAC:
            raise cv2.error("(-215:Assertion failed) in function 'solvePoly'")
        return real(*args, method=method, **kwargs)

    monkeypatch.setattr(cv2, "findEssentialMat", magsac_asserts)
    pred = SiftEssentialPose().pose_from_matches(p1, p2, K1, K2)
    assert not pred.failed and pred.info["estimator"] == "USAC_DEFAULT"
    (reason,) = pred.info["failed_estimators"]
    assert reason == "USAC_MAGSAC: OpenCV could not solve the essential matrix: " + str(
        cv2.error("(-215:Assertion failed) in function 'solvePoly'")
    )
    assert float(rotation_error_deg(pred.w2c_rel[:3, :3], true[:3, :3])) < 0.05
    # without a fallback the same assertion is the pair's failure, with its reason
    alone = SiftEssentialPose(estimators=("USAC_MAGSAC",)).pose_from_matches(p1, p2, K1, K2)
    assert alone.failed and alone.info["failure"].startswith("USAC_MAGSAC: OpenCV could not solve")


def test_estimator_choice_and_opencv_version_are_in_the_config():
    config = SiftEssentialPose().config()
    assert config["estimator"] == "USAC_MAGSAC" and config["refine"].startswith("Levenberg-Marquardt")
    assert config["fallback_estimators"] == ["USAC_DEFAULT", "RANSAC"]
    assert config["opencv"] == cv2.__version__
    with pytest.raises(ValueError, match="estimators"):
        SiftEssentialPose(estimators=("MAGIC",))


def test_lego_val_easy_pairs_are_solved():
    """Lego val, 60 pairs with a 10-30 degree baseline at 200 px, pair seed 0 (about 5 s on one thread)."""
    if not (LEGO / "transforms_val.json").is_file():
        pytest.skip(f"NeRF-synthetic lego not found at {LEGO}")
    config = PairConfig(min_baseline_deg=10.0, max_baseline_deg=30.0)
    evalset = build_evalset(LEGO, num_pairs=60, seed=0, split="val", resolution=200, pair_config=config)
    sift = SiftEssentialPose(seed=0)
    rows = evaluate_pose(evalset, sift)
    summary = summarize_pose(rows, sift)
    # measured with OpenCV 5.1.0: 58 of 60 solved, median 2.63 deg, RRA@5 0.63, RRA@15 0.73
    assert summary["num_pairs"] == 60
    assert summary["num_failed"] <= 3
    assert summary["median_rot_err_deg"] < 3.5
    assert summary["rra5"] >= 0.55 and summary["rra15"] >= 0.65
    for r in rows:  # failures only where the matches are too few, each with its reason
        if r["failed"]:
            assert r["info"]["num_matches"] < 30 and "inliers <" in r["info"]["failure"]
        else:
            assert r["info"]["num_inliers"] >= 8
