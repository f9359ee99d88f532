"""Rotation representations and conversions, batched over leading dimensions.

Representations:

- matrix: (..., 3, 3) proper rotation, acting on column vectors (``x' = R @ x``).
- quaternion: (..., 4) unit ``(w, x, y, z)``, w first, canonical sign ``w >= 0`` (so the angle lies in
  [0, pi]); at exactly w = 0 both signs describe the same rotation and either may be returned.
- axis-angle: (..., 3) ``axis * angle`` with angle in radians in [0, pi] (right-hand rule).
- 6D (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks", CVPR 2019):
  (..., 6) the FIRST TWO COLUMNS of the matrix, concatenated ``[R[:, 0], R[:, 1]]``; mapped back by
  Gram-Schmidt.
"""

from __future__ import annotations

import torch


def _safe_norm(x: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    return torch.linalg.vector_norm(x, dim=dim, keepdim=keepdim)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (w, x, y, z) -> rotation matrix; the input is normalised first.

    Shapes: (..., 4) -> (..., 3, 3).
    """
    q = q / _safe_norm(q, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    )
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix -> unit quaternion (w, x, y, z) with w >= 0.

    Each of the four components can be read from the diagonal (e.g. 4 w^2 = 1 + trace); dividing the
    off-diagonal terms by the largest one is accurate for every rotation, so all four candidates are
    built and the best conditioned one is picked per matrix.

    Shapes: (..., 3, 3) -> (..., 4).
    """
    r = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = r.unbind(-1)
    # 4 * component^2 for w, x, y, z; clamped because rounding can push them slightly below zero.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    two_c = torch.sqrt(sq.clamp_min(1e-12))  # (..., 4) = 2 * |component|
    cand = torch.stack(
        [
            torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], -1),
            torch.stack([m10 - m01, m02 + m20, m12 + m21, sq[..., 3]], -1),
        ],
        dim=-2,
    )  # (..., 4, 4): row k is 4 * q * q_k
    cand = cand / (2 * two_c[..., :, None])  # row k is q * sign(q_k)
    best = sq.argmax(dim=-1, keepdim=True)  # (..., 1)
    q = torch.gather(cand, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)  # (..., 4)
    q = q / _safe_norm(q, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def _sin_half_over_angle(angle: torch.Tensor) -> torch.Tensor:
    """sin(angle / 2) / angle, with its Taylor series near zero (limit 1/2)."""
    small = angle.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(angle), angle)
    return torch.where(small, 0.5 - angle * angle / 48, torch.sin(safe / 2) / safe)


def axis_angle_to_quaternion(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (axis * angle) -> unit quaternion (w, x, y, z). Shapes: (..., 3) -> (..., 4)."""
    angle = _safe_norm(aa, keepdim=True)  # (..., 1)
    q = torch.cat([torch.cos(angle / 2), aa * _sin_half_over_angle(angle)], dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_axis_angle(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternion -> axis-angle with angle in [0, pi]. Shapes: (..., 4) -> (..., 3)."""
    q = q / _safe_norm(q, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    v = q[..., 1:]
    sin_half = _safe_norm(v, keepdim=True)  # (..., 1)
    angle = 2 * torch.atan2(sin_half, q[..., :1])  # (..., 1) in [0, pi]
    return v / _sin_half_over_angle(angle)  # v = axis * sin(angle / 2)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Axis-angle (axis * angle, radians) -> rotation matrix. Shapes: (..., 3) -> (..., 3, 3)."""
    return quaternion_to_matrix(axis_angle_to_quaternion(aa))


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix -> axis-angle with angle in [0, pi]. Shapes: (..., 3, 3) -> (..., 3)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def matrix_to_rotation_6d(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix -> 6D: first two columns ``[R[:, 0], R[:, 1]]``. Shapes: (..., 3, 3) -> (..., 6)."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """6D -> rotation matrix by Gram-Schmidt on the two columns (Zhou et al. 2019, Eq. 16).

    Shapes: (..., 6) -> (..., 3, 3).
    Raises: nothing; (near-)parallel or zero columns give NaN, which callers should not feed.
    """
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = a1 / _safe_norm(a1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / _safe_norm(b2, keepdim=True)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # columns


def nearest_rotation(M: torch.Tensor) -> torch.Tensor:
    """The rotation closest to M in the Frobenius norm (SVD, determinant fixed to +1): the chordal mean
    of rotations R_i is ``nearest_rotation(sum R_i)``. Shapes: (..., 3, 3) -> (..., 3, 3)."""
    U, _, Vh = torch.linalg.svd(M)
    d = torch.ones(M.shape[:-1], dtype=M.dtype, device=M.device)  # (..., 3)
    d[..., 2] = torch.sign(torch.det(U @ Vh))
    return U @ torch.diag_embed(d) @ Vh


def random_rotations(
    n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Rotations drawn uniformly (Haar measure) via normalised Gaussian quaternions.

    Shapes: -> (n, 3, 3).
    """
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(dtype)
