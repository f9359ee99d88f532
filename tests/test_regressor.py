"""The siamese CNN pose regressor: its camera vector, training through the one loop, the pixel store,
the export round trip, and `gst train regressor` / `gst eval pose --method regressor` end to end.

A micro net on a tiny cache of hand-written scenes (see tests/test_token_cache.py, whose helpers this
module imports): 20x24 noise images on a camera ring, 16x16 in the cache, focal lengths that vary by view.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_token_cache import make_scenes, make_tokenizers  # tests/ is on sys.path (pytest rootdir import)

from gst.cli import main as cli_main
from gst.data.token_cache import CacheConfig, build_token_cache, read_manifest
from gst.data.views import crop_resize_intrinsics
from gst.eval.regressor_predictor import RegressorPose, uncrop_intrinsics
from gst.geometry import normalize_relative_pose
from gst.tokenizers.camera import CameraTokenizer
from gst.tokenizers.config import CameraTokenizerConfig
from gst.training import checkpoint as ckpt
from gst.training.loop import train
from gst.training.regressor import (
    PoseRegressor,
    RegressorConfig,
    camera_vector,
    load_regressor,
    num_parameters,
    params_from_vector,
    predict_cameras,
)
from gst.training.regressor_task import RegressorTask, get_regressor_preset, with_cache_geometry

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("regressor")
    scenes, toks = make_scenes(tmp / "scenes"), make_tokenizers(tmp / "tok")
    build_token_cache(scenes, toks, tmp / "cache", CacheConfig(pairs_per_scene=4, seed=0, val_fraction=0.5))
    return {"cache": tmp / "cache", "scenes": scenes, "tmp": tmp}


def _run(data: dict, **train_kw):
    run = with_cache_geometry(get_regressor_preset("micro"), read_manifest(data["cache"]))
    train_cfg = dataclasses.replace(run.train, tensorboard=False, progress=False, **train_kw)
    return dataclasses.replace(run, train=train_cfg)


def test_camera_vector_is_the_camera_tokenizers() -> None:
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(5, 3, generator=g, dtype=torch.float64)
    R = torch.linalg.matrix_exp(
        torch.stack([torch.zeros(5), -axis[:, 2], axis[:, 1], axis[:, 2], torch.zeros(5), -axis[:, 0],
                     -axis[:, 1], axis[:, 0], torch.zeros(5)], -1).reshape(5, 3, 3).double()
    )  # fmt: skip
    w2c = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    w2c[:, :3, :3], w2c[:, :3, 3] = R, torch.randn(5, 3, generator=g, dtype=torch.float64)
    K = torch.tensor([[30.0, 0, 15.2], [0, 28.0, 16.9], [0, 0, 1]], dtype=torch.float64).repeat(5, 1, 1)
    tokenizer = CameraTokenizer(CameraTokenizerConfig(image_hw=(32, 32), grid_hw=(4, 4), ray_hw=(4, 4)))
    w2c_norm = normalize_relative_pose(w2c, 1.0)
    ours = camera_vector(K, w2c_norm, (32, 32))
    assert torch.equal(ours, tokenizer.camera_vector(K, w2c_norm))
    params = params_from_vector(ours.double(), (32, 32))
    torch.testing.assert_close(params.w2c(), w2c, atol=1e-5, rtol=0)
    torch.testing.assert_close(params.K(), K, atol=1e-4, rtol=0)


def test_default_preset_is_the_issues_size_and_intrinsics_map_back() -> None:
    assert num_parameters(PoseRegressor(RegressorConfig())) == 1_246_717  # ~1.25M, as specified
    K = torch.tensor([[21.0, 0.0, 11.5], [0.0, 22.0, 9.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    for mode in ("center_crop", "stretch"):
        small = crop_resize_intrinsics(K, (20, 24), (16, 16), mode)
        torch.testing.assert_close(uncrop_intrinsics(small, (20, 24), (16, 16), mode), K)
    with pytest.raises(ValueError, match="divisible by 8"):
        RegressorConfig(image_hw=(20, 20))


def test_micro_regressor_learns_exports_and_predicts_the_same(data: dict, tmp_path: Path) -> None:
    run = _run(data, max_steps=30)
    task = RegressorTask(run, data["cache"], pixels=tmp_path / "pixels")
    assert len(task.train_images) == 16 and task.train_images.views.dtype == torch.uint8
    fixed = task.batch(0, torch.Generator(), 16)  # all 16 train pairs (one epoch)
    torch.manual_seed(0)
    before = float(task.loss(task.build_model(), fixed, 0)[0].detach())
    result = train(task, run.train, tmp_path / "run", command="gst train regressor --preset micro")
    model, info = load_regressor(tmp_path / "run")  # the run folder resolves to its latest export
    after = float(task.loss(model, fixed, 0)[0].detach())
    assert result.step == 30 and after < 0.5 * before
    assert np.mean(result.losses[-5:]) < 0.6 * np.mean(result.losses[:5])
    assert {"rotation_err_median_deg", "rra15", "focal_err_median", "loss"} <= set(result.eval_metrics)
    assert info["training"]["command"] == "gst train regressor --preset micro"
    assert info["training"]["step"] == 30 and info["training"]["cpu_minutes"] > 0
    assert info["metadata"]["data"]["num_train_pairs"] == 16 and info["num_parameters"] == 2925
    # The export predicts exactly what the trained weights in the checkpoint predict.
    trained = task.build_model()
    trained.load_state_dict(ckpt.read_checkpoint(result.checkpoint)[0])
    obs, tgt = task.val_images.pairs(np.arange(4))
    K_a, w2c_a = predict_cameras(trained.eval(), obs, tgt)
    K_b, w2c_b = predict_cameras(model, obs, tgt)
    assert torch.equal(K_a, K_b) and torch.equal(w2c_a, w2c_b)
    # A second task reads the decoded views back from the pixel store.
    again = RegressorTask(run, data["cache"], pixels=tmp_path / "pixels")
    assert torch.equal(again.train_images.views, task.train_images.views)
    assert sorted(p.name for p in (tmp_path / "pixels").iterdir()) == [
        "train.json", "train.npz", "val.json", "val.npz",
    ]  # fmt: skip


def test_training_is_deterministic(data: dict, tmp_path: Path) -> None:
    run = _run(data, max_steps=4)
    first = train(RegressorTask(run, data["cache"]), run.train, tmp_path / "a")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    second = train(RegressorTask(run, data["cache"]), run.train, tmp_path / "b")
    assert first.losses == second.losses and all(math.isfinite(v) for v in first.losses)


def test_cli_train_with_a_budget_then_eval_pose(data: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "regressor", "--preset", "micro", "--data", str(data["cache"]), "--out", str(out)]
    argv += ["--minutes", "1e-6", "--set", "train.tensorboard=false", "--set", "train.mixed_precision=bf16"]
    assert cli_main([*argv, "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["step"], summary["stopped_by"]) == (1, "max_minutes")  # a 60 microsecond budget
    record = json.loads((Path(summary["regressor"]) / "training.json").read_text())
    assert record["mixed_precision"] == "bf16" and record["max_minutes"] == 1e-6
    command = record["command"]
    assert command.startswith("gst train regressor --data ") and "--minutes 1e-06" in command

    evaluate = ["eval", "pose", "--data", str(data["scenes"]), "--num-pairs", "6", "--seed", "0"]
    assert cli_main([*evaluate, "--method", "regressor", "--regressor", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    method = results["methods"]["regressor"]
    assert method["scale_known"] is True and method["training_command"] == record["command"]
    assert method["training_cpu_minutes"] == record["cpu_minutes"] and method["num_parameters"] == 2925
    summary = method["summary"]
    assert summary["num_pairs"] == 6 and summary["num_failed"] == 0
    keys = {"median_rot_err_deg", "rra15", "rra30", "median_focal_err", "median_centre_err_world"}
    assert keys <= set(summary)
    # K is predicted at 16x16 and mapped back to the evaluated 20x24 images: cx about 11.5, cy about 9.5.
    K = np.asarray(method["rows"][0]["K_tgt_pred"])
    assert K.shape == (3, 3) and K[2, 2] == 1.0 and abs(K[0, 2] - 11.5) < 3.0 and abs(K[1, 2] - 9.5) < 3.0
    assert cli_main([*evaluate, "--regressor", str(out), "--json"]) == 0  # --regressor alone: only it
    assert list(json.loads(capsys.readouterr().out)["methods"]) == ["regressor"]
    with pytest.raises(SystemExit):  # an unknown method is refused by argparse
        cli_main([*evaluate, "--method", "regressr"])
    assert cli_main([*evaluate, "--method", "regressor"]) == 1  # no --regressor: a clear error
    assert "--method regressor needs --regressor DIR" in capsys.readouterr().err


def test_predictor_matches_direct_prediction(data: dict, tmp_path: Path) -> None:
    run = _run(data, max_steps=2)
    task = RegressorTask(run, data["cache"])
    result = train(task, run.train, tmp_path / "run")
    predictor = RegressorPose(result.checkpoint / "export")
    obs, tgt = task.val_images.pairs(np.arange(1))
    pred = predictor.predict_pose(obs[0], tgt[0], torch.eye(3))  # already 16x16: no resampling
    K, w2c = predict_cameras(predictor.model, obs, tgt)
    assert torch.equal(pred.w2c_rel, w2c[0]) and torch.allclose(pred.K_tgt, K[0])
