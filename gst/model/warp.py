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

``warp_image``: the same move for the observed PIXELS, at depths read from the cells (``pixel_depth``),
with a z-buffer per target pixel: a readout for views (``GST.synthesize_view(warp=W)`` mixes them into
the generated view where they land), not part of the model.

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


def pixel_depth(
    depth: torch.Tensor,
    image_hw: tuple[int, int],
    sub: int = 1,
    ground: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per point of a ``sub x sub`` split of every pixel, the z-depth read from per-cell depths.

    Inverse depth is interpolated bilinearly between the cell centres: a plane's inverse depth is linear
    in the pixel coordinates, so the ground keeps no seams between cells. ``ground`` (h, w) in [0, 1], the
    weight of each cell as ground: one plane, inverse depth = a u + b v + c, is fitted to those cells
    (weighted least squares, refitted three times with outliers down-weighted) and gives the depth of
    every point whose cell is mostly ground (weight > 0.5) and lies below the plane's horizon (inverse
    depth > 0).

    Shapes: depth (h, w) metres, h | H and w | W -> (H*sub, W*sub) float64.
    """
    H, W = image_hw
    h, w = depth.shape
    if H % h or W % w:
        raise ValueError(f"pixel_depth: depth grid {(h, w)} must divide the image size {(H, W)}")
    dev = depth.device
    inv = 1.0 / depth.to(torch.float64).clamp(min=1e-6)  # (h, w)
    dense = nn.functional.interpolate(inv[None, None], size=(H * sub, W * sub), mode="bilinear")[0, 0]
    if ground is not None:
        frac = (torch.arange(sub, device=dev, dtype=torch.float64) + 0.5) / sub - 0.5
        vs = (torch.arange(H, device=dev).unsqueeze(1) + frac).reshape(-1)  # (H*sub,) pixel rows
        us = (torch.arange(W, device=dev).unsqueeze(1) + frac).reshape(-1)
        cv = (torch.arange(h, device=dev, dtype=torch.float64) + 0.5) * (H / h) - 0.5  # cell centres
        cu = (torch.arange(w, device=dev, dtype=torch.float64) + 0.5) * (W / w) - 0.5
        gv, gu = torch.meshgrid(cv, cu, indexing="ij")
        A = torch.stack([gu, gv, torch.ones_like(gu)], -1).reshape(-1, 3) / torch.tensor(
            [W, H, 1.0], dtype=torch.float64, device=dev
        )
        b = inv.reshape(-1)
        wt = ground.to(torch.float64).reshape(-1).clamp(0.0, 1.0)
        weight = wt.clone()
        for _ in range(4):
            coef = torch.linalg.lstsq(A * weight.sqrt()[:, None], (b * weight.sqrt())[:, None]).solution[:, 0]
            r = (A @ coef - b).abs()
            scale = r[wt > 0.5].median() if bool((wt > 0.5).any()) else r.median()
            weight = wt / (1.0 + (r / (2.0 * scale + 1e-12)) ** 2)
        v, u = torch.meshgrid(vs / H, us / W, indexing="ij")
        plane = coef[0] * u + coef[1] * v + coef[2]  # (H*sub, W*sub)
        cell_ground = ground.to(dev).repeat_interleave(sub * H // h, 0).repeat_interleave(sub * W // w, 1)
        use = (cell_ground > 0.5) & (plane > 1e-3)
        dense = torch.where(use, plane, dense)
    return 1.0 / dense.clamp(min=1e-6)


def warp_image(
    image: torch.Tensor,
    depth: torch.Tensor,
    K_obs: torch.Tensor,
    K_tgt: torch.Tensor,
    w2c_rel: torch.Tensor,
    sub: int = 3,
    max_stretch: float | None = 5.0,
    ground: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The observed image as the target camera sees it, and where it lands.

    Every observed pixel is split into ``sub x sub`` points, each at the z-depth ``pixel_depth`` reads
    from the per-cell ``depth`` (and ``ground``), unprojected with ``K_obs``, moved by ``w2c_rel`` (the
    target camera in the observed frame), projected with ``K_tgt`` (pixel-centre convention) and rounded
    to the nearest target pixel; per target pixel the nearest point in front of the camera gives the
    colour. Target pixels no point reaches stay 0 and uncovered. Points where one observed pixel would
    spread over more than ``max_stretch`` target pixels along a row or column (surfaces seen at a grazing
    angle, and the seams between a near object and what lies behind it, which the smooth depth turns into
    streaks) are dropped: the generated view shows those pixels.

    Shapes: image (3, H, W); depth, ground (h, w) with h | H and w | W; K_obs, K_tgt (3, 3) pixels at
    (H, W); w2c_rel (4, 4) -> warped (3, H, W) dtype of ``image``, covered (H, W) bool.
    """
    C, H, W = image.shape
    dev = image.device
    K_obs, K_tgt, w2c_rel = (x.to(dev, torch.float64) for x in (K_obs, K_tgt, w2c_rel))
    z = pixel_depth(depth.to(dev), (H, W), sub, ground)  # (H*sub, W*sub)
    frac = (torch.arange(sub, device=dev, dtype=torch.float64) + 0.5) / sub - 0.5  # (sub,) in a pixel
    vs = (torch.arange(H, device=dev).unsqueeze(1) + frac).reshape(-1)  # (H*sub,)
    us = (torch.arange(W, device=dev).unsqueeze(1) + frac).reshape(-1)  # (W*sub,)
    v, u = torch.meshgrid(vs, us, indexing="ij")  # (H*sub, W*sub)
    x = (u - K_obs[0, 2]) / K_obs[0, 0] * z
    y = (v - K_obs[1, 2]) / K_obs[1, 1] * z
    pts = torch.stack([x, y, z], -1).reshape(-1, 3)  # (M, 3) observed camera frame
    cam = pts @ w2c_rel[:3, :3].T + w2c_rel[:3, 3]  # (M, 3) target frame
    zt = cam[:, 2]
    pix = cam @ K_tgt.T  # (M, 3)
    uv = (pix[:, :2] / zt.clamp(min=1e-9).unsqueeze(1)).reshape(H * sub, W * sub, 2)
    col, row = torch.round(uv[..., 0]).reshape(-1), torch.round(uv[..., 1]).reshape(-1)
    ok = (zt > 1e-6) & (col >= 0) & (col < W) & (row >= 0) & (row < H) & torch.isfinite(zt)
    if max_stretch is not None:  # a point whose pixel spreads over more than that many target pixels
        step = torch.zeros(H * sub, W * sub, dtype=torch.float64, device=dev)
        for d in (0, 1):
            gap = (uv.narrow(d, 1, uv.shape[d] - 1) - uv.narrow(d, 0, uv.shape[d] - 1)).norm(dim=-1)
            gap = torch.cat([gap, gap.narrow(d, gap.shape[d] - 1, 1)], d)  # (H*sub, W*sub)
            step = torch.maximum(step, gap)
        ok &= (step * sub <= max_stretch).reshape(-1)
    target = (row * W + col)[ok].long()  # (m,) target pixel of each kept point
    zk = zt[ok]
    zmin = torch.full((H * W,), torch.inf, device=dev, dtype=torch.float64)
    zmin = zmin.scatter_reduce(0, target, zk, reduce="amin")
    wins = zk <= zmin[target]  # (m,) the nearest point(s) of their pixel
    point = torch.arange(len(pts), device=dev)[ok][wins]  # source point index; ties: the largest
    winner = torch.full((H * W,), -1, device=dev, dtype=torch.long).scatter_reduce(
        0, target[wins], point, reduce="amax"
    )
    covered = winner >= 0
    src_row = winner.clamp(min=0) // (W * sub) // sub  # source pixel of the winning point
    src_col = winner.clamp(min=0) % (W * sub) // sub
    warped = image[:, src_row, src_col] * covered.to(image.dtype)  # (C, H*W)
    return warped.reshape(C, H, W), covered.reshape(H, W)


