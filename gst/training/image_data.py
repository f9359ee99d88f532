"""Images for the image tokenizer: every view of every scene under a folder, split by scene.

A scene is any folder holding ``transforms.json`` or ``transforms_<split>.json`` (the procedural
world, NeRF-synthetic, instant-ngp, nerfstudio), read with ``gst.data.loaders.load_scene`` (all splits
of a scene are read). Views are cropped and resized to the tokenizer's ``image_hw`` with
``gst.data.views.crop_resize`` and kept in memory as uint8.

Split: by scene name with ``gst.data.pairs.scene_split`` (the project's one split rule), so a scene's
views never straddle train and val. With a single scene, every k-th view (k = round(1 / val_fraction))
is validation instead, and a notice says so.

Glossary: N images, H/W pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from gst.data.loaders import load_scene
from gst.data.pairs import scene_split
from gst.data.views import crop_resize
from gst.training.tokenizer_config import ImageDataConfig


def find_scene_dirs(root: str | Path) -> list[Path]:
    """Scene folders under ``root`` (``root`` itself if it is one), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder; make one with `gst data synth --out {root}`")

    def is_scene(p: Path) -> bool:
        return (p / "transforms.json").is_file() or any(p.glob("transforms_*.json"))

    if is_scene(root):
        return [root]
    found = sorted({p.parent for p in root.rglob("transforms*.json") if is_scene(p.parent)})
    if not found:
        raise FileNotFoundError(
            f"--data {root}: no scene folders (transforms.json or transforms_<split>.json) inside; "
            f"make some with `gst data synth --out {root} --num-scenes N`"
        )
    return found


def _scene_images(path: Path, image_hw: tuple[int, int], crop: str) -> torch.Tensor:
    """All views of one scene. Shapes: -> (V, 3, H, W) uint8."""
    split = None if (path / "transforms.json").is_file() else "all"
    scene = load_scene(path, split)
    images, _ = crop_resize(scene.load_images(), scene.K.float(), image_hw, mode=crop)  # (V, 3, H, W)
    return (images.clamp(0, 1) * 255.0).round().to(torch.uint8)


def load_image_splits(
    root: str | Path, image_hw: tuple[int, int], config: ImageDataConfig
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train images, val images, description). Shapes: (N, 3, H, W) uint8 each."""
    scenes = find_scene_dirs(root)
    train, val = [], []
    single = len(scenes) == 1
    if single and config.val_fraction > 0:
        print(
            f"gst: notice: --data {root} holds one scene; every {round(1 / config.val_fraction)}-th view "
            "is used for validation",
            file=sys.stderr,
        )
    for path in scenes:
        images = _scene_images(path, image_hw, config.crop)
        if single:
            k = round(1 / config.val_fraction) if config.val_fraction > 0 else 0
            is_val = torch.tensor([k > 0 and i % k == 0 for i in range(images.shape[0])])
            train.append(images[~is_val]), val.append(images[is_val])
        elif scene_split(path.name, config.val_fraction) == "val":
            val.append(images)
        else:
            train.append(images)
    empty = torch.zeros(0, 3, *image_hw, dtype=torch.uint8)
    train_t = torch.cat(train) if train else empty
    val_t = torch.cat(val) if val else empty
    if config.max_images:
        train_t, val_t = train_t[: config.max_images], val_t[: config.max_images]
    if train_t.shape[0] == 0:
        raise ValueError(
            f"--data {root}: no training images after the split; add scenes or lower data.val_fraction"
        )
    info = {
        "root": str(Path(root).resolve()),
        "num_scenes": len(scenes),
        "num_train": int(train_t.shape[0]),
        "num_val": int(val_t.shape[0]),
        "split": "per-view" if single else "gst.data.pairs.scene_split",
        "val_fraction": config.val_fraction,
    }
    return train_t, val_t, info
