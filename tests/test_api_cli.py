"""The top-level commands (gst pose / nvs / sample / chat), gst train export, and the world model in
gst eval pose / nvs / qa, on the tiny untrained checkpoint of tests/test_api.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_api import make_checkpoint, make_training_export  # tests/ is on sys.path (pytest rootdir import)
from test_token_cache import make_scenes

from gst.api import GST
from gst.api_commands import chat_repl
from gst.cli import main as cli_main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("cli"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    out = {}
    for name, hw in (("a", (24, 40)), ("b", (32, 32))):
        Image.fromarray((rng.random((*hw, 3)) * 255).astype(np.uint8)).save(root / f"{name}.png")
        out[name] = root / f"{name}.png"
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    out["broken"] = root / "broken.png"
    return out


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_pose_json_feeds_nvs_camera(ckpt, images, tmp_path, capsys) -> None:
    assert cli_main(["pose", str(images["a"]), str(images["b"]), "--checkpoint", str(ckpt), "--json"]) == 0
    cam = _json(capsys)
    assert cam["format"] == "gst.camera.v1" and cam["image_hw"] == [32, 32]
    R = np.asarray(cam["w2c"])[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-6) and cam["K"][0][0] > 0
    (tmp_path / "cam.json").write_text(json.dumps(cam))
    out = tmp_path / "view.png"
    args = ["nvs", str(images["a"]), "--camera", str(tmp_path / "cam.json"), "--out", str(out)]
    assert cli_main([*args, "--checkpoint", str(ckpt), "--json"]) == 0
    doc = _json(capsys)
    assert doc["images"] == [str(out)] and Image.open(out).size == (16, 16)
    assert cli_main(["pose", str(images["a"]), str(images["b"]), "--checkpoint", str(ckpt)]) == 0
    assert "seen from" in capsys.readouterr().out


def test_nvs_orbit_and_errors(ckpt, images, tmp_path, capsys) -> None:
    out = tmp_path / "orbit.png"
    base = ["nvs", str(images["a"]), "--checkpoint", str(ckpt), "--out", str(out)]
    assert cli_main([*base, "--azimuth", "30", "--elevation", "10", "-n", "2"]) == 0
    assert (tmp_path / "orbit_00.png").is_file() and (tmp_path / "orbit_01.png").is_file()
    assert "camera asked for: turned 30 degrees left, tilted 10 degrees down" in capsys.readouterr().out
    assert cli_main(base) == 1
    assert "--azimuth DEG" in capsys.readouterr().err
    assert cli_main(["nvs", str(images["broken"]), "--azimuth", "5", "--checkpoint", str(ckpt)]) == 1
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert cli_main([*base, "--azimuth", "5", "--checkpoint", str(tmp_path / "none")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert cli_main([*base, "--azimuth", "5", "--warp"]) == 1  # the micro model reads no depth
    assert "reads no depth" in capsys.readouterr().err


def test_sample_writes_views_grid_and_frusta(ckpt, images, tmp_path, capsys) -> None:
    out = tmp_path / "s"
    assert (
        cli_main(
            ["sample", str(images["a"]), "-n", "3", "--out", str(out), "--checkpoint", str(ckpt), "--json"]
        )
        == 0
    )
    doc = _json(capsys)
    assert len(doc["samples"]) == 3 and all(Path(s["image"]).is_file() for s in doc["samples"])
    assert Path(doc["figures"]["grid"]).is_file() and Path(doc["figures"]["cameras"]).is_file()
    assert json.loads((out / "cameras.json").read_text()) == doc
    assert all(s["warped_fraction"] is None for s in doc["samples"])  # no --warp
    assert cli_main(["sample", str(images["a"]), "--out", str(out), "--checkpoint", str(ckpt), "--warp"]) == 1
    assert "reads no depth" in capsys.readouterr().err  # the micro model


def test_chat_repl_scripted_session(ckpt, images, tmp_path) -> None:
    session = GST.from_pretrained(ckpt).start_chat(max_new_tokens=6)
    stdin = io.StringIO(
        f"How many objects?\n\n/image {images['broken']}\n/image {images['b']}\nAnd now?\n/reset\nHi\n"
    )
    stdout = io.StringIO()
    assert chat_repl(session, [str(images["a"])], stdin=stdin, stdout=stdout, save_dir=tmp_path) == 0  # EOF
    lines = stdout.getvalue().splitlines()
    assert sum(line.startswith("gst> ") for line in lines) == 3
    assert any("broken.png: not a readable image" in line for line in lines)
    assert f"(attached {images['b']} to the next question)" in lines and "(history cleared)" in lines
    quit_early = io.StringIO("/quit\nnever asked\n")
    assert chat_repl(session, [], stdin=quit_early, stdout=io.StringIO(), save_dir=tmp_path) == 0
    assert quit_early.readline() == "never asked\n"


def test_chat_command_refuses_unreadable_images(ckpt, images, capsys) -> None:
    assert cli_main(["chat", "--checkpoint", str(ckpt), "--image", str(images["broken"])]) == 1
    assert "broken.png: not a readable image" in capsys.readouterr().err
    assert cli_main(["chat", "--checkpoint", str(ckpt), "--image", "missing.png"]) == 1
    assert "missing.png: no such image file" in capsys.readouterr().err


def test_train_export_command(tmp_path, capsys) -> None:
    export = make_training_export(tmp_path)
    assert (
        cli_main(
            ["train", "export", str(export), "--out", str(tmp_path / "ck"), "--backbone-dtype", "float16"]
        )
        == 0
    )
    assert "checkpoint written" in capsys.readouterr().out
    assert GST.from_pretrained(tmp_path / "ck").sequence.image_grid == (4, 4)
    assert cli_main(["train", "export", str(export), "--out", str(tmp_path / "ck")]) == 1
    assert "--overwrite" in capsys.readouterr().err


# ---- the world model in gst eval ----


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory.mktemp("scenes") / "s", num_scenes=2, num_views=4)


def test_eval_pose_and_nvs_with_checkpoint(ckpt, scenes, capsys) -> None:
    base = ["--data", str(scenes), "--num-pairs", "3", "--checkpoint", str(ckpt), "--json"]
    assert cli_main(["eval", "pose", *base]) == 0
    pose = _json(capsys)
    assert list(pose["methods"]) == ["gst"]  # with --checkpoint and no --method: the model alone
    gst = pose["methods"]["gst"]
    assert gst["scale_known"] and gst["source"] == "world model checkpoint" and len(gst["rows"]) == 3
    assert all(not r["failed"] and r["K_tgt_pred"] is not None for r in gst["rows"])
    assert cli_main(["eval", "nvs", *base, "--method", "copy"]) == 0
    nvs = _json(capsys)
    assert set(nvs["methods"]) == {"copy_observed", "gst"}
    assert all(np.isfinite(r["psnr"]) for r in nvs["methods"]["gst"]["rows"])
    assert cli_main(["eval", "nvs", *base, "--warp", "0.5"]) == 1  # the micro model reads no depth
    assert "reads no depth" in capsys.readouterr().err


def test_eval_qa_model_and_text_only(ckpt, scenes, tmp_path, capsys) -> None:
    record = {
        "id": "scene_00000/count/0/t", "instance": "scene_00000/count/0", "scene": "scene_00000",
        "views": [0], "target_view": None, "family": "counting", "kind": "count", "phrasing_id": "count/t0",
        "phrasing_split": "train", "split": "val", "question": "How many objects are there in the image?",
        "answer": {"type": "count", "value": 2}, "answer_text": "2",
    }  # fmt: skip
    choice = {
        **record, "id": "x/3", "family": "relative_direction", "kind": "left_right",
        "question": "Is the red box left or right?",
        "answer": {"type": "choice", "value": "left", "options": ["left", "right"]}, "answer_text": "left",
    }  # fmt: skip
    distance = {
        **record, "id": "x/4", "family": "distance", "kind": "dist_cam",
        "question": "How far is the red box from the camera, in metres?",
        "answer": {"type": "number", "value": 2.5, "unit": "m"}, "answer_text": "2.50 m",
    }  # fmt: skip
    data = tmp_path / "qa.jsonl"
    lines = [record, {**record, "id": "x/2", "views": [1]}, choice, distance]
    data.write_text("".join(json.dumps(r) + "\n" for r in lines))
    base = ["eval", "qa", "--data", str(data), "--checkpoint", str(ckpt), "--max-new-tokens", "4", "--json"]
    assert cli_main([*base, "--method", "model", "--scenes", str(scenes), "--numbers", "constrained"]) == 0
    model = _json(capsys)
    assert model["method"] == "gst" and model["data"]["num_records"] == 4
    assert model["closed_answers"] == "score" and model["numbers"] == "constrained"
    # A scored choice or count is always a valid answer, and a constrained number is well formed (even
    # with --max-new-tokens 4: the format sets its own length), so every answer parses.
    assert model["metrics"]["overall"]["unparseable"] == 0
    assert (
        cli_main([*base, "--method", "model", "--scenes", str(scenes), "--closed-answers", "generate"]) == 0
    )
    assert _json(capsys)["closed_answers"] == "generate"
    point = {
        **distance, "id": "x/5", "family": "grounding_3d", "kind": "g3d_point",
        "question": "Where is the red box in the camera frame?",
        "answer": {"type": "point", "value": [0.5, -0.2, 3.0]}, "answer_text": "(0.50, -0.20, 3.00) m",
    }  # fmt: skip
    box = {
        **point, "id": "x/6", "kind": "g3d_box", "question": "Give the red box's 3D box.",
        "answer": {"type": "box", "value": {"center": [0.5, -0.2, 3.0], "size": [0.4, 0.4, 0.4]}},
        "answer_text": "center (0.50, -0.20, 3.00) m, size (0.40, 0.40, 0.40) m",
    }  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in [*lines, point, box]))
    assert cli_main([*base, "--method", "text-only", "--numbers", "mbr"]) == 0
    text_only = _json(capsys)
    assert text_only["method"] == "gst-text-only" and text_only["numbers"] == "mbr"
    # MBR numbers, points and boxes are grid values written in the answer format: all parse.
    assert text_only["data"]["num_records"] == 6 and text_only["metrics"]["overall"]["unparseable"] == 0
    assert cli_main([*base, "--method", "model"]) == 1
    assert "--scenes DIR" in capsys.readouterr().err
