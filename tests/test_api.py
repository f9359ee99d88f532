"""gst.api on a tiny UNTRAINED checkpoint: loading and its checks, poses, views, samples, chat, inputs.

The checkpoint is built here: a micro backbone (gst.model presets) and small random tokenizers written
through their own save functions, exported as `gst train gst` exports and assembled by
``export_checkpoint``. Untrained, the model's outputs are arbitrary; the tests check shapes, ranges,
geometry (rigid cameras, positive focal lengths, intrinsics through resizing), determinism and errors.
``make_checkpoint`` is shared with tests/test_api_cli.py and tests/test_demo.py.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.api import (
    GST,
    GSTPosePredictor,
    GSTViewPredictor,
    PoseEstimate,
    default_intrinsics,
    export_checkpoint,
    load_image,
    orbit_camera,
    read_camera_json,
    uncrop_intrinsics,
)
from gst.api_chat import decode_reply, text_reply_rows
from gst.data.views import crop_resize_intrinsics
from gst.eval.baselines import pair_seed, resize_image
from gst.model import (
    GSTModelConfig,
    HeadKind,
    SamplingConfig,
    SequenceConfig,
    build_gst_model,
    get_preset,
    save_gst_model,
)
from gst.model.sampling import GREEDY
from gst.model.sequences import NO_GRID
from gst.model.warp import warp_image
from gst.tokenizers.camera import CameraTokenizer
from gst.tokenizers.config import CameraTokenizerConfig, ImageTokenizerConfig, QuantizerConfig
from gst.tokenizers.image import ImageTokenizer
from gst.tokenizers.io import save_tokenizer
from gst.tokenizers.vocab import Vocabulary

torch.set_num_threads(1)

MODEL_HW = (16, 16)  # the tokenizers' resolution; 4x4 token grids


def make_tokenizers(root: Path, seed: int = 0) -> Path:
    """Random image (VQ, 32 codes) and camera (FSQ 27 codes) tokenizers in root/image and root/camera."""
    torch.manual_seed(seed)
    image = ImageTokenizer(
        ImageTokenizerConfig(
            image_hw=MODEL_HW,
            channels=8,
            channel_mult=(1, 1, 1),
            z_channels=8,
            quantizer=QuantizerConfig(kind="vq", codebook_size=32, code_dim=4, kmeans_init=False),
        )
    )
    camera = CameraTokenizer(
        CameraTokenizerConfig(
            image_hw=MODEL_HW,
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


def make_training_export(root: Path, vocab: Vocabulary | None = None) -> Path:
    """root/tok (tokenizers) and root/export: a micro backbone saved as `gst train gst` exports it.
    ``vocab``: default ByT5's 384 text ids, 32 image and 27 camera codes."""
    from gst.data.cache_tokenizers import tokenizer_sha256

    tok = make_tokenizers(root / "tok")
    vocab = vocab or Vocabulary(num_text=384, num_image_codes=32, num_camera_codes=27)  # 384: ByT5's ids
    seq = SequenceConfig(image_grid=(4, 4), camera_grid=(4, 4))
    torch.manual_seed(0)
    model = build_gst_model(GSTModelConfig(backbone=get_preset("micro")), vocab)
    extra = {
        "sequence": seq.to_dict(),
        "vocabulary": vocab.to_dict(),
        "text_tokenizer": "byt5",
        "tokenizers": {
            k: {"path": str((tok / k).resolve()), "sha256": tokenizer_sha256(tok / k)}
            for k in ("image", "camera")
        },
        "pose_scale": 1.0,
        "image_hw": list(MODEL_HW),
    }
    return save_gst_model(model, root / "export", extra=extra)


def make_checkpoint(root: Path, vocab: Vocabulary | None = None) -> Path:
    """An assembled checkpoint folder root/gst (gst_checkpoint.json, model/, tokenizers/)."""
    return export_checkpoint(make_training_export(root, vocab), root / "gst")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def gst(ckpt: Path) -> GST:
    return GST.from_pretrained(ckpt)


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def _assert_rigid(w2c: torch.Tensor) -> None:
    R = w2c[:3, :3]
    assert w2c.shape == (4, 4) and w2c.dtype == torch.float64
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
    assert abs(float(torch.det(R)) - 1.0) < 1e-6
    assert w2c[3].tolist() == [0.0, 0.0, 0.0, 1.0]


# ---- loading ----


