"""Score pose predictors on the pairs of an EvalSet: per-pair errors, then one summary per method.

Per pair, with the observed camera as the identity (``relative_w2c``) and (R, t) the rotation and
translation of ``w2c_rel`` (x_tgt = R x_obs + t):

- ``rot_err_deg``: geodesic angle between predicted and true R (``gst.geometry.rotation_error_deg``).
- ``trans_err_deg``: angle between predicted and true t, signed (a reversed direction is 180 degrees
  off); VGGT's CO3D evaluation compares the same vector (and also reports a sign-folded variant,
  see ``gst.eval.metrics.pose_summary``).
- ``centre_err``: distance between predicted and true target camera centres in the observed camera's
  frame, divided by the true baseline length ``|c_true|``: unitless, so scenes of any size compare.
  For methods whose translation has no scale (``scale_known = False``, e.g. SIFT + essential matrix)
  the predicted centre is first rescaled to the TRUE baseline length, so their centre error measures
  direction only (2 sin(angle / 2)) and is optimistic by construction. ``centre_err_world`` is the
  same distance in world units (metres in the procedural world), for scale-known methods.
- ``focal_err``: mean over fx, fy of |f_pred - f_true| / f_true (``gst.geometry.focal_error``);
  ``None`` when a method predicts no K, and marked "given" for methods that receive the true K.

A failed prediction gets 180 degrees for both angles and inf for the distances and the focal error.

Glossary: N pairs.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from gst.eval.data import EvalSet
from gst.eval.metrics import FAILED_ANGLE_DEG, pose_summary
from gst.eval.predictors import PosePrediction, PosePredictor
from gst.geometry.conventions import camera_centers
from gst.geometry.errors import (
    camera_center_error,
    focal_error,
    rotation_error_deg,
    translation_direction_error_deg,
)

POSE_METRIC_IMPLEMENTATIONS = {
    "rot_err_deg": "gst.geometry.errors.rotation_error_deg (geodesic, atan2)",
    "trans_err_deg": "gst.geometry.errors.translation_direction_error_deg on t of w2c_rel (signed)",
    "centre_err": "gst.geometry.errors.camera_center_error in the observed frame / true baseline length; "
    "scale-free methods rescaled to the true baseline length first",
    "focal_err": "gst.geometry.errors.focal_error (mean relative error of fx, fy)",
    "rra_rta_auc": "gst.eval.metrics (VGGT CO3D definitions: strict <, AUC over integer thresholds 1..30)",
}


def pose_errors(
    pred: PosePrediction,
    w2c_rel_true: torch.Tensor,
    K_tgt_true: torch.Tensor,
    scale_known: bool,
) -> dict:
    """Errors of one prediction (see the module docstring). Shapes: w2c (4, 4), K (3, 3)."""
    if pred.failed:
        return {
            "rot_err_deg": FAILED_ANGLE_DEG,
            "trans_err_deg": FAILED_ANGLE_DEG,
            "centre_err": math.inf,
            "centre_err_world": math.inf,
            "focal_err": math.inf,
        }
    w2c_pred = pred.w2c_rel.double()
    w2c_true = w2c_rel_true.double()
    rot = float(rotation_error_deg(w2c_pred[:3, :3], w2c_true[:3, :3]))
    trans = float(translation_direction_error_deg(w2c_pred[:3, 3], w2c_true[:3, 3]))
    baseline = float(torch.linalg.vector_norm(camera_centers(w2c_true)))
    if not scale_known:
        w2c_pred = rescale_to_baseline(w2c_pred, baseline)
    centre_world = float(camera_center_error(w2c_pred, w2c_true))
    focal = None if pred.K_tgt is None else float(focal_error(pred.K_tgt.double(), K_tgt_true.double()))
    return {
        "rot_err_deg": rot,
        "trans_err_deg": trans,
        "centre_err": centre_world / max(baseline, 1e-12),
        "centre_err_world": centre_world if scale_known else None,
        "focal_err": focal,
    }


def rescale_to_baseline(w2c_rel: torch.Tensor, baseline: float) -> torch.Tensor:
    """Scale the translation so the target centre lies ``baseline`` from the observed one."""
    out = w2c_rel.clone()
    norm = float(torch.linalg.vector_norm(out[:3, 3]))  # |t| = |c| for a rigid transform
    if norm > 1e-12:
        out[:3, 3] *= baseline / norm
    return out


def evaluate_pose(evalset: EvalSet, predictor: PosePredictor) -> list[dict]:
    """One row per pair: the pair key, errors, failure flag, prediction and method diagnostics."""
    rows = []
    for pair in evalset.pairs:
        s = pair.scene_index
        K_obs, K_tgt = evalset.K(s, pair.obs), evalset.K(s, pair.tgt)
        start = time.perf_counter()
        pred = predictor.predict_pose(
            evalset.image(s, pair.obs),
            evalset.image(s, pair.tgt),
            K_obs,
            K_tgt=K_tgt if predictor.uses_target_intrinsics else None,
            pair=pair,
        )
        seconds = time.perf_counter() - start
        row = {
            "scene": pair.scene,
            "obs": pair.obs,
            "tgt": pair.tgt,
            "baseline_angle_deg": pair.baseline_angle_deg,
            "failed": bool(pred.failed),
            **pose_errors(pred, evalset.w2c_rel(pair), K_tgt, predictor.scale_known),
            "w2c_rel_pred": pred.w2c_rel.tolist(),
            "K_tgt_pred": None if pred.K_tgt is None else pred.K_tgt.tolist(),
            "seconds": seconds,
            "info": pred.info,
        }
        rows.append(row)
    return rows


def summarize_pose(rows: list[dict], predictor: PosePredictor) -> dict:
    """RRA/RTA/AUC (``pose_summary``) plus centre and focal error statistics for one method."""
    out = pose_summary(
        [r["rot_err_deg"] for r in rows], [r["trans_err_deg"] for r in rows], [r["failed"] for r in rows]
    )
    centre = np.asarray([r["centre_err"] for r in rows], dtype=np.float64)
    out["median_centre_err"] = float(np.median(centre))
    out["mean_centre_err"] = float(np.mean(centre))  # inf as soon as one pair failed: failures count
    world = [r["centre_err_world"] for r in rows]
    out["median_centre_err_world"] = None if None in world else float(np.median(world))
    focal = [r["focal_err"] for r in rows]
    if predictor.uses_target_intrinsics:
        out["focal_err"] = "given (true K supplied to the method)"
    elif None in focal:
        out["focal_err"] = f"not predicted for {sum(f is None for f in focal)} pair(s)"
    else:
        out["median_focal_err"] = float(np.median(focal))
    out["scale_known"] = bool(predictor.scale_known)
    out["seconds_per_pair"] = float(np.mean([r["seconds"] for r in rows]))
    out["by_baseline"] = by_baseline(rows)
    return out


BASELINE_BINS_DEG = (0.0, 30.0, 60.0, 90.0, 180.0)  # harder as the camera moves further around


def by_baseline(rows: list[dict], edges: tuple[float, ...] = BASELINE_BINS_DEG) -> dict[str, dict]:
    """RRA@15, RTA@15, AUC@30 and failures per baseline-angle bin [lo, hi) (empty bins left out)."""
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = [r for r in rows if lo <= r["baseline_angle_deg"] < hi]
        if not sel:
            continue
        s = pose_summary(
            [r["rot_err_deg"] for r in sel], [r["trans_err_deg"] for r in sel], [r["failed"] for r in sel]
        )
        out[f"{lo:g}-{hi:g}"] = {k: s[k] for k in ("num_pairs", "num_failed", "rra15", "rta15", "auc30")}
    return out
