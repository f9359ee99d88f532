"""Crop and resize views while keeping their intrinsics exact (pixel-centre convention).

With pixel (0, 0) at the centre of the top-left pixel, a pixel of an image crop starting at column
``x0`` and resized by ``s`` along x (output width / crop width) moves as

    u' = (u - x0 + 0.5) * s - 0.5

so ``fx' = s fx``, ``skew' = s skew`` and ``cx' = (cx - x0 + 0.5) s - 0.5``; likewise along y with
``y0`` and the y scale. Resampling follows the same map: bilinear with ``align_corners=False`` and
nearest with source index ``floor((j + 0.5) / s)`` both place output pixel centre j at source
coordinate ``(j + 0.5) / s - 0.5``. K is exact; the antialiasing filter itself, sampled at
non-integer scale factors, is not quite symmetric and shifts sub-pixel content by a few hundredths of
an input pixel (0.04 px measured at 5x shrinking; 0 for integer factors, tests/test_views.py).

Modes: "center_crop" crops the largest centred window with the output aspect ratio (integer pixel
offsets, so K stays exact), then resizes; "stretch" resizes the whole image, scaling x and y apart.

Glossary: V views, C channels, H/W input pixels, h/w output pixels.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

CropMode = Literal["center_crop", "stretch"]
_MODES = ("center_crop", "stretch")


def crop_box(
    in_hw: tuple[int, int], out_hw: tuple[int, int], mode: CropMode = "center_crop"
) -> tuple[int, int, int, int]:
    """The input window (y0, x0, crop_h, crop_w) that is resized to ``out_hw``."""
    H, W = (int(v) for v in in_hw)
    h, w = (int(v) for v in out_hw)
    if min(H, W, h, w) < 1:
        raise ValueError(f"image sizes must be >= 1 pixel, got in_hw={in_hw}, out_hw={out_hw}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if mode == "stretch":
        return (0, 0, H, W)
    if W * h > H * w:  # input is wider than the target: keep the full height
        crop_h, crop_w = H, max(1, min(W, round(H * w / h)))
    else:
        crop_h, crop_w = max(1, min(H, round(W * h / w))), W
    return ((H - crop_h) // 2, (W - crop_w) // 2, crop_h, crop_w)


def crop_resize_intrinsics(
    K: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: CropMode = "center_crop"
) -> torch.Tensor:
    """K after ``crop_resize``. Shapes: K (..., 3, 3) -> (..., 3, 3)."""
    y0, x0, crop_h, crop_w = crop_box(in_hw, out_hw, mode)
    sy, sx = out_hw[0] / crop_h, out_hw[1] / crop_w
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 1] = K[..., 0, 1] * sx
    out[..., 0, 2] = (K[..., 0, 2] - x0 + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] - y0 + 0.5) * sy - 0.5
    return out


def crop_resize(
    image: torch.Tensor, K: torch.Tensor, out_hw: tuple[int, int], mode: CropMode = "center_crop"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop and resize images (antialiased bilinear) and adjust K to match.

    Shapes: image (C, H, W) or (V, C, H, W) floating; K (3, 3) or (V, 3, 3) -> (image (.., C, h, w), K).
    Range: a convex combination of input pixels, so [0, 1] stays [0, 1].
    """
    if image.ndim not in (3, 4) or not image.is_floating_point():
        raise ValueError(
            f"image must be a floating (C, H, W) or (V, C, H, W) tensor, got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    in_hw = (image.shape[-2], image.shape[-1])
    y0, x0, crop_h, crop_w = crop_box(in_hw, out_hw, mode)
    x = image[..., y0 : y0 + crop_h, x0 : x0 + crop_w]  # (..., C, crop_h, crop_w)
    batched = x.ndim == 4
    x = x if batched else x.unsqueeze(0)  # (V, C, crop_h, crop_w)
    if (crop_h, crop_w) != tuple(out_hw):
        # antialias=True low-pass filters when shrinking (a plain bilinear tap would alias); it is
        # plain bilinear when enlarging.
        x = F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=False, antialias=True)
    x = x if batched else x.squeeze(0)  # (..., C, h, w)
    return x, crop_resize_intrinsics(K, in_hw, out_hw, mode)


def _nearest_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    j = torch.arange(n_out, device=device, dtype=torch.float64)
    return torch.floor((j + 0.5) * (n_in / n_out)).long().clamp_(0, n_in - 1)  # (n_out,)


def crop_resize_nearest(
    maps: torch.Tensor, K: torch.Tensor, out_hw: tuple[int, int], mode: CropMode = "center_crop"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop and resize depth maps or instance masks with nearest sampling (never blends values).

    Shapes: maps (H, W) or (V, H, W), any dtype; K (3, 3) or (V, 3, 3) -> (maps (.., h, w), K).
    Range: output values are input values (ids and depths are preserved exactly).
    """
    if maps.ndim not in (2, 3):
        raise ValueError(f"maps must be (H, W) or (V, H, W), got {tuple(maps.shape)}")
    in_hw = (maps.shape[-2], maps.shape[-1])
    y0, x0, crop_h, crop_w = crop_box(in_hw, out_hw, mode)
    rows = y0 + _nearest_index(crop_h, out_hw[0], maps.device)  # (h,)
    cols = x0 + _nearest_index(crop_w, out_hw[1], maps.device)  # (w,)
    out = maps[..., rows, :][..., cols]  # (..., h, w)
    return out, crop_resize_intrinsics(K, in_hw, out_hw, mode)