def test_from_pretrained_reads_every_part(ckpt: Path, gst: GST) -> None:
    manifest = json.loads((ckpt / "gst_checkpoint.json").read_text())
    assert manifest["format"] == "gst-checkpoint" and manifest["version"] == 1
    assert set(manifest["files"]) == {
        "model/gst_model.json",
        "model/model.safetensors",
        "tokenizers/image/config.json",
        "tokenizers/image/model.safetensors",
        "tokenizers/camera/config.json",
        "tokenizers/camera/model.safetensors",
    }
    assert gst.image_hw == MODEL_HW
    assert (gst.layout.image_offset, gst.layout.camera_offset) == (384 + 11, 384 + 11 + 32)
    assert gst.sequence.image_grid == (4, 4) and gst.text_tokenizer.vocab_size == 384
    assert not gst.model.training


def test_training_export_and_run_folder_load(ckpt: Path, tmp_path: Path) -> None:
    export = ckpt.parent / "export"
    assert GST.from_pretrained(export).layout == GST.from_pretrained(ckpt).layout
    run = tmp_path / "run"
    shutil.copytree(export, run / "checkpoints" / "step_00000005" / "export")
    (run / "checkpoints" / "latest").write_text(json.dumps({"dir": "step_00000005"}))
    assert GST.from_pretrained(run).checkpoint == run


