"""Write procedural-world scenes to disk in the transforms.json scene format (see PREAMBLE / loaders).

Layout of ``OUT/scene_XXXXX/``: ``images/VVVV.png`` (RGB), ``depth/VVVV.png`` (16-bit z-depth in
millimetres, 0 = no surface), ``masks/VVVV.png`` (8-bit instance ids, 0 ground / sky, i + 1 object i)
and ``transforms.json`` (OpenGL camera-to-world matrices, pixel-corner principal points, objects).
``OUT/synth_config.json`` records the generator settings.

Each entry of ``objects`` (object i has mask id i + 1): ``name`` ("<colour> <shape>", unique within
a scene), ``shape`` (primitive family, or the mesh folder name), ``color`` (a ``PALETTE`` name) and
``color_rgb``, ``size_m`` (full extents in the object frame, metres), ``center`` (world, metres; the
object rests on z = 0, so center z = size_m[2] / 2), ``yaw_deg`` (about +z), ``box`` (the oriented
bounding box: ``center``, ``size``, ``R_obj2world``), ``visible`` (per frame: the fraction of the
object's in-frame pixels not hidden by other objects, i.e. visible pixels / pixels of an unoccluded
render; 0 when the object has no pixel in the frame) and ``visible_pixels`` (per frame: mask pixel
count). The ``gst`` block adds the ground texture, the light and the sky colour ``background_rgb``.

Determinism: scene i is a pure function of (seed, i) (``scene_generator``), so scenes are independent
and the same seed gives byte-identical files. Resume: a scene is complete only once its
transforms.json exists; it is written into ``OUT/.scene_XXXXX.partial`` and renamed atomically, so an
interrupted run leaves at most one partial folder, which the next run deletes and redoes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gst.data.synth.cameras import CameraSamplingConfig, sample_cameras
from gst.data.synth.scenes import PALETTE, SceneSamplingConfig, SceneSpec, sample_scene
from gst.geometry.conventions import opencv_w2c_to_opengl_c2w

FORMAT_VERSION = 1
DEPTH_SCALE_M = 1e-3  # depth PNG unit: millimetres (nerfstudio's depth_unit_scale_factor)
_MAX_DEPTH_MM = 65535


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Settings of one procedural dataset. Everything but ``num_scenes`` must match on resume."""

    num_scenes: int
    views_per_scene: int = 24
    image_hw: tuple[int, int] = (128, 128)  # (H, W)
    seed: int = 0
    meshes_dir: str | None = None  # folder of OBJ meshes (one per sub-folder); None: primitives only
    png_compress_level: int = 6  # zlib level 0-9 of every PNG; changes file bytes, not pixels
    cameras: CameraSamplingConfig = field(default_factory=CameraSamplingConfig)
    scenes: SceneSamplingConfig = field(default_factory=SceneSamplingConfig)

    def __post_init__(self) -> None:
        if self.num_scenes < 0 or self.views_per_scene < 1:
            raise ValueError(
                f"SynthConfig: need num_scenes >= 0 and views_per_scene >= 1, got {self.num_scenes}, "
                f"{self.views_per_scene}"
            )
        H, W = self.image_hw
        if not (8 <= H <= 4096 and 8 <= W <= 4096):
            raise ValueError(f"SynthConfig.image_hw must lie in [8, 4096] pixels, got {self.image_hw}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"SynthConfig.seed must be in [0, 2^63), got {self.seed}")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"SynthConfig.png_compress_level must be in 0-9, got {self.png_compress_level}")

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("num_scenes")
        return json.loads(json.dumps(out))  # tuples -> lists, as they read back


def scene_generator(seed: int, scene_index: int) -> torch.Generator:
    """The generator of scene ``scene_index``: seeded by a hash of (seed, index), so scenes are
    independent of each other and of how many scenes a run makes."""
    state = np.random.SeedSequence([int(seed), int(scene_index)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2**63 - 1))


def scene_dir_name(scene_index: int) -> str:
    return f"scene_{scene_index:05d}"


def is_complete(scene_dir: Path) -> bool:
    return (Path(scene_dir) / "transforms.json").is_file()


def _objects_json(scene: SceneSpec, visible: np.ndarray, visible_pixels: np.ndarray) -> list[dict]:
    objects = []
    for i, obj in enumerate(scene.objects):
        center = [float(c) for c in obj.center]
        size = [float(s) for s in obj.size_m]
        objects.append(
            {
                "name": obj.name,
                "shape": obj.shape,
                "color": obj.color,
                "color_rgb": list(PALETTE[obj.color]),
                "size_m": size,
                "center": center,
                "yaw_deg": float(np.degrees(obj.yaw_rad)),
                "box": {"center": center, "size": size, "R_obj2world": obj.R_obj2world.tolist()},
                "visible": [float(v) for v in visible[:, i]],  # visible / unoccluded in-frame pixels
                "visible_pixels": [int(p) for p in visible_pixels[:, i]],
            }
        )
    return objects


def _transforms_json(
    scene: SceneSpec, K: np.ndarray, w2c: np.ndarray, image_hw: tuple[int, int], views, seed: int, index: int
) -> dict[str, Any]:
    H, W = image_hw
    c2w_gl = opencv_w2c_to_opengl_c2w(torch.from_numpy(w2c)).numpy()  # (V, 4, 4)
    frames = [
        {
            "file_path": f"images/{v:04d}.png",
            "transform_matrix": c2w_gl[v].tolist(),
            "fl_x": float(K[v, 0, 0]),
            "fl_y": float(K[v, 1, 1]),
            "cx": float(K[v, 0, 2]) + 0.5,
            "cy": float(K[v, 1, 2]) + 0.5,  # pixel-corner convention
            "w": W,
            "h": H,
            "depth_file_path": f"depth/{v:04d}.png",
            "mask_file_path": f"masks/{v:04d}.png",
        }
        for v in range(len(K))
    ]
    g, light = scene.ground, scene.light
    return {
        "camera_model": "PINHOLE",
        "w": W,
        "h": H,
        "frames": frames,
        "depth_unit_scale_factor": DEPTH_SCALE_M,
        "objects": _objects_json(scene, views.visible_fraction, views.visible_pixels),
        "gst": {
            "generator": "gst.data.synth",
            "version": FORMAT_VERSION,
            "seed": seed,
            "scene_index": index,
            "background_rgb": list(scene.background_rgb),
            "ground": {
                "pattern": g.pattern,
                "color_a": list(g.color_a),
                "color_b": list(g.color_b),
                "period_m": g.period_m,
                "angle_deg": float(np.degrees(g.angle_rad)),
                "half_extent_m": g.half_extent_m,
                "plane": "z = 0",
            },
            "light": {
                "direction": list(light.direction),
                "color": list(light.color),
                "ambient": light.ambient,
            },
        },
    }


def depth_to_png_array(depth: np.ndarray) -> np.ndarray:
    """Metric depth (H, W) float -> uint16 millimetres; 0 stays 0, beyond 65.535 m becomes 0 (none)."""
    mm = np.rint(depth / DEPTH_SCALE_M)
    mm[(depth <= 0.0) | (mm > _MAX_DEPTH_MM)] = 0
    return mm.astype(np.uint16)


def _save_png(arr: np.ndarray, path: Path, level: int) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=level)


