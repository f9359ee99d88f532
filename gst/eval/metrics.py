"""Metrics: pure functions with explicit data ranges. Images are compared in [0, 1].

Pose accuracy follows VGGT's CO3D evaluation (facebookresearch/vggt, evaluation/test_co3d.py):
RRA@t / RTA@t are the fractions of pairs whose rotation / translation-direction error is strictly below
t degrees; AUC@T takes per pair the larger of the two errors and averages, over the integer thresholds
t = 1..T, the fraction of pairs below t (numpy.histogram with bins 0, 1, ..., T, whose last bin is
closed, so an error of exactly T counts at t = T). A failed prediction carries an error of 180 degrees,
so it is counted as wrong at every threshold, never dropped.

Glossary: B batch of images, N pairs, H/W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchmetrics
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

DATA_RANGE = 1.0  # images enter every image metric in [0, 1]
FAILED_ANGLE_DEG = 180.0  # the error assigned to a failed pose prediction: wrong at every threshold
ACCURACY_THRESHOLDS_DEG = (5.0, 15.0, 30.0)
AUC_MAX_THRESHOLD_DEG = 30

SSIM_KERNEL = {"gaussian_kernel": True, "sigma": 1.5, "kernel_size": 11, "k1": 0.01, "k2": 0.03}

IMAGE_METRIC_IMPLEMENTATIONS = {
    "psnr": f"torchmetrics.functional.image.peak_signal_noise_ratio(data_range={DATA_RANGE}), per image "
    f"over (C, H, W); torchmetrics {torchmetrics.__version__}",
    "ssim": f"torchmetrics.functional.image.structural_similarity_index_measure(data_range={DATA_RANGE}, "
    f"gaussian 11x11 sigma 1.5, k1 0.01, k2 0.03), per image; torchmetrics {torchmetrics.__version__}",
}


def _check_images(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(
            f"images must both be (B, C, H, W) of one shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(1 / MSE) with data range 1.

    Shapes: (B, C, H, W), (B, C, H, W) -> (B,). Range: inputs [0, 1]; output dB, inf when identical.
    """
    _check_images(pred, target)
    return peak_signal_noise_ratio(
        pred.float(),
        target.float(),
        data_range=DATA_RANGE,
        reduction="none",
        dim=(1, 2, 3),
    )


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (gaussian window, see SSIM_KERNEL).

    Shapes: (B, C, H, W), (B, C, H, W) -> (B,). Range: inputs [0, 1]; output [-1, 1], 1 when identical.
    """
    _check_images(pred, target)
    return structural_similarity_index_measure(
        pred.float(),
        target.float(),
        data_range=DATA_RANGE,
        reduction="none",
        **SSIM_KERNEL,
    )


def _errors(errors: Sequence[float] | np.ndarray) -> np.ndarray:
    """Errors as float64 with NaN and inf (a failure) mapped to FAILED_ANGLE_DEG."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    return np.where(np.isfinite(e), e, FAILED_ANGLE_DEG)


def accuracy_at(errors: Sequence[float] | np.ndarray, threshold_deg: float) -> float:
    """Fraction of errors strictly below ``threshold_deg`` (RRA / RTA). Range: [0, 1]."""
    e = _errors(errors)
    if len(e) == 0:
        raise ValueError("accuracy of zero pairs is undefined")
    return float(np.mean(e < threshold_deg))


def auc(
    rot_err_deg: Sequence[float] | np.ndarray,
    trans_err_deg: Sequence[float] | np.ndarray,
    max_threshold_deg: int = AUC_MAX_THRESHOLD_DEG,
) -> float:
    """Area under the accuracy curve of max(rotation, translation-direction) error, thresholds 1..T.

    Equals VGGT's ``calculate_auc_np``: mean over t = 1..T of the cumulative histogram with integer
    bins. Range: [0, 1].
    """
    r, t = _errors(rot_err_deg), _errors(trans_err_deg)
    if len(r) != len(t) or len(r) == 0:
        raise ValueError(
            f"AUC needs equally many (> 0) rotation and translation errors, got {len(r)}, {len(t)}"
        )
    worst = np.maximum(r, t)
    hist, _ = np.histogram(worst, bins=np.arange(max_threshold_deg + 1))
    return float(np.mean(np.cumsum(hist / len(worst))))


def fold_sign(trans_err_deg: Sequence[float] | np.ndarray) -> np.ndarray:
    """min(e, 180 - e): VGGT's translation error that ignores the sign of the direction."""
    e = _errors(trans_err_deg)
    return np.minimum(e, np.abs(FAILED_ANGLE_DEG - e))


def pose_summary(
    rot_err_deg: Sequence[float], trans_err_deg: Sequence[float], failed: Sequence[bool]
) -> dict:
    """RRA / RTA at 5, 15, 30 degrees, AUC@30, medians and the failure count for one method.

    AUC@30 uses the signed translation direction (a reversed baseline is 180 degrees wrong);
    ``auc30_sign_folded`` is the same with VGGT's sign-folded translation error, for comparison with
    numbers published that way.
    """
    r, t = _errors(rot_err_deg), _errors(trans_err_deg)
    out: dict = {"num_pairs": int(len(r)), "num_failed": int(np.sum(np.asarray(failed, dtype=bool)))}
    for thr in ACCURACY_THRESHOLDS_DEG:
        out[f"rra{int(thr)}"] = accuracy_at(r, thr)
        out[f"rta{int(thr)}"] = accuracy_at(t, thr)
    out["auc30"] = auc(r, t, AUC_MAX_THRESHOLD_DEG)
    out["auc30_sign_folded"] = auc(r, fold_sign(t), AUC_MAX_THRESHOLD_DEG)
    out["median_rot_err_deg"] = float(np.median(r))
    out["median_trans_err_deg"] = float(np.median(t))
    return out


def finite_mean(values: Sequence[float]) -> dict:
    """Mean and median of a metric plus how many values were non-finite (PSNR of identical images)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    return {
        "mean": float(np.mean(v)) if len(v) else float("nan"),
        "median": float(np.median(v)) if len(v) else float("nan"),
        "mean_finite": float(np.mean(finite)) if len(finite) else float("nan"),
        "num_nonfinite": int(len(v) - len(finite)),
    }