def test_missing_checkpoint_parts_are_named(ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        GST.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a GST checkpoint"):
        GST.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "tokenizers" / "camera" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tokenizers/camera/config\.json"):
        GST.from_pretrained(broken)


def test_corrupt_checkpoint_files_are_named(ckpt: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    weights = broken / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match=r"model/model\.safetensors: its sha256 differs"):
        GST.from_pretrained(broken)
    (broken / "gst_checkpoint.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"gst_checkpoint\.json: not valid JSON"):
        GST.from_pretrained(broken)
    # Without a manifest (a training export), a damaged file is reported by the loader that reads it.
    export = tmp_path / "export"
    shutil.copytree(ckpt.parent / "export", export)
    (export / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"export: cannot load the backbone"):
        GST.from_pretrained(export)


def test_wrong_tokenizers_and_versions_are_refused(ckpt: Path, tmp_path: Path) -> None:
    other = make_tokenizers(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="not the one the backbone was trained with"):
        export_checkpoint(ckpt.parent / "export", tmp_path / "out", tokenizers=other)
    assert not (tmp_path / "out").exists()  # nothing written
    moved = tmp_path / "v2"
    shutil.copytree(ckpt, moved)
    manifest = json.loads((moved / "gst_checkpoint.json").read_text())
    (moved / "gst_checkpoint.json").write_text(json.dumps({**manifest, "version": 2}))
    with pytest.raises(ValueError, match="version 2 is not 'gst-checkpoint' version 1"):
        GST.from_pretrained(moved)


def test_export_float16_backbone_loads_back(ckpt: Path, gst: GST, tmp_path: Path) -> None:
    half = export_checkpoint(ckpt.parent / "export", tmp_path / "half", backbone_dtype="float16")
    assert (half / "model/model.safetensors").stat().st_size < 0.6 * (
        ckpt / "model/model.safetensors"
    ).stat().st_size
    g16 = GST.from_pretrained(half)
    ids = torch.arange(gst.layout.image_offset, gst.layout.image_offset + 20)[None]
    with torch.no_grad():
        a, b = gst.model(ids).logits, g16.model(ids).logits
    assert g16.model.dtype == torch.float32 and float((a - b).abs().max()) < 5e-3
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        export_checkpoint(ckpt.parent / "export", half)


# ---- inputs ----


def test_load_image_accepts_paths_pil_arrays_tensors(tmp_path: Path) -> None:
    rgb = (np.arange(5 * 7 * 3) % 256).astype(np.uint8).reshape(5, 7, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    want = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for x in (tmp_path / "a.png", str(tmp_path / "a.png"), Image.fromarray(rgb), rgb, want, want[None]):
        got = load_image(x)
        assert got.shape == (3, 5, 7) and torch.allclose(got, want, atol=1e-6)
    rgba = np.concatenate([rgb, np.zeros((5, 7, 1), np.uint8)], -1)  # transparent -> white
    assert torch.equal(load_image(rgba), torch.ones(3, 5, 7))
    assert load_image(np.zeros((4, 6), np.uint8)).shape == (3, 4, 6)


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.png: no such image file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        load_image(torch.full((3, 4, 4), 2.0))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        load_image(torch.zeros(2, 4, 4))


def test_resizing_a_non_square_input_adjusts_K(gst: GST) -> None:
    hw = (30, 48)  # centre crop keeps the middle 30x30, then 16/30 scaling
    K = torch.tensor([[40.0, 0, 23.5], [0, 42.0, 14.5], [0, 0, 1]], dtype=torch.float64)
    prep = gst.prepare(_image(*hw), K)
    s = 16 / 30
    want = torch.tensor(
        [[40 * s, 0, (23.5 - 9 + 0.5) * s - 0.5], [0, 42 * s, (14.5 + 0.5) * s - 0.5], [0, 0, 1]]
    )
    assert prep.image.shape == (3, 16, 16) and torch.allclose(prep.K_model, want.double(), atol=1e-12)
    assert torch.allclose(uncrop_intrinsics(prep.K_model, hw, MODEL_HW), K, atol=1e-12)  # exact inverse
    default = gst.prepare(_image(*hw)).K_input  # assumed: 52.5 degree horizontal field of view
    assert math.isclose(math.degrees(2 * math.atan(24 / float(default[0, 0]))), 52.5)
    assert default[0, 2] == 23.5 and default[1, 2] == 14.5


# ---- tasks ----


def test_estimate_pose_returns_a_rigid_camera(gst: GST) -> None:
    target = _image(30, 48, seed=1)
    pose = gst.estimate_pose(_image(20, 20), target)
    _assert_rigid(pose.w2c)
    assert pose.image_hw == (30, 48) and float(pose.K_tgt[0, 0]) > 0 and float(pose.K_tgt[1, 1]) > 0
    # K_tgt is in the target's pixels: mapped back to model pixels it is the decoded camera's K.
    decoded = gst.decode_cameras(pose.camera_codes.reshape(1, -1) + gst.layout.camera_offset)[0]
    assert torch.allclose(crop_resize_intrinsics(pose.K_tgt, (30, 48), MODEL_HW), decoded.K_tgt, atol=1e-9)
    assert torch.equal(decoded.w2c, pose.w2c)
    assert "degrees" in pose.summary or "did not move" in pose.summary
    assert "field of view" in pose.summary
    again = gst.estimate_pose(_image(20, 20), target)
    assert torch.equal(again.w2c, pose.w2c)  # greedy: deterministic
    assert pose.to_dict()["format"] == "gst.camera.v1"


def test_pose_decoding_study_readouts_agree_with_the_api(gst: GST) -> None:
    """scripts/pose_decoding_study.py: its greedy readout is `estimate_pose`'s camera, its true-code
    readout the tokenizer's decoding, and code accuracies are shares."""
    spec = importlib.util.spec_from_file_location(
        "pose_decoding_study", Path(__file__).resolve().parents[1] / "scripts" / "pose_decoding_study.py"
    )
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    observed, target = _image(20, 20), _image(20, 20, seed=1)
    obs, tgt = gst.prepare(observed), gst.prepare(target)
    camera = orbit_camera(20.0, 5.0)
    true_ids = gst.encode_camera(camera, tgt.K_model)  # (1, n)
    offset = gst.layout.camera_offset
    w2c, acc = study.pair_readouts(gst, obs.ids, tgt.ids, true_ids[0] - offset, samples=3, seed=0)
    assert set(w2c) == set(study.READOUTS)
    # The API decodes through the rendered ray map (float64), the study from the parameters directly.
    torch.testing.assert_close(w2c["greedy"], gst.estimate_pose(observed, target).w2c, atol=1e-5, rtol=0)
    torch.testing.assert_close(w2c["true codes"], gst.decode_cameras(true_ids)[0].w2c, atol=1e-5, rtol=0)
    for pose in w2c.values():
        _assert_rigid(pose)
    assert set(acc) == {
        "teacher-forced, all codes",
        "teacher-forced, first code",
        "first code cross-entropy (nats)",
        "greedy codes equal to the true ones",
    }
    assert all(0.0 <= v <= 1.0 for k, v in acc.items() if "entropy" not in k)
    assert acc["first code cross-entropy (nats)"] > 0
    # The first greedy code is the teacher-forced first code: both see only the images.
    greedy_first = int(gst.estimate_pose(observed, target).camera_codes.reshape(-1)[0])
    assert acc["teacher-forced, first code"] == float(greedy_first == int(true_ids[0, 0] - offset))


def test_pose_head_readout_returns_the_head_camera_exactly(gst: GST) -> None:
    from gst.geometry import rotation_error_deg

    with pytest.raises(ValueError, match="no pose head"):  # the shipped layout of this model has none
        gst.estimate_pose(_image(20, 20), _image(20, 20, seed=1), readout="head")
    with pytest.raises(ValueError, match="readout must be one of"):
        gst.estimate_pose(_image(20, 20), _image(20, 20, seed=1), readout="rays")
    headed = copy.copy(gst)
    headed.model = copy.deepcopy(gst.model)
    headed.model.pose_head = torch.nn.Linear(headed.model.hidden_size, 13)
    # A head that ignores its input and reads out one camera: turned 30 degrees about y, moved 1 m
    # along +x, focal length 20 px at the 16 px model width, principal point at the centre.
    R = torch.tensor(orbit_camera(30, 0)[:3, :3].tolist(), dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3], w2c[:3, 3] = R, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]], dtype=torch.float64)
    vector = gst.camera_tokenizer.camera_vector(K[None], w2c[None])[0]
    torch.nn.init.zeros_(headed.model.pose_head.weight)
    with torch.no_grad():
        headed.model.pose_head.bias.copy_(vector)
    pose = headed.estimate_pose(_image(20, 20), _image(16, 16, seed=1), readout="head")
    _assert_rigid(pose.w2c)
    assert float(rotation_error_deg(pose.w2c[:3, :3], R)) < 1e-4
    torch.testing.assert_close(pose.w2c[:3, 3], w2c[:3, 3], atol=1e-6, rtol=0)
    torch.testing.assert_close(pose.K_tgt, K, atol=1e-4, rtol=0)
    assert pose.camera_codes.shape == (4, 4) and "30 degrees" in pose.summary
    predictor = GSTPosePredictor(headed, readout="head")
    pred = predictor.predict_pose(_image(20, 20), _image(16, 16, seed=1), K)
    torch.testing.assert_close(pred.w2c_rel, pose.w2c)
    # head-sym averages the pose with the inverse of the reverse reading, here the same constant camera:
    # the mean of a rotation and its inverse is the identity
    sym = headed.estimate_pose(_image(20, 20), _image(16, 16, seed=1), readout="head-sym")
    assert float(rotation_error_deg(sym.w2c[:3, :3], torch.eye(3, dtype=torch.float64))) < 1e-4
    torch.testing.assert_close(sym.K_tgt, K, atol=1e-4, rtol=0)


