"""`gst eval pose` / `gst eval nvs` end to end: the procedural world, prediction files, real data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gst.cli import main

LEGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf_synthetic_lego"


def _render(argv: list[str]) -> int:
    """Run `gst data synth` in a subprocess: importing triton (torch._dynamo, via torchvision or
    transformers) after an EGL context exists segfaults on llvmpipe, which would take the test session
    down with it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gst.cli", *argv, "--quiet"], env=env, check=False
    ).returncode


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Three tiny procedural scenes (the eval split) and two more with another seed (the prior's)."""
    root = tmp_path_factory.mktemp("world")
    for name, seed, n in (("val", 101, 3), ("train", 7, 2)):
        # a subprocess keeps the EGL context out of this process (see _render's docstring)
        code = _render(
            [
                "data",
                "synth",
                "--out",
                str(root / name),
                "--num-scenes",
                str(n),
                "--views-per-scene",
                "8",
                "--resolution",
                "64",
                "--seed",
                str(seed),
            ]
        )
        assert code == 0
    return root


@pytest.fixture
def no_lpips_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("GST_LPIPS_WEIGHTS", raising=False)


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, "--json prints exactly one JSON object"
    return json.loads(out)


def test_pose_cli_baselines_report_and_rescoring(world, tmp_path, capsys):
    args = [
        "eval",
        "pose",
        "--data",
        str(world / "val"),
        "--num-pairs",
        "8",
        "--seed",
        "3",
        "--min-baseline",
        "5",
        "--max-baseline",
        "120",
        "--min-covisible",
        "0",
    ]
    out = tmp_path / "report"
    code = main(
        [
            *args,
            "--method",
            "sift",
            "--method",
            "prior",
            "--method",
            "mean",
            "--train-data",
            str(world / "train"),
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    res = _json_out(capsys)
    mean = res["methods"].pop("mean")  # one constant pose for every pair
    assert (
        len({json.dumps(r["w2c_rel_pred"]) for r in mean["rows"]}) == 1 and mean["summary"]["num_failed"] == 0
    )
    assert res["kind"] == "pose" and res["pairs"]["num_pairs"] == 8 and res["pairs"]["seed"] == 3
    assert sum(res["pairs"]["baseline_angle_histogram"]["counts"]) == 8
    assert set(res["methods"]) == {"sift_essential", "prior"}
    for m in res["methods"].values():
        s = m["summary"]
        assert s["num_pairs"] == 8 and len(m["rows"]) == 8
        assert 0.0 <= s["auc30"] <= 1.0 and s["rra30"] >= s["rra5"]
        for r in m["rows"]:
            assert 0.0 <= r["rot_err_deg"] <= 180.0
            if r["failed"]:  # scored, not skipped
                assert r["rot_err_deg"] == 180.0 and r["centre_err"] == "inf"
    assert res["methods"]["sift_essential"]["summary"]["focal_err"].startswith("given")
    for f in (
        "report.md",
        "results.json",
        "pose_error_cdf.png",
        "frusta.png",
        "pose_error_vs_baseline.png",
        "baseline_angles.png",
        "predictions_prior.json",
        "predictions_sift_essential.json",
    ):
        assert (out / f).is_file(), f
    assert "| sift_essential |" in (out / "report.md").read_text()
    # the saved predictions re-score to the same numbers through --predictions
    assert main([*args, "--predictions", str(out / "predictions_prior.json"), "--json"]) == 0
    again = _json_out(capsys)["methods"]["prior"]["summary"]
    prior = res["methods"]["prior"]["summary"]
    for key in ("rra5", "rra15", "rra30", "rta30", "auc30", "median_rot_err_deg", "median_centre_err"):
        assert again[key] == pytest.approx(prior[key]), key


def test_nvs_cli_reports_lpips_unavailable(world, tmp_path, capsys, no_lpips_weights):
    code = main(
        [
            "eval",
            "nvs",
            "--data",
            str(world / "val"),
            "--num-pairs",
            "4",
            "--min-covisible",
            "0",
            "--max-baseline",
            "120",
            "--out",
            str(tmp_path / "nvs"),
            "--json",
        ]
    )
    assert code == 0
    res = _json_out(capsys)
    s = res["methods"]["copy_observed"]["summary"]
    assert 0 < s["psnr"] < 60 and -1 <= s["ssim"] <= 1
    assert s["lpips"].startswith("LPIPS unavailable") and not res["lpips"]["available"]
    assert all(r["lpips"] is None for r in res["methods"]["copy_observed"]["rows"])
    report = (tmp_path / "nvs" / "report.md").read_text()
    assert "LPIPS unavailable" in report and "--lpips-weights" in report
    assert (tmp_path / "nvs" / "views_grid.png").is_file()


def test_a_folder_that_is_not_a_checkpoint_is_a_clear_error(world, capsys):
    code = main(
        ["eval", "pose", "--data", str(world / "val"), "--checkpoint", str(world), "--num-pairs", "2"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert str(world) in err and "not a GST checkpoint" in err


@pytest.mark.skipif(not LEGO.is_dir(), reason=f"real data not present at {LEGO} (../shared is optional)")
def test_real_data_lego_pose_and_views(capsys, no_lpips_weights):
    common = ["--data", str(LEGO), "--split", "val", "--num-pairs", "4", "--resolution", "100", "--seed", "1"]
    assert (
        main(
            [
                "eval",
                "pose",
                *common,
                "--method",
                "sift",
                "--method",
                "prior",
                "--train-data",
                str(LEGO),
                "--train-split",
                "train",
                "--prior-samples",
                "200",
                "--json",
            ]
        )
        == 0
    )
    res = _json_out(capsys)
    assert res["data"]["num_scenes"] == 1 and res["pairs"]["num_pairs"] == 4
    assert all(
        p["angle_source"] == "scene_centre" and p["num_covisible"] is None for p in res["pairs"]["rows"]
    )
    prior = res["methods"]["prior"]
    assert prior["summary"]["num_failed"] == 0
    assert all(math.isfinite(r["centre_err_world"]) for r in prior["rows"])
    sift = res["methods"]["sift_essential"]
    assert len(sift["rows"]) == 4 and all(0 <= r["rot_err_deg"] <= 180 for r in sift["rows"])
    assert main(["eval", "nvs", *common, "--json"]) == 0
    views = _json_out(capsys)["methods"]["copy_observed"]["summary"]
    assert views["num_pairs"] == 4 and 5 < views["psnr"] < 30


def test_essential_matrix_recovers_a_rendered_pair_from_depth_correspondences(world):
    """Loader, intrinsics, depth and the baseline's normalisation agree: exact matches -> exact pose."""
    import numpy as np

    from gst.data.pairs import PairConfig
    from gst.eval.baselines import SiftEssentialPose
    from gst.eval.data import build_evalset
    from gst.geometry.errors import rotation_error_deg, translation_direction_error_deg

    # >= 20 degrees: at small baselines a ground-dominated (near-planar) scene leaves the essential matrix
    # two-fold ambiguous even with exact matches (0.6 degrees off on one 10-degree pair of this world)
    config = PairConfig(min_baseline_deg=20, min_covisible_objects=0)
    evalset = build_evalset(world / "val", num_pairs=6, seed=0, pair_config=config)
    for pair in evalset.pairs:
        s = pair.scene_index
        scene = evalset.scenes[s]
        K_obs, K_tgt, true = evalset.K(s, pair.obs), evalset.K(s, pair.tgt), evalset.w2c_rel(pair)
        depth = scene.load_depth(pair.obs).numpy()  # (H, W) metres along +z of the observed camera
        v, u = np.nonzero(depth > 0)
        pick = np.random.default_rng(0).choice(len(u), 200, replace=False)
        pix = np.stack([u[pick], v[pick], np.ones(200)]).astype(np.float64)  # (3, N)
        x_obs = np.linalg.inv(K_obs.numpy()) @ pix * depth[v[pick], u[pick]]  # (3, N) observed frame
        x_tgt = true[:3, :3].numpy() @ x_obs + true[:3, 3:].numpy()
        p_tgt = (K_tgt.numpy() @ (x_tgt / x_tgt[2:]))[:2].T  # (N, 2)
        pred = SiftEssentialPose().pose_from_matches(pix[:2].T, p_tgt, K_obs, K_tgt)
        assert not pred.failed
        # exact correspondences (quantised depth only moves the 3D points): the pose comes back exactly
        assert float(rotation_error_deg(pred.w2c_rel[:3, :3], true[:3, :3])) < 1e-4
        assert float(translation_direction_error_deg(pred.w2c_rel[:3, 3], true[:3, 3])) < 1e-4


def test_tokenizer_ceiling_from_an_exported_tokenizer(world, tmp_path, capsys, no_lpips_weights):
    """`--tokenizer DIR` scores decode(encode(target)) (an untrained FSQ tokenizer: wiring, not quality)."""
    import torch

    from gst.data.pairs import PairConfig
    from gst.eval.data import build_evalset
    from gst.eval.metrics import psnr
    from gst.tokenizers.config import ImageTokenizerConfig, QuantizerConfig
    from gst.tokenizers.image import ImageTokenizer
    from gst.tokenizers.io import save_tokenizer

    torch.manual_seed(0)
    config = ImageTokenizerConfig(
        image_hw=(64, 64),
        channels=8,
        channel_mult=(1, 2),
        z_channels=8,
        quantizer=QuantizerConfig(kind="fsq"),
    )
    tokenizer = ImageTokenizer(config).eval()
    save_tokenizer(tokenizer, tmp_path / "tok")
    args = ["--data", str(world / "val"), "--num-pairs", "3", "--min-covisible", "0", "--max-baseline", "120"]
    assert main(["eval", "nvs", *args, "--tokenizer", str(tmp_path / "tok"), "--json"]) == 0
    res = _json_out(capsys)
    ceiling = res["methods"]["tokenizer_ceiling"]
    assert ceiling["summary"]["uses_target_image"] and ceiling["tokenizer_image_hw"] == [64, 64]
    assert len(ceiling["sha256"]) == 64 and "copy_observed" in res["methods"]
    evalset = build_evalset(
        world / "val",
        num_pairs=3,
        seed=0,
        pair_config=PairConfig(min_covisible_objects=0, max_baseline_deg=120),
    )
    for row, pair in zip(ceiling["rows"], evalset.pairs, strict=True):
        target = evalset.image(pair.scene_index, pair.tgt)[None]
        assert row["psnr"] == pytest.approx(float(psnr(tokenizer.reconstruct(target), target)[0]), abs=1e-4)


def test_prior_refuses_to_draw_from_the_evaluated_views(world, capsys):
    args = ["eval", "pose", "--data", str(world / "val"), "--num-pairs", "2", "--method", "prior"]
    assert main([*args, "--train-data", str(world / "val")]) == 1
    assert "the prior must come from other views" in capsys.readouterr().err
    assert main(args) == 1
    assert "--method prior needs --train-data" in capsys.readouterr().err
