"""Scenes, pairs and (optionally downsized) images for an evaluation run.

``--data DIR`` is either one scene folder (a ``transforms.json`` or ``transforms_<split>.json`` in it,
e.g. NeRF-synthetic lego) or a folder of scene folders (the procedural world: ``DIR/scene_XXXXX``).
Pairs are drawn within scenes by ``gst.data.pairs.sample_pairs``.

``--resolution R`` resizes every image to width R (height keeps the aspect ratio, rounded) with
``gst.data.views.crop_resize(mode="stretch")``, which scales K exactly (pixel-centre convention:
fx' = s fx, cx' = (cx + 0.5) s - 0.5).

Glossary: H/W pixels, V views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from gst.data.pairs import Pair, PairConfig, sample_pairs, scene_split
from gst.data.scene import Scene
from gst.data.views import crop_resize, crop_resize_intrinsics
from gst.geometry.conventions import relative_w2c


def _is_scene_dir(path: Path) -> bool:
    return (path / "transforms.json").is_file() or any(path.glob("transforms_*.json"))


def discover_scene_dirs(data: str | Path) -> list[Path]:
    """The scene folders under ``data`` (itself if it is one), sorted by name."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder")
    if _is_scene_dir(root):
        return [root]
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and _is_scene_dir(p))
    if not dirs:
        raise FileNotFoundError(
            f"--data {root}: neither a scene folder (transforms.json / transforms_<split>.json) nor a folder "
            "of scene folders; make one with `gst data synth --out DIR`"
        )
    return dirs


def load_scenes(
    data: str | Path,
    split: str | None = None,
    max_scenes: int | None = None,
    scenes: str = "all",
    val_fraction: float = 0.1,
) -> list[Scene]:
    """Load the scenes under ``data`` with ``gst.data.loaders.load_scene``.

    ``scenes`` = "train" / "val" keeps the scene folders of that hash split (``gst.data.pairs.scene_split``
    of the folder name with ``val_fraction``); "all" keeps every one. ``max_scenes`` then keeps the first N.
    """
    from gst.data.loaders import load_scene

    dirs = discover_scene_dirs(data)
    if scenes not in ("all", "train", "val"):
        raise ValueError(f"--scenes must be all, train or val, got {scenes!r}")
    if scenes != "all":
        dirs = [d for d in dirs if scene_split(d.name, val_fraction) == scenes]
        if not dirs:
            raise ValueError(
                f"--data {data}: no scene falls in the {scenes!r} split (val_fraction {val_fraction})"
            )
    if max_scenes is not None:
        dirs = dirs[:max_scenes]
    return [load_scene(d, split=split) for d in dirs]


def resized_hw(image_hw: tuple[int, int], resolution: int | None) -> tuple[int, int]:
    """(H, W) after resizing to width ``resolution`` with the aspect ratio kept."""
    H, W = image_hw
    if resolution is None:
        return (H, W)
    if resolution < 8:
        raise ValueError(f"--resolution must be >= 8 pixels, got {resolution}")
    return (max(1, round(H * resolution / W)), resolution)


@dataclass
class EvalSet:
    """The scenes and pairs of one run, with cached images at the evaluated resolution."""

    scenes: list[Scene]
    pairs: list[Pair]
    resolution: int | None = None
    _cache: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def image_hw(self, scene_index: int) -> tuple[int, int]:
        return resized_hw(self.scenes[scene_index].image_hw, self.resolution)

    def image(self, scene_index: int, view: int) -> torch.Tensor:
        """Shapes: (3, H, W) float32 at the evaluated resolution. Range: [0, 1]."""
        key = (scene_index, view)
        if key not in self._cache:
            img = self.scenes[scene_index].load_image(view)  # (3, H, W)
            self._cache[key] = crop_resize(img, torch.eye(3), self.image_hw(scene_index), mode="stretch")[0]
        return self._cache[key]

    def K(self, scene_index: int, view: int) -> torch.Tensor:
        """Shapes: (3, 3) float64 pixels at the evaluated resolution."""
        scene = self.scenes[scene_index]
        return crop_resize_intrinsics(
            scene.K[view].double(), scene.image_hw, self.image_hw(scene_index), "stretch"
        )

    def w2c_rel(self, pair: Pair) -> torch.Tensor:
        """True target camera in the observed camera's frame. Shapes: (4, 4) float64."""
        w2c = self.scenes[pair.scene_index].w2c.double()
        return relative_w2c(w2c[pair.obs], w2c[pair.tgt])


def build_evalset(
    data: str | Path,
    *,
    num_pairs: int,
    seed: int,
    split: str | None = None,
    resolution: int | None = None,
    pair_config: PairConfig | None = None,
    max_scenes: int | None = None,
    scenes: str = "all",
    val_fraction: float = 0.1,
) -> EvalSet:
    loaded = load_scenes(data, split=split, max_scenes=max_scenes, scenes=scenes, val_fraction=val_fraction)
    pairs = sample_pairs(loaded, num_pairs, seed, pair_config)
    return EvalSet(scenes=loaded, pairs=pairs, resolution=resolution)
