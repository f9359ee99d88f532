"""Scene loaders (gst.data.loaders): the real lego scene, round trips of known cameras, LLFF, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.data.loaders import llff_to_opencv, load_scene
from gst.geometry.conventions import (
    camera_centers,
    intrinsics_matrix,
    opencv_w2c_to_opengl_c2w,
    project_points,
)

LEGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic_lego"
needs_lego = pytest.mark.skipif(not LEGO.is_dir(), reason=f"real lego scene not found at {LEGO}")


def look_at_w2c(centre, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenCV w2c (4, 4) float64 of a camera at ``centre`` looking at ``target``, image-up ~ world ``up``."""
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    f = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(f, x), f])  # rows: right, down, forward
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return torch.from_numpy(w2c)


def write_image(path: Path, hw: tuple[int, int], seed: int = 0, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*hw, len(mode)), dtype=np.uint8), mode).save(path)


# ----------------------------------------------------------------------------- the real lego scene


@needs_lego
def test_lego_cameras_look_at_the_origin_from_one_radius():
    scene = load_scene(LEGO, split="train")
    angle_x = json.loads((LEGO / "transforms_train.json").read_text())["camera_angle_x"]
    assert scene.num_views == 100 and scene.image_hw == (200, 200)  # this copy is downscaled from 800
    f = 0.5 * 200 / math.tan(0.5 * angle_x)
    torch.testing.assert_close(scene.K, intrinsics_matrix(f, f, 99.5, 99.5).expand(100, 3, 3))
    radii = torch.linalg.vector_norm(camera_centers(scene.w2c), dim=-1)  # (V,)
    # Measured 5.2e-7 (the float32 rotations in the file are orthonormal only to ~1e-6).
    assert (radii.max() - radii.min()) / radii.mean() < 2e-6
    assert radii.mean().item() == pytest.approx(4.03113, abs=1e-4)
    # The optical axis passes through the origin: the origin sits on the camera's +z axis, in front.
    origin_cam = scene.w2c[:, :3, 3]  # (V, 3) the origin in camera coordinates
    assert (origin_cam[:, 2] > 3.9).all()
    assert torch.linalg.vector_norm(origin_cam[:, :2], dim=-1).max() < 1e-5  # measured 5.1e-6
    uv = project_points(scene.K, scene.w2c, torch.zeros(100, 1, 3, dtype=torch.float64))[:, 0, :2]
    assert (uv - 99.5).abs().max() < 1e-3  # the origin lands on the exact image centre in every view
    # Blender's +z is up: a point above the origin is higher in every image (smaller v). The most
    # top-down view sees it only 0.7 px higher (v = 98.8 measured), the median view 30 px higher.
    above = project_points(scene.K, scene.w2c, torch.tensor([[[0.0, 0.0, 0.5]]], dtype=torch.float64))
    assert (above[:, 0, 1] < 99.5 - 0.5).all() and above[:, 0, 1].median() < 99.5 - 20


@needs_lego
def test_lego_images_composite_on_the_background():
    scene = load_scene(LEGO, split="val")
    images = scene.load_images([0, 7, 42])
    assert images.shape == (3, 3, 200, 200) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    rgba = np.asarray(Image.open(scene.image_paths[7]), dtype=np.float32) / 255.0  # (H, W, 4)
    alpha = rgba[..., 3]
    expected = rgba[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])  # white background
    torch.testing.assert_close(images[1], torch.from_numpy(expected).permute(2, 0, 1))
    assert (alpha == 0).mean() > 0.5 and images[1][:, torch.from_numpy(alpha == 0)].min() == 1.0
    black = load_scene(LEGO, split="val", background=(0.0, 0.0, 0.0)).load_image(7)
    assert black[:, torch.from_numpy(alpha == 0)].max() == 0.0


