"""Tests of gst.data.synth: cameras, meshes, scenes, the EGL renderer, the writer and its CLI.

Rendering tests build one small dataset per module (32x32 to 96x96 pixels, a few scenes) and read it
back through ``gst.data.loaders.load_scene``, so they check the writer, the loader convention and the
renderer against each other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gst.data.synth import meshes as M
from gst.data.synth.cameras import CameraSamplingConfig, sample_cameras
from gst.data.synth.render import opengl_projection
from gst.data.synth.scenes import PALETTE, PRIMITIVE_SHAPES, SceneSamplingConfig, sample_scene
from gst.data.synth.writer import SynthConfig, generate_dataset
from gst.geometry import camera_centers, intrinsics_matrix, project_points

MESHES = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes"


def _renderer_or_skip():
    try:
        from gst.data.synth.render import Renderer

        return Renderer()
    except (ImportError, RuntimeError) as err:
        pytest.skip(f"no headless OpenGL context (moderngl + EGL): {err}")


@pytest.fixture(scope="module")
def renderer():
    r = _renderer_or_skip()
    yield r
    r.release()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, renderer) -> tuple[Path, SynthConfig]:
    out = tmp_path_factory.mktemp("synth")
    config = SynthConfig(num_scenes=3, views_per_scene=4, image_hw=(96, 96), seed=7)
    generate_dataset(config, out, renderer=renderer)
    return out, config


# --- cameras ------------------------------------------------------------------------------------


def test_camera_sampler_ranges():
    cfg = CameraSamplingConfig()
    H, W = 48, 64
    K, w2c = sample_cameras(torch.Generator().manual_seed(0), 500, (H, W), config=cfg)
    assert K.shape == (500, 3, 3) and w2c.shape == (500, 4, 4) and K.dtype == w2c.dtype == torch.float64
    fov = torch.rad2deg(2 * torch.atan(W / (2 * K[:, 0, 0])))
    assert fov.min() >= cfg.fov_deg[0] - 1e-9 and fov.max() <= cfg.fov_deg[1] + 1e-9
    assert fov.max() - fov.min() > 0.8 * (cfg.fov_deg[1] - cfg.fov_deg[0])  # the range is used
    assert torch.equal(K[:, 0, 0], K[:, 1, 1])  # square pixels
    dx = (K[:, 0, 2] - (W - 1) / 2).abs() / W
    dy = (K[:, 1, 2] - (H - 1) / 2).abs() / H
    assert dx.max() <= cfg.principal_jitter_frac + 1e-12 and dy.max() <= cfg.principal_jitter_frac + 1e-12
    R = w2c[:, :3, :3]
    assert torch.allclose(
        R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-12
    )
    assert torch.allclose(torch.linalg.det(R), torch.ones(500, dtype=torch.float64))
    # Camera +y (image down) points downward in the world; roll is small: +x stays nearly horizontal.
    assert (R[:, 1, 2] < 0).all()
    assert R[:, 0, 2].abs().max() <= math.sin(math.radians(cfg.max_roll_deg)) + 1e-12
    centres = camera_centers(w2c)
    dist = centres.norm(dim=-1)
    slack = math.hypot(cfg.target_jitter_m * math.sqrt(2), cfg.target_height_m[1])
    assert dist.min() >= cfg.distance_m[0] - slack and dist.max() <= cfg.distance_m[1] + slack
    assert (centres[:, 2] > 0).all()
    # The look-at target (near the origin) projects near the principal point.
    uvz = project_points(K, w2c, torch.zeros(500, 1, 3, dtype=torch.float64))[:, 0]
    assert (uvz[:, 2] > 0).all()
    assert ((uvz[:, 0] - K[:, 0, 2]).abs() < 0.5 * W).all()


def test_camera_sampler_deterministic_and_validated():
    a = sample_cameras(torch.Generator().manual_seed(3), 5, (32, 32))
    b = sample_cameras(torch.Generator().manual_seed(3), 5, (32, 32))
    c = sample_cameras(torch.Generator().manual_seed(4), 5, (32, 32))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    with pytest.raises(ValueError, match="fov_deg"):
        CameraSamplingConfig(fov_deg=(60.0, 30.0))
    with pytest.raises(ValueError, match="elevation_deg"):
        CameraSamplingConfig(elevation_deg=(10.0, 90.0))


def test_opengl_projection_reproduces_K():
    """Window coordinates of the GL pipeline, flipped to image rows, equal K's pixel-centre projection."""
    H, W = 30, 50
    K = intrinsics_matrix(41.3, 39.7, 22.6, 16.1)
    _, w2c = sample_cameras(torch.Generator().manual_seed(1), 1, (H, W))
    pts = torch.randn(200, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    expected = project_points(K, w2c[0], pts).numpy()  # (200, 3) u, v, z
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    clip = (
        opengl_projection(K.numpy(), (H, W), 0.1, 50.0) @ flip @ w2c[0].numpy() @ np.c_[pts, np.ones(200)].T
    ).T
    ndc = clip[:, :3] / clip[:, 3:]
    x_win, y_win = (ndc[:, 0] + 1) * W / 2, (ndc[:, 1] + 1) * H / 2
    np.testing.assert_allclose(
        x_win - 0.5, expected[:, 0], atol=1e-9
    )  # pixel i's centre is at x_win = i + 0.5
    np.testing.assert_allclose(H - y_win - 0.5, expected[:, 1], atol=1e-9)  # rows are read back bottom-up
    np.testing.assert_allclose(clip[:, 3], expected[:, 2], atol=1e-9)  # w = z_cam


# --- meshes and scenes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mesh, size",
    [
        (M.box(0.3, 0.5, 0.7), (0.3, 0.5, 0.7)),
        (M.sphere(0.8), (0.8, 0.8, 0.8)),
        (M.cylinder(0.4, 0.9), (0.4, 0.4, 0.9)),
        (M.cone(0.6, 0.5), (0.6, 0.6, 0.5)),
        (M.torus(0.3, 0.1), (0.8, 0.8, 0.2)),
        (M.capsule(0.4, 1.0), (0.4, 0.4, 1.0)),
        (M.pyramid(0.5, 0.6), (0.5, 0.5, 0.6)),
    ],
)
def test_primitive_extents_and_normals(mesh, size):
    np.testing.assert_allclose(mesh.extent, size, atol=1e-9)
    np.testing.assert_allclose(mesh.positions.max(0) + mesh.positions.min(0), 0.0, atol=1e-9)  # centred
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-9)
    assert len(mesh.positions) % 3 == 0


