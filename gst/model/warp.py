"""Explicit geometry for generated views: the observed cells moved to where the target camera sees them.

Why (issue "A world model that learns on two CPU cores", item 5): a ``gen`` row's target image is
generated token by token, and attention alone learns slowly where the observed content lands in the new
view. Everything needed to place it is known before the first target token: the observed image, the
row's camera (its codes, decoded by the camera tokenizer), and, read from the observed image by the pose
reader's single-image stem, the depth of every observed cell (its cell head's log depth) and the observed
camera's focal length (the pose head on the pair (observed, observed), whose focal numbers are that
image's own). The explicit-geometry conditioning of "Geometry-Free View Synthesis" (Rombach et al.,
ICCV 2021), forward-warping features with a depth, gives the generator that placement.

``forward_warp``: every observed cell is unprojected as ``sub x sub`` points at its depth (principal
point at the image centre), moved into the target camera's frame, projected with the target's
intrinsics; per target cell the nearest point in front of the camera wins (a z-buffer). ``GenWarp``:
what the winning observed cell carries (``GSTModelConfig.gen_warp_values``: its reader and code
features with a hit flag through a zero-initialised linear map, or its own token embedding times a
zero-initialised gate), so a model grown with it first computes what it did, is added at the position
whose output predicts that target cell: the position just before its code (``[img_start]`` for cell
0). It is a function of conditioning tokens only (the
observed codes and the camera codes), so the model still defines a distribution over token sequences.

Glossary: G gen rows, h/w image token grid, n = h*w, M = n * sub^2 points, C reader channels, Z code
feature channels, D model width.
"""

from __future__ import annotations

import torch
from torch import nn

# per target cell: reader features (C), code features (Z), hit flag (1)
HIT_FEATURES = 1


def forward_warp(
    depth: torch.Tensor,
    focal_obs: torch.Tensor,
    K_tgt: torch.Tensor,
    w2c_rel: torch.Tensor,
    image_hw: tuple[int, int],
    sub: int = 2,
) -> torch.Tensor:
    """For each target cell, the observed cell seen there (nearest surface), or -1 where none lands.

    Shapes: depth (G, h, w) metres (z-depth of each observed cell); focal_obs (G, 2) pixels (fx, fy) of
    the observed image at ``image_hw``; K_tgt (G, 3, 3) pixels at ``image_hw``; w2c_rel (G, 4, 4) the
    target camera relative to the observed one (OpenCV, metres) -> (G, h*w) long in [-1, n).
    """
    G, h, w = depth.shape
    H, W = image_hw
    dev = depth.device
    depth, focal_obs, K_tgt, w2c_rel = (x.double() for x in (depth, focal_obs, K_tgt, w2c_rel))
    # sub-cell sample points, pixel-centre convention (pixel i covers [i - 0.5, i + 0.5])
    frac = (torch.arange(sub, device=dev, dtype=torch.float64) + 0.5) / sub  # (sub,)
    ys = ((torch.arange(h, device=dev).unsqueeze(1) + frac) * (H / h) - 0.5).reshape(-1)  # (h*sub,)
    xs = ((torch.arange(w, device=dev).unsqueeze(1) + frac) * (W / w) - 0.5).reshape(-1)  # (w*sub,)
    v, u = torch.meshgrid(ys, xs, indexing="ij")  # (h*sub, w*sub)
    z = depth.repeat_interleave(sub, 1).repeat_interleave(sub, 2)  # (G, h*sub, w*sub)
    x = (u - (W - 1) / 2) / focal_obs[:, 0, None, None] * z
    y = (v - (H - 1) / 2) / focal_obs[:, 1, None, None] * z
    pts = torch.stack([x, y, z], -1).reshape(G, -1, 3)  # (G, M, 3) observed camera frame
    src = torch.arange(h * w, device=dev).reshape(h, 1, w, 1).expand(h, sub, w, sub).reshape(-1)  # (M,)
    cam = pts @ w2c_rel[:, :3, :3].transpose(1, 2) + w2c_rel[:, None, :3, 3]  # (G, M, 3) target frame
    pix = cam @ K_tgt.transpose(1, 2)  # (G, M, 3)
    zt = cam[..., 2]
    front = zt > 1e-6
    col = torch.floor((pix[..., 0] / zt.clamp(min=1e-6) + 0.5) * (w / W))
    row = torch.floor((pix[..., 1] / zt.clamp(min=1e-6) + 0.5) * (h / H))
    ok = front & (col >= 0) & (col < w) & (row >= 0) & (row < h) & torch.isfinite(zt)  # (G, M)
    cell = torch.where(ok, row * w + col, torch.full_like(row, -1)).long()  # (G, M)
    # z-buffer: per target cell, the nearest point that lands in it
    key = torch.where(
        cell.unsqueeze(1) == torch.arange(h * w, device=dev)[:, None], zt.unsqueeze(1), torch.inf
    )
    zmin, winner = key.min(dim=2)  # (G, n), (G, n) over the M points
    return torch.where(torch.isfinite(zmin), src[winner], torch.full_like(winner, -1))


class GenWarp(nn.Module):
    """What the warp adds per target cell (module docstring; ``GSTModelConfig.gen_warp_values``):
    ``features``: a zero-initialised linear map of the observed cell's features and a hit flag; ``code``:
    the observed cell's token embedding times a per-channel gate, or a learned vector where nothing lands
    (both zero at first)."""

    def __init__(self, values: str, feature_dim: int, hidden_size: int, sub: int = 2) -> None:
        super().__init__()
        self.values, self.sub = values, sub
        if values == "features":
            self.proj = nn.Linear(feature_dim + HIT_FEATURES, hidden_size)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        elif values == "code":
            self.gate = nn.Parameter(torch.zeros(hidden_size))
            self.miss = nn.Parameter(torch.zeros(hidden_size))
        else:
            raise ValueError(f"GenWarp values must be features or code, got {values!r}")

    def forward(self, values: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
        """Per target cell, what the observed cell seen there carries. Shapes: values (G, n, F) per
        observed cell (features: F = C + Z; code: its token embedding, F = D); src (G, n) from
        ``forward_warp`` -> (G, n, D)."""
        hit = (src >= 0).unsqueeze(-1)  # (G, n, 1)
        picked = values.gather(1, src.clamp(min=0).unsqueeze(-1).expand(-1, -1, values.shape[-1]))
        picked = torch.where(hit, picked, torch.zeros_like(picked))
        if self.values == "code":
            return self.gate * picked + self.miss * (~hit).to(picked.dtype)
        return self.proj(torch.cat([picked, hit.to(picked.dtype)], -1))


__all__ = ["GenWarp", "forward_warp"]