@needs_lego
def test_lego_split_handling():
    with pytest.raises(ValueError, match=r"split=None but this scene has splits \['train', 'val'\]"):
        load_scene(LEGO)
    with pytest.raises(ValueError, match=r"split='test' but this scene has splits \['train', 'val'\]"):
        load_scene(LEGO, split="test")
    both = load_scene(LEGO, split="all")
    assert both.num_views == 200 and both.metadata["view_splits"] == ["train"] * 100 + ["val"] * 100
    val = load_scene(LEGO / "transforms_val.json")
    torch.testing.assert_close(both.w2c[100:], val.w2c, rtol=0, atol=0)
    assert val.image_paths[0] == (LEGO / "val" / "r_0.png").resolve()  # ".png" added to the bare path


# ----------------------------------------------------------------------------- transforms.json round trip


def ring_cameras(num_views: int = 5) -> torch.Tensor:
    az = np.arange(num_views) * 2 * math.pi / num_views
    centres = np.stack([3 * np.cos(az), 3 * np.sin(az), 1.0 + 0.2 * np.arange(num_views)], -1)
    return torch.stack([look_at_w2c(c, (0.1, -0.2, 0.3)) for c in centres])  # (V, 4, 4)


def write_transforms(root: Path, w2c: torch.Tensor, K: torch.Tensor, hw=(12, 16), **top) -> dict:
    """Write a transforms.json holding the given OpenCV cameras, converted to the file's conventions."""
    c2w = opencv_w2c_to_opengl_c2w(w2c)
    frames = []
    for i in range(len(w2c)):
        write_image(root / f"images/{i:04d}.png", hw, seed=i)
        frames.append(
            {
                "file_path": f"images/{i:04d}.png",
                "transform_matrix": c2w[i].tolist(),
                "w": hw[1],
                "h": hw[0],
                "fl_x": K[i, 0, 0].item(),
                "fl_y": K[i, 1, 1].item(),
                "cx": K[i, 0, 2].item() + 0.5,
                "cy": K[i, 1, 2].item() + 0.5,  # pixel-corner convention
            }
        )
    data = {"camera_model": "OPENCV", "frames": frames, **top}
    (root / "transforms.json").write_text(json.dumps(data, indent=1))
    return data


def test_transforms_round_trip_recovers_opencv_cameras(tmp_path):
    w2c = ring_cameras()
    K = torch.stack([intrinsics_matrix(20.0 + i, 21.5 - i, 7.3 + 0.1 * i, 5.6) for i in range(5)])
    data = write_transforms(tmp_path, w2c, K, k1=0.01, k2=-0.002)
    data["frames"][2].update(k1=0.05, p1=0.001, p2=-0.003)  # per-frame values override the global ones
    depth = np.array([[0, 1500], [2500, 65535]], dtype=np.uint16).repeat(6, 0).repeat(8, 1)  # (12, 16) mm
    for i, frame in enumerate(data["frames"]):
        Image.fromarray(depth).save(tmp_path / f"d{i}.png")
        Image.fromarray(np.full((12, 16), i, np.uint8)).save(tmp_path / f"m{i}.png")
        frame.update(depth_file_path=f"d{i}.png", mask_file_path=f"m{i}.png")
    objects = [{"name": "cube", "center": [0.0, 0.0, 0.5], "visible": [1.0] * 5}]
    data.update(objects=objects, gst={"generator": "gst.data.synth", "version": 1, "seed": 3}, aabb_scale=4)
    (tmp_path / "transforms.json").write_text(json.dumps(data))

    scene = load_scene(tmp_path)
    assert scene.num_views == 5 and scene.image_hw == (12, 16) and scene.name == tmp_path.name
    torch.testing.assert_close(scene.w2c, w2c, rtol=0, atol=1e-12)
    torch.testing.assert_close(scene.K, K, rtol=0, atol=1e-12)
    expected_dist = torch.tensor([[0.01, -0.002, 0.0, 0.0]] * 5, dtype=torch.float64)
    expected_dist[2] = torch.tensor([0.05, -0.002, 0.001, -0.003], dtype=torch.float64)
    torch.testing.assert_close(scene.distortion, expected_dist, rtol=0, atol=0)
    assert scene.objects == objects and scene.metadata["gst"]["seed"] == 3
    assert scene.metadata["extra"] == {"aabb_scale": 4} and scene.metadata["format"] == "transforms"
    assert scene.image_paths[3] == (tmp_path / "images/0003.png").resolve()
    d = scene.load_depth(4)
    assert d.shape == (12, 16) and d[0, 0] == 0 and d[0, 8].item() == pytest.approx(1.5)
    assert d[6, 8].item() == pytest.approx(65.535)
    assert (scene.load_mask(4) == 4).all()
    img = scene.load_image(1)
    expected = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8) / 255.0
    torch.testing.assert_close(img, torch.from_numpy(expected).permute(2, 0, 1).float())


