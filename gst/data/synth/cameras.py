"""Camera rigs for the procedural world: look-at cameras on a sphere cap around the scene centre.

World frame: +z up, ground plane z = 0, metres. Cameras follow ``gst.geometry.conventions`` (OpenCV
camera frame, world-to-camera ``w2c``, ``K`` in pixels with pixel (0, 0) at the centre of the
top-left pixel).

Distribution of one view (all draws independent, uniform in the stated ranges):

- target (look-at point) = (jx, jy, tz), jx, jy in [-target_jitter_m, target_jitter_m],
  tz in ``target_height_m``;
- camera centre = target + distance * (cos(el) cos(az), cos(el) sin(az), sin(el)) with elevation
  el in ``elevation_deg`` above the horizontal, azimuth az in [0, 360) degrees, distance in
  ``distance_m``;
- orientation: camera +z toward the target, +x horizontal (perpendicular to world +z), +y pointing
  down in the image; then a roll about the optical axis in [-max_roll_deg, max_roll_deg];
- intrinsics: the HORIZONTAL field of view (across the image width, like NeRF's camera_angle_x) in
  ``fov_deg``; square pixels (fy = fx = 0.5 W / tan(fov / 2)); principal point = exact image centre
  ((W - 1) / 2, (H - 1) / 2) plus an offset up to ``principal_jitter_frac`` of W (resp. H).

Glossary: V views, H/W pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gst.geometry.conventions import intrinsics_matrix


@dataclass(frozen=True, kw_only=True)
class CameraSamplingConfig:
    """Ranges of the camera distribution (see the module docstring). Angles in degrees, lengths in metres."""

    elevation_deg: tuple[float, float] = (10.0, 60.0)  # above the horizontal; > 0 keeps the ground in view
    distance_m: tuple[float, float] = (3.0, 6.0)  # camera centre to look-at target
    target_jitter_m: float = 0.3  # look-at x, y offset from the origin, so the scene is not always centred
    target_height_m: tuple[float, float] = (0.1, 0.5)  # look-at z: roughly object mid-heights
    fov_deg: tuple[float, float] = (30.0, 75.0)  # horizontal field of view
    principal_jitter_frac: float = 0.03  # max |cx - (W-1)/2| / W and |cy - (H-1)/2| / H
    max_roll_deg: float = 5.0  # small hand-held roll about the optical axis; 0 disables

    def __post_init__(self) -> None:
        for name in ("elevation_deg", "distance_m", "target_height_m", "fov_deg"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"CameraSamplingConfig.{name}: need low <= high, got ({lo}, {hi})")
        if not (0.0 < self.elevation_deg[0] and self.elevation_deg[1] < 90.0):
            raise ValueError(
                f"CameraSamplingConfig.elevation_deg must lie in (0, 90), got {self.elevation_deg}"
            )
        if self.distance_m[0] <= 0.0:
            raise ValueError(f"CameraSamplingConfig.distance_m must be positive, got {self.distance_m}")
        if not (0.0 < self.fov_deg[0] and self.fov_deg[1] < 180.0):
            raise ValueError(f"CameraSamplingConfig.fov_deg must lie in (0, 180), got {self.fov_deg}")
        if not 0.0 <= self.principal_jitter_frac < 0.5:
            raise ValueError(
                "CameraSamplingConfig.principal_jitter_frac must be in [0, 0.5), "
                f"got {self.principal_jitter_frac}"
            )
        if self.target_jitter_m < 0.0 or self.max_roll_deg < 0.0:
            raise ValueError("CameraSamplingConfig.target_jitter_m and max_roll_deg must be >= 0")


def look_at_w2c(
    centre: torch.Tensor, target: torch.Tensor, roll_rad: torch.Tensor | None = None
) -> torch.Tensor:
    """OpenCV world-to-camera matrices of cameras at ``centre`` looking at ``target`` with world +z up.

    Camera +z points at the target, +x is horizontal (to the right in the image) and +y = z x x points
    down in the image; ``roll_rad`` then rotates the camera about its optical axis (positive turns the
    image content clockwise on screen). The view direction must not be vertical.

    Shapes: centre (V, 3), target (V, 3), roll_rad (V,) -> (V, 4, 4), dtype of ``centre``.
    """
    up = torch.tensor([0.0, 0.0, 1.0], dtype=centre.dtype).expand_as(centre)
    z_axis = target - centre
    z_axis = z_axis / z_axis.norm(dim=-1, keepdim=True)  # (V, 3) forward
    x_axis = torch.linalg.cross(z_axis, up, dim=-1)  # (V, 3) right = forward x up
    x_norm = x_axis.norm(dim=-1, keepdim=True)
    if bool((x_norm < 1e-9).any()):
        raise ValueError("look_at_w2c: view direction is parallel to world +z; no horizontal axis exists")
    x_axis = x_axis / x_norm
    y_axis = torch.linalg.cross(z_axis, x_axis, dim=-1)  # (V, 3) down in the image
    R = torch.stack([x_axis, y_axis, z_axis], dim=-2)  # (V, 3, 3) rows = camera axes in world
    if roll_rad is not None:
        c, s = torch.cos(roll_rad), torch.sin(roll_rad)
        Rz = torch.zeros_like(R)
        Rz[:, 0, 0], Rz[:, 0, 1], Rz[:, 1, 0], Rz[:, 1, 1], Rz[:, 2, 2] = c, -s, s, c, 1.0
        R = Rz @ R
    w2c = torch.eye(4, dtype=centre.dtype).repeat(centre.shape[0], 1, 1)
    w2c[:, :3, :3] = R
    w2c[:, :3, 3] = -(R @ centre.unsqueeze(-1)).squeeze(-1)
    return w2c


def sample_cameras(
    generator: torch.Generator,
    num_views: int,
    image_hw: tuple[int, int],
    *,
    config: CameraSamplingConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_views`` look-at cameras around a scene centred near the origin.

    Deterministic given the generator's state; draws in float64 on the CPU.

    Shapes: -> K (V, 3, 3) float64 (pixel-centre convention), w2c (V, 4, 4) float64 (OpenCV).
    Range: horizontal fov in ``config.fov_deg``; principal point within ``principal_jitter_frac`` of
    the image centre.
    """
    config = CameraSamplingConfig() if config is None else config
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    H, W = image_hw
    if H < 1 or W < 1:
        raise ValueError(f"image_hw must be positive, got {image_hw}")
    n = num_views

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)  # (V,)

    elevation = torch.deg2rad(uniform(*config.elevation_deg))
    azimuth = uniform(0.0, 2.0 * math.pi)
    distance = uniform(*config.distance_m)
    j = config.target_jitter_m
    target = torch.stack([uniform(-j, j), uniform(-j, j), uniform(*config.target_height_m)], dim=-1)  # (V, 3)
    cos_el = torch.cos(elevation)
    direction = torch.stack(
        [cos_el * torch.cos(azimuth), cos_el * torch.sin(azimuth), torch.sin(elevation)], dim=-1
    )  # (V, 3) from target to camera
    centre = target + distance[:, None] * direction  # (V, 3)
    roll = torch.deg2rad(uniform(-config.max_roll_deg, config.max_roll_deg))
    w2c = look_at_w2c(centre, target, roll)  # (V, 4, 4)

    fov = torch.deg2rad(uniform(*config.fov_deg))
    fx = 0.5 * W / torch.tan(fov / 2)
    p = config.principal_jitter_frac
    cx = (W - 1) / 2 + uniform(-p, p) * W
    cy = (H - 1) / 2 + uniform(-p, p) * H
    K = intrinsics_matrix(fx, fx, cx, cy, dtype=torch.float64)  # (V, 3, 3)
    return K, w2c
