"""Rasterizer of the procedural world: moderngl on headless EGL (llvmpipe on CPU machines).

One ``Renderer`` owns one GL context, its compiled programs and framebuffers, and renders all views
of a scene in one go: every view is drawn into its own tile of an atlas framebuffer and the atlas is
read back once. Each view yields

- RGB (Lambert + a little specular, one directional light with a shadow map, ambient term, a
  procedural ground texture, sky colour where nothing is hit), no anti-aliasing;
- metric z-depth along the camera's +z (0 where no surface is hit), from the interpolated world
  position at the pixel centre, written to a float32 attachment;
- an instance mask (0 ground / sky, i + 1 object i) from the same fragments, so depth, mask and RGB
  sample exactly the same points.

A second pass, without depth test and with MAX blending, marks every pixel each object would cover if
nothing occluded it; visible / unoccluded pixel counts give the per-view visibility fraction.

Projection (the only place the OpenCV camera meets OpenGL): for a pixel-centre K, the image spans
u in [-0.5, W - 0.5], so the window x of a point is u + 0.5 and NDC x = 2 (u + 0.5) / W - 1; rows are
read back bottom-up and flipped, so NDC y = 1 - 2 (v + 0.5) / H. Writing u = fx x / z + cx with the
GL eye frame (x_e, y_e, z_e) = (x, -y, -z) (``_CV_TO_GL``) gives ``opengl_projection``.

Glossary: V views, N objects, H/W pixels.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass

import numpy as np

from gst.data.synth.scenes import GROUND_PATTERNS, PALETTE, SceneSpec
from gst.data.synth.shaders import (
    COVERAGE_FRAG,
    MAIN_FRAG,
    MAIN_VERT,
    MAX_VIEWS_PER_DRAW,
    SHADOW_FRAG,
    SHADOW_VERT,
)

MAX_OBJECTS = 8  # two RGBA8 coverage attachments, one channel per object
_CV_TO_GL = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> OpenGL eye axes
_SHADOW_SIZE = 1024  # shadow-map texels; it spans ``_SHADOW_HALF_M`` around the scene centre


def opengl_projection(K: np.ndarray, image_hw: tuple[int, int], near: float, far: float) -> np.ndarray:
    """OpenGL projection matrix (for GL eye coordinates) that reproduces the pinhole K exactly.

    clip = P @ _CV_TO_GL @ w2c @ x_world. Depth maps [near, far] to NDC [-1, 1].

    Shapes: K (3, 3) pixel-centre convention -> (4, 4) float64.
    """
    H, W = image_hw
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * fx / W
    P[0, 2] = 1.0 - 2.0 * (cx + 0.5) / W
    P[1, 1] = 2.0 * fy / H
    P[1, 2] = 2.0 * (cy + 0.5) / H - 1.0
    P[2, 2] = -(far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = -1.0
    return P


@dataclass(frozen=True)
class RenderedViews:
    """Renders of V views of one scene.

    Shapes: rgb (V, H, W, 3) uint8; depth (V, H, W) float32 metres (0 = no surface);
    mask (V, H, W) uint8 (0 ground/sky, i + 1 object i); visible_pixels (V, N) int64 (mask pixels
    of object i); unoccluded_pixels (V, N) int64 (pixels object i would cover with nothing in front);
    visible_fraction (V, N) float64 in [0, 1] (visible / unoccluded; 0 where unoccluded is 0).
    """

    rgb: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    visible_pixels: np.ndarray
    unoccluded_pixels: np.ndarray
    visible_fraction: np.ndarray


@dataclass(frozen=True)
class SceneBuffers:
    """Indexed world-space triangles of a scene, in draw order: closed objects, open objects, ground.

    Closed meshes are drawn with back-face culling (half the triangle setup, llvmpipe's bottleneck);
    open ones (OBJ meshes with holes) two-sided. Objects come before the ground so early depth
    rejection skips ground fragments hidden behind them.

    Shapes: vertices (U, 7) float32 rows (x, y, z, nx, ny, nz, id; id 0 = ground), indices (I,) int32.
    """

    vertices: np.ndarray
    indices: np.ndarray
    num_closed: int  # indices of closed objects, from 0
    num_objects: int  # indices of all objects, from 0; the ground's 6 follow


def _outward(positions: np.ndarray, normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each triangle's corners so that it winds counter-clockwise seen from outside."""
    tri_p, tri_n = positions.reshape(-1, 3, 3), normals.reshape(-1, 3, 3)
    geometric = np.cross(tri_p[:, 1] - tri_p[:, 0], tri_p[:, 2] - tri_p[:, 0])  # (F, 3)
    flip = (geometric * tri_n.sum(axis=1)).sum(-1) < 0.0
    order = np.where(flip[:, None], [0, 2, 1], [0, 1, 2])  # (F, 3)
    rows = np.arange(len(tri_p))[:, None]
    return tri_p[rows, order].reshape(-1, 3), tri_n[rows, order].reshape(-1, 3)


def scene_buffers(scene: SceneSpec) -> SceneBuffers:
    """Vertices shared by neighbouring triangles are stored once, so the vertex cache shades them once."""
    from gst.data.synth.meshes import transform

    parts: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for i, obj in enumerate(scene.objects):
        mesh = transform(obj.mesh, obj.R_obj2world, np.asarray(obj.center))
        pos, nrm = _outward(mesh.positions, mesh.normals)
        ids = np.full((len(pos), 1), float(i + 1))
        parts[obj.mesh.closed].append(np.concatenate([pos, nrm, ids], axis=1))
    rows = parts[True] + parts[False]
    num_closed = sum(len(r) for r in parts[True])
    e = scene.ground.half_extent_m
    ground = np.array(
        [[-e, -e, 0, 0, 0, 1, 0], [e, -e, 0, 0, 0, 1, 0], [e, e, 0, 0, 0, 1, 0], [-e, e, 0, 0, 0, 1, 0]]
    )
    if not rows:
        return SceneBuffers(ground.astype(np.float32), np.array([0, 1, 2, 0, 2, 3], np.int32), 0, 0)
    # Deduplicate in float32, the precision the GL sees; np.unique sorts, so the order is deterministic.
    unique, inverse = np.unique(np.concatenate(rows).astype(np.float32), axis=0, return_inverse=True)
    vertices = np.concatenate([unique, ground.astype(np.float32)])
    g = len(unique)
    indices = np.concatenate([inverse.reshape(-1), [g, g + 1, g + 2, g, g + 2, g + 3]]).astype(np.int32)
    return SceneBuffers(vertices, indices, num_closed, len(inverse.reshape(-1)))


def _light_matrix(direction: np.ndarray, half_extent: float) -> np.ndarray:
    """Orthographic clip-from-world matrix of the directional light, centred on the origin."""
    z = -direction / np.linalg.norm(direction)  # light looks along -direction
    helper = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    view = np.eye(4)
    view[:3, :3] = np.stack([x, y, -z])  # GL eye: looks along -z_eye
    depth_half = 60.0  # covers the whole ground plane along the light
    ortho = np.diag([1.0 / half_extent, 1.0 / half_extent, -1.0 / depth_half, 1.0])
    return ortho @ view


def _preload_triton() -> None:
    """Load triton's bundled LLVM before Mesa's llvmpipe loads its own.

    Loading triton (``import torch._dynamo``, which transformers and torchvision may do) after an
    llvmpipe EGL context exists crashes the process with a segmentation fault: two LLVM copies
    register the same global options. In the other order both work (checked with Mesa 22.3 /
    LLVM 15 and triton 3.8), so the renderer loads triton first when it is installed.
    """
    if importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton._C.libtriton")
    except Exception:  # triton is installed but unusable here: then nothing can load its LLVM later
        return


class Renderer:
    """A headless GL context with compiled programs, reused across scenes (creating one costs ~0.1 s).

    Not thread-safe; one per process.
    """

    def __init__(self, *, near: float = 0.05, far: float = 100.0, backend: str | None = "egl") -> None:
        _preload_triton()
        import moderngl

        self._mgl = moderngl
        kwargs = {"backend": backend} if backend else {}
        try:
            self.ctx = moderngl.create_standalone_context(**kwargs)
        except Exception as err:  # the message names the missing piece (libEGL, a display, ...)
            raise RuntimeError(
                f"could not create a headless OpenGL context (moderngl, backend={backend!r}): {err}. "
                "Install Mesa's EGL (e.g. apt install libegl1 libgl1-mesa-dri) or use a machine with a GPU."
            ) from None
        self.near, self.far = near, far
        self.main_prog = self.ctx.program(vertex_shader=MAIN_VERT, fragment_shader=MAIN_FRAG)
        self.cov_prog = self.ctx.program(vertex_shader=MAIN_VERT, fragment_shader=COVERAGE_FRAG)
        self.shadow_prog = self.ctx.program(vertex_shader=SHADOW_VERT, fragment_shader=SHADOW_FRAG)
        self.shadow_tex = self.ctx.depth_texture((_SHADOW_SIZE, _SHADOW_SIZE))
        self.shadow_tex.compare_func = "<="
        self.shadow_tex.repeat_x = self.shadow_tex.repeat_y = False
        self.shadow_tex.filter = (moderngl.LINEAR, moderngl.LINEAR)  # 2x2 percentage-closer filtering
        self.shadow_fbo = self.ctx.framebuffer(depth_attachment=self.shadow_tex)
        for k in range(4):  # GL_CLIP_DISTANCE0..3: the per-view tile bounds (see shaders.MAIN_VERT)
            self.ctx.enable_direct(0x3000 + k)
        self._vbo = self._ibo = None
        self._capacity = self._index_capacity = 0
        self._atlas_key: tuple | None = None

    # --- resources -------------------------------------------------------------------------------

    def _upload(self, buffers: SceneBuffers) -> None:
        vdata, idata = buffers.vertices.tobytes(), buffers.indices.tobytes()
        if len(vdata) > self._capacity or len(idata) > self._index_capacity:
            for buf in (self._vbo, self._ibo):
                if buf is not None:
                    buf.release()
            self._capacity = max(len(vdata), 2 * self._capacity, 1 << 20)
            self._index_capacity = max(len(idata), 2 * self._index_capacity, 1 << 20)
            self._vbo = self.ctx.buffer(reserve=self._capacity)
            self._ibo = self.ctx.buffer(reserve=self._index_capacity)
            vbo, ibo = self._vbo, self._ibo
            self._main_vao = self.ctx.vertex_array(
                self.main_prog, [(vbo, "3f 3f 1f", "in_pos", "in_normal", "in_id")], ibo, 4
            )
            # The coverage program ignores normals, so the linker drops that attribute.
            self._cov_vao = self.ctx.vertex_array(
                self.cov_prog, [(vbo, "3f 12x 1f", "in_pos", "in_id")], ibo, 4
            )
            self._shadow_vao = self.ctx.vertex_array(self.shadow_prog, [(vbo, "3f 16x", "in_pos")], ibo, 4)
        self._vbo.write(vdata)
        self._ibo.write(idata)
        self._buffers = buffers

    def _atlas(self, image_hw: tuple[int, int], num_views: int) -> tuple[int, int]:
        """(Re)create the atlas framebuffers for V tiles of H x W; returns (rows, cols)."""
        H, W = image_hw
        cols = min(num_views, max(1, 16384 // W), math.ceil(math.sqrt(num_views)))
        rows = math.ceil(num_views / cols)
        if rows * H > 16384:
            raise ValueError(f"{num_views} views of {H}x{W} do not fit one 16384-pixel atlas; render fewer")
        key = (H, W, rows, cols)
        if key != self._atlas_key:
            if self._atlas_key is not None:  # a new size: free the old atlas
                for obj in (
                    self.fbo,
                    self.color_fbo,
                    self.geom_fbo,
                    self.cov_fbo,
                    self.color_tex,
                    self.geom_tex,
                    self.depth_rb,
                    *self.cov_tex,
                ):
                    obj.release()
            size = (cols * W, rows * H)
            self.color_tex = self.ctx.texture(size, 4)
            self.geom_tex = self.ctx.texture(size, 2, dtype="f4")  # (z-depth, object id)
            self.depth_rb = self.ctx.depth_renderbuffer(size)
            self.fbo = self.ctx.framebuffer([self.color_tex, self.geom_tex], self.depth_rb)
            # Cleared separately: RGB to the sky colour, (depth, id) to zeros.
            self.color_fbo = self.ctx.framebuffer([self.color_tex])
            self.geom_fbo = self.ctx.framebuffer([self.geom_tex], self.depth_rb)
            self.cov_tex = [self.ctx.texture(size, 4) for _ in range(2)]
            self.cov_fbo = self.ctx.framebuffer(self.cov_tex)
            self._atlas_key = key
        return rows, cols

    # --- passes ----------------------------------------------------------------------------------

    def _set_scene_uniforms(self, scene: SceneSpec, light_mvp: np.ndarray) -> None:
        p = self.main_prog
        colors = np.zeros((MAX_OBJECTS + 1, 3), dtype=np.float32)
        for i, obj in enumerate(scene.objects):
            colors[i + 1] = PALETTE[obj.color]
        p["u_colors"].write(colors.tobytes())
        g = scene.ground
        p["u_pattern"].value = GROUND_PATTERNS.index(g.pattern)
        p["u_ground_a"].value = g.color_a
        p["u_ground_b"].value = g.color_b
        p["u_period"].value = g.period_m
        p["u_pattern_dir"].value = (math.cos(g.angle_rad), math.sin(g.angle_rad))
        p["u_light_dir"].value = scene.light.direction
        p["u_light_color"].value = scene.light.color
        p["u_ambient"].value = scene.light.ambient
        p["u_sky"].value = scene.background_rgb
        p["u_light_mvp"].write(light_mvp.T.astype(np.float32).tobytes())
        p["u_shadow"].value = 0

    def _shadow_pass(self, scene: SceneSpec) -> np.ndarray:
        half = 1.0 + max([math.hypot(*o.center[:2]) + max(o.size_m) for o in scene.objects], default=1.0)
        light_mvp = _light_matrix(np.asarray(scene.light.direction), half)
        self.shadow_fbo.use()
        self.shadow_fbo.clear(depth=1.0)
        self.ctx.enable_only(self._mgl.DEPTH_TEST)
        self.shadow_prog["u_mvp"].write(light_mvp.T.astype(np.float32).tobytes())
        if self._buffers.num_objects:  # objects only: the ground casts no shadow
            self._shadow_vao.render(vertices=self._buffers.num_objects)
        return light_mvp

    def render(
        self, scene: SceneSpec, K: np.ndarray, w2c: np.ndarray, image_hw: tuple[int, int]
    ) -> RenderedViews:
        """Render V views of ``scene``. Shapes: K (V, 3, 3), w2c (V, 4, 4) float64 -> RenderedViews."""
        K, w2c = np.asarray(K, dtype=np.float64), np.asarray(w2c, dtype=np.float64)
        V, N = len(K), len(scene.objects)
        if N > MAX_OBJECTS:
            raise ValueError(f"scene has {N} objects; the renderer supports at most {MAX_OBJECTS}")
        H, W = image_hw
        self._upload(scene_buffers(scene))
        light_mvp = self._shadow_pass(scene)
        rows, cols = self._atlas(image_hw, V)
        self._set_scene_uniforms(scene, light_mvp)
        self.shadow_tex.use(location=0)
        per_view = self._per_view_uniforms(K, w2c, image_hw, rows, cols)

        # The sky colour quantised to 8 bits first, so the clear stores exactly round(255 c) anywhere.
        sky = np.rint(np.asarray(scene.background_rgb) * 255.0) / 255.0
        self.color_fbo.clear(*sky, 1.0)
        self.geom_fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.fbo.use()
        self.fbo.viewport = (0, 0, cols * W, rows * H)
        self.ctx.enable_only(self._mgl.DEPTH_TEST)
        self._draw_views(self.main_prog, self._main_vao, per_view, with_ground=True)

        self.cov_fbo.use()
        self.cov_fbo.viewport = (0, 0, cols * W, rows * H)
        self.cov_fbo.clear(0.0, 0.0, 0.0, 0.0)
        self.ctx.enable_only(self._mgl.BLEND)
        self.ctx.blend_equation = self._mgl.MAX
        self.ctx.blend_func = self._mgl.ONE, self._mgl.ONE
        self._draw_views(self.cov_prog, self._cov_vao, per_view, with_ground=False)
        self.ctx.blend_equation = self._mgl.FUNC_ADD
        return self._read_back(scene, rows, cols, image_hw, V, N)

    def _per_view_uniforms(
        self, K: np.ndarray, w2c: np.ndarray, image_hw: tuple[int, int], rows: int, cols: int
    ) -> dict[str, np.ndarray]:
        """Uniform arrays of the instanced draw. Shapes: each (V, 16) or (V, 4) float32."""
        H, W = image_hw
        V = len(K)
        mvp = np.stack([opengl_projection(K[v], image_hw, self.near, self.far) for v in range(V)])
        mvp = mvp @ _CV_TO_GL @ w2c  # (V, 4, 4) clip from world
        x0 = (np.arange(V) % cols) * W  # tile origin, pixels from the bottom-left of the atlas
        y0 = (np.arange(V) // cols) * H
        AW, AH = cols * W, rows * H
        tile = np.stack(
            [np.full(V, W / AW), np.full(V, H / AH), (W + 2 * x0) / AW - 1, (H + 2 * y0) / AH - 1], -1
        )
        cam = np.concatenate(
            [-(w2c[:, :3, :3].transpose(0, 2, 1) @ w2c[:, :3, 3:])[..., 0], np.ones((V, 1))], -1
        )
        as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        return {
            "u_mvp": as32(mvp.transpose(0, 2, 1).reshape(V, 16)),  # GL matrices are column-major
            "u_tile": as32(tile),
            "u_zrow": as32(w2c[:, 2, :]),
            "u_cam": as32(cam),
        }

    def _draw_views(self, prog, vao, per_view: dict[str, np.ndarray], with_ground: bool) -> None:
        """Instanced draws, MAX_VIEWS_PER_DRAW views at a time: closed objects culled, the rest not."""
        b = self._buffers
        ranges = [
            (0, b.num_closed, True),
            (b.num_closed, b.num_objects + 6 * with_ground - b.num_closed, False),
        ]
        V = len(per_view["u_mvp"])
        for start in range(0, V, MAX_VIEWS_PER_DRAW):
            stop = min(V, start + MAX_VIEWS_PER_DRAW)
            for name, arr in per_view.items():
                if name in prog:  # the linker drops uniforms a program does not use
                    chunk = np.zeros((MAX_VIEWS_PER_DRAW, arr.shape[1]), np.float32)  # moderngl: whole array
                    chunk[: stop - start] = arr[start:stop]
                    prog[name].write(chunk.tobytes())
            for first, count, cull in ranges:
                if count > 0:
                    self.ctx.cull_face = "back"
                    if cull:
                        self.ctx.enable(self._mgl.CULL_FACE)
                    else:
                        self.ctx.disable(self._mgl.CULL_FACE)
                    vao.render(first=first, vertices=count, instances=stop - start)
        self.ctx.disable(self._mgl.CULL_FACE)

    def _read_back(self, scene: SceneSpec, rows: int, cols: int, image_hw, V: int, N: int) -> RenderedViews:
        H, W = image_hw
        shape = (rows * H, cols * W)

        def tiles(arr: np.ndarray) -> np.ndarray:
            """Atlas (rows H, cols W, C), bottom row first -> (V, H, W, C), image rows top first."""
            arr = arr[::-1].reshape(rows, H, cols, W, -1)[::-1]  # flip rows; tile row 0 at the bottom
            return np.ascontiguousarray(arr.transpose(0, 2, 1, 3, 4).reshape(rows * cols, H, W, -1)[:V])

        rgb_bytes = self.fbo.read(components=3, attachment=0)
        geom_bytes = self.fbo.read(components=2, attachment=1, dtype="f4")
        rgb = tiles(np.frombuffer(rgb_bytes, np.uint8).reshape(*shape, 3))  # (V, H, W, 3)
        geom = tiles(np.frombuffer(geom_bytes, np.float32).reshape(*shape, 2))  # (V, H, W, 2)
        depth = np.ascontiguousarray(geom[..., 0])  # (V, H, W)
        mask = geom[..., 1].astype(np.uint8)  # ids are written as exact small integers
        # Unoccluded coverage: count per tile straight on the atlas (bottom-up rows: tile row r is block r).
        unoccluded = np.zeros((V, N), np.int64)
        for k, tex in enumerate(self.cov_tex[: (N + 3) // 4]):
            cov = np.frombuffer(tex.read(), np.uint8)
            # Sum the rows of each tile, then its columns per channel (contiguous, fast); texels are 0 or 255.
            counts = cov.reshape(rows, H, cols * W * 4).sum(axis=1, dtype=np.int64)  # (rows, cols W 4)
            counts = (counts.reshape(rows, cols, W, 4).sum(axis=2) // 255).reshape(rows * cols, 4)[:V]
            unoccluded[:, 4 * k : min(N, 4 * k + 4)] = counts[:, : min(4, N - 4 * k)]
        flat = (np.arange(V, dtype=np.int64)[:, None] * (N + 1) + mask.reshape(V, -1)).ravel()
        visible = np.bincount(flat, minlength=V * (N + 1)).reshape(V, N + 1)[:, 1:]  # (V, N)
        fraction = np.where(unoccluded > 0, visible / np.maximum(unoccluded, 1), 0.0)
        return RenderedViews(rgb, depth, mask, visible, unoccluded, np.clip(fraction, 0.0, 1.0))

    def release(self) -> None:
        self.ctx.release()
