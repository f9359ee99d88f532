"""GSTTask through the one training loop: learning, exact resume, the update-index task schedule, the CLI.

A micro backbone on a tiny cache of hand-written scenes tokenized by small random tokenizers (see
tests/test_token_cache.py, whose helpers this module imports).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_token_cache import make_scenes, make_tokenizers  # tests/ is on sys.path (pytest rootdir import)

from gst.cli import main as cli_main
from gst.data.token_cache import CacheConfig, build_token_cache
from gst.model import load_gst_model, read_gst_meta
from gst.model.sequences import TASK_EST, TASK_GEN
from gst.training import checkpoint as ckpt
from gst.training.gst_task import GSTTask, get_run_preset, with_cache_grids
from gst.training.loop import train

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("gst")
    scenes, toks = make_scenes(tmp / "scenes"), make_tokenizers(tmp / "tok")
    build_token_cache(scenes, toks, tmp / "cache", CacheConfig(pairs_per_scene=4, seed=0, val_fraction=0.5))
    return {"cache": tmp / "cache", "tok": toks, "scenes": scenes}


def _task(data: dict, **train_kw) -> GSTTask:
    from gst.data.token_cache import open_token_cache

    run = with_cache_grids(get_run_preset("micro"), open_token_cache(data["cache"]))
    train_cfg = dataclasses.replace(run.train, tensorboard=False, progress=False, **train_kw)
    return GSTTask(dataclasses.replace(run, train=train_cfg), data["cache"], data["tok"])


def test_loss_decreases_on_a_fixed_batch(data: dict, tmp_path: Path) -> None:
    task = _task(data, max_steps=25, checkpoint_every=25, warmup_steps=2)
    fixed = task.batch(0, torch.Generator().manual_seed(0), 8)
    model = task.build_model()
    before = float(task.loss(model, fixed, 0)[0].detach())
    result = train(task, task.run.train, tmp_path / "run")
    after_model = load_gst_model(result.checkpoint / "export")  # the exported artefact, reloaded
    after = float(task.loss(after_model, fixed, 0)[0].detach())
    assert before > 3.0  # ~ log(32) for image codes and log(27) for camera codes at initialisation
    assert after < 0.75 * before
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5
    meta = read_gst_meta(result.checkpoint / "export")
    extra = meta["extra"]
    assert extra["sequence"]["image_grid"] == [4, 4] and extra["vocabulary"]["num_text"] == 384
    assert extra["tokenizers"]["camera"]["sha256"] == task.cache.manifest["tokenizers"]["camera"]["sha256"]
    assert {"loss", "est/camera_acc", "gen/image_acc", "pose/rotation_err_median_deg"} <= set(
        result.eval_metrics
    )
    assert 0.0 <= result.eval_metrics["est/camera_acc"] <= 1.0


def assert_resume_equals_uninterrupted(make_task, root: Path) -> None:
    """A run cut at step 3 and resumed equals an uninterrupted one: losses and weights, bit-exact on CPU.
    ``make_task()`` builds a fresh task of 6 steps checkpointed every 2."""
    task = make_task()
    full = train(task, task.run.train, root / "full")
    task = make_task()
    first = train(task, task.run.train, root / "cut", stop_at_step=3)
    task = make_task()
    second = train(task, task.run.train, root / "cut", resume=True)
    assert second.resumed_from == 3
    assert first.losses + second.losses == full.losses  # bit-exact on CPU
    a, _, _ = ckpt.read_checkpoint(full.checkpoint)
    b, _, _ = ckpt.read_checkpoint(second.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_uninterrupted_run(data: dict, tmp_path: Path) -> None:
    kw = dict(max_steps=6, checkpoint_every=2, grad_accum_steps=2, batch_size=4)
    assert_resume_equals_uninterrupted(lambda: _task(data, **kw), tmp_path)


def test_alternate_follows_the_update_index(data: dict) -> None:
    task = _task(data, grad_accum_steps=2)
    task.run = dataclasses.replace(
        task.run, sequence=dataclasses.replace(task.run.sequence, task_mix="alternate")
    )
    g = torch.Generator().manual_seed(0)
    tasks = [set(task.batch(i, g, 4).task.tolist()) for i in range(6)]
    # micro-batches 0-1 form update 0 (gen), 2-3 update 1 (est), 4-5 update 2 (gen)
    assert tasks == [{TASK_GEN}, {TASK_GEN}, {TASK_EST}, {TASK_EST}, {TASK_GEN}, {TASK_GEN}]
    joint = _task(data)
    assert set(joint.batch(0, g, 8).task.tolist()) == {TASK_GEN, TASK_EST}


def test_every_pair_once_per_epoch(data: dict) -> None:
    task = _task(data)
    n = len(task.train_split)  # 16 pairs
    rows = [task.train_rows(i, 4) for i in range(2 * n // 4)]
    first, second = sorted(sum((r.tolist() for r in rows[: n // 4]), [])), rows[n // 4 :]
    assert first == list(range(n))
    assert sorted(sum((r.tolist() for r in second), [])) == list(range(n))


def test_cli_train_resume_and_curves(data: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"

    def gst(out: Path, *extra: str, tok: Path = data["tok"]) -> int:
        return cli_main(
            [
                "train",
                "gst",
                "--preset",
                "micro",
                "--data",
                str(data["cache"]),
                "--tokenizers",
                str(tok),
                "--out",
                str(out),
                "--set",
                "eval.num_pose_pairs=2",
                *extra,
            ]
        )

    assert gst(out, "--set", "sequence.task_mix=alternate", "--max-steps", "2") == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert gst(out, "--set", "sequence.task_mix=alternate", "--max-steps", "4", "--resume") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 4 and summary["resumed_from"] == 2
    config = json.loads((out / "config.json").read_text())
    assert config["task"]["run"]["sequence"]["task_mix"] == "alternate"
    # A different task mix cannot resume the same run.
    assert gst(out, "--set", "sequence.task_mix=joint", "--max-steps", "6", "--resume") == 1
    assert "task.run.sequence.task_mix" in capsys.readouterr().err
    # Grids come from the cache; overriding them is an error, as is a tokenizer folder it was not built with.
    assert gst(tmp_path / "x", "--set", "sequence.image_grid=8,8") == 1
    assert "differ from the cache" in capsys.readouterr().err
    assert gst(tmp_path / "y", tok=make_tokenizers(tmp_path / "other", seed=3)) == 1
    assert "rebuild the cache" in capsys.readouterr().err
    assert cli_main(["train", "gst-curves", str(out), "--json", "--plot", str(tmp_path / "c.png")]) == 0
    table = json.loads(capsys.readouterr().out)["run"]
    assert [row["step"] for row in table] == [2, 4]
    assert all(row["val_loss"] > 0 and 0 <= row["val_est_cam_acc"] <= 1 for row in table)
    assert all(0 <= row["val_est_cam1_acc"] <= 1 for row in table)
    assert (tmp_path / "c.png").stat().st_size > 1000
    score = ["eval", "cache-score", "--model", str(out), "--data", str(data["cache"]), "--tokenizers"]
    preds = tmp_path / "preds.json"
    assert (
        cli_main(
            [
                *score,
                str(data["tok"]),
                "--num-pairs",
                "4",
                "--num-pose-pairs",
                "3",
                "--predictions",
                str(preds),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["model"].endswith("step_00000004/export") and result["num_pose_pairs"] == 3
    assert result["task_mix"] == "alternate" and 0 <= result["metrics"]["pose/rotation_acc_15deg"] <= 1
    # The evaluator reads the predictions file (gst eval pose --predictions): 3 val pairs, metric scale.
    from gst.eval.predictors import FilePosePredictor

    replay = FilePosePredictor(preds)
    assert replay.scale_known and len(replay._by_key) == 3
    assert all(key[0] in ("scene_00002", "scene_00004") for key in replay._by_key)


def test_init_from_fine_tunes_a_trained_checkpoint(data: dict, tmp_path: Path, capsys) -> None:
    from gst.data.token_cache import open_token_cache
    from gst.training.gst_init import with_initial_weights

    def gst(out: Path, *extra: str, cache: Path = data["cache"], tok: Path = data["tok"]) -> int:
        args = ["train", "gst", "--preset", "micro", "--data", str(cache), "--tokenizers", str(tok)]
        return cli_main([*args, "--out", str(out), "--set", "eval.num_pose_pairs=0", *extra])

    base = tmp_path / "base"
    assert gst(base, "--max-steps", "2", "--set", "train.lr=0.01") == 0
    capsys.readouterr()
    trained = load_gst_model(base / "checkpoints" / "step_00000002" / "export")
    # The fine-tuning run starts from exactly the trained weights, not from the preset's initialisation.
    run = with_cache_grids(get_run_preset("micro"), open_token_cache(data["cache"]))
    fresh = GSTTask(run, data["cache"], data["tok"]).build_model().state_dict()
    run = with_initial_weights(run, base)
    start = GSTTask(run, data["cache"], data["tok"]).build_model().state_dict()
    assert run.init_from.endswith("step_00000002/export")
    assert all(torch.equal(start[k], v) for k, v in trained.state_dict().items())
    key = "lm.model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(start[key], fresh[key])
    # Through the CLI: trains, records where it started, resumes with the same command.
    tuned = tmp_path / "tuned"
    assert gst(tuned, "--init-from", str(base), "--max-steps", "2") == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert gst(tuned, "--init-from", str(base), "--max-steps", "3", "--resume") == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 2
    config = json.loads((tuned / "config.json").read_text())
    assert config["task"]["run"]["init_from"] == run.init_from
    meta = read_gst_meta(tuned / "checkpoints" / "step_00000003" / "export")
    assert meta["extra"]["init_from"] == run.init_from
    # What cannot be fine-tuned is refused, naming the reason.
    assert gst(tmp_path / "a", "--init-from", str(base), "--set", "model.backbone.num_layers=3") == 1
    assert "keeps its architecture" in capsys.readouterr().err
    assert gst(tmp_path / "b", "--init-from", str(base), "--pretrained", str(tmp_path)) == 1
    assert "not both" in capsys.readouterr().err
    other_tok = make_tokenizers(tmp_path / "other", seed=3)
    other = tmp_path / "other_cache"
    build_token_cache(data["scenes"], other_tok, other, CacheConfig(pairs_per_scene=4, val_fraction=0.5))
    assert gst(tmp_path / "c", "--init-from", str(base), cache=other, tok=other_tok) == 1
    assert "another image tokenizer" in capsys.readouterr().err
    assert gst(tmp_path / "d", "--init-from", str(tmp_path / "missing")) == 1
    assert "no such folder" in capsys.readouterr().err


def _pose_task(data: dict, **train_kw) -> GSTTask:
    """The micro task with the auxiliary pose readout (GeoVR-style) switched on."""
    task = _task(data, **train_kw)
    run = dataclasses.replace(
        task.run,
        model=dataclasses.replace(task.run.model, pose_head_dim=13),
        loss=dataclasses.replace(task.run.loss, pose_weight=1.0),
    )
    return GSTTask(run, data["cache"], data["tok"])


def test_pose_readout_targets_learning_and_eval(data: dict, tmp_path: Path) -> None:
    from gst.geometry import normalized_relative_pose

    task = _pose_task(data, max_steps=25, checkpoint_every=25, warmup_steps=2)
    batch = task.batch(0, torch.Generator().manual_seed(0), 8)
    est = batch.task == TASK_EST
    assert batch.pose_target.shape == (8, 13) and torch.isfinite(batch.pose_target).all()
    # The target is the camera tokenizer's own parameter vector of the pair's true relative camera.
    rows = task.train_rows(0, 8)
    split, cam_tok = task.train_split, task.camera_tokenizer
    K = torch.from_numpy(split.K_tgt[rows]).double()
    w2c_rel = torch.from_numpy(split.w2c_rel[rows]).double()
    eye = torch.eye(4, dtype=torch.float64).expand(8, 4, 4)
    expected = cam_tok.camera_vector(K, normalized_relative_pose(eye, w2c_rel, cam_tok.config.pose_scale))
    torch.testing.assert_close(batch.pose_target, expected.float(), atol=1e-5, rtol=0)

    model = task.build_model()
    _, before = task.loss(model, batch, 0)
    assert before["est/pose_rows"] == float(est.sum()) > 0 and before["est/pose_huber"] > 0.0
    result = train(task, task.run.train, tmp_path / "run")
    trained = load_gst_model(result.checkpoint / "export")
    assert trained.config.pose_head_dim == 13 and trained.pose_head is not None
    _, after = task.loss(trained, batch, 0)
    assert after["est/pose_huber"] < 0.5 * before["est/pose_huber"]
    assert {"pose_head/rotation_err_median_deg", "pose/rotation_err_median_deg"} <= set(result.eval_metrics)
    assert 0.0 <= result.eval_metrics["pose_head/rotation_err_median_deg"] <= 180.0


def test_pose_readout_needs_a_head_of_the_right_size(data: dict) -> None:
    task = _task(data)
    run = dataclasses.replace(task.run, loss=dataclasses.replace(task.run.loss, pose_weight=1.0))
    with pytest.raises(ValueError, match="model.pose_head_dim=13"):
        GSTTask(run, data["cache"], data["tok"])
    model = task.build_model()  # no head: asking for its readout is an error, not a silent skip
    batch = task.batch(0, torch.Generator().manual_seed(0), 4)
    with pytest.raises(ValueError, match="no pose head"):
        model(
            batch.input_ids, batch.grid_pos, pose_positions=torch.ones_like(batch.input_ids, dtype=torch.bool)
        )


def test_codebook_code_init_makes_alike_codes_start_alike(data: dict) -> None:
    from gst.tokenizers.io import load_tokenizer

    task = _task(data)
    random_model = task.build_model()
    run = dataclasses.replace(task.run, code_init="codebook")
    model = GSTTask(run, data["cache"], data["tok"]).build_model()
    layout = model.layout
    before = random_model.lm.get_input_embeddings().weight.detach()
    after = model.lm.get_input_embeddings().weight.detach()
    img0, cam0 = layout.image_offset, layout.camera_offset
    # Text and special rows are untouched; every code row moved by the same norm (init_std * sqrt(D)).
    assert torch.equal(after[:img0], before[:img0])
    added = after[img0 : cam0 + layout.num_camera_codes] - before[img0 : cam0 + layout.num_camera_codes]
    torch.testing.assert_close(added[: layout.num_image_codes].norm(dim=1), torch.full((32,), 0.02 * 8.0))
    # The added image parts reproduce the codebook's cosine similarities exactly (orthonormal projection).
    codebook = load_tokenizer(data["tok"] / "image").quantizer.codebook_vectors()
    unit = codebook / codebook.norm(dim=1, keepdim=True)
    img = added[: layout.num_image_codes]
    img = img / img.norm(dim=1, keepdim=True)
    torch.testing.assert_close(img @ img.T, unit @ unit.T, atol=1e-5, rtol=0)
    # Image and camera parts live in orthogonal subspaces; the same seed gives the same model.
    assert float((added[: layout.num_image_codes] @ added[layout.num_image_codes :].T).abs().max()) < 1e-6
    again = GSTTask(run, data["cache"], data["tok"]).build_model()
    assert torch.equal(again.lm.get_input_embeddings().weight, after)
    with pytest.raises(ValueError, match="code_init must be"):
        dataclasses.replace(task.run, code_init="pca")
    with pytest.raises(ValueError, match="--init-from keeps"):
        dataclasses.replace(run, init_from="somewhere")


def test_cache_score_finds_the_model_of_every_folder_kind(tmp_path: Path) -> None:
    """`gst eval cache-score --model` takes an export, a training checkpoint, a run or an assembled
    checkpoint (assets/gst-tiny's layout), through the API's ``find_model_dir``, and names the folder
    when it is none of them."""
    from gst.api_checkpoint import find_model_dir

    export = tmp_path / "ckpt" / "export"
    export.mkdir(parents=True)
    (export / "gst_model.json").write_text("{}")
    assert find_model_dir(export) == export
    assert find_model_dir(tmp_path / "ckpt") == export
    assembled = tmp_path / "assembled"
    (assembled / "weights").mkdir(parents=True)
    (assembled / "weights" / "gst_model.json").write_text("{}")
    (assembled / "gst_checkpoint.json").write_text(
        json.dumps({"format": "gst-checkpoint", "model": "weights"})
    )
    assert find_model_dir(assembled) == assembled / "weights"
    with pytest.raises(FileNotFoundError, match="not a GST checkpoint: found neither gst_checkpoint.json"):
        find_model_dir(tmp_path)


def _reader_task(data: dict, **train_kw) -> GSTTask:
    from gst.model.config import ReaderConfig

    task = _pose_task(data, **train_kw)
    model = dataclasses.replace(
        task.run.model, reader=ReaderConfig(grid_hw=(4, 4), code_dim=8, channels=16, num_blocks=1)
    )
    seq = dataclasses.replace(task.run.sequence, stem_pairs=6, stem_warmup_steps=3)
    run = dataclasses.replace(task.run, model=model, sequence=seq, code_init="decoder")
    return GSTTask(run, data["cache"], data["tok"])


def test_reader_stem_warmup_then_joint_training(data: dict, tmp_path: Path) -> None:
    """Updates before sequence.stem_warmup_steps hold only reader pairs; later ones hold backbone rows
    and reader pairs; the reader starts from the image tokenizer's decoder-side code features; a run
    trains, exports and is read back with its pose head on the reader."""
    from gst.tokenizers.io import load_tokenizer
    from gst.training.code_init import decoder_code_features

    task = _reader_task(data, max_steps=6, checkpoint_every=6, warmup_steps=1)
    g = torch.Generator().manual_seed(0)
    warm, joint = task.batch(2, g, 8), task.batch(3, g, 8)
    assert warm.batch_size == 0 and warm.stem_codes.shape == (6, 2, 16) and warm.stem_pose.shape == (6, 13)
    assert joint.batch_size == 8 and joint.stem_codes.shape == (6, 2, 16)
    rows = task.stem_rows(2, 6)  # the pairs' own codes and camera vectors
    obs, tgt, _ = task.train_split.codes(rows)
    assert torch.equal(warm.stem_codes[:, 0], obs.reshape(6, -1).long())
    torch.testing.assert_close(warm.stem_pose, task.pose_targets(task.train_split, rows))
    model = task.build_model()
    image = load_tokenizer(task.cache.manifest["tokenizers"]["image"]["path"])
    torch.testing.assert_close(model.reader.code_feats.weight, decoder_code_features(image))
    loss, metrics = task.loss(model, warm, 0)
    assert set(metrics) == {"stem/pose_huber"}
    assert float(loss.detach()) == pytest.approx(metrics["stem/pose_huber"])
    result = train(task, task.run.train, tmp_path / "run")
    trained = load_gst_model(result.checkpoint / "export")
    assert trained.reader is not None and trained.has_pose_head and trained.pose_head is None
    assert 0.0 <= result.eval_metrics["pose_head/rotation_err_median_deg"] <= 180.0
    bad = dataclasses.replace(task.run, sequence=dataclasses.replace(task.run.sequence, stem_pairs=0))
    with pytest.raises(ValueError, match="stem_pairs"):
        GSTTask(bad, data["cache"], data["tok"])