def test_read_obj_triangulates_and_normalises(tmp_path):
    obj = tmp_path / "quad.obj"
    obj.write_text(
        "# a unit square in x-y (OBJ y up), then a triangle by negative indices\n"
        "v 0 0 0\nv 2 0 0\nv 2 2 0\nv 0 2 0\nv 1 1 3\nf 1/1/1 2/2/2 3/3/3 4/4/4\nf -1 -4 -3\n"
    )
    v, f = M.read_obj(obj)
    assert v.shape == (5, 3) and f.tolist() == [[0, 1, 2], [0, 2, 3], [4, 1, 2]]
    mesh = M.load_obj_mesh(str(obj))
    assert mesh.extent.max() == pytest.approx(1.0)
    np.testing.assert_allclose(mesh.extent, [2 / 3, 1.0, 2 / 3])  # OBJ (x, y, z) -> (x, -z, y), / 3
    assert not mesh.closed  # an open surface: rendered two-sided
    (tmp_path / "bad.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match="bad.obj"):
        M.read_obj(tmp_path / "bad.obj")


def test_scene_sampling_metadata():
    cfg = SceneSamplingConfig()
    g = torch.Generator().manual_seed(11)
    counts, shapes = [], set()
    for _ in range(40):
        scene = sample_scene(g, config=cfg)
        counts.append(len(scene.objects))
        names = [o.name for o in scene.objects]
        assert len(set(names)) == len(names)  # names stay unique within a scene
        for o in scene.objects:
            shapes.add(o.shape)
            assert o.color in PALETTE and min(o.size_m) > 0
            assert math.hypot(*o.center[:2]) <= cfg.placement_radius_m
            assert o.center[2] == pytest.approx(o.size_m[2] / 2)  # resting on the ground
        for i, a in enumerate(scene.objects):  # bounding circles keep the gap
            for b in scene.objects[i + 1 :]:
                ra, rb = (0.5 * math.hypot(*o.size_m[:2]) for o in (a, b))
                assert math.dist(a.center[:2], b.center[:2]) >= ra + rb + cfg.min_gap_m - 1e-9
    assert min(counts) >= 2 and max(counts) <= 6 and len(set(counts)) >= 3
    assert shapes == set(PRIMITIVE_SHAPES)


# --- rendering and the written dataset -----------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_determinism(tmp_path, renderer):
    config = SynthConfig(num_scenes=2, views_per_scene=3, image_hw=(32, 32), seed=5)
    generate_dataset(config, tmp_path / "a", renderer=renderer)
    generate_dataset(config, tmp_path / "b", renderer=renderer)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 1 + 2 * (1 + 3 * 3) and a == b  # config + per scene: transforms + 3 x (rgb, depth, mask)
    other = SynthConfig(num_scenes=2, views_per_scene=3, image_hw=(32, 32), seed=6)
    generate_dataset(other, tmp_path / "c", renderer=renderer)
    c = _files(tmp_path / "c")
    for name in ("scene_00000/transforms.json", "scene_00000/images/0000.png", "scene_00001/depth/0002.png"):
        assert a[name] != c[name]
    # A scene depends on (seed, index) only, not on how many scenes the run makes.
    generate_dataset(
        SynthConfig(num_scenes=1, views_per_scene=3, image_hw=(32, 32), seed=5),
        tmp_path / "d",
        renderer=renderer,
    )
    d = _files(tmp_path / "d")
    assert all(d[k] == a[k] for k in d if k.startswith("scene_00000/"))


def test_resume_skips_complete_and_redoes_partial(tmp_path, renderer):
    config = SynthConfig(num_scenes=3, views_per_scene=2, image_hw=(32, 32), seed=1)
    assert generate_dataset(config, tmp_path, renderer=renderer) == {"written": 3, "skipped": 0}
    before = _files(tmp_path)
    mtime = (tmp_path / "scene_00000" / "images" / "0000.png").stat().st_mtime_ns
    # Simulate an interrupt while scene 2 was being written: its folder never got renamed.
    (tmp_path / "scene_00002").rename(tmp_path / ".scene_00002.partial")
    (tmp_path / ".scene_00002.partial" / "transforms.json").unlink()
    assert generate_dataset(config, tmp_path, renderer=renderer) == {"written": 1, "skipped": 2}
    assert (tmp_path / "scene_00000" / "images" / "0000.png").stat().st_mtime_ns == mtime
    assert not (tmp_path / ".scene_00002.partial").exists()
    assert _files(tmp_path) == before
    with pytest.raises(ValueError, match="different settings"):
        generate_dataset(
            SynthConfig(num_scenes=3, views_per_scene=2, image_hw=(32, 32), seed=2),
            tmp_path,
            renderer=renderer,
        )


def test_written_objects_metadata(dataset):
    from gst.data.loaders import load_scene

    out, config = dataset
    for folder in sorted(out.glob("scene_*")):
        meta = json.loads((folder / "transforms.json").read_text())
        scene = load_scene(folder)
        assert scene.num_views == config.views_per_scene and scene.image_hw == config.image_hw
        assert meta["gst"]["generator"] == "gst.data.synth" and meta["gst"]["seed"] == config.seed
        half = meta["gst"]["ground"]["half_extent_m"]
        assert 2 <= len(scene.objects) <= 6
        for o in scene.objects:
            assert all(abs(c) < half for c in o["center"][:2]) and o["center"][2] > 0
            assert min(o["size_m"]) > 0 and o["box"]["size"] == o["size_m"]
            R = np.asarray(o["box"]["R_obj2world"])
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
            assert len(o["visible"]) == scene.num_views
            assert all(0.0 <= v <= 1.0 for v in o["visible"])
            assert o["color_rgb"] == list(PALETTE[o["color"]])
        for v in range(scene.num_views):
            mask, depth = scene.load_mask(v), scene.load_depth(v)
            assert mask.max() <= len(scene.objects)
            assert (depth[mask > 0] > 0).all()  # every object pixel has a depth
            sky = depth == 0
            rgb = scene.load_image(v)
            bg = torch.tensor(meta["gst"]["background_rgb"], dtype=torch.float32)
            assert torch.allclose(rgb[:, sky], bg[:, None].expand(3, int(sky.sum())), atol=1 / 255 + 1e-6)
            counts = torch.bincount(mask.flatten(), minlength=len(scene.objects) + 1)[1:]
            assert [o["visible_pixels"][v] for o in scene.objects] == counts.tolist()


def test_projected_centre_hits_its_mask(dataset):
    from gst.data.loaders import load_scene

    out, _ = dataset
    checked = 0
    for folder in sorted(out.glob("scene_*")):
        scene = load_scene(folder)
        centres = torch.tensor([o["center"] for o in scene.objects], dtype=torch.float64)
        uvz = project_points(scene.K, scene.w2c, centres.expand(scene.num_views, -1, -1))  # (V, N, 3)
        for v in range(scene.num_views):
            mask = scene.load_mask(v)
            for i, o in enumerate(scene.objects):
                u, vv = round(float(uvz[v, i, 0])), round(float(uvz[v, i, 1]))
                inside = 0 <= u < mask.shape[1] and 0 <= vv < mask.shape[0]
                # A torus' centre is in its hole; other primitives contain their box centre.
                if (
                    o["shape"] == "torus"
                    or not inside
                    or o["visible"][v] < 1.0
                    or o["visible_pixels"][v] < 20
                ):
                    continue
                assert int(mask[vv, u]) == i + 1, (folder.name, v, o["name"])
                checked += 1
    assert checked >= 10


def test_ground_depth_matches_ray_plane_intersection(dataset):
    """Ground pixels: the depth of the plane z = 0 along the ray through the pixel centre, to the mm.

    A half-pixel slip of the principal point (pixel-centre vs corner) would change the depth of a
    grazing ground plane by far more than the 1 mm quantisation."""
    from gst.data.loaders import load_scene

    out, _ = dataset
    errors = []
    for folder in sorted(out.glob("scene_*")):
        scene = load_scene(folder)
        H, W = scene.image_hw
        vs, us = torch.meshgrid(
            torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
        )
        pix = torch.stack([us, vs, torch.ones_like(us)], -1).reshape(-1, 3)  # (HW, 3)
        for v in range(scene.num_views):
            R, t = scene.w2c[v, :3, :3], scene.w2c[v, :3, 3]
            rays_cam = pix @ torch.linalg.inv(scene.K[v]).T  # (HW, 3), z_cam = 1
            rays_world = rays_cam @ R  # R^T applied to each row
            c = -R.T @ t
            z_expected = -c[2] / rays_world[:, 2]  # x = c + s * ray hits z = 0 at s; z_cam = s
            depth = scene.load_depth(v).reshape(-1).double()
            ground = (scene.load_mask(v).reshape(-1) == 0) & (depth > 0)
            errors.append((depth[ground] - z_expected[ground]).abs())
    err = torch.cat(errors)
    assert err.numel() > 5000
    assert float(err.max()) < 1.5e-3  # metres: 0.5 mm rounding + float32 interpolation


def _sample_bilinear(depth: torch.Tensor, mask: torch.Tensor, uv: torch.Tensor):
    """B's depth at sub-pixel points, interpolating inverse depth (exact on planes: 1/z is affine in
    the image), where the four neighbouring pixels show one surface id. Returns (ok, depth, id)."""
    H, W = depth.shape
    u0, v0 = uv[:, 0].floor().long(), uv[:, 1].floor().long()
    ok = (u0 >= 0) & (u0 + 1 < W) & (v0 >= 0) & (v0 + 1 < H)
    u0, v0 = u0.clamp(0, W - 2), v0.clamp(0, H - 2)
    fu, fv = uv[:, 0] - u0, uv[:, 1] - v0
    corners = [(v0, u0), (v0, u0 + 1), (v0 + 1, u0), (v0 + 1, u0 + 1)]
    d = torch.stack([depth[r, c] for r, c in corners], -1)  # (P, 4)
    ids = torch.stack([mask[r, c] for r, c in corners], -1)
    ok &= (d > 0).all(-1) & (ids == ids[:, :1]).all(-1)
    w = torch.stack([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv], -1)
    inv = (w / d.clamp(min=1e-9)).sum(-1)
    return ok, 1.0 / inv, ids[:, 0]


def test_multiview_consistency(dataset):
    """Unproject view A's depth (pixel centres, K and w2c as the loader reads them), project into view
    B: where B sees the same surface, the instance ids agree and the depths agree to 1 %."""
    from gst.data.loaders import load_scene

    out, _ = dataset
    agree_mask, agree_depth, seen, total = [], [], 0, 0
    for folder in sorted(out.glob("scene_*")):
        scene = load_scene(folder)
        H, W = scene.image_hw
        depths = [scene.load_depth(v).double() for v in range(scene.num_views)]
        masks = [scene.load_mask(v) for v in range(scene.num_views)]
        vs, us = torch.meshgrid(
            torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
        )
        pix = torch.stack([us, vs, torch.ones_like(us)], -1).reshape(-1, 3)
        for a in range(scene.num_views):
            d = depths[a].reshape(-1)
            valid = d > 0
            x_cam = (pix[valid] @ torch.linalg.inv(scene.K[a]).T) * d[valid, None]  # (P, 3)
            R, t = scene.w2c[a, :3, :3], scene.w2c[a, :3, 3]
            world = (x_cam - t) @ R  # R^T (x - t)
            ids_a = masks[a].reshape(-1)[valid]
            for b in range(scene.num_views):
                if b == a:
                    continue
                uvz = project_points(scene.K[b], scene.w2c[b], world)  # (P, 3)
                ok, db, ids_b = _sample_bilinear(depths[b], masks[b], uvz[:, :2])
                ok &= uvz[:, 2] > 0
                z = uvz[:, 2]
                total += int(ok.sum())
                unoccluded = ok & (db > 0.97 * z)  # B's surface there is not in front of the point
                seen += int(unoccluded.sum())
                agree_depth.append(((db - z).abs() / z)[unoccluded] < 0.01)
                agree_mask.append(ids_b[unoccluded] == ids_a[unoccluded])
    agree_depth, agree_mask = torch.cat(agree_depth), torch.cat(agree_mask)
    assert seen > 0.5 * total and seen > 10000
    assert agree_depth.float().mean() > 0.99
    assert agree_mask.float().mean() > 0.99


def test_visibility_counts_are_consistent(renderer):
    from gst.data.synth.writer import render_scene

    config = SynthConfig(num_scenes=1, views_per_scene=6, image_hw=(48, 48), seed=3)
    for index in range(3):
        scene, _, _, views = render_scene(renderer, config, index)
        N = len(scene.objects)
        visible = np.stack([np.bincount(m.ravel(), minlength=N + 1)[1:] for m in views.mask])  # (V, N)
        np.testing.assert_array_equal(views.visible_pixels, visible)
        assert (visible <= views.unoccluded_pixels).all()  # nothing is seen that could not be seen
        full = views.unoccluded_pixels > 0
        np.testing.assert_allclose(
            views.visible_fraction[full], visible[full] / views.unoccluded_pixels[full]
        )
        assert (views.visible_fraction[~full] == 0).all()


@pytest.mark.skipif(
    not MESHES.is_dir(), reason=f"mesh folder not present at {MESHES} (../shared is optional)"
)
def test_obj_meshes_in_scenes(tmp_path, renderer):
    found = M.find_obj_meshes(MESHES)
    assert "spot" in found
    spot = M.load_obj_mesh(str(found["spot"]))
    assert spot.extent.max() == pytest.approx(1.0) and spot.closed
    g = torch.Generator().manual_seed(0)
    cfg = SceneSamplingConfig(mesh_probability=1.0, num_objects=(3, 3))
    scene = sample_scene(g, config=cfg, mesh_paths={k: found[k] for k in ("spot", "fish", "hand")})
    assert {o.shape for o in scene.objects} <= {"spot", "fish", "hand"}
    for o in scene.objects:
        assert cfg.mesh_size_m[0] - 1e-9 <= max(o.size_m) <= cfg.mesh_size_m[1] + 1e-9
    K, w2c = sample_cameras(g, 4, (48, 48))
    views = renderer.render(scene, K.numpy(), w2c.numpy(), (48, 48))
    assert set(np.unique(views.mask)) <= {0, 1, 2, 3} and views.mask.max() > 0


def test_torch_dynamo_import_after_renderer_is_safe():
    """llvmpipe + a later triton import used to segfault the whole process (see render._preload_triton);
    run in a subprocess so a regression fails this test instead of killing the test session."""
    _renderer_or_skip().release()
    code = "from gst.data.synth.render import Renderer\nr = Renderer()\nimport torch._dynamo\nprint('ok')\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_cli_synth_and_summary(tmp_path, capsys):
    _renderer_or_skip().release()
    from gst.cli import main

    out = tmp_path / "ds"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(out),
                "--num-scenes",
                "2",
                "--views-per-scene",
                "3",
                "--resolution",
                "24x32",
                "--seed",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["data", "summary", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the "wrote ..." line
    assert summary["num_scenes"] == 2 and summary["num_views"] == 6
    assert summary["resolutions_HxW"] == {"24x32": 6}
    assert sum(summary["objects_per_scene"].values()) == 2
    assert 30.0 <= summary["fov_x_deg"]["min"] <= summary["fov_x_deg"]["max"] <= 75.0
    assert summary["disk_bytes"] > 0
    assert main(["data", "summary", str(tmp_path / "missing")]) == 1