_PNG_POOL: ThreadPoolExecutor | None = None


def _png_pool() -> ThreadPoolExecutor:
    """Threads for PNG writing: zlib and file I/O release the GIL, and creating a file is slow on
    overlay file systems, so a few threads overlap the waits. Files are independent: output is the same."""
    global _PNG_POOL
    if _PNG_POOL is None:
        _PNG_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gst-png")
    return _PNG_POOL


def render_scene(renderer, config: SynthConfig, scene_index: int, mesh_paths: dict[str, Path] | None = None):
    """Sample and render scene ``scene_index``; returns (SceneSpec, K (V,3,3), w2c (V,4,4), RenderedViews)."""
    g = scene_generator(config.seed, scene_index)
    scene = sample_scene(g, config=config.scenes, mesh_paths=mesh_paths)
    K, w2c = sample_cameras(g, config.views_per_scene, config.image_hw, config=config.cameras)
    K, w2c = K.numpy(), w2c.numpy()
    return scene, K, w2c, renderer.render(scene, K, w2c, config.image_hw)


def write_scene(
    renderer, out_dir: Path, config: SynthConfig, scene_index: int, mesh_paths: dict[str, Path] | None = None
) -> bool:
    """Render and write scene ``scene_index`` unless it is complete. Returns True if it was written."""
    out_dir = Path(out_dir)
    final = out_dir / scene_dir_name(scene_index)
    if is_complete(final):
        return False
    tmp = out_dir / f".{scene_dir_name(scene_index)}.partial"
    for stale in (tmp, final):  # leftovers of an interrupted run
        if stale.exists():
            shutil.rmtree(stale)
    scene, K, w2c, views = render_scene(renderer, config, scene_index, mesh_paths)
    for sub in ("images", "depth", "masks"):
        (tmp / sub).mkdir(parents=True)
    level, pool = config.png_compress_level, _png_pool()
    jobs = []
    for v in range(len(K)):
        jobs.append(pool.submit(_save_png, views.rgb[v], tmp / "images" / f"{v:04d}.png", level))
        jobs.append(
            pool.submit(_save_png, depth_to_png_array(views.depth[v]), tmp / "depth" / f"{v:04d}.png", level)
        )
        jobs.append(pool.submit(_save_png, views.mask[v], tmp / "masks" / f"{v:04d}.png", level))
    for job in jobs:
        job.result()  # re-raises a failed write before the scene is marked complete
    meta = _transforms_json(scene, K, w2c, config.image_hw, views, config.seed, scene_index)
    (tmp / "transforms.json").write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, final)
    return True


