"""The procedural world: random primitive scenes on a textured ground, rendered with moderngl (EGL).

World frame: +z up, ground plane z = 0, metres. Cameras follow ``gst.geometry.conventions``.
Modules: ``cameras`` (camera rigs), ``scenes`` (objects, ground, light), ``meshes`` (primitive and OBJ
meshes), ``render`` (the rasterizer; imports moderngl), ``writer`` (scene folders on disk, resume),
``summary`` and ``bench`` (the `gst data summary` / `gst data bench-render` commands).
The renderer is not imported here: it needs moderngl and an EGL context.
"""

from gst.data.synth.cameras import CameraSamplingConfig, look_at_w2c, sample_cameras
from gst.data.synth.scenes import PALETTE, PRIMITIVE_SHAPES, SceneSamplingConfig, SceneSpec, sample_scene
from gst.data.synth.writer import SynthConfig, generate_dataset, render_scene, write_scene

__all__ = [
    "PALETTE",
    "PRIMITIVE_SHAPES",
    "CameraSamplingConfig",
    "SceneSamplingConfig",
    "SceneSpec",
    "SynthConfig",
    "generate_dataset",
    "look_at_w2c",
    "render_scene",
    "sample_cameras",
    "sample_scene",
    "write_scene",
]
