"""The tokenized pair cache: codes written = codes read, split by scene, manifest checks, the CLI.

Scenes are tiny hand-written transforms.json folders (no renderer needed) and the tokenizers are small
randomly initialised ones: the cache must store exactly what the tokenizers produce, trained or not.
``make_scenes`` / ``make_tokenizers`` are shared with tests/test_gst_training.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.cli import main as cli_main
from gst.data.cache_tokenizers import tokenizer_fingerprint
from gst.data.pairs import scene_split
from gst.data.token_cache import CacheConfig, build_token_cache, open_token_cache
from gst.data.views import crop_resize
from gst.geometry.conventions import opencv_w2c_to_opengl_c2w, relative_w2c
from gst.tokenizers.camera import CameraTokenizer
from gst.tokenizers.config import CameraTokenizerConfig, ImageTokenizerConfig, QuantizerConfig
from gst.tokenizers.image import ImageTokenizer, to_signed
from gst.tokenizers.io import load_tokenizer, save_tokenizer

torch.set_num_threads(1)

NUM_SCENES = 6  # scene_00000 .. 00005: val_fraction 0.5 puts 00002 and 00004 in val
NUM_VIEWS = 6
SCENE_HW = (20, 24)  # not the tokenizer's 16x16: exercises crop_resize and the K update


def _look_at(centre: torch.Tensor) -> torch.Tensor:
    """OpenCV w2c of a camera at ``centre`` looking at the origin, world +z up. Shapes: (3,) -> (4, 4)."""
    z = -centre / centre.norm()
    x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=z.dtype))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    w2c = torch.eye(4, dtype=z.dtype)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return w2c


def make_scenes(root: Path, num_scenes: int = NUM_SCENES, num_views: int = NUM_VIEWS) -> Path:
    """Scenes with cameras on a ring (30 deg elevation, radius 3 m, 60 deg apart) and noise images."""
    H, W = SCENE_HW
    for s in range(num_scenes):
        folder = root / f"scene_{s:05d}"
        (folder / "images").mkdir(parents=True)
        rng = np.random.default_rng(s)
        frames = []
        for v in range(num_views):
            az, el = 2 * math.pi * v / num_views + 0.1 * s, math.radians(30.0)
            centre = 3.0 * torch.tensor(
                [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
            )
            c2w = opencv_w2c_to_opengl_c2w(_look_at(centre.double()))
            image = (rng.random((H, W, 3)) * 255).astype(np.uint8)
            Image.fromarray(image).save(folder / "images" / f"{v:04d}.png")
            frames.append(
                {
                    "file_path": f"images/{v:04d}.png",
                    "transform_matrix": c2w.tolist(),
                    "fl_x": 20.0 + v,
                    "fl_y": 20.0 + v,
                    "cx": W / 2,
                    "cy": H / 2,
                    "w": W,
                    "h": H,
                }
            )
        (folder / "transforms.json").write_text(
            json.dumps({"camera_model": "PINHOLE", "w": W, "h": H, "frames": frames})
        )
    return root


def make_tokenizers(root: Path, seed: int = 0) -> Path:
    """Random 16x16 -> 4x4 image (VQ, 32 codes) and camera (FSQ 3x3x3 = 27 codes) tokenizers in
    ``root/image`` and ``root/camera``."""
    torch.manual_seed(seed)
    image = ImageTokenizer(
        ImageTokenizerConfig(
            image_hw=(16, 16),
            channels=8,
            channel_mult=(1, 1, 1),
            z_channels=8,
            quantizer=QuantizerConfig(kind="vq", codebook_size=32, code_dim=4, kmeans_init=False),
        )
    )
    camera = CameraTokenizer(
        CameraTokenizerConfig(
            image_hw=(16, 16),
            grid_hw=(4, 4),
            ray_hw=(4, 4),
            hidden=16,
            depth=1,
            quantizer=QuantizerConfig(kind="fsq", levels=(3, 3, 3)),
        )
    )
    save_tokenizer(image.eval(), root / "image")
    save_tokenizer(camera.eval(), root / "camera")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Scenes, tokenizers and a cache built through `gst data cache` (3 pairs per scene)."""
    tmp = tmp_path_factory.mktemp("cache")
    scenes, toks, out = make_scenes(tmp / "scenes"), make_tokenizers(tmp / "tok"), tmp / "cache"
    code = cli_main(
        [
            "data",
            "cache",
            "--scenes",
            str(scenes),
            "--tokenizers",
            str(toks),
            "--out",
            str(out),
            "--pairs-per-scene",
            "3",
            "--seed",
            "5",
            "--val-fraction",
            "0.5",
            "--quiet",
        ]
    )
    assert code == 0
    return {"tmp": tmp, "scenes": scenes, "tok": toks, "cache": out}


