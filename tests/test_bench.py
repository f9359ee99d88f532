"""`gst bench --quick` on the micro backbone: the JSON has every row's figure, memory and machine."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from test_api import make_checkpoint  # tests/ is on sys.path (pytest rootdir import)

from gst.cli import main

torch.set_num_threads(1)

ROW_KEYS = {"bench", "figure", "value", "unit", "details", "peak_rss_mib", "cpu", "cpu_count"}
ROW_KEYS |= {"torch_threads", "gpu", "torch", "date", "command"}


def _bench(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--preset", "micro", "--device", "cpu", "--json", str(out), *args])
    return code, json.loads(out.read_text())


def test_quick_bench_writes_positive_figures(tmp_path: Path, capsys) -> None:
    ckpt = make_checkpoint(tmp_path / "ckpt")
    code, result = _bench(
        tmp_path, "--only", "camera-tokenizer,train", "--only", "sample,api", "--checkpoint", str(ckpt)
    )
    assert code == 0
    rows = result["rows"]
    assert {r["bench"] for r in rows} == {"camera-tokenizer", "train", "sample", "api"}
    for row in rows:
        assert ROW_KEYS <= row.keys(), row
        assert row["value"] > 0 and row["peak_rss_mib"] > 0, row
        assert "--preset micro" in row["command"] and row["torch"] == torch.__version__
    by_figure = {r["figure"]: r for r in rows}
    assert by_figure["camera encode"]["details"]["weights"].startswith("fresh init")
    assert by_figure["train micro b4"]["unit"] == "tokens/s"
    samples = [r for r in rows if r["bench"] == "sample"]
    assert {(r["details"]["batch_size"], "kv-cache" in r["figure"]) for r in samples} == {
        (1, True),
        (1, False),
        (16, True),
        (16, False),
    }
    assert [r["figure"] for r in rows if r["bench"] == "api"] == [
        "estimate_pose",
        "synthesize_view",
        "answer_number mbr",
        "answer_coordinates box",
    ]
    table = capsys.readouterr().out
    assert "estimate_pose" in table and "tokens/s" in table


def test_missing_checkpoint_skips_api_rows(tmp_path: Path) -> None:
    code, result = _bench(tmp_path, "--only", "api", "--checkpoint", str(tmp_path / "nowhere"))
    assert code == 0
    assert [r["value"] for r in result["rows"]] == [None] * 4
    assert all("skipped" in r["details"]["note"] for r in result["rows"])


def test_unknown_bench_name_is_an_error(capsys) -> None:
    assert main(["bench", "--only", "nope"]) == 1
    assert "--only nope: choose from render" in capsys.readouterr().err


def test_api_rows_for_several_checkpoints_side_by_side(tmp_path: Path, capsys) -> None:
    a, b = make_checkpoint(tmp_path / "a"), make_checkpoint(tmp_path / "b")
    code, result = _bench(tmp_path, "--only", "api", "--checkpoint", str(a), "--checkpoint", str(b))
    assert code == 0
    rows = result["rows"]
    calls = ["estimate_pose", "synthesize_view", "answer_number mbr", "answer_coordinates box"]
    assert [(r["figure"], r["details"]["checkpoint"]) for r in rows] == [
        *[(c, str(a)) for c in calls],
        *[(c, str(b)) for c in calls],
    ]
    assert all(r["value"] > 0 and r["details"]["camera_grid"] == [4, 4] for r in rows)
    assert f"--checkpoint {a} --checkpoint {b}" in rows[0]["command"]
    assert "camera 4x4 tokens" in capsys.readouterr().out


def test_scale_rows_measure_each_configuration_in_its_own_process(tmp_path: Path) -> None:
    code, result = _bench(tmp_path, "--only", "scale")
    assert code == 0
    rows = result["rows"]
    assert [r["figure"] for r in rows] == ["scale micro grid 4", "scale micro grid 8"]
    for row, grid in zip(rows, (4, 8), strict=True):
        d = row["details"]
        assert row["unit"] == "s/step" and row["value"] > 0
        assert d["seq_len"] == 3 * grid * grid + 7 and d["image_px"] == 8 * grid and d["batch_size"] == 2
        assert d["process_peak_rss_mib"] >= d["process_rss_after_build_mib"] > 0
        assert d["params_m"] > d["embedding_params_m"] > 0 and d["precision"] == "fp32"


def test_pose_latency_per_camera_grid_and_grid_parsing() -> None:
    import pytest

    from gst.model.backbone import build_gst_model
    from gst.model.bench import bench_layout, benchmark_pose_latency, parse_grids
    from gst.model.config import GSTModelConfig, get_preset

    assert parse_grids("8x8, 4x2,2X2") == ((8, 8), (4, 2), (2, 2))
    for bad in ("8", "4x", "0x2"):
        with pytest.raises(ValueError, match="--camera-grids"):
            parse_grids(bad)
    torch.manual_seed(0)
    model = build_gst_model(GSTModelConfig(backbone=get_preset("micro")), bench_layout(384))
    rows = benchmark_pose_latency(model, (4, 4), ((4, 4), (4, 2), (1, 1)), repeats=1)
    assert [(r["camera_grid"], r["camera_tokens"]) for r in rows] == [([4, 4], 16), ([4, 2], 8), ([1, 1], 1)]
    assert all(r["seconds"] > 0 and r["batch_size"] == 1 for r in rows)
