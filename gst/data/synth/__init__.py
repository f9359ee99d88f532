"""The procedural world: random primitive scenes on a textured ground, rendered with moderngl (EGL).

World frame: +z up, ground plane z = 0, metres. Cameras follow ``gst.geometry.conventions``.
Modules: ``cameras`` (camera rigs), ``scenes`` (object and ground sampling), ``meshes`` (primitive
and OBJ meshes), ``render`` (the rasterizer), ``writer`` (scene folders on disk).
Import the renderer lazily: it needs moderngl and an EGL context.
"""

from gst.data.synth.cameras import CameraSamplingConfig, look_at_w2c, sample_cameras

__all__ = ["CameraSamplingConfig", "look_at_w2c", "sample_cameras"]