def test_synthesize_view_shape_range_and_seed(gst: GST) -> None:
    obs = _image(24, 40)
    view = gst.synthesize_view(obs, orbit_camera(30, 10), num_samples=2, seed=3)
    assert view.images.shape == (2, 3, *MODEL_HW) and view.image_codes.shape == (2, 4, 4)
    assert float(view.images.min()) >= 0.0 and float(view.images.max()) <= 1.0
    _assert_rigid(view.camera.w2c)
    same = gst.synthesize_view(obs, orbit_camera(30, 10), num_samples=2, seed=3)
    other = gst.synthesize_view(obs, orbit_camera(30, 10), num_samples=2, seed=4)
    assert torch.equal(same.image_codes, view.image_codes)
    assert not torch.equal(other.image_codes, view.image_codes)


def test_synthesize_view_warp_pastes_the_observed_pixels_where_they_land(gst: GST, monkeypatch) -> None:
    """The micro model reads no depth: warp=True names what is missing. With a depth given (3 m per cell)
    and the observed camera itself as the target, every pixel is covered and the view is the prepared
    observed image, whatever was generated; with weight 0.5, the mean of the two."""
    obs = _image(*MODEL_HW)
    with pytest.raises(ValueError, match="reads no depth"):
        gst.synthesize_view(obs, torch.eye(4), warp=True)
    grid = gst.sequence.image_grid
    monkeypatch.setattr(gst, "observed_depth", lambda prepared: (torch.full(grid, 3.0), torch.zeros(grid)))
    view = gst.synthesize_view(obs, torch.eye(4, dtype=torch.float64), num_samples=2, seed=0, warp=True)
    plain = gst.synthesize_view(obs, torch.eye(4, dtype=torch.float64), num_samples=2, seed=0)
    assert view.covered is not None and view.covered.all() and plain.covered is None
    assert view.warped_fraction == 1.0 and plain.warped_fraction is None
    prepared = gst.prepare(obs).image
    torch.testing.assert_close(view.images, prepared.expand(2, -1, -1, -1), atol=0.0, rtol=0.0)
    assert torch.equal(view.image_codes, plain.image_codes)
    half = gst.synthesize_view(obs, torch.eye(4, dtype=torch.float64), num_samples=2, seed=0, warp=0.5)
    torch.testing.assert_close(half.images, 0.5 * prepared + 0.5 * plain.images, atol=1e-6, rtol=0.0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        gst.synthesize_view(obs, torch.eye(4), warp=1.5)


def test_camera_json_round_trip_and_pose_as_camera(gst: GST, tmp_path: Path) -> None:
    pose = gst.estimate_pose(_image(20, 20), _image(20, 20, seed=2))
    (tmp_path / "cam.json").write_text(json.dumps(pose.to_dict()))
    cam = read_camera_json(tmp_path / "cam.json")
    assert torch.allclose(cam["w2c"], pose.w2c) and torch.allclose(cam["K"], pose.K_tgt)
    assert cam["K_hw"] == (20, 20)
    a = gst.synthesize_view(_image(20, 20), pose, seed=0)
    b = gst.synthesize_view(_image(20, 20), cam["w2c"], K=cam["K"], K_hw=cam["K_hw"], seed=0)
    assert torch.equal(a.image_codes, b.image_codes)
    (tmp_path / "bad.json").write_text(json.dumps({"w2c": (2 * torch.eye(4)).tolist()}))
    with pytest.raises(ValueError, match="rigid transform"):
        read_camera_json(tmp_path / "bad.json")


def test_sample_draws_cameras_and_views_jointly(gst: GST) -> None:
    result = gst.sample(_image(20, 28), num_samples=3, seed=0)
    assert len(result.cameras) == 3 and result.images.shape == (3, 3, *MODEL_HW)
    assert result.observed.shape == (3, *MODEL_HW) and result.K_obs.shape == (3, 3)
    for cam in result.cameras:
        _assert_rigid(cam.w2c)
        assert cam.image_hw == MODEL_HW and float(cam.K_tgt[0, 0]) > 0
    assert len({tuple(c.camera_codes.flatten().tolist()) for c in result.cameras}) > 1  # temperature 1
    with pytest.raises(ValueError, match="num_samples"):
        gst.sample(_image(8, 8), num_samples=0)


def test_sample_warp_moves_the_observed_pixels_to_each_sampled_camera(gst: GST, monkeypatch) -> None:
    """warp=True on joint samples: the same cameras and generated codes as without it (same seed), and
    each view is its own camera's warp of the prepared observed image where that lands (3 m per cell),
    the generated view elsewhere; the micro model reads no depth, which warp=True names."""
    obs = _image(*MODEL_HW)
    with pytest.raises(ValueError, match="reads no depth"):
        gst.sample(obs, num_samples=2, seed=0, warp=True)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        gst.sample(obs, num_samples=2, warp=-0.1)
    grid = gst.sequence.image_grid
    depth, ground = torch.full(grid, 3.0), torch.zeros(grid)
    monkeypatch.setattr(gst, "observed_depth", lambda prepared: (depth, ground))
    prepared = gst.prepare(obs)
    decode = gst.decode_cameras

    def first_at_observed(ids: torch.Tensor) -> list[PoseEstimate]:  # sample 0 sees what A sees
        cams = decode(ids)
        eye = torch.eye(4, dtype=torch.float64)
        return [dataclasses.replace(cams[0], w2c=eye, K_tgt=prepared.K_model.double()), *cams[1:]]

    monkeypatch.setattr(gst, "decode_cameras", first_at_observed)
    plain = gst.sample(obs, num_samples=3, seed=0)
    warped = gst.sample(obs, num_samples=3, seed=0, warp=True)
    assert plain.covered is None and warped.covered is not None
    assert warped.covered.shape == (3, *MODEL_HW) and warped.covered.dtype == torch.bool
    for k, (a, b) in enumerate(zip(plain.cameras, warped.cameras, strict=True)):
        assert torch.equal(a.camera_codes, b.camera_codes)
        expect, covered = warp_image(prepared.image, depth, prepared.K_model, a.K_tgt, a.w2c, ground=ground)
        assert torch.equal(covered, warped.covered[k])
        want = torch.where(covered, expect, plain.images[k])
        torch.testing.assert_close(warped.images[k], want, atol=0.0, rtol=0.0)
    assert warped.covered[0].all()  # the observed camera itself: the view is the observed image
    assert plain.warped_fractions is None and warped.warped_fractions[0] == 1.0
    torch.testing.assert_close(warped.images[0], prepared.image, atol=0.0, rtol=0.0)


def test_orbit_camera_geometry() -> None:
    assert torch.allclose(orbit_camera(0.0, 0.0), torch.eye(4, dtype=torch.float64), atol=1e-12)
    w2c = orbit_camera(30.0, 10.0, radius_m=2.0)
    _assert_rigid(w2c)
    pivot = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    assert math.isclose(float((centre - pivot).norm()), 2.0)
    assert float(centre[0]) > 0 and float(centre[1]) < 0  # moved right and up (OpenCV: -y is up)
    p = w2c[:3, :3] @ pivot + w2c[:3, 3]
    assert torch.allclose(p[:2], torch.zeros(2, dtype=torch.float64), atol=1e-12)  # looks at the pivot
    from gst.api import describe_camera

    words = describe_camera(w2c, default_intrinsics((16, 16)), (16, 16))[1]
    assert words.startswith("turned 30 degrees left, tilted 10 degrees down")


# ---- chat ----


class _Steer(torch.nn.Module):
    """Wraps a GSTModel and makes ``token`` the likeliest at the first text step of a reply."""

    def __init__(self, model, token: int) -> None:
        super().__init__()
        self.inner, self.token, self.calls = model, token, 0
        self.layout = model.layout

    @property
    def device(self):
        return self.inner.device

    @property
    def lm(self):
        return self.inner.lm

    def forward(self, *args, head=None, **kwargs):
        out = self.inner(*args, head=head, **kwargs)
        if head == HeadKind.FULL and self.calls == 0:
            out.logits[:, self.token] += 1e4
        self.calls += 1
        return out


def test_chat_multi_turn_history(gst: GST) -> None:
    session = gst.start_chat(max_new_tokens=12)
    first = session.ask("How many objects?", [_image(20, 20)])
    assert isinstance(first.text, str) and len(first.ids) <= 12 and first.ids.dtype == torch.long
    n1 = session.num_tokens
    assert n1 > 16 + len("How many objects?")  # the image segment and the question are in the history
    session.ask("And now?")
    assert session.num_tokens > n1
    session.reset()
    assert session.num_tokens == 0
    with pytest.raises(ValueError, match="reads at most 1024"):
        gst.start_chat(max_new_tokens=1020).ask("x" * 10)
    assert (
        gst.chat_fn(8)("Which colour?", [])
        == gst.chat("Which colour?", max_new_tokens=8, allow_segments=False).text.strip()
    )


def test_chat_router_answers_the_questions_it_recognises(gst: GST, monkeypatch) -> None:
    """A router (`gst chat`: the answer reader) answers the questions it takes, with the turn's images or
    else the last ones given (each tokenized once); its reply joins the history as a text turn; the others
    go to the model."""
    from gst.api_types import PreparedImage

    seen, prepared = [], []

    def router(question, images):
        assert all(isinstance(img, PreparedImage) for img in images)
        seen.append(len(images))
        return "3" if question.startswith("How many") else None

    prepare = gst.prepare
    monkeypatch.setattr(gst, "prepare", lambda *a, **k: prepared.append(1) or prepare(*a, **k))
    session = gst.start_chat(max_new_tokens=6, router=router)
    reply = session.ask("How many objects?", [_image(20, 20)])
    assert reply.answered_by == "answer-reader" and reply.text == "3" and reply.finished
    n1 = session.num_tokens
    assert n1 > 16 and int(reply.ids[-1]) == gst.layout.special_id("<|end|>")
    assert session.ask("How many now?").text == "3" and seen == [1, 1]  # the last images again
    assert len(prepared) == 1  # the image of the first turn, tokenized once for the router and the prompt
    other = session.ask("Which colour?")
    assert other.answered_by == "model" and session.num_tokens > n1
    session.reset()
    session.ask("How many?")
    assert seen[-1] == 0  # reset forgets the images too


def test_score_replies_is_the_log_likelihood_text_decoding_assigns(gst: GST, monkeypatch) -> None:
    import gst.api_chat as api_chat

    question, images = "Which is closer?", [_image(20, 20)]
    candidates = ["red box", "the blue sphere", "left"]
    scores = gst.score_replies(question, images, candidates)
    # Reference: one prefix at a time, the last position's logits over text ids and <|end|>.
    session = gst.start_chat(allow_segments=False)
    _, prompt, grid = session._prompt(question, images)
    layout, end = gst.layout, gst.layout.special_id("<|end|>")
    allowed = torch.zeros(layout.image_offset, dtype=torch.bool)
    allowed[: layout.num_text] = True
    allowed[end] = True
    assert torch.equal(text_reply_rows(layout, "cpu"), allowed)

    def reference(candidate: str, complete: bool = True) -> float:
        reply, total = gst.text_tokenizer.encode(candidate) + [end] * complete, 0.0
        for j, token in enumerate(reply):
            ids = torch.cat([prompt, torch.tensor(reply[:j], dtype=torch.long)])
            cells = torch.cat([grid, torch.full((j, 2), NO_GRID)])
            with torch.no_grad():
                logits = gst.model(ids[None], cells[None]).logits[0, -1, : layout.image_offset]
            total += float(logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)[token])
        return total

    assert scores == pytest.approx([reference(c) for c in candidates], abs=1e-3)
    assert len(set(scores)) == 3 and all(s < 0 for s in scores)
    # Candidates sharing a prefix (a box's coordinates so far): the prefix is read once, counted in each.
    shared = ["center (1.25, ", "center (1.50, ", "center (0.75, 2", "center (1.25, "]
    for complete in (True, False):
        got = gst.score_replies(question, images, shared, complete=complete)
        assert got == pytest.approx([reference(c, complete) for c in shared], abs=1e-3)
    assert gst.score_replies(question, images, ["center"]) == pytest.approx([reference("center")], abs=1e-3)
    assert session.num_tokens == 0  # scoring leaves the history alone
    monkeypatch.setattr(api_chat, "SCORE_CHUNK", 2)  # candidates in chunks over the prompt's cache
    assert gst.score_replies(question, images, candidates) == pytest.approx(scores, abs=1e-4)
    with pytest.raises(ValueError, match="no candidate"):
        gst.score_replies(question, images, [])


