"""Per-cell object labels of a token cache's views: what each image token shows (issue 22).

For every view of every scene in a token cache, and every cell of the image token grid (the cache's
``image_grid``, e.g. 8x8 over the cache's crop of the image), from the procedural world's instance
masks, depth maps and objects metadata:

- ``object``: the object the cell shows: the most frequent object among its pixels (0-based index
  into the scene's ``objects``) when it covers at least ``MIN_COVER`` (a quarter) of the cell, else -1
  (ground / sky; a quarter keeps small, distant objects, which majority voting would drop);
- ``shape``, ``colour``: that object's class in ``SHAPE_CLASSES`` / ``COLOUR_CLASSES`` (-1 for none);
- ``centre``: that object's centre in the view's camera frame (OpenCV: x right, y down, z forward,
  metres; NaN for none), the same centre ``g3d_point`` questions ask for;
- ``depth``: the mean z-depth of the cell's pixels that have a surface (metres; NaN when none do).

They are the targets of the reader's cell heads (``gst.model.reader``, ``ReaderConfig.cell_heads``):
LLMI3D / Loc3R-style object-level perception beside the token loss, and GeoVR / DUSt3R-style dense
geometry (depth, and the object centre as a 3D point).

Storage: ``<cache>/cells/cells.json`` (grid, classes, source) and ``<cache>/cells/<split>/<name>.npy``
of shape (num scenes of the split, V, h, w[, 3]), indexed by the split's ``scene_index`` and the view
numbers in its ``views``; ``gst data cells --cache DIR`` builds them. Scenes without masks, depth or
objects metadata are an error naming the scene (only the procedural world has them).

Glossary: V views per scene, h/w image token grid, H/W image pixels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gst.data.loaders import load_scene
from gst.data.scene import Scene
from gst.data.synth.scenes import PALETTE, PRIMITIVE_SHAPES
from gst.data.token_cache import TokenCache
from gst.data.views import crop_box

SHAPE_CLASSES: tuple[str, ...] = (*PRIMITIVE_SHAPES, "other")  # "other": a mesh object
COLOUR_CLASSES: tuple[str, ...] = tuple(PALETTE)
CELL_ARRAYS: tuple[str, ...] = ("object", "shape", "colour", "centre", "depth")
MIN_COVER = 0.25  # share of a cell's pixels an object needs to label the cell
CELLS_DIR = "cells"
CELLS_FORMAT = "gst-cell-labels"
CELLS_FORMAT_VERSION = 1


def _shape_class(name: str) -> int:
    """A primitive's index in ``SHAPE_CLASSES``; a mesh (any other shape name) is "other"."""
    return SHAPE_CLASSES.index(name if name in SHAPE_CLASSES else "other")


def _colour_class(name: str, where: str) -> int:
    if name not in COLOUR_CLASSES:
        raise ValueError(f"{where}: unknown colour {name!r}; known: {list(COLOUR_CLASSES)}")
    return COLOUR_CLASSES.index(name)


