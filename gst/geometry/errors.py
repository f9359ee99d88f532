"""Camera pose and intrinsics errors: pure functions, batched over leading dimensions.

All angles are returned in degrees. Angles use atan2(sin, cos) rather than acos, which keeps small
errors accurate in float32 (acos near 1 loses half the significant digits).
"""

from __future__ import annotations

import torch

from gst.geometry.conventions import camera_centers


def rotation_error_deg(R_pred: torch.Tensor, R_true: torch.Tensor) -> torch.Tensor:
    """Geodesic angle of R_pred^T R_true, i.e. the rotation that takes one to the other.

    Shapes: (..., 3, 3), (..., 3, 3) -> (...,).
    Range: [0, 180] degrees.
    """
    D = R_pred.transpose(-1, -2) @ R_true  # (..., 3, 3)
    cos = (D.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    # The skew part of D is sin(angle) * [axis]_x.
    skew = torch.stack(
        [D[..., 2, 1] - D[..., 1, 2], D[..., 0, 2] - D[..., 2, 0], D[..., 1, 0] - D[..., 0, 1]], dim=-1
    )  # (..., 3)
    sin = torch.linalg.vector_norm(skew, dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))


def translation_direction_error_deg(
    t_pred: torch.Tensor, t_true: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    """Angle between two translation vectors, ignoring their lengths (scale-free).

    Zero vectors have no direction: if both norms are <= eps the error is 0 (both say "no motion");
    if exactly one is, the error is 90 degrees, the expected angle to a uniformly random direction, so
    a degenerate prediction is neither rewarded nor infinitely penalised.

    Shapes: (..., 3), (..., 3) -> (...,).
    Range: [0, 180] degrees.
    """
    cross = torch.linalg.vector_norm(torch.linalg.cross(t_pred, t_true, dim=-1), dim=-1)
    dot = (t_pred * t_true).sum(-1)
    angle = torch.rad2deg(torch.atan2(cross, dot))
    zero_pred = torch.linalg.vector_norm(t_pred, dim=-1) <= eps
    zero_true = torch.linalg.vector_norm(t_true, dim=-1) <= eps
    angle = torch.where(zero_pred ^ zero_true, torch.full_like(angle, 90.0), angle)
    return torch.where(zero_pred & zero_true, torch.zeros_like(angle), angle)


def camera_center_error(w2c_pred: torch.Tensor, w2c_true: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between camera centres c = -R^T t, in world units.

    Shapes: (..., 4, 4), (..., 4, 4) -> (...,).
    Range: [0, inf).
    """
    return torch.linalg.vector_norm(camera_centers(w2c_pred) - camera_centers(w2c_true), dim=-1)


def focal_error(K_pred: torch.Tensor, K_true: torch.Tensor) -> torch.Tensor:
    """Relative focal error, mean over fx and fy of |f_pred - f_true| / f_true.

    Shapes: (..., 3, 3), (..., 3, 3) -> (...,).
    Range: [0, inf); 0.01 means 1 %.
    """
    f_pred = torch.stack([K_pred[..., 0, 0], K_pred[..., 1, 1]], -1)
    f_true = torch.stack([K_true[..., 0, 0], K_true[..., 1, 1]], -1)
    return ((f_pred - f_true).abs() / f_true).mean(-1)
