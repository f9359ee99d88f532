"""The in-memory description of one scene: cameras in the project convention plus file paths.

Cameras follow ``gst.geometry.conventions`` (OpenCV camera frame, world-to-camera ``w2c``, ``K`` in
pixels with pixel (0, 0) at the centre of the top-left pixel). Loaders convert foreign conventions
before a ``Scene`` is built, so nothing downstream ever converts again.

Images are read lazily (a NeRF-synthetic scene at 800x800 is ~0.8 GB as float32).

Glossary: V views, H/W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

# Depth maps written by the procedural world are 16-bit PNGs in millimetres (nerfstudio's
# depth_unit_scale_factor = 1e-3); 0 means "no surface". A scene file may state another factor
# (Scene.depth_scale).
DEPTH_UNIT_SCALE = 1e-3


@dataclass(frozen=True, kw_only=True)
class Scene:
    """One scene: V views with cameras, images on disk, and optional depth, masks and objects.

    Shapes: K (V, 3, 3) float64; w2c (V, 4, 4) float64; image_hw = (H, W) shared by all views.
    """

    root: Path  # the scene folder; every file path below lies inside it
    name: str
    image_paths: tuple[Path, ...]
    K: torch.Tensor  # (V, 3, 3) pixels, pixel-centre convention
    w2c: torch.Tensor  # (V, 4, 4) OpenCV world-to-camera
    image_hw: tuple[int, int]  # (H, W)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB in [0, 1] that RGBA is composited on
    depth_paths: tuple[Path, ...] | None = None  # metric z-depth, see DEPTH_UNIT_SCALE
    mask_paths: tuple[Path, ...] | None = None  # instance ids: 0 background/ground, i + 1 object i
    # (V, 4) OpenCV k1, k2, p1, p2 where the source gives them. Recorded only: images are NOT
    # undistorted and K describes the distorted images' pinhole part.
    distortion: torch.Tensor | None = None
    objects: list[dict[str, Any]] | None = None  # objects metadata (procedural world), see gst.data.synth
    metadata: dict[str, Any] = field(default_factory=dict)
    depth_scale: float = DEPTH_UNIT_SCALE  # metres per stored depth unit (nerfstudio depth_unit_scale_factor)

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    def load_image(self, i: int) -> torch.Tensor:
        """RGB image of view i. Shapes: (3, H, W) float32. Range: [0, 1]. RGBA is composited on
        ``background``."""
        return load_rgb(self.image_paths[i], self.background, expect_hw=self.image_hw)

    def load_images(self, indices: list[int] | None = None) -> torch.Tensor:
        """Shapes: (V', 3, H, W) float32. Range: [0, 1]."""
        indices = list(range(self.num_views)) if indices is None else indices
        return torch.stack([self.load_image(i) for i in indices])

    def load_depth(self, i: int) -> torch.Tensor:
        """Metric z-depth (along the camera's +z) of view i, stored value x ``depth_scale``.

        Shapes: (H, W) float32. Range: [0, inf) metres; 0 = no surface.
        """
        if self.depth_paths is None:
            raise ValueError(f"scene {self.root} has no depth maps")
        path = self.depth_paths[i]
        arr = _read_array(path)
        return torch.from_numpy((arr.astype(np.float64) * self.depth_scale).astype(np.float32))

    def load_mask(self, i: int) -> torch.Tensor:
        """Instance ids of view i. Shapes: (H, W) int64; 0 background/ground, i + 1 object i."""
        if self.mask_paths is None:
            raise ValueError(f"scene {self.root} has no instance masks")
        return torch.from_numpy(_read_array(self.mask_paths[i]).astype(np.int64))


def _read_array(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file is missing") from None
    except OSError as err:
        raise ValueError(f"{path}: unreadable image ({err}); re-export or remove the frame") from None


def load_rgb(
    path: Path,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    expect_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Read an image file as RGB. Shapes: (3, H, W) float32. Range: [0, 1].

    RGBA (and LA) images are alpha-composited on ``background``; palette and grey images become RGB.
    """
    arr = _read_array(path)
    if arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == bool:
        x = arr.astype(np.float32)
    else:
        raise ValueError(f"{path}: unsupported pixel type {arr.dtype}; save as 8- or 16-bit PNG/JPEG")
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.shape[-1] == 2:  # grey + alpha
        x = np.concatenate([np.repeat(x[..., :1], 3, axis=-1), x[..., 1:]], axis=-1)
    if x.shape[-1] == 4:
        rgb, alpha = x[..., :3], x[..., 3:]
        x = rgb * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    img = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)  # (3, H, W)
    if expect_hw is not None and tuple(img.shape[-2:]) != tuple(expect_hw):
        raise ValueError(
            f"{path}: image is {img.shape[-2]}x{img.shape[-1]} (HxW) but the scene's cameras say "
            f"{expect_hw[0]}x{expect_hw[1]}; fix the w/h fields or the image"
        )
    return img
