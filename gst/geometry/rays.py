"""Plücker ray maps of pinhole cameras, and the inverse: a camera recovered from its ray map.

Convention (see ``gst.geometry.conventions``): OpenCV camera frame, world-to-camera ``w2c``, ``K`` in
pixels, pixel (u, v) at integer coordinates (pixel (0, 0) is the centre of the top-left pixel).

A ray map has 6 channels per pixel, in the order ``RAY_CHANNELS``:

- channels 0-2: unit direction ``d`` of the ray through the pixel centre, in the WORLD frame;
- channels 3-5: moment ``m = c x d`` with ``c`` the camera centre in the world frame.

For relative cameras the "world" is the observed camera's frame: pass ``relative_w2c(obs, tgt)``.

Glossary: H, W image height and width in pixels; N = H * W pixels.
"""

from __future__ import annotations

import torch

from gst.geometry.conventions import camera_centers

# Channel order of every ray map in the project; saved with tokenizer checkpoints.
RAY_CHANNELS: tuple[str, ...] = ("dx", "dy", "dz", "mx", "my", "mz")


def pixel_grid(
    image_hw: tuple[int, int], dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates [u, v, 1] of every pixel, u along width.

    Shapes: -> (H, W, 3).
    Range: u in [0, W - 1], v in [0, H - 1].
    """
    H, W = image_hw
    rows = torch.arange(H, dtype=dtype, device=device)
    cols = torch.arange(W, dtype=dtype, device=device)
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # (H, W) each
    return torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)


def plucker_rays(K: torch.Tensor, w2c: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Plücker ray map of pinhole cameras: unit world direction then moment, channels ``RAY_CHANNELS``.

    Direction of pixel (u, v): ``d = normalize(R^T K^{-1} [u, v, 1]^T)``; moment ``m = c x d`` with
    ``c = -R^T t``. Batch dimensions of ``K`` and ``w2c`` broadcast.

    Shapes: K (..., 3, 3), w2c (..., 4, 4), image_hw = (H, W) -> (..., 6, H, W).
    Range: channels 0-2 unit norm per pixel; d . m = 0; |m| = distance of the ray to the origin.
    """
    H, W = image_hw
    if H < 1 or W < 1:
        raise ValueError(f"image_hw must be positive, got {image_hw}")
    dtype = torch.promote_types(K.dtype, w2c.dtype)
    K, w2c = K.to(dtype), w2c.to(dtype)
    batch = torch.broadcast_shapes(K.shape[:-2], w2c.shape[:-2])
    K = K.expand(*batch, 3, 3)
    w2c = w2c.expand(*batch, 4, 4)
    R = w2c[..., :3, :3]  # (..., 3, 3)
    M = R.transpose(-1, -2) @ torch.linalg.inv(K)  # (..., 3, 3) pixel -> world direction
    pix = pixel_grid(image_hw, dtype, K.device)  # (H, W, 3)
    d = torch.einsum("...ij,hwj->...ihw", M, pix)  # (..., 3, H, W)
    d = d / torch.linalg.vector_norm(d, dim=-3, keepdim=True)
    c = camera_centers(w2c)[..., :, None, None].expand_as(d)  # (..., 3, H, W)
    m = torch.linalg.cross(c, d, dim=-3)  # (..., 3, H, W)
    return torch.cat([d, m], dim=-3)  # (..., 6, H, W)


def _check_rays(rays: torch.Tensor) -> None:
    if rays.ndim < 3 or rays.shape[-3] != 6:
        raise ValueError(
            f"rays must have shape (..., 6, H, W) with channels {RAY_CHANNELS}, got {tuple(rays.shape)}"
        )
    if rays.shape[-2] < 2 or rays.shape[-1] < 2:
        raise ValueError(
            f"rays need at least a 2 x 2 pixel grid to fix a camera, got {tuple(rays.shape[-2:])}"
        )
    if not torch.isfinite(rays).all():
        raise ValueError("rays contain NaN or inf values; cannot recover a camera from them")


def _ray_centres(d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Least-squares intersection of lines given by unit directions and moments.

    A line {p : p x d = m} passes through p0 = d x m (its point closest to the origin) for unit d. The
    squared distance of c to it is |(I - d d^T)(c - p0)|^2; setting the gradient of the sum to zero gives
    sum(I - d d^T) c = sum (I - d d^T) p0 = sum d x m, because p0 is orthogonal to d.

    Shapes: d, m (..., N, 3) -> (..., 3).
    """
    eye = torch.eye(3, dtype=d.dtype, device=d.device)
    A = d.shape[-2] * eye - torch.einsum("...ni,...nj->...ij", d, d)  # (..., 3, 3)
    b = torch.linalg.cross(d, m, dim=-1).sum(dim=-2)  # (..., 3)
    eig = torch.linalg.eigvalsh(A)  # (..., 3) ascending
    if (eig[..., 0] <= 1e-9 * eig[..., -1]).any():
        raise ValueError("ray directions are (nearly) parallel: the camera centre is not determined")
    return torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)


def _hartley_transform(image_hw: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Affine map of pixel coordinates to roughly [-1, 1], to condition the linear fit (Hartley 1997)."""
    H, W = image_hw
    s = 2.0 / max(H - 1, W - 1, 1)
    return torch.tensor(
        [[s, 0.0, -s * (W - 1) / 2], [0.0, s, -s * (H - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device
    )


def _fit_direction_matrix(d: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
    """Fit M (up to scale) with d ~ M p by minimising sum |(I - d d^T) M p|^2 subject to |M|_F = 1.

    With unit d, |d x (M p)|^2 = (M p)^T (I - d d^T) (M p), so the 9 x 9 normal matrix is
    Q[(i, j), (k, l)] = sum_n P_n[i, k] p_n[j] p_n[l] with P_n = I - d_n d_n^T; vec(M) (row-major) is
    its eigenvector of smallest eigenvalue (the DLT null vector).

    Shapes: d (..., N, 3) unit, pix (N, 3) conditioned pixel coordinates -> (..., 3, 3).
    """
    eye = torch.eye(3, dtype=d.dtype, device=d.device)
    pp = pix[:, :, None] * pix[:, None, :]  # (N, 3, 3)
    Q = torch.einsum("jl,ik->ijkl", pp.sum(0), eye) - torch.einsum("...ni,...nk,njl->...ijkl", d, d, pp)
    Q = Q.reshape(*Q.shape[:-4], 9, 9)  # (..., 9, 9)
    _, vecs = torch.linalg.eigh(Q)  # ascending eigenvalues
    return vecs[..., :, 0].reshape(*Q.shape[:-2], 3, 3)


def _decompose_direction_matrix(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split M = s R^T K^{-1} (s != 0) into R and K by a QR decomposition.

    R^T is orthogonal and K^{-1} upper triangular with positive diagonal, so QR with a positive diagonal
    returns them up to the scale s. s has the sign of det(M) (det K^{-1} > 0, det R = 1), so flipping M
    to a positive determinant first makes Q a proper rotation.

    Shapes: M (..., 3, 3) -> R (..., 3, 3), K (..., 3, 3) with K[2, 2] = 1 and zero skew.
    """
    M = M * torch.sign(torch.linalg.det(M))[..., None, None]
    Q, U = torch.linalg.qr(M)
    sgn = torch.sign(torch.diagonal(U, dim1=-2, dim2=-1))  # (..., 3)
    Q = Q * sgn[..., None, :]
    U = U * sgn[..., :, None]
    K = torch.linalg.inv(U / U[..., 2:3, 2:3])  # (..., 3, 3)
    # A camera model without skew: a noisy fit leaves a tiny K[0, 1], which we drop.
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]], dtype=K.dtype, device=K.device)
    K = K * mask
    return Q.transpose(-1, -2), K


def cameras_from_rays(rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover pinhole cameras (K, w2c) from Plücker ray maps; the inverse of ``plucker_rays``.

    1. Directions are normalised per pixel, moments divided by the same norm (Plücker coordinates are
       homogeneous), which makes noisy input consistent.
    2. Centre c: least-squares intersection of all rays, sum(I - d d^T) c = sum d x m.
    3. Rotation and intrinsics: directions satisfy d ~ R^T K^{-1} [u, v, 1]^T. A DLT fit of the 3 x 3
       matrix M on Hartley-conditioned pixels, then a QR decomposition M = R^T K^{-1} with positive
       diagonal; skew is set to zero and K[2, 2] = 1.
    4. t = -R c.

    The fit runs in float64 whatever the input dtype (results are cast back), so float32 ray maps lose
    nothing to the squared conditioning of the normal equations. Differentiable almost everywhere
    (eigh, QR, solve); the sign choices carry no gradient.

    Shapes: rays (..., 6, H, W) with channels ``RAY_CHANNELS`` -> K (..., 3, 3), w2c (..., 4, 4).
    Raises: ValueError for a wrong shape, a grid smaller than 2 x 2, NaN/inf values, zero-length
    directions, or parallel rays (no finite centre).
    """
    _check_rays(rays)
    out_dtype = rays.dtype
    H, W = rays.shape[-2:]
    r = rays.to(torch.float64).flatten(-2).transpose(-1, -2)  # (..., N, 6)
    norm = torch.linalg.vector_norm(r[..., :3], dim=-1, keepdim=True)  # (..., N, 1)
    if (norm <= 1e-12).any():
        raise ValueError("rays contain zero-length directions (channels 0-2); cannot recover a camera")
    d, m = r[..., :3] / norm, r[..., 3:] / norm  # (..., N, 3) each
    c = _ray_centres(d, m)  # (..., 3)

    T = _hartley_transform((H, W), torch.float64, rays.device)  # (3, 3)
    pix = pixel_grid((H, W), torch.float64, rays.device).reshape(-1, 3) @ T.T  # (N, 3)
    M = _fit_direction_matrix(d, pix) @ T  # (..., 3, 3) d ~ M [u, v, 1]
    R, K = _decompose_direction_matrix(M)

    w2c = torch.zeros(*R.shape[:-2], 4, 4, dtype=torch.float64, device=rays.device)
    w2c[..., :3, :3] = R
    w2c[..., :3, 3] = -(R @ c.unsqueeze(-1)).squeeze(-1)
    w2c[..., 3, 3] = 1.0
    return K.to(out_dtype), w2c.to(out_dtype)