def test_number_format_allows_exactly_the_answer_format(gst: GST) -> None:
    from gst.api_chat import NumberFormat
    from gst.data.qa_types import parse_answer

    tok, layout, end = gst.text_tokenizer, gst.layout, gst.layout.special_id("<|end|>")
    metres = NumberFormat(tok, layout, "m", 2)

    def allowed(fmt: NumberFormat, text: str) -> set[str]:
        mask = fmt(tok.encode(text))
        pieces = {tok.decode([i]) for i in range(layout.num_text) if mask[i]}
        return pieces | ({"<end>"} if mask[end] else set())

    digits = set("0123456789")
    assert allowed(metres, "") == digits
    assert allowed(metres, "3") == digits | {"."}
    assert allowed(metres, "385") == {"."}  # at most three integer digits
    assert allowed(metres, "3.8") == digits
    assert allowed(metres, "3.85") == {" "}
    assert allowed(metres, "3.85 ") == {"m"}
    assert allowed(metres, "3.85 m") == {"<end>"}
    degrees = NumberFormat(tok, layout, "deg", 0)
    assert allowed(degrees, "12") == digits | {" "} and allowed(degrees, "122 de") == {"g"}
    assert not degrees.is_prefix("12.") and degrees.is_complete("122 deg") and not metres.is_complete("3.8 m")
    with pytest.raises(ValueError, match="unit of letters"):
        NumberFormat(tok, layout, "", 2)
    # The untrained model's constrained answers are well formed, parse back, and are deterministic.
    for unit, decimals in (("m", 2), ("deg", 0)):
        answer = gst.answer_number("How far is the red box?", [_image(20, 20)], unit, decimals)
        assert NumberFormat(tok, layout, unit, decimals).is_complete(answer)
        assert parse_answer(answer, "number", unit=unit).unit == unit
        assert gst.answer_number("How far is the red box?", [_image(20, 20)], unit, decimals) == answer