def test_global_angles_bare_paths_and_depth_scale(tmp_path):
    w2c = ring_cameras(3)
    c2w = opencv_w2c_to_opengl_c2w(w2c)
    frames = []
    for i in range(3):
        write_image(tmp_path / f"train/r_{i}.png", (10, 20), seed=i, mode="RGBA")
        Image.fromarray(np.full((10, 20), 1000, np.uint16)).save(tmp_path / f"train/d_{i}.png")
        frames.append(
            {
                "file_path": f"./train/r_{i}",
                "transform_matrix": c2w[i].tolist(),
                "depth_file_path": f"train/d_{i}.png",
            }
        )
    data = {"camera_angle_x": 0.9, "camera_angle_y": 0.5, "frames": frames, "depth_unit_scale_factor": 2e-4}
    (tmp_path / "transforms_train.json").write_text(json.dumps(data))
    scene = load_scene(tmp_path, split="train", background=(0.0, 1.0, 0.0))
    fx, fy = 0.5 * 20 / math.tan(0.45), 0.5 * 10 / math.tan(0.25)
    torch.testing.assert_close(scene.K, intrinsics_matrix(fx, fy, 9.5, 4.5).expand(3, 3, 3))
    torch.testing.assert_close(scene.w2c, w2c, rtol=0, atol=1e-12)
    assert scene.distortion is None and scene.metadata["format"] == "nerf_synthetic"
    assert scene.load_depth(0).unique().tolist() == [pytest.approx(0.2)]
    assert scene.background == (0.0, 1.0, 0.0)


# ----------------------------------------------------------------------------- LLFF


def write_llff(root: Path, centres, target, hwf=(24.0, 32.0, 30.0), folder="images", img_hw=(24, 32)):
    """poses_bounds.npy written from the LLFF axes' meaning: columns [down, right, back], centre, hwf."""
    rows = []
    for c in centres:
        c = np.asarray(c, float)
        back = (c - np.asarray(target)) / np.linalg.norm(c - np.asarray(target))  # away from what it sees
        right = np.cross(-back, (0.0, 0.0, 1.0))
        right /= np.linalg.norm(right)
        down = np.cross(-back, right)  # forward x right = down for a right-handed camera
        pose = np.stack([down, right, back, c, np.asarray(hwf)], axis=1)  # (3, 5)
        rows.append(np.concatenate([pose.ravel(), [0.5, 12.0]]))
    np.save(root / "poses_bounds.npy", np.array(rows))
    for i in range(len(rows)):
        write_image(root / folder / f"IMG_{i:03d}.JPG", img_hw, seed=i)
    return np.array(rows)


