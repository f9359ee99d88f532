"""`gst bench`: the speed figures of issue 7 in one run, printed as a table and written as JSON.

Benchmarks (``--only`` picks some; each gives one or more rows):

- ``render``: procedural-world views/s, without and with PNG writing (``gst.data.synth.bench``);
- ``image-tokenizer``, ``camera-tokenizer``: encode and decode images (cameras) per second, tiny preset
  configs (``gst.training.tokenizer_config``) with fresh weights, or the exports in ``--tokenizers DIR``
  (``DIR/image``, ``DIR/camera``); speed does not depend on the weights and each row says which it used;
- ``train``: GST training tokens/s (forward, backward, AdamW; ``gst.model.bench``); on CUDA in bf16
  autocast with model FLOPs utilisation against a measured bf16 matmul peak;
- ``sample``: greedy joint-sampling tokens/s at batch 1 and 16, KV cache vs recomputing the prefix, at
  2 x grid^2 generated tokens (512 for the default 16x16 grids);
- ``api``: end-to-end latency of ``GST.estimate_pose`` and ``GST.synthesize_view`` on the example images,
  from each ``--checkpoint`` (repeatable: checkpoints with different camera grids side by side; default
  assets/gst-tiny; skipped with a note when absent);
- ``scale``: training step time and peak memory against model size (presets) and token grid (image
  resolution / 8), each configuration in a fresh process (``python -m gst.model.bench train-step``) so
  that its peak memory is its own.

Backbone models are randomly initialised (``--preset``). Every row records the machine (CPU model, cores,
torch threads, GPU), the UTC date, the torch version, the command, and peak memory: on CUDA
``torch.cuda.max_memory_allocated`` during that benchmark; on CPU the process's peak RSS so far
(``resource.getrusage``, a high-water mark that never goes down, so later rows include earlier ones).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gst.bench_app import bench_api_rows, bench_scale_rows
from gst.bench_sizes import FULL, QUICK, BenchSizes, bench_row

if TYPE_CHECKING:  # torch is imported lazily: `gst --help` stays fast
    import torch

BENCHES = ("render", "image-tokenizer", "camera-tokenizer", "train", "sample", "api", "scale")


# ---- the benchmarks: each (args, sizes, device) -> rows (api and scale: gst.bench_app) ----
def bench_render_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list[dict]:
    from gst.data.synth.bench import bench_render

    r = bench_render(sizes.render_resolutions, num_scenes=sizes.render_scenes, repeats=sizes.render_repeats)
    rows = []
    common = {"renderer": r["gl_renderer"], "views_per_round": r["num_scenes"] * r["views_per_scene"]}
    for res, e in r["resolutions"].items():
        for kind, label in (("render", "render"), ("write", "render + write PNG")):
            rows.append(
                bench_row(
                    "render",
                    f"{label} {res}",
                    e[f"{kind}_views_per_s"],
                    "views/s",
                    median_views_per_s=e[f"{kind}_views_per_s_median"],
                    cpu_ms_per_view=e[f"{kind}_cpu_ms_per_view"],
                    rounds=r["repeats"],
                    **common,
                )
            )
    return rows


def _tokenizer(kind: str, tokenizers: Path | None, device: torch.device) -> tuple[torch.nn.Module, str]:
    """(tokenizer in eval mode, where its weights came from): ``tokenizers/kind`` or a fresh tiny preset."""
    import torch

    from gst.tokenizers.io import load_tokenizer

    if tokenizers is not None and (tokenizers / kind).exists():
        return load_tokenizer(tokenizers / kind, device=device), f"checkpoint {tokenizers / kind}"
    from gst.tokenizers.camera import CameraTokenizer
    from gst.tokenizers.image import ImageTokenizer
    from gst.training.tokenizer_config import get_preset

    cls = ImageTokenizer if kind == "image" else CameraTokenizer
    config = get_preset(kind, "tiny").model
    config = replace(config, quantizer=replace(config.quantizer, kmeans_init=False))  # no k-means on call 1
    torch.manual_seed(0)
    model = cls(config).to(device).eval()
    missing = f" (no {tokenizers / kind})" if tokenizers is not None else ""
    return model, f"fresh init, tiny preset{missing}"


def _throughput_rows(
    bench: str,
    unit: str,
    calls: dict[str, Callable[[], object]],
    batch: int,
    device: torch.device,
    repeats: int,
    **details: Any,
) -> list[dict]:
    import torch

    from gst.model.bench import time_call

    rows = []
    for figure, fn in calls.items():
        with torch.inference_mode():
            seconds = min(time_call(fn, device, repeats=repeats))
        rows.append(
            bench_row(bench, figure, batch / seconds, unit, batch=batch, seconds_per_batch=seconds, **details)
        )
    return rows


def bench_image_tokenizer_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list:
    import torch

    tok, weights = _tokenizer("image", args.tokenizers, device)
    B, (H, W) = sizes.tokenizer_batch, tok.config.image_hw
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(B, 3, H, W, generator=g) * 2 - 1).to(device)  # (B, 3, H, W) in [-1, 1]
    codes = torch.randint(0, tok.num_codes, (B, *tok.grid_hw), generator=g).to(device)  # (B, h, w)
    calls = {"image encode": lambda: tok.encode(images), "image decode": lambda: tok.decode(codes)}
    return _throughput_rows(
        "image-tokenizer",
        "images/s",
        calls,
        B,
        device,
        sizes.repeats,
        weights=weights,
        image_hw=[H, W],
        grid_hw=list(tok.grid_hw),
    )


def bench_camera_tokenizer_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list:
    import torch

    from gst.data.synth.cameras import sample_cameras

    tok, weights = _tokenizer("camera", args.tokenizers, device)
    B = sizes.tokenizer_batch
    K, w2c = sample_cameras(torch.Generator().manual_seed(0), 2 * B, tok.config.image_hw)
    K, w2c = K.to(device), w2c.to(device)  # (2B, 3, 3), (2B, 4, 4): B observed then B target cameras
    codes = tok.encode_cameras(K[B:], w2c[:B], w2c[B:])  # (B, h, w): decode real codes
    calls = {
        "camera encode": lambda: tok.encode_cameras(K[B:], w2c[:B], w2c[B:]),
        "camera decode": lambda: tok.decode_cameras(codes),
    }
    return _throughput_rows(
        "camera-tokenizer",
        "cameras/s",
        calls,
        B,
        device,
        sizes.repeats,
        weights=weights,
        grid_hw=list(tok.grid_hw),
        ray_hw=list(tok.config.ray_hw),
    )


def _backbone(args: argparse.Namespace, device: torch.device):
    import torch

    from gst.model.backbone import build_gst_model
    from gst.model.bench import bench_layout
    from gst.model.config import GSTModelConfig, get_preset

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: large presets initialise slowly on CPU
        return build_gst_model(GSTModelConfig(backbone=get_preset(args.preset)), bench_layout(args.num_text))


def _model_details(args: argparse.Namespace, model) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    return {"preset": args.preset, "params_m": params / 1e6, "num_text": args.num_text}


def bench_train_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list[dict]:
    import torch

    from gst.model.bench import benchmark_train_step, measure_matmul_peak
    from gst.model.sequences import SequenceConfig

    model = _backbone(args, device)
    grid = (sizes.train_grid, sizes.train_grid)
    seq_cfg = SequenceConfig(image_grid=grid, camera_grid=grid)
    cuda = device.type == "cuda"
    peak = measure_matmul_peak(device) if cuda else None
    r = benchmark_train_step(
        model,
        seq_cfg,
        batch_size=sizes.train_batch,
        steps=sizes.train_steps,
        autocast=torch.bfloat16 if cuda else None,
        peak_flops=peak,
    )
    r.pop("peak_memory_gib", None)  # the harness measures memory for every row
    details = {**_model_details(args, model), **r, "precision": "bf16 autocast" if cuda else "fp32"}
    if peak:
        details["matmul_peak_tflops"] = peak / 1e12
    return [
        bench_row(
            "train", f"train {args.preset} b{sizes.train_batch}", r["tokens_per_s"], "tokens/s", **details
        )
    ]


def bench_sample_rows(args: argparse.Namespace, sizes: BenchSizes, device: torch.device) -> list[dict]:
    import torch

    from gst.model.bench import benchmark_kv_cache
    from gst.model.sequences import SequenceConfig

    model = _backbone(args, device)
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    grid = (sizes.sample_grid, sizes.sample_grid)
    seq_cfg = SequenceConfig(image_grid=grid, camera_grid=grid)
    details = {**_model_details(args, model), "dtype": str(next(model.parameters()).dtype)}
    rows = []
    for batch in sizes.sample_batches:
        with torch.no_grad():
            r = benchmark_kv_cache(model, seq_cfg, batch_size=batch)
        for key, label in (("cached", "kv-cache"), ("recomputed", "recompute")):
            d = r[key]
            rows.append(
                bench_row(
                    "sample",
                    f"sample b{batch} {label} {d['generated_tokens']} tok",
                    d["tokens_per_s"],
                    "tokens/s",
                    seconds=d["seconds"],
                    batch_size=batch,
                    generated_tokens=d["generated_tokens"],
                    kv_cache_speedup=r["speedup"],
                    **details,
                )
            )
    return rows


RUNNERS: dict[str, Callable[[argparse.Namespace, BenchSizes, torch.device], list[dict]]] = {
    "render": bench_render_rows,
    "image-tokenizer": bench_image_tokenizer_rows,
    "camera-tokenizer": bench_camera_tokenizer_rows,
    "train": bench_train_rows,
    "sample": bench_sample_rows,
    "api": bench_api_rows,
    "scale": bench_scale_rows,
}


# ---- the harness ----
def _peak_memory_mib(device: torch.device) -> dict[str, float]:
    import torch

    from gst.model.bench import peak_rss_mib

    out = {"peak_rss_mib": peak_rss_mib()}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _selected(only: list[str] | None) -> list[str]:
    names = [n.strip() for item in only or [] for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        raise ValueError(f"--only {','.join(unknown)}: choose from {', '.join(BENCHES)}")
    return [n for n in BENCHES if n in names] if names else list(BENCHES)


def command_line(args: argparse.Namespace, device: torch.device) -> str:
    """The command that reproduces this run, in canonical form (OMP_NUM_THREADS included when set)."""
    parts = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    parts += ["gst", "bench", "--preset", args.preset, "--device", str(device)]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts += ["--only", ",".join(_selected(args.only))]
    for flag, value in (
        ("--threads", args.threads),
        ("--num-text", args.num_text if args.num_text != 49152 else None),
        ("--tokenizers", args.tokenizers),
        ("--json", args.json),
    ):
        if value is not None:
            parts += [flag, str(value)]
    for path in args.checkpoint or []:
        parts += ["--checkpoint", str(path)]
    return " ".join(parts)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the selected benchmarks; a failing one gives a row with its error and the others still run."""
    import torch

    from gst.model.bench import environment

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    sizes = QUICK if args.quick else FULL
    env = {**environment(device), "command": command_line(args, device)}
    rows = []
    for name in _selected(args.only):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        load = {"load_avg_1m_at_start": os.getloadavg()[0]} if hasattr(os, "getloadavg") else {}
        try:
            new = RUNNERS[name](args, sizes, device)
        except Exception as err:  # reported in its row; the other benchmarks still run
            traceback.print_exc(file=sys.stderr)
            new = [bench_row(name, name, None, "", error=f"{type(err).__name__}: {err}")]
        memory = _peak_memory_mib(device)
        rows += [{**row, **memory, **load, **env} for row in new]
    return {"environment": env, "sizes": asdict(sizes), "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    env = result["environment"]
    memory_label = "CUDA MiB" if env["gpu"] else "RSS MiB"  # peak allocated on the GPU, or peak process RSS
    lines = [
        f"{env['date']}  torch {env['torch']}  CPU {env['cpu']} ({env['cpu_count']} cores, "
        f"{env['torch_threads']} torch threads)  GPU {env['gpu'] or 'none'}",
        f"command: {env['command']}",
        "",
        f"{'bench':<17} {'figure':<34} {'value':>11} {'unit':<9} {memory_label:>9}  notes",
    ]
    for row in result["rows"]:
        d = row["details"]
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        memory = row.get("peak_cuda_mib", row["peak_rss_mib"])
        notes = d.get("error") or d.get("note") or d.get("weights") or ""
        if "kv_cache_speedup" in d:
            notes = f"kv-cache speedup {d['kv_cache_speedup']:.1f}x"
        if row["bench"] == "api" and "camera_grid" in d:
            notes = f"camera {d['camera_grid'][0]}x{d['camera_grid'][1]} tokens, {d['checkpoint']}"
        if row["bench"] == "scale" and "seq_len" in d:
            notes = f"{d['params_m']:.1f}M params, seq {d['seq_len']}, batch {d['batch_size']}"
            peak_gib = d.get("peak_cuda_gib", d["process_peak_rss_mib"] / 1024)
            notes += f", {d['precision']}, process peak {peak_gib:.2f} GiB"
        if row["bench"] == "train" and "seq_len" in d:
            notes = f"seq {d['seq_len']}, {d['precision']}"
            if "mfu" in d:
                notes += f", MFU {100 * d['mfu']:.1f}% of {d['matmul_peak_tflops']:.0f} TFLOP/s"
        lines.append(
            f"{row['bench']:<17} {row['figure']:<34} {value:>11} {row['unit']:<9} {memory:>9.0f}  {notes}"
        )
    return "\n".join(lines)


def _bench(args: argparse.Namespace) -> int:
    result = run_bench(args)
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 1 if any("error" in row["details"] for row in result["rows"]) else 0


def register_top(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="speed benchmarks: rendering, tokenizers, training, sampling, api latency (issue 7)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--only", action="append", metavar="NAME", help=f"comma-separated subset of {','.join(BENCHES)}"
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes: a check that everything runs, not figures"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--preset", default="tiny", help="backbone preset of train and sample (default tiny)")
    p.add_argument("--num-text", type=int, default=49152, help="text vocabulary size (default: SmolLM2's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS)")
    p.add_argument(
        "--tokenizers", type=Path, metavar="DIR", help="DIR/image, DIR/camera exports (default fresh)"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        metavar="DIR",
        help="GST checkpoint for api, repeatable (default assets/gst-tiny)",
    )
    p.set_defaults(func=_bench)