def test_answer_number_mbr_is_the_expected_mra_choice_over_the_grid(gst: GST) -> None:
    from gst.eval.qa_metrics import mbr_number, number_grid

    question, images = "How far is the red box?", [_image(20, 20)]
    for unit, decimals in (("m", 2), ("deg", 0)):
        values = number_grid(unit)
        texts = [f"{v:.{decimals}f} {unit}" for v in values]
        answer = gst.answer_number(question, images, unit, decimals, decoding="mbr")
        expected = mbr_number(values, gst.score_replies(question, images, texts))
        assert answer == f"{expected:.{decimals}f} {unit}" and answer in texts
        assert gst.answer_number(question, images, unit, decimals, decoding="mbr") == answer
    with pytest.raises(ValueError, match="2 decimals, not 1"):
        gst.answer_number(question, images, "m", 1, decoding="mbr")
    with pytest.raises(ValueError, match="'greedy' or 'mbr'"):
        gst.answer_number(question, images, "m", 2, decoding="beam")


def test_answer_coordinates_writes_the_belief_mean_one_coordinate_at_a_time(gst: GST) -> None:
    from gst.data.qa_types import parse_answer
    from gst.eval.qa_metrics import coordinate_grid, posterior_mean

    question, images = "Where is the red box?", [_image(20, 20)]
    end = gst.layout.special_id("<|end|>")
    # complete=False leaves out exactly the <|end|> step.
    full, start = (gst.score_replies(question, images, ["(0.50, "], complete=c)[0] for c in (True, False))
    session = gst.start_chat(allow_segments=False)
    _, prompt, grid = session._prompt(question, images)
    reply = torch.tensor(gst.text_tokenizer.encode("(0.50, "), dtype=torch.long)
    with torch.no_grad():
        logits = gst.model(
            torch.cat([prompt, reply])[None], torch.cat([grid, torch.full((len(reply), 2), NO_GRID)])[None]
        ).logits
    last = logits[0, -1, : gst.layout.image_offset].masked_fill(
        ~text_reply_rows(gst.layout, "cpu"), float("-inf")
    )
    assert full - start == pytest.approx(float(last.log_softmax(-1)[end]), abs=1e-4)
    with pytest.raises(ValueError, match="empty candidate"):
        gst.score_replies(question, images, [""], complete=False)

    point = gst.answer_coordinates(question, images, "point")
    x = posterior_mean(
        coordinate_grid(),
        gst.score_replies(question, images, [f"({v:.2f}, " for v in coordinate_grid()], complete=False),
    )
    assert point.startswith(f"({round(x, 2) + 0.0:.2f}, ") and point.endswith(") m")
    assert parse_answer(point, "point").type == "point"
    assert gst.answer_coordinates(question, images, "point") == point
    box = parse_answer(gst.answer_coordinates(question, images, "box"), "box")
    assert box.type == "box" and min(box.value["size"]) >= 0.05
    with pytest.raises(ValueError, match="'point' or 'box'"):
        gst.answer_coordinates(question, images, "sphere")


