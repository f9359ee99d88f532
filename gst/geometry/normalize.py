"""The one place where relative poses are scale-normalised for tokenizers.

Scheme (simple on purpose):

- A pair is expressed relative to the observed camera: ``w2c_rel = relative_w2c(w2c_obs, w2c_tgt)``
  (the observed camera is the identity).
- Its translation is divided by ONE fixed reference length ``scale`` (in world units): ``t / scale``.
  Rotation is untouched. Because ``m = c x d`` is linear in the centre, the ray moments of the
  normalised camera are the metric moments divided by ``scale`` too.
- ``scale`` is a config value of the camera tokenizer (e.g. 1.0 for the procedural world, which is in
  metres, or ``mean_pairwise_baseline`` of the training cameras for another dataset), chosen once per
  dataset and SAVED WITH EVERY CHECKPOINT; decoding multiplies by the same value. It is not estimated
  per pair, so metric scale survives tokenisation (a per-pair unit baseline would discard it).

Shapes: leading ``...`` batch dimensions are preserved.
"""

from __future__ import annotations

import math

import torch

from gst.geometry.conventions import camera_centers, relative_w2c
from gst.geometry.rays import plucker_rays


def _check_scale(scale: float) -> None:
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"pose scale must be a finite positive number (world units), got {scale!r}")


def scale_world(w2c: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Extrinsics after scaling the world by ``factor`` about its origin (x_world -> factor * x_world).

    Rotation is unchanged and the translation scales: x_cam' = R (f x) + f t = f x_cam.

    Shapes: (..., 4, 4) -> (..., 4, 4).
    """
    out = w2c.clone()
    out[..., :3, 3] = w2c[..., :3, 3] * torch.as_tensor(factor, dtype=w2c.dtype, device=w2c.device)
    return out


def normalize_relative_pose(w2c_rel: torch.Tensor, scale: float) -> torch.Tensor:
    """Divide the translation of a relative pose by the reference ``scale``; rotation is unchanged.

    Shapes: (..., 4, 4) -> (..., 4, 4).
    Range: translation in units of ``scale``.
    """
    _check_scale(scale)
    return scale_world(w2c_rel, 1.0 / scale)


def denormalize_relative_pose(w2c_rel_norm: torch.Tensor, scale: float) -> torch.Tensor:
    """Inverse of ``normalize_relative_pose``: multiply the translation back by ``scale``.

    Shapes: (..., 4, 4) -> (..., 4, 4).
    """
    _check_scale(scale)
    return scale_world(w2c_rel_norm, scale)


def normalized_relative_pose(w2c_obs: torch.Tensor, w2c_tgt: torch.Tensor, scale: float) -> torch.Tensor:
    """Target camera in the observed camera's frame, translation divided by ``scale``.

    Invariant to any global rigid transform of both cameras.

    Shapes: (..., 4, 4), (..., 4, 4) -> (..., 4, 4).
    """
    return normalize_relative_pose(relative_w2c(w2c_obs, w2c_tgt), scale)


def relative_plucker_rays(
    K_tgt: torch.Tensor, w2c_obs: torch.Tensor, w2c_tgt: torch.Tensor, image_hw: tuple[int, int], scale: float
) -> torch.Tensor:
    """Ray map of the target camera in the observed camera's frame, with the normalised translation.

    This is what a camera tokenizer encodes; ``cameras_from_rays`` followed by
    ``denormalize_relative_pose`` inverts it.

    Shapes: K_tgt (..., 3, 3), w2c_obs (..., 4, 4), w2c_tgt (..., 4, 4) -> (..., 6, H, W).
    Range: directions unit norm; moments in units of ``scale``.
    """
    return plucker_rays(K_tgt, normalized_relative_pose(w2c_obs, w2c_tgt, scale), image_hw)


def mean_pairwise_baseline(w2c: torch.Tensor) -> float:
    """Mean distance between the centres of all pairs of cameras: a data-driven choice of ``scale``.

    Shapes: (V, 4, 4) with V >= 2 -> float.
    """
    if w2c.ndim != 3 or w2c.shape[0] < 2:
        raise ValueError(
            f"need (V, 4, 4) extrinsics with V >= 2 to measure a baseline, got {tuple(w2c.shape)}"
        )
    c = camera_centers(w2c.to(torch.float64))  # (V, 3)
    dist = torch.cdist(c, c)  # (V, V)
    V = c.shape[0]
    return float(dist.sum() / (V * (V - 1)))