def test_llff_axes_mean_down_right_back(tmp_path):
    centres = [(x, -4.0, 0.5 + 0.1 * x) for x in np.linspace(-1, 1, 10)]
    target = (0.0, 0.0, 0.3)
    rows = write_llff(tmp_path, centres, target)
    scene = load_scene(tmp_path)
    assert scene.num_views == 10 and scene.image_hw == (24, 32) and scene.metadata["format"] == "llff"
    torch.testing.assert_close(scene.K, intrinsics_matrix(30.0, 30.0, 15.5, 11.5).expand(10, 3, 3))
    expected = torch.stack([look_at_w2c(c, target) for c in centres])
    torch.testing.assert_close(scene.w2c, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(camera_centers(scene.w2c), torch.tensor(centres, dtype=torch.float64))
    # By meaning: the target is in front at the image centre; world-up is image-up; +x is right.
    uvz = project_points(scene.K, scene.w2c, torch.tensor([target, (0.0, 0.0, 1.3)], dtype=torch.float64))
    assert (uvz[:, 0, 2] > 3.9).all() and (uvz[:, 0, :2] - torch.tensor([15.5, 11.5])).abs().max() < 1e-9
    assert (uvz[:, 1, 1] < 11.5 - 3).all()  # 1 m above the target is higher in the image
    right = project_points(scene.K, scene.w2c, torch.tensor([[1.0, 0.0, 0.3]], dtype=torch.float64))
    assert (right[:, 0, 0] > 15.5 + 3).all()  # the cameras face +y, so world +x is image right
    torch.testing.assert_close(scene.metadata["near_far"], torch.from_numpy(rows[:, 15:]))
    assert torch.linalg.det(scene.w2c[:, :3, :3]).sub(1).abs().max() < 1e-12
    w2c_fn, hwf = llff_to_opencv(rows[:, :15].reshape(-1, 3, 5))
    torch.testing.assert_close(w2c_fn, scene.w2c, rtol=0, atol=0)
    assert hwf[0].tolist() == [24.0, 32.0, 30.0]


def test_llff_factor_and_hold_out_split(tmp_path):
    centres = [(x, -4.0, 0.5) for x in np.linspace(-1, 1, 10)]
    write_llff(tmp_path, centres, (0, 0, 0))
    write_llff(tmp_path, centres, (0, 0, 0), folder="images_2", img_hw=(12, 16))
    half = load_scene(tmp_path, llff_factor=2)
    assert half.image_hw == (12, 16) and half.image_paths[0].parent.name == "images_2"
    torch.testing.assert_close(half.K, intrinsics_matrix(15.0, 15.0, 7.5, 5.5).expand(10, 3, 3))
    test, train = load_scene(tmp_path, split="test"), load_scene(tmp_path, split="train")
    assert test.metadata["view_indices"] == [0, 8]
    assert train.metadata["view_indices"] == [1, 2, 3, 4, 5, 6, 7, 9]
    torch.testing.assert_close(train.w2c, load_scene(tmp_path).w2c[[1, 2, 3, 4, 5, 6, 7, 9]])
    with pytest.raises(FileNotFoundError, match="images_4: image folder missing"):
        load_scene(tmp_path, llff_factor=4)
    with pytest.raises(ValueError, match="splits 'train' and 'test'"):
        load_scene(tmp_path, split="val")


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a: a[:, :15], r"expected a float \(N, 17\) array"),
        (lambda a: np.where(np.arange(17) == 3, np.nan, a), "row 0 contains NaN or inf"),
        (lambda a: a * np.where(np.arange(17) < 3, 2.0, 1.0), "row 0 pose: rotation is not orthonormal"),
        (lambda a: a[:9], "10 images but .* has 9 poses"),
        (lambda a: np.where(np.arange(17) == 15, -1.0, a), "must be > 0"),
    ],
)
def test_llff_bad_input(tmp_path, mutate, match):
    rows = write_llff(tmp_path, [(x, -4.0, 0.5) for x in np.linspace(-1, 1, 10)], (0, 0, 0))
    np.save(tmp_path / "poses_bounds.npy", mutate(rows))
    with pytest.raises(ValueError, match=match):
        load_scene(tmp_path)