def check_or_write_config(out_dir: Path, config: SynthConfig, mesh_paths: dict[str, Path] | None) -> None:
    """Record the settings in OUT/synth_config.json; on resume, refuse different settings."""
    record = {"format_version": FORMAT_VERSION, **config.to_json(), "meshes": sorted(mesh_paths or {})}
    path = Path(out_dir) / "synth_config.json"
    if path.exists():
        old = json.loads(path.read_text())
        # The mesh folder may move; the mesh names (compared) are what the scenes depend on.
        diff = sorted(k for k in set(old) | set(record) if old.get(k) != record.get(k) and k != "meshes_dir")
        if diff:
            raise ValueError(
                f"{path}: this folder was generated with different settings ({', '.join(diff)}); "
                "pass the same settings to resume, or choose a new --out folder"
            )
        return
    path.write_text(json.dumps(record, indent=1) + "\n")


def generate_dataset(
    config: SynthConfig, out_dir: Path, *, renderer=None, progress: bool = False
) -> dict[str, int]:
    """Write scenes 0 .. num_scenes - 1 into ``out_dir``, skipping complete ones (resume).

    Returns counts {"written": ..., "skipped": ...}.
    """
    from gst.data.synth.meshes import find_obj_meshes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mesh_paths = find_obj_meshes(Path(config.meshes_dir)) if config.meshes_dir else None
    check_or_write_config(out_dir, config, mesh_paths)
    if renderer is None:
        from gst.data.synth.render import Renderer

        renderer = Renderer()
    indices = range(config.num_scenes)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth scenes", unit="scene")
    written = 0
    for i in indices:
        written += write_scene(renderer, out_dir, config, i, mesh_paths)
    return {"written": written, "skipped": config.num_scenes - written}
