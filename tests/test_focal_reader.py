"""gst.model.focal_reader and gst.training.focal_reader: the network, its export, the zoom augmentation,
the weight chosen beside the pose head, `gst train focal-reader`, and the API's combined focal length."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gst.model.focal_reader import (
    FOCAL_READER_FILE,
    FocalReader,
    FocalReaderConfig,
    combine_log_focal,
    load_focal_reader,
    save_focal_reader,
    with_focal_reading,
)
from gst.training.focal_reader import (
    choose_weight,
    colour_jitter,
    load_views,
    relative_errors,
    shrink,
    train_focal_reader,
    zoom_batch,
)

torch.set_num_threads(1)


def test_config_sizes_and_shapes() -> None:
    assert FocalReader()(torch.zeros(2, 3, 64, 64)).shape == (2,)
    wide = FocalReaderConfig(image_size=128, channels=(16, 32, 64, 96, 128))
    assert FocalReader(wide)(torch.zeros(1, 3, 128, 128)).shape == (1,)
    assert FocalReader(FocalReaderConfig(image_size=16, channels=(8, 8)))(
        torch.zeros(3, 3, 16, 16)
    ).shape == (3,)
    with pytest.raises(ValueError, match="4x4 map only for 64 px"):
        FocalReaderConfig(image_size=128)
    with pytest.raises(ValueError, match="weight must lie in"):
        FocalReaderConfig(weight=1.5)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, 64, 64\)"):
        FocalReader()(torch.zeros(1, 3, 32, 32))


def test_combination_and_camera_vector() -> None:
    head = torch.tensor([[0.1, 0.1], [0.3, 0.2]])
    reader = torch.tensor([0.5, -0.2])
    torch.testing.assert_close(combine_log_focal(head, reader, 0.0), head)
    torch.testing.assert_close(combine_log_focal(head, reader, 1.0), torch.tensor([[0.5, 0.5], [-0.2, -0.2]]))
    torch.testing.assert_close(
        combine_log_focal(head, reader, 0.25), torch.tensor([[0.2, 0.2], [0.175, 0.1]])
    )
    torch.manual_seed(0)
    net = FocalReader(FocalReaderConfig(image_size=16, channels=(8, 8), weight=0.4)).eval()
    images = torch.rand(2, 3, 16, 16)
    vector = torch.randn(2, 13)
    out = with_focal_reading(vector, net, images)
    want = 0.6 * vector[:, 9:11] + 0.4 * net(images).detach()[:, None]
    torch.testing.assert_close(out[:, 9:11], want)
    torch.testing.assert_close(out[:, :9], vector[:, :9])
    torch.testing.assert_close(out[:, 11:], vector[:, 11:])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = FocalReader(FocalReaderConfig(weight=0.35))
    images = torch.rand(3, 3, 64, 64)
    folder = save_focal_reader(net, tmp_path / "focal_reader", metadata={"updates": 7})
    back, info = load_focal_reader(folder)
    assert back.config == net.config and info["metadata"] == {"updates": 7}
    torch.testing.assert_close(back.read(images), net.read(images))
    with pytest.raises(FileNotFoundError, match="gst train focal-reader"):
        load_focal_reader(tmp_path)
    doc = json.loads((folder / FOCAL_READER_FILE).read_text())
    (folder / FOCAL_READER_FILE).write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_focal_reader(folder)


def test_coordinate_channels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = FocalReader(FocalReaderConfig(image_size=16, channels=(8, 8), coords=True))
    assert net.net[0].in_channels == 5
    images = torch.rand(2, 3, 16, 16)
    back, _ = load_focal_reader(save_focal_reader(net, tmp_path / "coords"))
    assert back.config.coords is True
    torch.testing.assert_close(back.read(images), net.read(images))
    # the first conv sees the colours, then y and x in [-1, 1]
    seen = {}
    net.net[0].register_forward_hook(lambda m, i, o: seen.update(input=i[0]))  # returns None: output kept
    net.read(images)
    axis = torch.linspace(-1.0, 1.0, 16)
    torch.testing.assert_close(seen["input"][:, :3], images)
    torch.testing.assert_close(seen["input"][1, 3], axis[:, None].expand(16, 16))
    torch.testing.assert_close(seen["input"][1, 4], axis[None, :].expand(16, 16))


def test_zoom_crops_scale_the_focal_target() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32) * 255
    y = torch.zeros(64)
    out, y2 = zoom_batch(x, y, 16, 1.5, gen)
    assert out.shape == (64, 3, 16, 16)
    kept = y2 == 0  # about half the views are not cropped: the whole view shrunk
    assert 16 < int(kept.sum()) < 48
    torch.testing.assert_close(out[kept], torch.nn.functional.interpolate(x[kept], size=(16, 16),
                               mode="bilinear", antialias=True))  # fmt: skip
    sides = torch.tensor([round(32 / math.exp(float(v))) for v in y2[~kept]])
    assert bool(((sides >= 21) & (sides <= 32)).all())  # 32 / 1.5 = 21.3
    torch.testing.assert_close(y2[~kept], torch.log(32 / sides.double()).float())
    assert shrink(x.to(torch.uint8)[:2], 16).shape == (2, 3, 16, 16)


def test_colour_jitter_shuffles_and_scales_channels() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.stack([torch.full((4, 4), 0.2), torch.full((4, 4), 0.4), torch.full((4, 4), 0.6)])
    out = colour_jitter(x.expand(256, 3, 4, 4).clone(), gen)  # (256, 3, 4, 4)
    assert out.shape == (256, 3, 4, 4) and bool((out >= 0).all() and (out <= 1).all())
    per_view = out[:, :, 0, 0]  # each channel is one source channel times a gain in [0.7, 1.3]
    assert bool((out == per_view[:, :, None, None]).all())
    source = torch.tensor([0.2, 0.4, 0.6])
    ratio = per_view[:, :, None] / source  # (256, 3 out, 3 in): a gain for the source each came from
    fits = (ratio >= 0.7 - 1e-6) & (ratio <= 1.3 + 1e-6)
    assert bool(fits.any(-1).all())
    brightest = per_view.argmax(1)  # the 0.6 channel usually stays brightest; it lands on every channel
    assert set(brightest.tolist()) == {0, 1, 2}
    again = colour_jitter(x.expand(256, 3, 4, 4).clone(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again)


def test_choose_weight_and_errors() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(-0.5, 0.5, 4000)
    head = true + rng.normal(0, 0.1, 4000)
    reader = true + rng.normal(0, 0.1, 4000)  # as good and independent: the mean halves the variance
    weight, medians = choose_weight(head, reader, true)
    assert 0.4 <= weight <= 0.6 and len(medians) == 21
    assert medians[f"{weight:.2f}"] < 0.8 * medians["0.00"]
    np.testing.assert_allclose(relative_errors(np.log([1.1, 0.9]), [0.0, 0.0]), [0.1, 0.1])


@pytest.fixture(scope="module")
def scenes(two_tiny_scenes) -> Path:
    return two_tiny_scenes


def test_training_is_seeded(scenes: Path) -> None:
    images, targets, scene_of = load_views(scenes, None, 32)
    assert images.shape == (8, 3, 32, 32) and scene_of == [0] * 4 + [1] * 4
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = FocalReader(FocalReaderConfig(image_size=16, channels=(8, 8)))
        steps = train_focal_reader(net, images, targets, minutes=10, zoom=1.5, batch=4, max_steps=3)
        outs.append(net.read(shrink(images, 16)))
        assert steps == 3
    torch.testing.assert_close(outs[0], outs[1])
    with pytest.raises(ValueError, match="views must be 32 px"):
        train_focal_reader(net, shrink(images, 16), targets, minutes=1, zoom=1.5, max_steps=1)


def test_train_command_and_the_api_reads_the_combined_focal(scenes: Path, tmp_path: Path) -> None:
    from gst.api import GST
    from gst.api_checkpoint import export_checkpoint
    from tests.test_api import _image, make_checkpoint

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gst.cli", "train", "focal-reader", "--scenes", str(scenes),
           "--scenes", str(scenes), "--num-scenes", "1", "--colour",
           "--out", str(out), "--size", "64", "--max-steps", "2", "--batch", "4", "--weight", "0.3",
           "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["updates"] == 2 and result["weight"] == 0.3 and result["colour"] is True
    assert result["train_views"] == 8  # the first scene (4 views) of each of the two --scenes
    net, info = load_focal_reader(out / "focal_reader")
    assert net.config.weight == 0.3 and info["metadata"]["updates"] == 2
    # the API: a 16 px model with a pose head that reads out one camera; its focal length joins the reader's
    ckpt = make_checkpoint(tmp_path / "api")
    torch.manual_seed(1)
    small = FocalReader(FocalReaderConfig(image_size=16, channels=(8, 8), weight=0.3))
    shipped = export_checkpoint(
        ckpt.parent / "export",
        tmp_path / "with_focal",
        focal_reader=save_focal_reader(small, tmp_path / "fr"),
    )
    gst = GST.from_pretrained(shipped)
    assert gst.focal_reader is not None and gst.focal_reader.config.weight == 0.3
    headed = copy.copy(gst)
    headed.model = copy.deepcopy(gst.model)
    headed.model.pose_head = torch.nn.Linear(headed.model.hidden_size, 13)
    torch.nn.init.zeros_(headed.model.pose_head.weight)
    K = torch.tensor([[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]], dtype=torch.float64)
    vector = gst.camera_tokenizer.camera_vector(K[None], torch.eye(4, dtype=torch.float64)[None])[0]
    with torch.no_grad():
        headed.model.pose_head.bias.copy_(vector)
    target = _image(16, 16, seed=1)
    reading = float(small.read(gst.prepare(target).image[None])[0])
    pose = headed.estimate_pose(_image(16, 16), target, readout="head")
    want = 16 * math.exp(0.7 * math.log(20.0 / 16) + 0.3 * reading)
    assert float(pose.K_tgt[0, 0]) == pytest.approx(want, rel=1e-4)
    headed.focal_reader = None  # without it, the head's own focal length
    assert float(headed.estimate_pose(_image(16, 16), target, readout="head").K_tgt[0, 0]) == pytest.approx(
        20.0
    )
