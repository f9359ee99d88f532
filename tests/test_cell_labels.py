"""Per-cell object labels (gst.data.cell_labels) and the reader's cell heads trained on them.

Hand-written scenes of tests/test_token_cache.py (20x24 images cropped to 16x16, a 4x4 token grid: cells of
5x5 source pixels, the crop starting at column 2) get instance masks, depth maps and objects metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_token_cache import make_scenes, make_tokenizers  # tests/ is on sys.path (pytest rootdir import)

from gst.cli import main as cli_main
from gst.data.cell_labels import COLOUR_CLASSES, SHAPE_CLASSES, open_cell_labels, view_cell_labels
from gst.data.loaders import load_scene
from gst.data.token_cache import CacheConfig, build_token_cache, open_token_cache
from gst.model.loss import cell_loss
from gst.model.reader import NUM_COLOUR_CLASSES, NUM_SHAPE_CLASSES

torch.set_num_threads(1)
OBJECTS = [
    {"name": "red sphere", "shape": "sphere", "color": "red", "center": [0.0, 0.0, 0.0]},
    {"name": "blue teapot", "shape": "teapot", "color": "blue", "center": [1.0, 0.5, 0.2]},
]


def add_labels(root: Path) -> None:
    """Masks, depth and objects for every view of every scene under ``root`` (module docstring): object
    0 fills crop rows 0-9 x crop cols 0-9 (cells (0,0), (0,1), (1,0), (1,1)) and 6 pixels of cell (2,3)
    (under a quarter); object 1 covers 7 of the 25 pixels of cell (3,3) (over a quarter). Depth: none in
    source rows 0-4, 2 m in rows 5-9, 4 m below."""
    for folder in sorted(root.glob("scene_*")):
        meta = json.loads((folder / "transforms.json").read_text())
        (folder / "masks").mkdir(exist_ok=True)
        (folder / "depth").mkdir(exist_ok=True)
        mask = np.zeros((20, 24), np.uint8)
        mask[0:10, 2:12] = 1
        mask[10:12, 17:20] = 1  # 6 px of cell (2, 3): crop rows 10-14, crop cols 15-19 = x 17-21
        mask[15:16, 17:22] = 2  # 5 + 2 = 7 px of cell (3, 3)
        mask[16:17, 17:19] = 2
        depth = np.zeros((20, 24), np.uint16)
        depth[5:10], depth[10:] = 2000, 4000  # millimetres
        for v, frame in enumerate(meta["frames"]):
            Image.fromarray(mask).save(folder / "masks" / f"{v:04d}.png")
            Image.fromarray(depth).save(folder / "depth" / f"{v:04d}.png")
            frame["mask_file_path"] = f"masks/{v:04d}.png"
            frame["depth_file_path"] = f"depth/{v:04d}.png"
        meta["objects"] = OBJECTS
        (folder / "transforms.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("cells")
    scenes, toks = make_scenes(tmp / "scenes"), make_tokenizers(tmp / "tok")
    add_labels(scenes)
    build_token_cache(scenes, toks, tmp / "cache", CacheConfig(pairs_per_scene=4, seed=0, val_fraction=0.5))
    return {"cache": tmp / "cache", "tok": toks, "scenes": scenes}


def test_view_cell_labels_follow_masks_depth_and_objects(data: dict) -> None:
    scene = load_scene(data["scenes"] / "scene_00000")
    lab = view_cell_labels(scene, 3, (16, 16), (4, 4))
    want = np.full((4, 4), -1)
    want[:2, :2] = 0
    want[3, 3] = 1
    np.testing.assert_array_equal(lab["object"], want)
    sphere, other = SHAPE_CLASSES.index("sphere"), SHAPE_CLASSES.index("other")
    assert lab["shape"][0, 0] == sphere and lab["shape"][3, 3] == other and lab["shape"][2, 3] == -1
    assert lab["colour"][1, 1] == COLOUR_CLASSES.index("red") and lab["colour"][3, 3] == COLOUR_CLASSES.index(
        "blue"
    )
    w2c = scene.w2c[3].numpy()
    np.testing.assert_allclose(lab["centre"][3, 3], w2c[:3, :3] @ [1.0, 0.5, 0.2] + w2c[:3, 3], rtol=1e-5)
    assert np.isnan(lab["centre"][2, 3]).all()
    assert np.isnan(lab["depth"][0]).all()
    np.testing.assert_allclose(lab["depth"][1:], [[2.0] * 4, [4.0] * 4, [4.0] * 4], rtol=1e-6)
    bare = load_scene(data["scenes"] / "scene_00000")
    with pytest.raises(ValueError, match="instance masks, depth maps and objects"):
        view_cell_labels(dataclasses.replace(bare, objects=None), 0, (16, 16), (4, 4))


def test_cells_command_and_pair_lookup(data: dict, capsys) -> None:
    cache = open_token_cache(data["cache"])
    with pytest.raises(FileNotFoundError, match="gst data cells"):
        open_cell_labels(cache)
    assert cli_main(["data", "cells", "--cache", str(data["cache"]), "--quiet"]) == 0
    assert "train: 4 scenes x 6 views" in capsys.readouterr().out
    cells = open_cell_labels(cache)
    split = cache.split("train")
    got = cells.pairs(split, np.array([0, 5]))
    assert got["object"].shape == (2, 2, 4, 4) and got["centre"].shape == (2, 2, 4, 4, 3)
    key = split.pair_keys([5])[0]  # (scene, obs view, tgt view)
    scene = load_scene(data["scenes"] / key[0])
    want = view_cell_labels(scene, key[2], (16, 16), (4, 4))
    np.testing.assert_array_equal(got["object"][1, 1], want["object"])
    np.testing.assert_allclose(got["centre"][1, 1], want["centre"])
    assert (len(SHAPE_CLASSES), len(COLOUR_CLASSES)) == (NUM_SHAPE_CLASSES, NUM_COLOUR_CLASSES)


def test_cell_loss_values() -> None:
    """Two cells: an object cell (shape 1, colour 2, centre (0, 0, 2), depth 2 m) and a background cell
    without a surface; with all-zero predictions every term has a closed form."""
    labels = torch.tensor([[[0, 1, 2, 0.0, 0.0, 2.0, 2.0], [-1, -1, -1, *[math.nan] * 3, math.nan]]])
    pred = {
        "object": torch.zeros(1, 2),
        "shape": torch.zeros(1, 2, NUM_SHAPE_CLASSES),
        "colour": torch.zeros(1, 2, NUM_COLOUR_CLASSES),
        "centre": torch.zeros(1, 2, 3),
        "log_depth": torch.zeros(1, 2),
    }
    loss, metrics = cell_loss(pred, labels)
    centre_huber = 1.5 / 3  # Huber(2, delta 1) = 1.5 on z, 0 on x and y, mean over 3
    depth_huber = 0.5 * math.log(2.0) ** 2
    want = (
        math.log(2) + math.log(NUM_SHAPE_CLASSES) + math.log(NUM_COLOUR_CLASSES) + centre_huber + depth_huber
    )
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(metrics["cell_object_acc"]) == pytest.approx(0.5)  # logit 0 says "none" everywhere
    assert float(metrics["cell_centre_err_m"]) == pytest.approx(2.0)
    assert float(metrics["cell_depth_absrel"]) == pytest.approx(0.5)


def test_cell_heads_train_in_reader_pairs(data: dict, tmp_path: Path, fresh_accelerate) -> None:
    from gst.model.config import ReaderConfig
    from gst.training.gst_eval import cell_metrics
    from gst.training.gst_task import GSTTask, get_run_preset, with_cache_grids
    from gst.training.loop import train

    cli_main(["data", "cells", "--cache", str(data["cache"]), "--quiet"])
    run = with_cache_grids(get_run_preset("micro"), open_token_cache(data["cache"]))
    reader = ReaderConfig(grid_hw=(4, 4), code_dim=8, channels=16, num_blocks=1, cell_heads=True)
    run = dataclasses.replace(
        run,
        model=dataclasses.replace(run.model, reader=reader, pose_head_dim=13),
        sequence=dataclasses.replace(run.sequence, stem_pairs=6, stem_warmup_steps=30),
        loss=dataclasses.replace(run.loss, pose_weight=1.0, cell_weight=1.0),
        train=dataclasses.replace(
            run.train,
            max_steps=30,
            lr=1e-2,
            warmup_steps=1,
            checkpoint_every=30,
            tensorboard=False,
            progress=False,
        ),
        code_init="decoder",
    )
    task = GSTTask(run, data["cache"], data["tok"])
    batch = task.batch(0, torch.Generator().manual_seed(0), 8)
    assert batch.stem_cells.shape == (6, 2, 16, 7)
    rows = task.stem_rows(0, 6)
    torch.testing.assert_close(batch.stem_cells, task.cell_targets(task.train_split, rows), equal_nan=True)
    model = task.build_model()
    val_rows = np.arange(len(task.val_split))
    before = cell_metrics(model, task.val_split, val_rows, task.cell_targets(task.val_split, val_rows))
    _, metrics = task.loss(model, batch, 0)
    assert {"stem/pose_huber", "stem/cell_object_acc", "stem/cell_depth_absrel"} <= set(metrics)
    result = train(task, task.run.train, tmp_path / "run")
    after = result.eval_metrics
    # every view has the same layout, so 30 updates learn where the objects are
    assert after["val_cell_object_acc"] > before["val_cell_object_acc"]
    assert after["val_cell_object_acc"] >= 0.9
    assert after["val_cell_depth_absrel"] < before["val_cell_depth_absrel"]
    bad = dataclasses.replace(
        run, model=dataclasses.replace(run.model, reader=dataclasses.replace(reader, cell_heads=False))
    )
    with pytest.raises(ValueError, match="cell_heads"):
        GSTTask(bad, data["cache"], data["tok"])