def check_mix_weight(weight: float) -> None:
    """``weight`` of ``mix_warped`` (``GST.synthesize_view`` / ``GST.sample``'s ``warp``) is in [0, 1]."""
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"warp is the weight of the warped observed pixels, in [0, 1]; got {weight}")


def mix_warped(
    views: torch.Tensor,
    image: torch.Tensor,
    depth: torch.Tensor,
    ground: torch.Tensor | None,
    K_obs: torch.Tensor,
    K_tgt: torch.Tensor,
    w2c_rel: torch.Tensor,
    weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` with the observed ``image`` warped (``warp_image``) to each target camera mixed in where it
    lands: ``weight * warped + (1 - weight) * view``. Shapes: views (S, 3, H, W); K_tgt (N, 3, 3), w2c_rel
    (N, 4, 4) with N 1 (one camera for every view) or S -> views (S, 3, H, W), covered (N, H, W) bool."""
    pairs = [
        warp_image(image, depth, K_obs, k, m, ground=ground) for k, m in zip(K_tgt, w2c_rel, strict=True)
    ]
    warped = torch.stack([w for w, _ in pairs])  # (N, 3, H, W)
    covered = torch.stack([c for _, c in pairs])  # (N, H, W)
    return torch.where(covered[:, None], weight * warped + (1.0 - weight) * views, views), covered


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


__all__ = ["GenWarp", "check_mix_weight", "forward_warp", "mix_warped", "pixel_depth", "warp_image"]
