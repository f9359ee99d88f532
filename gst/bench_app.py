"""`gst bench` rows of the whole application: ``api`` (end-to-end latency of the public calls on the
example images, per checkpoint) and ``scale`` (training step time and peak memory against model size and
token grid, each configuration in a fresh process). The harness is ``gst.bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gst.bench_sizes import EXAMPLES, BenchSizes, bench_row

if TYPE_CHECKING:  # torch is imported lazily: `gst --help` stays fast
    import torch


def bench_api_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list[dict]:
    from gst.api import DEFAULT_CHECKPOINT

    return [r for path in args.checkpoint or [DEFAULT_CHECKPOINT] for r in _api_rows(path, sizes, device)]


API_CALLS = ("estimate_pose", "synthesize_view", "answer_number mbr", "answer_coordinates box")


def _api_rows(path: Path, sizes: BenchSizes, device: torch.device) -> list[dict]:
    from gst.api import GST, orbit_camera
    from gst.model.bench import time_call

    if not Path(path).exists():
        note = f"skipped: no checkpoint at {path}; pass --checkpoint DIR"
        return [bench_row("api", name, None, "s", note=note) for name in API_CALLS]
    gst = GST.from_pretrained(path, device=device)
    a, b = EXAMPLES / "view_a.png", EXAMPLES / "view_b.png"
    calls = {
        "estimate_pose": lambda: gst.estimate_pose(a, b),
        "synthesize_view": lambda: gst.synthesize_view(a, orbit_camera(30.0, 10.0), seed=0),
        # spatial QA as `gst eval qa --numbers mbr` answers it: a number by minimum Bayes risk over
        # the metre grid, a 3D box coordinate by coordinate (6 grids)
        "answer_number mbr": lambda: gst.answer_number(
            "How far is the nearest object from the camera, in metres?", [a], "m", 2, decoding="mbr"
        ),
        "answer_coordinates box": lambda: gst.answer_coordinates(
            "Give the 3D bounding box of the largest object in the camera frame.", [a], "box"
        ),
    }
    assert tuple(calls) == API_CALLS
    rows = []
    for name, fn in calls.items():
        seconds = min(time_call(fn, device, repeats=sizes.repeats))
        rows.append(
            bench_row(
                "api",
                name,
                seconds,
                "s",
                checkpoint=str(path),
                image_grid=list(gst.sequence.image_grid),
                camera_grid=list(gst.sequence.camera_grid),
                image_hw=list(gst.image_hw),
            )
        )
    return rows


def bench_scale_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list[dict]:
    """One training configuration per fresh process: step time and that process's peak memory."""
    import subprocess

    rows = []
    for preset, grid in sizes.scale_points:
        cmd = [sys.executable, "-m", "gst.model.bench", "train-step", "--preset", preset, "--grid", str(grid)]
        cmd += ["--batch-size", str(sizes.scale_batch), "--steps", str(sizes.scale_steps)]
        cmd += ["--device", str(device), "--num-text", str(args.num_text)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if device.type == "cuda":
            cmd.append("--autocast")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} failed: {done.stderr.strip().splitlines()[-1:]}")
        info = json.loads(done.stdout)
        r = info["result"]
        memory = {"peak_cuda_gib": r["peak_memory_gib"]} if "peak_memory_gib" in r else {}
        rows.append(
            bench_row(
                "scale",
                f"scale {preset} grid {grid}",
                r["step_s_median"],
                "s/step",
                preset=preset,
                image_grid=grid,
                image_px=8 * grid,  # the tokenizers downsample by 8
                params_m=info["model"]["parameters"] / 1e6,
                embedding_params_m=info["model"]["embedding_parameters"] / 1e6,
                seq_len=r["seq_len"],
                batch_size=r["batch_size"],
                tokens_per_s=r["tokens_per_s"],
                model_tflop_per_step=r["model_tflop_per_step"],
                process_peak_rss_mib=r["peak_rss_mib"],
                process_rss_after_build_mib=r["rss_after_build_mib"],
                precision="bf16 autocast" if device.type == "cuda" else "fp32",
                **memory,
            )
        )
    return rows
