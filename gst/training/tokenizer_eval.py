"""Evaluation of the tokenizers: pure functions that return JSON-able dicts of measured figures.

Image: PSNR and SSIM of decode(encode(x)) against x in [0, 1] (torchmetrics, data range 1.0, mean over
images), beside a bilinear baseline that shrinks each image to the token grid's resolution
(antialiased) and enlarges it back; codebook usage = distinct codes seen / K over all evaluated
tokens; perplexity = exp(entropy) of the code histogram (K when codes are uniform).

Camera: the round trip codes -> rays -> ``cameras_from_rays`` against the true relative camera:
rotation error, translation direction error, camera centre error (world units) and relative focal
error, each as median and 95th percentile, plus usage and perplexity of the codes.

Glossary: N images or pairs, B batch, K codes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from gst.geometry import (
    camera_center_error,
    focal_error,
    rotation_error_deg,
    translation_direction_error_deg,
)

METRIC_IMPLEMENTATIONS = {
    "psnr": "torchmetrics.functional.image.peak_signal_noise_ratio(data_range=1.0), per image, mean",
    "ssim": "torchmetrics.functional.image.structural_similarity_index_measure(data_range=1.0), per image, "
    "mean",
    "baseline": "F.interpolate bilinear antialias down to the token grid, bilinear up (align_corners=False)",
}


def code_statistics(codes: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Usage fraction and perplexity of a bag of codes. Shapes: codes any int shape."""
    counts = torch.bincount(codes.flatten().long().cpu(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "codebook_usage": float((counts > 0).sum()) / num_codes,
        "perplexity": float(entropy.exp()),
        "num_codes": num_codes,
        "num_tokens": int(counts.sum()),
    }


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def bilinear_baseline(images01: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Down to the token grid and back up. Shapes: (B, 3, H, W) -> same. Range: [0, 1]."""
    small = F.interpolate(images01, size=grid_hw, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(small, size=images01.shape[-2:], mode="bilinear", align_corners=False)
    return up.clamp(0.0, 1.0)


def _psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    pred, target = pred.double(), target.double()
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    return psnr, ssim


@torch.no_grad()
def evaluate_image_tokenizer(model, images: torch.Tensor, batch_size: int = 64) -> dict[str, float]:
    """Reconstruction and codebook figures of an ``ImageTokenizer`` on ``images``.

    Shapes: images (N, 3, H, W), uint8 in [0, 255] or float in [0, 1].
    """
    device = next(model.parameters()).device
    psnr, ssim, base_psnr, base_ssim, codes = [], [], [], [], []
    for sl in _batches(images.shape[0], batch_size):
        x = images[sl].to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()  # (B, 3, H, W) in [0, 1]
        c = model.encode(x * 2.0 - 1.0)  # (B, h, w)
        rec = ((model.decode(c) + 1.0) * 0.5).clamp(0.0, 1.0)
        p, s = _psnr_ssim(rec.cpu(), x.cpu())
        bp, bs = _psnr_ssim(bilinear_baseline(x, model.grid_hw).cpu(), x.cpu())
        psnr.append(p), ssim.append(s), base_psnr.append(bp), base_ssim.append(bs), codes.append(c.cpu())
    stats = code_statistics(torch.cat(codes), model.num_codes)
    return {
        "psnr": float(torch.cat(psnr).mean()),
        "ssim": float(torch.cat(ssim).mean()),
        "baseline_bilinear_psnr": float(torch.cat(base_psnr).mean()),
        "baseline_bilinear_ssim": float(torch.cat(base_ssim).mean()),
        **stats,
        "num_images": int(images.shape[0]),
        "image_hw": list(model.config.image_hw),
        "grid_hw": list(model.grid_hw),
    }


def _median_p95(x: torch.Tensor) -> tuple[float, float]:
    x = x.double().flatten()
    return float(x.median()), float(torch.quantile(x, 0.95))


@torch.no_grad()
def evaluate_camera_tokenizer(
    model, K: torch.Tensor, w2c_rel: torch.Tensor, batch_size: int = 1024
) -> dict[str, float]:
    """Round-trip figures of a ``CameraTokenizer`` on relative cameras in world units.

    Shapes: K (N, 3, 3) target intrinsics at the model's image_hw; w2c_rel (N, 4, 4) target w2c in the
    observed camera's frame (``gst.geometry.relative_w2c``), not normalised.
    """
    from gst.geometry import normalize_relative_pose

    device = next(model.parameters()).device
    scale = model.config.pose_scale
    K_hat, w2c_hat, codes = [], [], []
    for sl in _batches(K.shape[0], batch_size):
        w2c_norm = normalize_relative_pose(w2c_rel[sl].double(), scale).to(device)
        rays = model.rays_from_cameras(K[sl].double().to(device), w2c_norm)  # (B, 6, Hr, Wr)
        c = model.encode(rays)
        Kp, wp = model.decode_cameras(c)  # via rays -> cameras_from_rays
        K_hat.append(Kp.cpu()), w2c_hat.append(wp.cpu()), codes.append(c.cpu())
    K_hat, w2c_hat = torch.cat(K_hat), torch.cat(w2c_hat)
    K, w2c_rel = K.double(), w2c_rel.double()
    rot = rotation_error_deg(w2c_hat[:, :3, :3], w2c_rel[:, :3, :3])
    tdir = translation_direction_error_deg(w2c_hat[:, :3, 3], w2c_rel[:, :3, 3])
    centre = camera_center_error(w2c_hat, w2c_rel)
    focal = focal_error(K_hat, K) * 100.0
    out: dict[str, float] = {}
    for name, values in (
        ("rotation_error_deg", rot),
        ("translation_direction_error_deg", tdir),
        ("center_error", centre),
        ("focal_error_pct", focal),
    ):
        out[f"{name}_median"], out[f"{name}_p95"] = _median_p95(values)
    pp = (K_hat[:, :2, 2] - K[:, :2, 2]).abs().max(dim=-1).values  # (N,) pixels
    out["principal_point_error_px_median"], out["principal_point_error_px_p95"] = _median_p95(pp)
    out.update(code_statistics(torch.cat(codes), model.num_codes))
    out["num_pairs"] = int(K.shape[0])
    out["center_error_unit"] = f"world units (pose_scale = {scale:g})"
    return out


def is_finite_report(report: dict) -> bool:
    return all(not isinstance(v, float) or math.isfinite(v) for v in report.values())
