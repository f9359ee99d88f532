"""Statistics of a folder of scenes (``gst data summary DIR``), read back through ``gst.data.loaders``.

Camera distance: from the camera centre to the world origin, the scene centre of the procedural world
(the look-at targets lie within ``target_jitter_m`` of it). Field of view: horizontal,
2 atan(W / (2 fx)). Pair statistics run over every pair of views of a scene: the baseline (distance
between camera centres, metres) and the relative rotation angle (degrees).

Glossary: V views.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gst.geometry.conventions import camera_centers
from gst.geometry.errors import rotation_error_deg


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    q = np.percentile(values, [0, 10, 50, 90, 100])
    return {
        "min": float(q[0]),
        "p10": float(q[1]),
        "median": float(q[2]),
        "mean": float(values.mean()),
        "p90": float(q[3]),
        "max": float(q[4]),
    }


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def scene_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(complete scene folders, incomplete ones): complete = it holds a transforms.json."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; pass a folder made by `gst data synth`")
    if (root / "transforms.json").is_file():  # a single scene folder
        return [root], []
    complete, partial = [], []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and (entry.name.startswith("scene_") or entry.name.endswith(".partial")):
            (complete if (entry / "transforms.json").is_file() else partial).append(entry)
    return complete, partial


def _pair_stats(w2c: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    V = len(w2c)
    i, j = torch.triu_indices(V, V, offset=1)
    centres = camera_centers(w2c)  # (V, 3)
    baseline = (centres[i] - centres[j]).norm(dim=-1)
    angle = rotation_error_deg(w2c[i, :3, :3], w2c[j, :3, :3])
    return baseline.numpy(), angle.numpy()


def summarize(root: Path) -> dict[str, Any]:
    """Counts and ranges over every complete scene under ``root`` (or ``root`` itself if it is one)."""
    from gst.data.loaders import load_scene

    complete, partial = scene_dirs(Path(root))
    if not complete:
        raise FileNotFoundError(f"{root}: no scene folder with a transforms.json found")
    resolutions: Counter = Counter()
    objects_per_scene: Counter = Counter()
    shapes: Counter = Counter()
    colors: Counter = Counter()
    fov, distance, baseline, angle, visible_objects = [], [], [], [], []
    num_views = 0
    for folder in complete:
        scene = load_scene(folder)
        H, W = scene.image_hw
        resolutions[f"{H}x{W}"] += scene.num_views
        num_views += scene.num_views
        fov.append(np.degrees(2.0 * np.arctan(W / (2.0 * scene.K[:, 0, 0].numpy()))))
        distance.append(camera_centers(scene.w2c).norm(dim=-1).numpy())
        b, a = _pair_stats(scene.w2c)
        baseline.append(b)
        angle.append(a)
        objs = scene.objects or []
        objects_per_scene[len(objs)] += 1
        shapes.update(o.get("shape", "?") for o in objs)
        colors.update(o.get("color", "?") for o in objs)
        if objs and all("visible" in o for o in objs):
            vis = np.array([o["visible"] for o in objs])  # (N, V)
            visible_objects.append((vis > 0).sum(axis=0))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    vis_counts = cat(visible_objects)
    return {
        "root": str(root),
        "num_scenes": len(complete),
        "num_partial_scenes": len(partial),
        "num_views": num_views,
        "resolutions_HxW": dict(resolutions),
        "objects_per_scene": {str(k): v for k, v in sorted(objects_per_scene.items())},
        "shapes": dict(shapes.most_common()),
        "colors": dict(colors.most_common()),
        "fov_x_deg": _stats(cat(fov)),
        "camera_distance_to_origin_m": _stats(cat(distance)),
        "pair_baseline_m": _stats(cat(baseline)),
        "pair_rotation_deg": _stats(cat(angle)),
        "visible_objects_per_view": _stats(vis_counts.astype(np.float64)),
        "views_with_no_visible_object": float((vis_counts == 0).mean()) if vis_counts.size else math.nan,
        "disk_bytes": sum(_disk_bytes(f) for f in complete),
    }


def format_summary(s: dict[str, Any]) -> str:
    """Human-readable lines of a ``summarize`` result."""

    def rng(d: dict[str, float], unit: str) -> str:
        if not d:
            return "n/a"
        return f"{d['min']:.2f} .. {d['max']:.2f} {unit} (median {d['median']:.2f}, mean {d['mean']:.2f})"

    lines = [
        f"scenes: {s['num_scenes']} complete, {s['num_partial_scenes']} partial; views: {s['num_views']}",
        f"resolution (HxW: views): {s['resolutions_HxW']}",
        f"objects per scene (count: scenes): {s['objects_per_scene']}",
        f"shapes: {s['shapes']}",
        f"colours: {s['colors']}",
        f"horizontal fov: {rng(s['fov_x_deg'], 'deg')}",
        f"camera distance to origin: {rng(s['camera_distance_to_origin_m'], 'm')}",
        f"pair baseline: {rng(s['pair_baseline_m'], 'm')}",
        f"pair relative rotation: {rng(s['pair_rotation_deg'], 'deg')}",
        f"visible objects per view: {rng(s['visible_objects_per_view'], '')}; "
        f"views with none visible: {100 * s['views_with_no_visible_object']:.1f} %",
        f"disk size: {s['disk_bytes'] / 2**20:.1f} MiB",
    ]
    return "\n".join(lines)