# ----------------------------------------------------------------------------- bad transforms.json


def good_scene(root: Path) -> dict:
    w2c = ring_cameras(3)
    K = intrinsics_matrix(20.0, 20.0, 7.5, 5.5).expand(3, 3, 3)
    return write_transforms(root, w2c, K)


def _set(path: list, value):
    def mutate(data: dict, root: Path) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _files(fn):
    def mutate(data: dict, root: Path) -> None:
        fn(root)

    return mutate


_BAD_T = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
_CASES = {
    "no frames": (
        lambda d, r: d.pop("frames"),
        ValueError,
        r"transforms\.json: 'frames' must be a non-empty list",
    ),
    "frames dict": (_set(["frames"], {"a": 1}), ValueError, "'frames' must be a non-empty list"),
    "frame not object": (_set(["frames", 1], [1, 2]), ValueError, r"frames\[1\]: expected an object"),
    "no matrix": (
        lambda d, r: d["frames"][1].pop("transform_matrix"),
        ValueError,
        r"transforms\.json: frames\[1\]: missing key 'transform_matrix'",
    ),
    "no file_path": (lambda d, r: d["frames"][0].pop("file_path"), ValueError, "missing key 'file_path'"),
    "nan": (
        _set(["frames", 0, "transform_matrix", 0, 3], float("nan")),
        ValueError,
        r"frames\[0\]\.transform_matrix\[0\]\[3\]: expected a finite number, got nan",
    ),
    "inf": (
        _set(["frames", 2, "transform_matrix", 1, 1], float("inf")),
        ValueError,
        r"frames\[2\]\.transform_matrix\[1\]\[1\]: expected a finite number",
    ),
    "string entry": (
        _set(["frames", 0, "transform_matrix", 2, 2], "1"),
        ValueError,
        r"transform_matrix\[2\]\[2\]: expected a number, got str",
    ),
    "3x4": (_set(["frames", 0, "transform_matrix"], _BAD_T[:3]), ValueError, "expected a 4x4 list"),
    "scaled": (
        _set(
            ["frames", 1, "transform_matrix"],
            [[2.0 * x for x in r[:3]] + r[3:] for r in _BAD_T[:3]] + [_BAD_T[3]],
        ),
        ValueError,
        r"frames\[1\]\.transform_matrix: rotation is not orthonormal",
    ),
    "reflection": (
        _set(["frames", 1, "transform_matrix"], [[-1.0, 0, 0, 0]] + _BAD_T[1:]),
        ValueError,
        r"frames\[1\]\.transform_matrix: rotation has determinant -1",
    ),
    "bottom row": (
        _set(["frames", 0, "transform_matrix"], _BAD_T[:3] + [[0.0, 0.0, 0.1, 1.0]]),
        ValueError,
        "bottom row is",
    ),
    "fl_x str": (
        _set(["frames", 0, "fl_x"], "20"),
        ValueError,
        r"frames\[0\]\.fl_x: expected a number, got str",
    ),
    "w bool": (_set(["frames", 0, "w"], True), ValueError, r"frames\[0\]\.w: expected a number, got bool"),
    "fl_x negative": (_set(["frames", 2, "fl_x"], -3.0), ValueError, "expected a positive number"),
    "no focal": (lambda d, r: [f.pop("fl_x") for f in d["frames"]], ValueError, "no focal length"),
    "w mismatch": (_set(["frames", 1, "w"], 17), ValueError, r"frames\[1\]: w, h say 17x12 but .* is 16x12"),
    "mixed size": (
        lambda d, r: (write_image(r / "images/0002.png", (10, 16)), d["frames"][2].update(h=10)),
        ValueError,
        r"frames\[2\] is 16x10 but the first frame is 16x12",
    ),
    "k3": (_set(["k3"], 0.1), ValueError, "only k1, k2, p1, p2 distortion is supported"),
    "fisheye": (_set(["camera_model"], "OPENCV_FISHEYE"), ValueError, "'OPENCV_FISHEYE' is not supported"),
    "missing image": (
        _files(lambda r: (r / "images/0001.png").unlink()),
        FileNotFoundError,
        r"frames\[1\]\.file_path: file 'images/0001.png' is missing",
    ),
    "unreadable image": (
        _files(lambda r: (r / "images/0001.png").write_bytes(b"not a png")),
        ValueError,
        r"frames\[1\]\.file_path: unreadable image",
    ),
    "escape": (_set(["frames", 0, "file_path"], "../outside.png"), ValueError, "outside the scene folder"),
    "absolute": (
        _set(["frames", 0, "file_path"], "/etc/hostname"),
        ValueError,
        "absolute path '/etc/hostname'",
    ),
    "symlink": (
        lambda d, r: (
            (r / "images/link.png").symlink_to(r.parent / "outside.png"),
            d["frames"][0].update(file_path="images/link.png"),
        ),
        ValueError,
        r"frames\[0\]\.file_path: path 'images/link.png' resolves to .* outside",
    ),
    "path type": (_set(["frames", 0, "file_path"], 3), ValueError, "expected a non-empty relative path"),
    "partial depth": (
        _set(["frames", 0, "depth_file_path"], "images/0000.png"),
        ValueError,
        "frame 1 has no depth_file_path but others do",
    ),
    "missing mask": (
        lambda d, r: [f.update(mask_file_path=f"m{i}.png") for i, f in enumerate(d["frames"])],
        FileNotFoundError,
        r"frames\[0\]\.mask_file_path: file 'm0\.png' is missing",
    ),
    "objects": (_set(["objects"], {"a": 1}), ValueError, "'objects' must be a list of objects"),
    "gst": (_set(["gst"], [1]), ValueError, "'gst' must be an object"),
    "depth scale": (
        _set(["depth_unit_scale_factor"], 0),
        ValueError,
        "depth_unit_scale_factor: expected a positive",
    ),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_bad_transforms_raise_naming_file_and_field(tmp_path, case):
    mutate, error, match = _CASES[case]
    root = tmp_path / "scene"
    root.mkdir()
    write_image(tmp_path / "outside.png", (12, 16))  # exists, so only the escape check can reject it
    data = good_scene(root)
    mutate(data, root)
    (root / "transforms.json").write_text(json.dumps(data))
    with pytest.raises(error, match=match) as err:
        load_scene(root)
    assert str(root / "transforms.json") in str(err.value)


def test_malformed_json_names_file_and_line(tmp_path):
    (tmp_path / "transforms.json").write_text('{\n  "frames": [\n    {"file_path": "a.png",,}\n  ]\n}\n')
    with pytest.raises(ValueError, match=r"transforms\.json: malformed JSON at line 3 column 27"):
        load_scene(tmp_path)
    (tmp_path / "transforms.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object at the top level, got list"):
        load_scene(tmp_path)


def test_bad_folder_split_and_background(tmp_path):
    with pytest.raises(FileNotFoundError, match="no transforms.json, transforms_<split>.json or poses"):
        load_scene(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such scene folder"):
        load_scene(tmp_path / "nope")
    good_scene(tmp_path)
    with pytest.raises(ValueError, match="one transforms.json; pass split=None"):
        load_scene(tmp_path, split="train")
    with pytest.raises(ValueError, match=r"background must be three numbers in \[0, 1\]"):
        load_scene(tmp_path, background=(0.0, 0.0, 255.0))
    with pytest.raises(ValueError, match="llff_factor applies to LLFF scenes only"):
        load_scene(tmp_path, llff_factor=2)
    with pytest.raises(ValueError, match="llff_factor must be a positive integer"):
        load_scene(tmp_path, llff_factor=0)
    assert load_scene(tmp_path, split="all").num_views == 3
