"""scripts/focal_probe.py: the views it reads, their focal targets, and a run's report."""

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

from gst.data.loaders import load_scene

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "focal_probe.py"


@pytest.fixture(scope="module")
def scenes(two_tiny_scenes) -> Path:
    return two_tiny_scenes


def _probe():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import focal_probe
    finally:
        sys.path.pop(0)
    return focal_probe


def test_views_and_focal_targets(scenes) -> None:
    probe = _probe()
    images, targets, scene_of = probe.load_views(str(scenes), None, 64)
    assert images.shape == (8, 3, 64, 64) and images.dtype == torch.uint8 and scene_of == [0] * 4 + [1] * 4
    first = load_scene(scenes / "scene_00000")
    assert torch.allclose(targets[:4], (first.K[:, 0, 0].float() / 64).log(), atol=1e-6)
    half, _, _ = probe.load_views(str(scenes), 1, 32)  # resized: fx / W is unchanged
    assert half.shape == (4, 3, 32, 32)


def test_run_reports_errors(scenes, tmp_path) -> None:
    out = tmp_path / "probe.json"
    cmd = [sys.executable, str(SCRIPT), "--scenes", str(scenes), "--heldout", str(scenes), "--size", "64",
           "--minutes", "0.01", "--batch", "4", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert subprocess.run(cmd, env=env, capture_output=True, check=False).returncode == 0
    result = json.loads(out.read_text())
    assert result["train_views"] == result["heldout_views"] == 8 and result["updates"] > 0
    # the constant is the training median of log(fx / W): its errors on the same views
    folders = sorted(p for p in scenes.iterdir() if (p / "transforms.json").exists())
    f = np.array([load_scene(p).K[:, 0, 0].numpy() / 64 for p in folders]).ravel()
    want = np.median(np.abs(np.exp(np.median(np.log(f))) / f - 1))
    assert result["constant_median_focal_error"] == pytest.approx(want, rel=1e-4)
    lo, hi = result["heldout_median_interval_by_scene"]
    assert 0 <= lo <= hi and 0 <= result["share_within_10pct"] <= 1
    # zoomed training views and every held-out view's reading
    preds = tmp_path / "probe.jsonl"
    zoomed = [*cmd[:-2], "--zoom", "1.5", "--out", str(tmp_path / "zoom.json"), "--predictions", str(preds)]
    assert subprocess.run(zoomed, env=env, capture_output=True, check=False).returncode == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    want = [(f"scene_0000{s}", v) for s in (0, 1) for v in range(4)]
    assert [(r["scene"], r["view"]) for r in rows] == want
    np.testing.assert_allclose([r["true"] for r in rows], np.log(f), rtol=1e-5)
    assert json.loads((tmp_path / "zoom.json").read_text())["zoom"] == 1.5


def test_pair_mode_runs_on_the_evaluation_pairs(scenes, tmp_path) -> None:
    out = tmp_path / "pair.json"
    cmd = [sys.executable, str(SCRIPT), "--pair", "--scenes", str(scenes), "--heldout", str(scenes),
           "--minutes", "0.01", "--batch", "4", "--eval-pairs", "6", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "pair, observed focal given" and result["heldout_pairs"] == 6
    assert result["train_pairs"] > 0 and result["updates"] > 0


def _fields():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import focal_fields_probe
    finally:
        sys.path.pop(0)
    return focal_fields_probe


def test_perspective_fields_geometry_and_fit() -> None:
    fp = _fields()
    f, size = 40.0, 64
    c = (size - 1) / 2
    K = torch.tensor([[[f, 0, c], [0, f, c], [0, 0, 1]]], dtype=torch.float64)
    # a level camera: world up is -y in the camera frame; latitude = -atan(y / sqrt(x^2 + f^2)) at pixel
    # offsets (x, y) from the principal point, and up points straight up the image everywhere
    level = fp.fields(fp.cell_rays(K, size), torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64), K)[0]
    v = torch.arange(16, dtype=torch.float64) * 4 + 1.5 - c  # cell centres relative to the centre row
    torch.testing.assert_close(level[0, :, 0], torch.atan(-v / torch.sqrt(v[0] ** 2 + f**2)))
    torch.testing.assert_close(level[1], torch.zeros(16, 16, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(level[2], -torch.ones(16, 16, dtype=torch.float64))
    # a camera looking 30 degrees down: its fields fit back to its focal length
    t = np.radians(30.0)
    up = torch.tensor([[0.0, -np.cos(t), -np.sin(t)]])
    Kf = K.float()
    field = fp.fields(fp.cell_rays(Kf, size), up, Kf)
    assert float(field[0, 0, 8, 8]) == pytest.approx(-t, abs=0.05)  # near the centre: 30 degrees down
    log_f = fp.fit_focal(field, size, steps=400)
    assert abs(float(log_f.exp()[0]) * size / f - 1) < 0.01


def test_focal_readings_of_a_constant_pose_head(scenes, tmp_path) -> None:
    import copy

    from gst.api import GST
    from gst.eval.data import build_evalset
    from tests.test_api import make_checkpoint

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import focal_readings
    finally:
        sys.path.pop(0)
    gst = GST.from_pretrained(make_checkpoint(tmp_path / "api"))
    headed = copy.copy(gst)
    headed.model = copy.deepcopy(gst.model)
    headed.model.pose_head = torch.nn.Linear(headed.model.hidden_size, 13)
    torch.nn.init.zeros_(headed.model.pose_head.weight)
    K = torch.tensor([[[20.0, 0, 7.5], [0, 20.0, 7.5], [0, 0, 1]]], dtype=torch.float64)
    with torch.no_grad():  # a head that reads every pair as one camera: focal length 20 px at 16 px
        headed.model.pose_head.bias.copy_(
            gst.camera_tokenizer.camera_vector(K, torch.eye(4)[None].double())[0]
        )
    evalset = build_evalset(scenes, num_pairs=6, seed=0, resolution=16)
    # a probe file that reads every view exactly: every weighted mean is then (1 - w) times the head's error
    probe = tmp_path / "probe.jsonl"
    exact = [(s.name, v, math.log(float(s.K[v, 0, 0]) / 64)) for s in evalset.scenes for v in range(4)]
    rows = [{"scene": name, "view": v, "true": f, "pred": f} for name, v, f in exact]
    probe.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = focal_readings.analyse(headed, evalset, True, [str(probe)])
    true = np.array([np.log(float(evalset.K(p.scene_index, p.tgt)[0, 0]) / 16) for p in evalset.pairs])
    head = np.log(20.0 / 16)
    assert result["pairs"] == 6
    assert result["forward_median_error"] == pytest.approx(np.median(np.abs(np.expm1(head - true))), rel=1e-4)
    assert result["flipped"]["median_error"] == pytest.approx(result["forward_median_error"], rel=1e-4)
    got = result[f"probe {probe}"]
    assert got["median_error"] == pytest.approx(0.0, abs=1e-6)
    want = np.median(np.abs(np.expm1(0.5 * (head - true))))
    assert got["weighted_mean_median_error"]["0.5"] == pytest.approx(want, rel=1e-4)
