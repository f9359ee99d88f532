"""`gst train tokenizer` and `gst eval tokenizer` end to end on tiny configs: train, resume, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.cli import main

torch.set_num_threads(1)

# A model small enough for a few CPU steps in well under a second each.
IMAGE_SMALL = [
    "model.image_hw=32,32",
    "model.channels=8",
    "model.channel_mult=1,1,2,2",
    "model.z_channels=16",
    "model.quantizer.codebook_size=64",
    "model.quantizer.kmeans_init=false",
    "loss.disc_channels=8",
    "loss.disc_layers=1",
    "loss.adversarial_start_step=2",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "train.progress=false",
    "train.tensorboard=false",
    "data.num_eval_images=8",
]
CAMERA_SMALL = [
    "model.hidden=32",
    "train.batch_size=32",
    "train.warmup_steps=1",
    "train.checkpoint_every=2",
    "train.progress=false",
    "train.tensorboard=false",
    "data.num_val_pairs=64",
]


pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # tests/conftest.py


def make_scenes(root: Path, num_scenes: int = 12, views: int = 3, hw=(32, 32), seed: int = 0) -> Path:
    """Scene folders in the procedural world's transforms.json format, with smooth random images."""
    rng = np.random.default_rng(seed)
    for s in range(num_scenes):
        folder = root / f"scene_{s:05d}"
        (folder / "images").mkdir(parents=True)
        frames = []
        for v in range(views):
            small = (rng.random((hw[0] // 4, hw[1] // 4, 3)) * 255).astype(np.uint8)
            image = Image.fromarray(small).resize((hw[1], hw[0]), Image.BILINEAR)
            image.save(folder / "images" / f"{v:04d}.png")
            c2w = np.eye(4)
            c2w[:3, 3] = [v, 0.0, 3.0]
            frames.append({"file_path": f"images/{v:04d}.png", "transform_matrix": c2w.tolist()})
        (folder / "transforms.json").write_text(
            json.dumps(
                {
                    "camera_model": "PINHOLE",
                    "w": hw[1],
                    "h": hw[0],
                    "fl_x": 30.0,
                    "fl_y": 30.0,
                    "cx": hw[1] / 2,
                    "cy": hw[0] / 2,
                    "frames": frames,
                }
            )
        )
    return root


def _sets(values: list[str]) -> list[str]:
    return [arg for v in values for arg in ("--set", v)]


def test_image_tokenizer_cli_trains_resumes_and_evaluates(tmp_path: Path, capsys) -> None:
    data = make_scenes(tmp_path / "scenes")
    out = tmp_path / "run"
    args = [
        "train",
        "tokenizer",
        "--kind",
        "image",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
    ]
    assert main([*args, "--max-steps", "2", *_sets(IMAGE_SMALL)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["step"] == 2 and 0 <= first["eval"]["codebook_usage"] <= 1
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    assert main([*args, "--max-steps", "3", "--resume", *_sets(IMAGE_SMALL)]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3  # the discriminator joined at step 2
    assert (
        main(["eval", "tokenizer", "--checkpoint", str(out), "--data", str(data), "--split", "all", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    for key in (
        "psnr",
        "ssim",
        "baseline_bilinear_psnr",
        "baseline_bilinear_ssim",
        "codebook_usage",
        "perplexity",
    ):
        assert isinstance(report[key], float), key
    assert report["kind"] == "image" and report["num_images"] == 36 and report["grid_hw"] == [4, 4]
    assert 0 < report["ssim"] <= 1 and report["baseline_bilinear_psnr"] > 10


def test_camera_tokenizer_cli_and_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cam"
    args = ["train", "tokenizer", "--kind", "camera", "--preset", "tiny", "--out", str(out)]
    assert main([*args, "--max-steps", "2", *_sets(CAMERA_SMALL)]) == 0
    capsys.readouterr()
    assert main(["eval", "tokenizer", "--checkpoint", str(out), "--json", "--num-pairs", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("rotation_error_deg", "translation_direction_error_deg", "center_error", "focal_error_pct"):
        assert report[f"{key}_median"] <= report[f"{key}_p95"], key
    assert report["kind"] == "camera" and report["num_pairs"] == 32 and report["data"]["seed"] == 1_000_003
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    assert main([*args, "--max-steps", "2", "--set", "model.hiden=3"]) == 1
    assert "unknown key 'hiden'" in capsys.readouterr().err
    assert main([*args, "--max-steps", "4", *_sets(CAMERA_SMALL)]) == 1  # no --resume: refuse to overwrite
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "tokenizer", "--kind", "image", "--out", str(tmp_path / "x")]) == 1
    assert "--data DIR is required" in capsys.readouterr().err