def view_cell_labels(
    scene: Scene, view: int, image_hw: tuple[int, int], grid_hw: tuple[int, int], crop: str = "center_crop"
) -> dict[str, np.ndarray]:
    """The cell labels of one view (module docstring). Shapes: object/shape/colour (h, w) int16,
    centre (h, w, 3) float32, depth (h, w) float32."""
    if scene.mask_paths is None or scene.depth_paths is None or scene.objects is None:
        raise ValueError(
            f"scene {scene.root}: cell labels need instance masks, depth maps and objects metadata "
            "(the procedural world of `gst data synth` has them)"
        )
    mask = scene.load_mask(view).numpy()  # (H, W) 0 ground/sky, i + 1 object i
    depth = scene.load_depth(view).numpy().astype(np.float64)  # (H, W), 0 = no surface
    y0, x0, ch, cw = crop_box(scene.image_hw, image_hw, crop)  # type: ignore[arg-type]
    mask, depth = mask[y0 : y0 + ch, x0 : x0 + cw], depth[y0 : y0 + ch, x0 : x0 + cw]
    h, w = grid_hw
    n_obj = len(scene.objects)
    if mask.max(initial=0) > n_obj:
        raise ValueError(f"scene {scene.root} view {view}: mask id {mask.max()} > {n_obj} objects")
    cell = ((np.arange(ch) * h) // ch)[:, None] * w + ((np.arange(cw) * w) // cw)[None, :]  # (ch, cw)
    counts = np.bincount((cell * (n_obj + 1) + mask).ravel(), minlength=h * w * (n_obj + 1))
    counts = counts.reshape(h * w, n_obj + 1)[:, 1:]  # (n, N) pixels of each object per cell
    area = np.bincount(cell.ravel(), minlength=h * w)  # (n,)
    best = counts.argmax(1) if n_obj else np.zeros(h * w, dtype=np.int64)
    top = counts.max(1) if n_obj else np.zeros(h * w)
    obj = np.where(top >= MIN_COVER * area, best, -1)  # (n,)
    has = depth > 0
    dsum = np.bincount(cell[has], weights=depth[has], minlength=h * w)
    dnum = np.bincount(cell[has], minlength=h * w)
    depth_cell = np.where(dnum > 0, dsum / np.maximum(dnum, 1), np.nan)
    shapes = np.array([_shape_class(o["shape"]) for o in scene.objects] + [-1])
    colours = np.array([_colour_class(o["color"], str(scene.root)) for o in scene.objects] + [-1])
    w2c = scene.w2c[view].numpy()
    centres = np.array([o["center"] for o in scene.objects], dtype=np.float64).reshape(-1, 3)
    cam = centres @ w2c[:3, :3].T + w2c[:3, 3]  # (N, 3) camera frame
    cam = np.concatenate([cam, np.full((1, 3), np.nan)])  # index -1: none
    return {
        "object": obj.reshape(h, w).astype(np.int16),
        "shape": shapes[obj].reshape(h, w).astype(np.int16),
        "colour": colours[obj].reshape(h, w).astype(np.int16),
        "centre": cam[obj].reshape(h, w, 3).astype(np.float32),
        "depth": depth_cell.reshape(h, w).astype(np.float32),
    }


def _scene_labels(args: tuple[str, int, tuple[int, int], tuple[int, int], str]) -> dict[str, np.ndarray]:
    path, num_views, image_hw, grid_hw, crop = args
    scene = load_scene(path)
    if scene.num_views < num_views:
        raise ValueError(f"scene {path}: {scene.num_views} views, the cache refers to view {num_views - 1}")
    per_view = [view_cell_labels(scene, v, image_hw, grid_hw, crop) for v in range(scene.num_views)]
    return {k: np.stack([p[k] for p in per_view]) for k in CELL_ARRAYS}


def build_cell_labels(cache: TokenCache, *, workers: int = 1, progress: bool = False) -> Path:
    """Write ``<cache>/cells/`` for every split of ``cache`` (module docstring); returns that folder.
    Written to a temporary folder first and renamed, so a folder that exists is complete."""
    manifest = cache.manifest
    root = Path(manifest["scenes_root"])
    image_hw = tuple(manifest["image_hw"])
    grid_hw = tuple(manifest["image_grid"])
    crop = manifest["config"]["crop"]
    out = cache.root / CELLS_DIR
    tmp = cache.root / (CELLS_DIR + ".tmp")
    tmp.mkdir(exist_ok=True)
    info: dict[str, Any] = {
        "format": CELLS_FORMAT,
        "format_version": CELLS_FORMAT_VERSION,
        "grid_hw": list(grid_hw),
        "image_hw": list(image_hw),
        "crop": crop,
        "scenes_root": str(root),
        "shape_classes": list(SHAPE_CLASSES),
        "colour_classes": list(COLOUR_CLASSES),
        "splits": {},
    }
    for name, split in cache.splits.items():
        num_views = int(np.asarray(split.views).max()) + 1
        jobs = [(str(root / s), num_views, image_hw, grid_hw, crop) for s in split.scenes]
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(workers) as pool:
                labels = list(pool.map(_scene_labels, jobs, chunksize=16))
        else:
            labels = []
            for i, job in enumerate(jobs):
                labels.append(_scene_labels(job))
                if progress and (i + 1) % 200 == 0:
                    print(f"{name}: {i + 1}/{len(jobs)} scenes", flush=True)
        V = min(lab["object"].shape[0] for lab in labels)
        (tmp / name).mkdir(exist_ok=True)
        for key in CELL_ARRAYS:
            np.save(tmp / name / f"{key}.npy", np.stack([lab[key][:V] for lab in labels]))
        info["splits"][name] = {"num_scenes": len(labels), "views": V}
    (tmp / "cells.json").write_text(json.dumps(info, indent=1))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


@dataclass
class CellLabels:
    """Opened ``<cache>/cells/``: per split, the arrays of the module docstring (memory-mapped)."""

    root: Path
    info: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]

    def pairs(self, split: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Labels of the observed and target views of a cache split's pair rows.
        Shapes: (n, 2, h, w) for object/shape/colour/depth, (n, 2, h, w, 3) for centre."""
        if split.name not in self.arrays:
            raise ValueError(f"{self.root}: no cell labels for split {split.name!r}; rebuild them")
        rows = np.asarray(rows)
        scene = np.asarray(split.scene_index)[rows][:, None]  # (n, 1)
        views = np.asarray(split.views)[rows]  # (n, 2)
        return {k: np.asarray(a[scene, views]) for k, a in self.arrays[split.name].items()}

    def pair_targets(self, split: Any, rows: np.ndarray) -> np.ndarray:
        """``pairs`` packed per cell as the reader's cell loss reads them (``gst.model.loss.cell_loss``):
        object, shape, colour, centre xyz, depth. Shapes: -> (n, 2, h*w, 7) float32."""
        lab = self.pairs(split, rows)
        n = len(rows)
        parts = [lab[k].reshape(n, 2, -1, 1).astype(np.float32) for k in ("object", "shape", "colour")]
        parts += [lab["centre"].reshape(n, 2, -1, 3), lab["depth"].reshape(n, 2, -1, 1)]
        return np.concatenate(parts, axis=-1).astype(np.float32)


def open_cell_labels(cache: TokenCache) -> CellLabels:
    """Open ``<cache>/cells/``, checked against the cache's grid and splits."""
    root = cache.root / CELLS_DIR
    path = root / "cells.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; build the cell labels of {cache.root} with "
            f"`gst data cells --cache {cache.root}`"
        )
    info = json.loads(path.read_text())
    if info.get("format") != CELLS_FORMAT or info.get("format_version") != CELLS_FORMAT_VERSION:
        raise ValueError(f"{path}: not {CELLS_FORMAT} version {CELLS_FORMAT_VERSION}; rebuild it")
    if tuple(info["grid_hw"]) != tuple(cache.image_grid):
        raise ValueError(f"{path}: grid {info['grid_hw']} differs from the cache's {list(cache.image_grid)}")
    if info["shape_classes"] != list(SHAPE_CLASSES) or info["colour_classes"] != list(COLOUR_CLASSES):
        raise ValueError(f"{path}: classes differ from gst.data.cell_labels'; rebuild it")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, split in cache.splits.items():
        entry = info["splits"].get(name)
        if entry is None or entry["num_scenes"] != len(split.scenes):
            raise ValueError(f"{path}: split {name!r} does not match the cache's; rebuild it")
        arrays[name] = {k: np.load(root / name / f"{k}.npy", mmap_mode="r") for k in CELL_ARRAYS}
    return CellLabels(root=root, info=info, arrays=arrays)


__all__ = [
    "CELL_ARRAYS",
    "COLOUR_CLASSES",
    "CellLabels",
    "SHAPE_CLASSES",
    "build_cell_labels",
    "open_cell_labels",
    "view_cell_labels",
]
