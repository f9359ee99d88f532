"""Score view predictors on the pairs of an EvalSet: PSNR, SSIM, LPIPS per pair, then a summary.

Every method is given the TRUE target camera (``K_tgt`` and ``w2c_rel``), so this measures view
synthesis alone. A method that returns None for a pair is scored on a uniform grey image
(``gst.eval.predictors.failed_view``) and flagged; nothing is skipped.

Glossary: N pairs, G pairs kept for the figure grid, H/W pixels.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from gst.eval.data import EvalSet
from gst.eval.lpips_metric import LpipsStatus
from gst.eval.metrics import finite_mean, psnr, ssim
from gst.eval.predictors import ViewPredictor, failed_view


def evaluate_views(
    evalset: EvalSet,
    predictor: ViewPredictor,
    lpips: LpipsStatus,
    keep_images: int = 0,
) -> tuple[list[dict], list[torch.Tensor]]:
    """Rows per pair, and the first ``keep_images`` predictions (3, H, W) for the report grid."""
    rows, kept = [], []
    for k, pair in enumerate(evalset.pairs):
        s = pair.scene_index
        target = evalset.image(s, pair.tgt)
        hw = tuple(target.shape[-2:])
        start = time.perf_counter()
        pred = predictor.predict_view(
            evalset.image(s, pair.obs),
            evalset.K(s, pair.obs),
            evalset.K(s, pair.tgt),
            evalset.w2c_rel(pair),
            target_hw=hw,
            target=target if predictor.uses_target_image else None,
            pair=pair,
        )
        seconds = time.perf_counter() - start
        failed = pred is None
        if failed:
            pred = failed_view(hw)
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(
                f"{predictor.name}: predicted view {tuple(pred.shape)} for pair {pair.key}, expected "
                f"{tuple(target.shape)}"
            )
        pred = pred.float().clamp(0.0, 1.0)
        row = {
            "scene": pair.scene,
            "obs": pair.obs,
            "tgt": pair.tgt,
            "baseline_angle_deg": pair.baseline_angle_deg,
            "failed": failed,
            "psnr": float(psnr(pred[None], target[None])[0]),
            "ssim": float(ssim(pred[None], target[None])[0]),
            "lpips": float(lpips.scorer(pred[None], target[None])[0]) if lpips.available else None,
            "seconds": seconds,
        }
        rows.append(row)
        if k < keep_images:
            kept.append(pred)
    return rows, kept


def summarize_views(rows: list[dict], predictor: ViewPredictor, lpips: LpipsStatus) -> dict:
    out = {"num_pairs": len(rows), "num_failed": int(sum(r["failed"] for r in rows))}
    for name in ("psnr", "ssim"):
        stats = finite_mean([r[name] for r in rows])
        out[name] = stats["mean"]
        out[f"{name}_median"] = stats["median"]
        if stats["num_nonfinite"]:  # PSNR of an exact copy is inf; say how often rather than hide it
            out[f"{name}_num_nonfinite"] = stats["num_nonfinite"]
            out[f"{name}_mean_finite"] = stats["mean_finite"]
    out["lpips"] = float(np.mean([r["lpips"] for r in rows])) if lpips.available else lpips.description
    out["uses_target_image"] = bool(predictor.uses_target_image)
    out["seconds_per_pair"] = float(np.mean([r["seconds"] for r in rows]))
    return out