@pytest.mark.parametrize("segment", ["<|cam_start|>", "<|img_start|>"])
def test_chat_reply_segments_are_decoded(gst: GST, segment: str) -> None:
    token = gst.layout.special_id(segment)
    steered = copy.copy(gst)
    steered.model = _Steer(gst.model, token)
    reply = steered.start_chat(max_new_tokens=24).ask("Where is the camera?", [_image(16, 16)])
    ids = reply.ids.tolist()
    assert ids[0] == token
    if segment == "<|cam_start|>":
        codes = ids[1:17]
        assert all(gst.layout.camera_offset <= i < gst.layout.num_used for i in codes)
        assert ids[17] == gst.layout.special_id("<|cam_end|>")
        assert len(reply.cameras) == 1 and isinstance(reply.cameras[0], PoseEstimate)
        _assert_rigid(reply.cameras[0].w2c)
        assert reply.render().startswith("[camera: ")
    else:
        codes = ids[1:17]
        assert all(gst.layout.image_offset <= i < gst.layout.camera_offset for i in codes)
        assert ids[17] == gst.layout.special_id("<|img_end|>")
        assert len(reply.images) == 1 and reply.images[0].shape == (3, *MODEL_HW)
        assert reply.render(lambda img: "saved.png").startswith("[image: saved.png]")
    # Segments switched off: the steered token is masked out and never starts a reply.
    steered.model = _Steer(gst.model, token)
    plain = steered.start_chat(max_new_tokens=4, allow_segments=False).ask("Where?")
    assert token not in plain.ids.tolist() and not plain.cameras and not plain.images


