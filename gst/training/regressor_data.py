"""Pixels of a token cache's pairs for the pose regressor, decoded once and held in memory as uint8.

A token cache (``gst.data.token_cache``) lists every pair by scene, view indices, intrinsics at the
tokenizer resolution and the true relative camera; the regressor needs the views themselves. Decoding
PNGs at every step would bind one CPU thread, so ``load_pair_images`` reads each view a split uses ONCE
from the scene folders, brings it to the cache's ``image_hw`` exactly as the cache did
(``gst.data.views.crop_resize`` with the cache's crop mode, so the cache's ``K_obs`` / ``K_tgt`` describe
these pixels; checked on the first pair), and keeps it as uint8 (2,000 scenes x 24 views at 64x64 are
590 MB). With ``store``, the array is also written to ``STORE/<split>.npz`` (atomically, with a JSON
description) and read back by later runs over the same cache instead of decoding again.

Glossary: N pairs, M views, H/W pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gst.data.token_cache import TokenCache
from gst.data.views import crop_resize

_STORE_FORMAT = "gst.regressor_pixels.v1"


@dataclass
class PairImages:
    """One split's views and, per pair, which of them are its observed and target images."""

    views: torch.Tensor  # (M, 3, H, W) uint8
    obs_index: torch.Tensor  # (N,) int64 rows of ``views``
    tgt_index: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.obs_index.shape[0])

    def pairs(self, rows: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Observed and target images of some pairs. Shapes: rows (B,) -> (B, 3, H, W) twice, float32.
        Range: [0, 1]."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        obs = self.views[self.obs_index[rows]].float() / 255.0
        tgt = self.views[self.tgt_index[rows]].float() / 255.0
        return obs, tgt


def _scene_views(scene_index: np.ndarray, views: np.ndarray) -> dict[int, list[int]]:
    """The sorted views each scene of a split uses. Shapes: scene_index (N,), views (N, 2)."""
    used: dict[int, set[int]] = {}
    for s, (o, t) in zip(scene_index.tolist(), views.tolist(), strict=True):
        used.setdefault(s, set()).update((o, t))
    return {s: sorted(v) for s, v in sorted(used.items())}


def _manifest_sha256(cache: TokenCache) -> str:
    return hashlib.sha256((cache.root / "manifest.json").read_bytes()).hexdigest()


def _describe(cache: TokenCache, split: str, scenes_root: Path) -> dict[str, Any]:
    """What a stored pixel array holds; a store is reused only when this matches exactly."""
    return {
        "format": _STORE_FORMAT,
        "cache": str(cache.root.resolve()),
        "cache_manifest_sha256": _manifest_sha256(cache),
        "split": split,
        "scenes_root": str(scenes_root.resolve()),
        "image_hw": list(cache.manifest["image_hw"]),
        "crop": cache.manifest["config"]["crop"],
    }


def _decode(
    cache: TokenCache, split: str, scenes_root: Path, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and resize every view the split uses -> (views (M, 3, H, W) uint8, obs (N,), tgt (N,))."""
    from gst.data.loaders import load_scene

    data = cache.split(split)
    image_hw = tuple(cache.manifest["image_hw"])
    crop = cache.manifest["config"]["crop"]
    scene_index, pair_views = np.asarray(data.scene_index), np.asarray(data.views)
    used = _scene_views(scene_index, pair_views)
    row_of: dict[tuple[int, int], int] = {}
    chunks = []
    items = used.items()
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc=f"pixels {split}", unit="scene", file=sys.stderr)
    for s, views in items:
        folder = scenes_root / data.scenes[s]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: scene {data.scenes[s]!r} of the cache {cache.root} is not there; pass the "
                "folder the cache was built from with --scenes"
            )
        scene = load_scene(folder, None if (folder / "transforms.json").is_file() else "all")
        images, _ = crop_resize(scene.load_images(views), scene.K[views], image_hw, mode=crop)
        chunks.append((images.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).numpy())  # (v, 3, H, W)
        for v in views:
            row_of[(s, v)] = len(row_of)
    keys = list(zip(scene_index.tolist(), pair_views.tolist(), strict=True))  # (scene, [obs, tgt])
    obs = np.asarray([row_of[(s, v[0])] for s, v in keys])
    tgt = np.asarray([row_of[(s, v[1])] for s, v in keys])
    views_u8 = np.concatenate(chunks) if chunks else np.zeros((0, 3, *image_hw), np.uint8)
    return views_u8, obs.astype(np.int64), tgt.astype(np.int64)


def _check_intrinsics(cache: TokenCache, split: str, scenes_root: Path) -> None:
    """The first pair's observed K, brought to image_hw from its scene, must be the cache's K_obs."""
    from gst.data.loaders import load_scene
    from gst.data.views import crop_resize_intrinsics

    data = cache.split(split)
    if len(data) == 0:
        return
    folder = scenes_root / data.scenes[int(data.scene_index[0])]
    scene = load_scene(folder, None if (folder / "transforms.json").is_file() else "all")
    view = int(data.views[0, 0])
    K = crop_resize_intrinsics(
        scene.K[view], scene.image_hw, tuple(cache.manifest["image_hw"]), cache.manifest["config"]["crop"]
    )
    if not torch.allclose(K.float(), torch.tensor(np.array(data.K_obs[0])), rtol=1e-4, atol=1e-3):
        raise ValueError(
            f"{folder}: view {view}'s intrinsics at {cache.manifest['image_hw']} differ from the cache's "
            f"K_obs of its first {split} pair; --scenes must be the folder the cache was built from"
        )


def load_pair_images(
    cache: TokenCache,
    split: str,
    *,
    scenes_root: str | Path | None = None,
    store: str | Path | None = None,
    progress: bool = False,
) -> PairImages:
    """The views of ``cache``'s ``split`` pairs (module docstring). ``scenes_root``: where the scene
    folders are (default: the cache manifest's ``scenes_root``); ``store``: a folder to keep the decoded
    array in across runs."""
    root = Path(scenes_root if scenes_root is not None else cache.manifest["scenes_root"])
    _check_intrinsics(cache, split, root)
    meta = _describe(cache, split, root)
    array_path = Path(store) / f"{split}.npz" if store is not None else None
    meta_path = Path(store) / f"{split}.json" if store is not None else None
    if array_path is not None and array_path.is_file() and meta_path.is_file():
        saved = json.loads(meta_path.read_text())
        if {k: saved.get(k) for k in meta} == meta:
            with np.load(array_path) as z:
                return PairImages(
                    views=torch.from_numpy(z["views"]),
                    obs_index=torch.from_numpy(z["obs"]),
                    tgt_index=torch.from_numpy(z["tgt"]),
                )
        print(f"gst: notice: {array_path} holds other pixels than {meta}; decoding again", file=sys.stderr)
    views, obs, tgt = _decode(cache, split, root, progress)
    if array_path is not None:
        array_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = array_path.with_name(array_path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, views=views, obs=obs, tgt=tgt)  # uncompressed: reading back costs no CPU
        os.replace(tmp, array_path)
        meta_path.write_text(json.dumps({**meta, "num_views": len(views), "num_pairs": len(obs)}) + "\n")
    return PairImages(
        views=torch.from_numpy(views), obs_index=torch.from_numpy(obs), tgt_index=torch.from_numpy(tgt)
    )


__all__ = ["PairImages", "load_pair_images"]
