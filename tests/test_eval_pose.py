"""Pose evaluation: error definitions, the essential-matrix baseline, the prior, prediction files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.data.pairs import PairConfig, sample_pairs
from gst.data.scene import Scene
from gst.eval.baselines import PriorPose, SiftEssentialPose
from gst.eval.data import EvalSet, resized_hw
from gst.eval.pose_eval import evaluate_pose, pose_errors, summarize_pose
from gst.eval.predictors import FilePosePredictor, PosePrediction, write_pose_predictions
from gst.geometry.conventions import intrinsics_matrix, project_points, relative_w2c
from gst.geometry.errors import rotation_error_deg, translation_direction_error_deg
from gst.geometry.rotations import axis_angle_to_matrix


def look_at_w2c(centre: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    f = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(f, x), f])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return torch.from_numpy(w2c)


def ring_scene_on_disk(root: Path, name: str, num_views: int = 8, hw=(24, 32)) -> Scene:
    """A ring of cameras around the origin with random-noise images written as PNG."""
    (root / name).mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    az = np.arange(num_views) * 2 * math.pi / num_views
    w2c = torch.stack(
        [look_at_w2c(np.array([3 * math.cos(a), 3 * math.sin(a), 1.0]), np.zeros(3)) for a in az]
    )
    paths = []
    for i in range(num_views):
        p = root / name / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    K = intrinsics_matrix(40.0, 40.0, (hw[1] - 1) / 2, (hw[0] - 1) / 2).expand(num_views, 3, 3).clone()
    return Scene(root=root / name, name=name, image_paths=tuple(paths), K=K, w2c=w2c, image_hw=hw)


def _pose(axis_angle, t) -> torch.Tensor:
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = axis_angle_to_matrix(torch.tensor(axis_angle, dtype=torch.float64))
    w2c[:3, 3] = torch.tensor(t, dtype=torch.float64)
    return w2c


def test_essential_matrix_recovers_a_known_relative_pose():
    rng = np.random.default_rng(0)
    points = torch.tensor(rng.uniform(-1, 1, (150, 3)))
    K1 = intrinsics_matrix(100.0, 100.0, 63.5, 63.5)
    K2 = intrinsics_matrix(120.0, 118.0, 60.0, 65.0)  # a different camera: each is normalised by its own K
    w2c_1, w2c_2 = _pose([0, 0, 0], [0, 0, 4.0]), _pose([0.1, 0.5, 0.05], [-1.0, 0.2, 4.2])
    p1 = project_points(K1, w2c_1, points)[:, :2].numpy()
    p2 = project_points(K2, w2c_2, points)[:, :2].numpy()
    p2[:15] = rng.uniform(0, 128, (15, 2))  # 10 % outliers for RANSAC to reject
    pred = SiftEssentialPose().pose_from_matches(p1, p2, K1, K2)
    true = relative_w2c(w2c_1, w2c_2)
    assert not pred.failed and pred.info["num_inliers"] >= 130
    assert float(rotation_error_deg(pred.w2c_rel[:3, :3], true[:3, :3])) < 0.05
    assert float(translation_direction_error_deg(pred.w2c_rel[:3, 3], true[:3, 3])) < 0.1
    assert float(pred.w2c_rel[:3, 3].norm()) == pytest.approx(1.0)


def test_essential_matrix_failure_is_a_failure():
    K = intrinsics_matrix(100.0, 100.0, 63.5, 63.5)
    pred = SiftEssentialPose().pose_from_matches(np.zeros((3, 2)), np.zeros((3, 2)), K, K)
    assert pred.failed and "matches" in pred.info["failure"]
    errs = pose_errors(pred, _pose([0, 0.2, 0], [1.0, 0, 0]), K, scale_known=False)
    assert errs["rot_err_deg"] == 180.0 and errs["trans_err_deg"] == 180.0 and math.isinf(errs["centre_err"])
    # Matches with no motion at all: USAC finds no essential matrix and OpenCV's RANSAC five-point
    # solver asserts; a failure that names every estimator tried, with its reason.
    same = np.random.default_rng(0).uniform(0, 128, (40, 2))
    pred = SiftEssentialPose().pose_from_matches(same, same.copy(), K, K)
    assert pred.failed and pred.info["num_matches"] == 40
    reasons = pred.info["failure"].split("; ")
    assert reasons[:2] == ["USAC_MAGSAC: no essential matrix", "USAC_DEFAULT: no essential matrix"]
    assert reasons[2].startswith("RANSAC: OpenCV could not solve")


def test_pose_errors_hand_values():
    K = intrinsics_matrix(100.0, 100.0, 50.0, 50.0)
    true = _pose([0, 0, 0], [2.0, 0, 0])  # target centre at (-2, 0, 0) in the observed frame, baseline 2
    # rotation 10 deg about y; translation direction 90 deg off; metric scale (4 = twice the true length)
    pred = PosePrediction(
        w2c_rel=_pose([0, math.radians(10), 0], [0, 0, 4.0]), K_tgt=intrinsics_matrix(110.0, 90.0, 50.0, 50.0)
    )
    e = pose_errors(pred, true, K, scale_known=True)
    assert e["rot_err_deg"] == pytest.approx(10.0)
    assert e["trans_err_deg"] == pytest.approx(90.0)
    assert e["focal_err"] == pytest.approx(0.1)
    c_pred = -pred.w2c_rel[:3, :3].T @ pred.w2c_rel[:3, 3]
    expected_world = float((c_pred - torch.tensor([-2.0, 0, 0], dtype=torch.float64)).norm())
    assert e["centre_err_world"] == pytest.approx(expected_world)
    assert e["centre_err"] == pytest.approx(expected_world / 2.0)
    # scale-free: same direction error, centre rescaled to the true baseline -> 2 sin(angle / 2)
    free = PosePrediction(w2c_rel=_pose([0, 0, 0], [0, 0, 0.01]), K_tgt=None)
    e = pose_errors(free, true, K, scale_known=False)
    assert e["centre_err"] == pytest.approx(2 * math.sin(math.radians(90) / 2))
    assert e["centre_err_world"] is None and e["focal_err"] is None


def _evalset(tmp_path: Path, num_pairs: int = 10) -> EvalSet:
    scenes = [ring_scene_on_disk(tmp_path, "s0"), ring_scene_on_disk(tmp_path, "s1", num_views=6)]
    pairs = sample_pairs(
        scenes, num_pairs, seed=0, config=PairConfig(min_baseline_deg=20, max_baseline_deg=100)
    )
    return EvalSet(scenes=scenes, pairs=pairs)


def test_prediction_file_round_trip_scores_an_oracle_perfectly(tmp_path):
    evalset = _evalset(tmp_path)
    truth = [
        PosePrediction(w2c_rel=evalset.w2c_rel(p), K_tgt=evalset.K(p.scene_index, p.tgt))
        for p in evalset.pairs
    ]
    # the file covers all pairs but the last: that one must be scored as a failure, not skipped
    write_pose_predictions(tmp_path / "oracle.json", "oracle", True, evalset.pairs[:-1], truth[:-1])
    predictor = FilePosePredictor(tmp_path / "oracle.json")
    rows = evaluate_pose(evalset, predictor)
    summary = summarize_pose(rows, predictor)
    assert summary["num_pairs"] == 10 and summary["num_failed"] == 1 and rows[-1]["failed"]
    assert all(
        r["rot_err_deg"] < 1e-6 and r["trans_err_deg"] < 1e-5 and r["centre_err"] < 1e-9 for r in rows[:-1]
    )
    assert summary["rra5"] == pytest.approx(0.9) and summary["auc30"] == pytest.approx(0.9)
    assert summary["median_focal_err"] == pytest.approx(0.0)
    bins = summary["by_baseline"]
    assert sum(b["num_pairs"] for b in bins.values()) == 10
    assert sum(b["num_failed"] for b in bins.values()) == 1


def test_prediction_file_npz_and_malformed(tmp_path):
    evalset = _evalset(tmp_path, num_pairs=4)
    p = evalset.pairs
    np.savez(
        tmp_path / "pred.npz",
        scene=np.array([x.scene for x in p]),
        obs=np.array([x.obs for x in p]),
        tgt=np.array([x.tgt for x in p]),
        w2c_rel=np.stack([evalset.w2c_rel(x).numpy() for x in p]),
        method=np.array("npz_oracle"),
        scale_known=np.array(False),
    )
    predictor = FilePosePredictor(tmp_path / "pred.npz")
    assert predictor.name == "npz_oracle" and not predictor.scale_known
    rows = evaluate_pose(evalset, predictor)
    assert all(r["rot_err_deg"] < 1e-6 and r["focal_err"] is None for r in rows)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "gst.pose_predictions.v1", "predictions": [{}]}))
    with pytest.raises(ValueError, match="prediction 0 is malformed"):
        FilePosePredictor(tmp_path / "bad.json")


def test_prior_draws_training_poses_deterministically_without_the_target(tmp_path):
    evalset = _evalset(tmp_path)
    train = [ring_scene_on_disk(tmp_path / "train", "t0", num_views=12)]
    prior = PriorPose.from_scenes(
        train, 50, seed=1, config=PairConfig(min_baseline_deg=20, max_baseline_deg=100)
    )
    rows = evaluate_pose(evalset, prior)
    again = evaluate_pose(evalset, PriorPose(prior.w2c_rel, prior.focal_ratio, seed=1))
    assert [r["w2c_rel_pred"] for r in rows] == [r["w2c_rel_pred"] for r in again]
    train_poses = {tuple(np.round(w.numpy().ravel(), 9)) for w in prior.w2c_rel}
    assert all(tuple(np.round(np.asarray(r["w2c_rel_pred"]).ravel(), 9)) in train_poses for r in rows)
    assert len({r["info"]["training_pair"] for r in rows}) > 1


def test_mean_pose_is_the_rotation_mean_of_the_training_pairs():
    from gst.eval.baselines import MeanPose
    from gst.geometry import rotation_error_deg

    def yaw(deg: float, t: tuple[float, float, float]) -> torch.Tensor:
        a = math.radians(deg)
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[0, 0], w2c[0, 2], w2c[2, 0], w2c[2, 2] = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        w2c[:3, 3] = torch.tensor(t, dtype=torch.float64)
        return w2c

    # Turns of -40 and +40 degrees about one axis average to no turn; +10 and +30 to +20.
    mean = MeanPose(torch.stack([yaw(-40, (1, 0, 0)), yaw(40, (-1, 0, 2))]), torch.tensor([1.0, 1.2]))
    assert float(rotation_error_deg(mean.w2c_rel[:3, :3], torch.eye(3, dtype=torch.float64))) < 1e-9
    torch.testing.assert_close(mean.w2c_rel[:3, 3], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    mean = MeanPose(torch.stack([yaw(10, (0, 0, 0)), yaw(30, (0, 0, 0))]), torch.tensor([1.0, 1.0]))
    assert float(rotation_error_deg(mean.w2c_rel[:3, :3], yaw(20, (0, 0, 0))[:3, :3])) < 1e-9
    K_obs = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]])
    pred = mean.predict_pose(torch.zeros(3, 8, 8), torch.ones(3, 8, 8), K_obs)
    assert float(pred.K_tgt[0, 0]) == pytest.approx(50.0) and mean.config()["num_training_pairs"] == 2


def test_evalset_resizes_images_and_intrinsics_together(tmp_path):
    scene = ring_scene_on_disk(tmp_path, "big", num_views=4, hw=(60, 80))
    evalset = EvalSet(scenes=[scene], pairs=[], resolution=20)
    assert evalset.image(0, 1).shape == (3, 15, 20) and resized_hw((600, 800), 200) == (150, 200)
    K = evalset.K(0, 1)  # the exact image centre (39.5, 29.5) of 80 x 60 maps to that of 20 x 15
    assert float(K[0, 0]) == pytest.approx(10.0) and float(K[0, 2]) == pytest.approx(9.5)
    assert float(K[1, 2]) == pytest.approx(7.0)