def test_codes_written_equal_codes_read(built: dict) -> None:
    cache = open_token_cache(built["cache"], tokenizers_dir=built["tok"])
    image_tok, cam_tok = load_tokenizer(built["tok"] / "image"), load_tokenizer(built["tok"] / "camera")
    from gst.data.loaders import load_scene

    assert cache.image_grid == (4, 4) and cache.camera_grid == (4, 4)
    for split in cache.splits.values():
        assert len(split) == 3 * len(split.scenes)  # of 12 valid pairs per scene (51 deg apart)
        for row in range(len(split)):
            name, obs, tgt = split.pair_keys([row])[0]
            scene = load_scene(built["scenes"] / name)
            images, K = crop_resize(scene.load_images([obs, tgt]), scene.K[[obs, tgt]], (16, 16))
            codes = image_tok.encode(to_signed(images))  # (2, 4, 4)
            cam = cam_tok.encode_cameras(K[1:], scene.w2c[[obs]], scene.w2c[[tgt]])  # (1, 4, 4)
            got_obs, got_tgt, got_cam = split.codes(np.array([row]))
            assert torch.equal(got_obs[0], codes[0]) and torch.equal(got_tgt[0], codes[1])
            assert torch.equal(got_cam[0], cam[0])
            w2c_rel = relative_w2c(scene.w2c[obs], scene.w2c[tgt]).float().numpy()
            np.testing.assert_allclose(split.w2c_rel[row], w2c_rel, atol=1e-6)
            np.testing.assert_allclose(split.K_obs[row], K[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(split.K_tgt[row], K[1].numpy(), atol=1e-5)
            assert 10.0 <= split.baseline_deg[row] <= 90.0
    # Codes really vary (a constant array would pass the equality checks trivially).
    train = cache.split("train")
    assert len(np.unique(np.asarray(train.obs_codes))) > 5 and len(np.unique(np.asarray(train.cam_codes))) > 3
    # K at 16x16 from the 20x24 scenes: centre crop to 20x20 (x0 = 2), scale 0.8, pixel-centre convention:
    # fx = 0.8 (20 + view), cx = (11.5 - 2 + 0.5) 0.8 - 0.5 = 7.5, cy = (9.5 + 0.5) 0.8 - 0.5 = 7.5.
    np.testing.assert_allclose(train.K_obs[:, 0, 0], 0.8 * (20.0 + train.views[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(train.K_tgt[:, :2, 2], 7.5, atol=1e-5)
    # ... and back to the scenes' 20x24 pixels (fx = 20 + view, cx = 11.5, cy = 9.5).
    rows = np.arange(len(train))
    K_back = train.original_intrinsics(rows, torch.tensor(np.array(train.K_obs)).double(), (16, 16))
    np.testing.assert_allclose(K_back[:, 0, 0].numpy(), 20.0 + train.views[:, 0], rtol=1e-6)
    np.testing.assert_allclose(K_back[:, 0, 2].numpy(), 11.5, atol=1e-5)
    np.testing.assert_allclose(K_back[:, 1, 2].numpy(), 9.5, atol=1e-5)


def test_split_by_scene(built: dict) -> None:
    cache = open_token_cache(built["cache"])
    manifest = cache.manifest
    train, val = cache.split("train"), cache.split("val")
    assert set(train.scenes).isdisjoint(val.scenes)
    assert sorted(train.scenes + val.scenes) == [f"scene_{s:05d}" for s in range(NUM_SCENES)]
    assert val.scenes == ["scene_00002", "scene_00004"]
    for split in (train, val):
        names = {split.scenes[i] for i in np.asarray(split.scene_index)}
        assert all(scene_split(n, 0.5) == split.name for n in names)
    assert manifest["splits"]["train"]["num_pairs"] == 12 and manifest["splits"]["val"]["num_pairs"] == 6
    assert manifest["config"]["seed"] == 5 and manifest["split_rule"]["val_fraction"] == 0.5
    stats = manifest["splits"]["train"]["baseline_deg"]
    assert (
        stats["count"] == 12
        and sum(stats["hist_counts"]) == 12
        and 10.0 <= stats["min"] <= stats["max"] <= 90
    )


def test_manifest_mismatch_and_refusals(built: dict, tmp_path: Path) -> None:
    other = make_tokenizers(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="rebuild the cache"):
        open_token_cache(built["cache"], tokenizers_dir=other)
    fp = tokenizer_fingerprint(built["tok"])
    assert fp["image"]["sha256"] == open_token_cache(built["cache"]).manifest["tokenizers"]["image"]["sha256"]
    with pytest.raises(ValueError, match="already exists"):
        build_token_cache(built["scenes"], built["tok"], built["cache"], CacheConfig(pairs_per_scene=1))
    with pytest.raises(FileNotFoundError, match="not a token cache"):
        open_token_cache(tmp_path)
    # A damaged array (wrong shape) is an error, not silently wrong data.
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(built["cache"], copy)
    np.save(copy / "train" / "cam_codes.npy", np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(ValueError, match="damaged"):
        open_token_cache(copy)


def test_held_out_cache_is_all_val(built: dict, tmp_path: Path) -> None:
    manifest = build_token_cache(
        built["scenes"],
        built["tok"],
        tmp_path / "held",
        CacheConfig(pairs_per_scene=2, seed=1, val_fraction=1.0),
    )
    assert manifest["splits"]["train"]["num_pairs"] == 0 and manifest["splits"]["val"]["num_pairs"] == 12
    assert not (tmp_path / "held.partial").exists()
    assert len(open_token_cache(tmp_path / "held").split("train")) == 0
