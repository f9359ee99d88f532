"""The one camera convention of this project, and the only place foreign conventions are converted.

Convention (see docs/geometry.md, "Camera convention"):

- Camera frame: OpenCV, +x right, +y down, +z forward (looking along +z).
- Extrinsics: world-to-camera ``w2c = [R | t]`` as a (..., 4, 4) matrix, ``x_cam = R @ x_world + t``.
  The camera centre is ``c = -R^T t``. ``c2w`` is the inverse and appears only under that name.
- Intrinsics ``K`` (..., 3, 3) in pixels; pixel (0, 0) is the *centre* of the top-left pixel, so the
  exact image centre of a W x H image is ((W - 1) / 2, (H - 1) / 2).
- OpenGL / Blender / NeRF / instant-ngp / nerfstudio store camera-to-world matrices whose camera frame
  is +x right, +y up, +z backward (looking along -z). Converting flips the camera's y and z axes.

Shapes: leading ``...`` batch dimensions are preserved. All functions work in float32 and float64.
"""

from __future__ import annotations

import torch

# diag(1, -1, -1): maps OpenGL camera axes (x right, y up, z back) to OpenCV (x right, y down, z fwd).
_GL_TO_CV_DIAG = (1.0, -1.0, -1.0, 1.0)


def _flip_yz(like: torch.Tensor) -> torch.Tensor:
    return torch.diag(torch.tensor(_GL_TO_CV_DIAG, dtype=like.dtype, device=like.device))


def invert_rigid(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms [R | t] without a general matrix inverse.

    Shapes: T (..., 4, 4) -> (..., 4, 4).
    """
    R = T[..., :3, :3]  # (..., 3, 3)
    t = T[..., :3, 3:]  # (..., 3, 1)
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def opengl_c2w_to_opencv_w2c(c2w: torch.Tensor) -> torch.Tensor:
    """OpenGL/Blender/NeRF camera-to-world (..., 4, 4) -> OpenCV world-to-camera (..., 4, 4).

    The world frame is unchanged; only the camera axes flip (y up -> down, z back -> forward).
    """
    c2w_cv = c2w @ _flip_yz(c2w)  # flip the camera's y and z columns
    return invert_rigid(c2w_cv)


def opencv_w2c_to_opengl_c2w(w2c: torch.Tensor) -> torch.Tensor:
    """OpenCV world-to-camera (..., 4, 4) -> OpenGL camera-to-world (..., 4, 4); inverse of the above."""
    return invert_rigid(w2c) @ _flip_yz(w2c)


def camera_centers(w2c: torch.Tensor) -> torch.Tensor:
    """Camera centres in world coordinates, c = -R^T t. Shapes: (..., 4, 4) -> (..., 3)."""
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3]
    return -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)


def relative_w2c(w2c_obs: torch.Tensor, w2c_tgt: torch.Tensor) -> torch.Tensor:
    """The target camera expressed in the observed camera's frame.

    With the observed camera as the identity, the returned ``w2c_rel`` maps points from the observed
    camera frame to the target camera frame: ``w2c_rel = w2c_tgt @ inv(w2c_obs)``. It is invariant to
    any global rigid transform applied to both cameras. Scale is left untouched here; the scale
    normalisation used for tokens lives in ``gst.geometry.normalize`` and is saved with checkpoints.

    Shapes: (..., 4, 4), (..., 4, 4) -> (..., 4, 4).
    """
    return w2c_tgt @ invert_rigid(w2c_obs)


def project_points(K: torch.Tensor, w2c: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Project world points to pixels (pixel-centre convention) and return (u, v, depth).

    Shapes: K (..., 3, 3), w2c (..., 4, 4), points (..., N, 3) -> (..., N, 3) as (u, v, z_cam).
    """
    R = w2c[..., :3, :3]
    t = w2c[..., :3, 3]
    x_cam = points @ R.transpose(-1, -2) + t.unsqueeze(-2)  # (..., N, 3)
    z = x_cam[..., 2:3]
    uv1 = (x_cam / z) @ K.transpose(-1, -2)  # (..., N, 3)
    return torch.cat([uv1[..., :2], z], dim=-1)


def intrinsics_matrix(
    fx: torch.Tensor | float,
    fy: torch.Tensor | float,
    cx: torch.Tensor | float,
    cy: torch.Tensor | float,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Build K (..., 3, 3) from focal lengths and principal point in pixels (pixel-centre convention)."""
    fx, fy, cx, cy = (torch.as_tensor(v, dtype=dtype) for v in (fx, fy, cx, cy))
    fx, fy, cx, cy = torch.broadcast_tensors(fx, fy, cx, cy)
    K = torch.zeros(*fx.shape, 3, 3, dtype=dtype)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = cx
    K[..., 1, 2] = cy
    K[..., 2, 2] = 1.0
    return K