def test_decode_reply_grid_positions(gst: GST) -> None:
    token = gst.layout.special_id("<|cam_start|>")
    prompt = torch.tensor([gst.layout.special_id("<|assistant|>")])
    grid = torch.full((1, 2), NO_GRID)
    ids, cells = decode_reply(
        _Steer(gst.model, token), gst.sequence, prompt, grid, 30, GREEDY, gst.generator(0), True
    )
    assert cells.shape == (len(ids), 2)
    assert (cells[0] == NO_GRID).all() and (cells[17] == NO_GRID).all()  # structure tokens
    assert torch.allclose(cells[1], torch.tensor([0.125, 0.125]))  # first camera cell of the 4x4 grid


# ---- gst.eval predictors ----


def test_eval_predictors(gst: GST) -> None:
    from gst.data.pairs import Pair

    pair = Pair(
        scene="s", scene_index=0, obs=0, tgt=1, baseline_angle_deg=30.0, angle_source="", num_covisible=None
    )
    K = default_intrinsics((20, 30))
    pred = GSTPosePredictor(gst).predict_pose(_image(20, 30), _image(20, 30, 1), K, pair=pair)
    _assert_rigid(pred.w2c_rel)
    assert pred.K_tgt.shape == (3, 3) and not pred.failed
    view = GSTViewPredictor(gst, sampling=SamplingConfig(temperature=0.0)).predict_view(
        _image(20, 30), K, K, orbit_camera(20, 0), target_hw=(20, 30), pair=pair
    )
    assert view.shape == (3, 20, 30) and float(view.min()) >= 0 and float(view.max()) <= 1
    # num_samples > 1: the pixel mean of the views synthesize_view draws with the same seed
    mean = GSTViewPredictor(gst, num_samples=3, seed=5).predict_view(
        _image(20, 30), K, K, orbit_camera(20, 0), target_hw=(20, 30), pair=pair
    )
    views = gst.synthesize_view(
        _image(20, 30),
        orbit_camera(20, 0),
        K=K,
        K_hw=(20, 30),
        K_obs=K,
        num_samples=3,
        seed=pair_seed(5, pair),
    ).images  # (3, 3, h, w) at the model's size
    torch.testing.assert_close(mean, resize_image(views.mean(0), (20, 30)))
    with pytest.raises(ValueError, match="num_samples"):
        GSTViewPredictor(gst, num_samples=0)
