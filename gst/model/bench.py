"""Benchmarks of the backbone: training step time and KV-cache vs recompute decoding speed.

Functions for ``gst bench`` (issue 7) and a small CLI:

    OMP_NUM_THREADS=1 .venv/bin/python -m gst.model.bench train-step --preset tiny --batch-size 32
    OMP_NUM_THREADS=1 .venv/bin/python -m gst.model.bench kv-cache --preset tiny --grid 16 --batch-size 1
    OMP_NUM_THREADS=1 .venv/bin/python -m gst.model.bench pose-latency --preset tiny --grid 8 --batch-size 1 \
        --camera-grids 8x8,4x4,4x2,2x2

Each prints one JSON object (machine, torch threads and settings included); train-step adds the
process's peak memory (``gst bench --only scale`` runs it once per configuration, in a fresh process).
Models are randomly initialised: timing does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

import torch

from gst.model.backbone import GSTModel, build_gst_model, describe
from gst.model.config import REQUIRED_SPECIAL_TOKENS, GSTModelConfig, TokenLayout, get_preset
from gst.model.loss import gst_loss
from gst.model.sampling import GREEDY, estimate_camera_tokens, generate_camera_and_image
from gst.model.sequences import SequenceConfig, collate_pose_batch


def bench_layout(
    num_text: int = 49152, num_image_codes: int = 1024, num_camera_codes: int = 1024
) -> TokenLayout:
    """A vocabulary of realistic size (49152: the SmolLM2 text tokenizer)."""
    return TokenLayout(
        num_text=num_text,
        special_tokens=REQUIRED_SPECIAL_TOKENS,
        num_image_codes=num_image_codes,
        num_camera_codes=num_camera_codes,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int = 1) -> list:
    """Wall seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones (CUDA synchronised)."""
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def benchmark_train_step(
    model: GSTModel,
    seq_cfg: SequenceConfig,
    *,
    batch_size: int,
    steps: int = 5,
    warmup: int = 2,
    seed: int = 0,
    autocast: torch.dtype | None = None,
    peak_flops: float | None = None,
) -> dict[str, float]:
    """Seconds per optimiser step (forward, backward, AdamW) on random gen/est batches (joint mixing).

    ``autocast``: run forward and loss under ``torch.autocast`` (fp32 weights, as accelerate's bf16).
    ``peak_flops``: the device's matmul peak (FLOP/s), to report model FLOPs utilisation (MFU) with
    ``train_flops_per_token``.
    """
    layout, device = model.layout, model.device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for step in range(warmup + steps):
        obs = torch.randint(0, layout.num_image_codes, (batch_size, seq_cfg.num_image_tokens), generator=g)
        tgt = torch.randint(0, layout.num_image_codes, (batch_size, seq_cfg.num_image_tokens), generator=g)
        cam = torch.randint(0, layout.num_camera_codes, (batch_size, seq_cfg.num_camera_tokens), generator=g)
        batch = collate_pose_batch(layout, seq_cfg, obs, tgt, cam, step=step, generator=g).to(device)
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss, _ = gst_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    step_s = sorted(times)[len(times) // 2]  # median: the machine is shared
    tokens = batch_size * seq_cfg.pose_seq_len
    flops = train_flops_per_token(model, seq_cfg.pose_seq_len) * tokens
    result = {
        "step_s_median": step_s,
        "step_s_min": min(times),
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / step_s,
        "batch_size": batch_size,
        "seq_len": seq_cfg.pose_seq_len,
        "model_tflop_per_step": flops / 1e12,
        "achieved_tflops": flops / step_s / 1e12,
    }
    if peak_flops:
        result["mfu"] = flops / step_s / peak_flops
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def train_flops_per_token(model: GSTModel, seq_len: int) -> float:
    """Model FLOPs of one training token (PaLM appendix B): 6 N for the transformer blocks plus
    12 L H hd T for attention scores and values. The (restricted) output head is left out."""
    cfg = model.lm.config
    n_block = sum(p.numel() for p in model.lm.base_model.layers.parameters())
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return 6.0 * n_block + 12.0 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * seq_len


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    """FLOP/s of an n^3 matrix product on ``device`` (mean of 10 after 3 warm-ups)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    _sync(device)
    return 10 * 2 * n**3 / (time.perf_counter() - start)


def benchmark_decode(
    model: GSTModel,
    seq_cfg: SequenceConfig,
    *,
    batch_size: int = 1,
    use_cache: bool = True,
    repeats: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Seconds for one greedy joint sample (camera then image) per condition, batch ``batch_size``."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, model.layout.num_image_codes, (batch_size, seq_cfg.num_image_tokens), generator=g)
    obs = obs + model.layout.image_offset
    times = time_call(
        lambda: generate_camera_and_image(model, obs, seq_cfg=seq_cfg, config=GREEDY, use_cache=use_cache),
        model.device,
        repeats=repeats,
        warmup=0,
    )
    seconds = min(times)
    new_tokens = seq_cfg.num_camera_tokens + seq_cfg.num_image_tokens
    return {
        "seconds": seconds,
        "generated_tokens": new_tokens,
        "batch_size": batch_size,
        "tokens_per_s": batch_size * new_tokens / seconds,
        "use_cache": use_cache,
    }


def benchmark_kv_cache(model: GSTModel, seq_cfg: SequenceConfig, *, batch_size: int = 1) -> dict[str, object]:
    """KV-cache and recompute decoding side by side (issue 7 target: >= 10x at 512 generated tokens)."""
    generate_camera_and_image(
        model,
        torch.full((batch_size, seq_cfg.num_image_tokens), model.layout.image_offset),
        seq_cfg=SequenceConfig(image_grid=seq_cfg.image_grid, camera_grid=(1, 1)),
    )  # warm-up
    cached = benchmark_decode(model, seq_cfg, batch_size=batch_size, use_cache=True, repeats=2)
    recomputed = benchmark_decode(model, seq_cfg, batch_size=batch_size, use_cache=False, repeats=1)
    return {"cached": cached, "recomputed": recomputed, "speedup": recomputed["seconds"] / cached["seconds"]}


def benchmark_pose_latency(
    model: GSTModel,
    image_grid: tuple[int, int],
    camera_grids: tuple[tuple[int, int], ...],
    *,
    batch_size: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Greedy ``estimate_camera_tokens`` latency (KV cache: prefill of both images, then one step per
    camera token) per camera grid (issue 7)."""
    g = torch.Generator().manual_seed(seed)
    num_image = image_grid[0] * image_grid[1]
    obs, tgt = (
        torch.randint(0, model.layout.num_image_codes, (batch_size, num_image), generator=g)
        + model.layout.image_offset
        for _ in range(2)
    )
    rows = []
    for grid in camera_grids:
        seq_cfg = SequenceConfig(image_grid=image_grid, camera_grid=grid)
        times = time_call(
            lambda seq_cfg=seq_cfg: estimate_camera_tokens(model, obs, tgt, seq_cfg=seq_cfg, config=GREEDY),
            model.device,
            repeats=repeats,
        )
        rows.append(
            {
                "camera_grid": list(grid),
                "camera_tokens": grid[0] * grid[1],
                "seconds": min(times),
                "batch_size": batch_size,
            }
        )
    return rows


def parse_grids(text: str) -> tuple[tuple[int, int], ...]:
    """``"8x8,4x2"`` -> ((8, 8), (4, 2)); errors name the bad entry."""
    grids = []
    for part in text.split(","):
        try:
            h, w = (int(x) for x in part.strip().lower().split("x"))
        except ValueError:
            raise ValueError(f"--camera-grids: {part!r} is not HxW (e.g. 4x2)") from None
        if h < 1 or w < 1:
            raise ValueError(f"--camera-grids: {part!r} must be at least 1x1")
        grids.append((h, w))
    return tuple(grids)


def current_rss_mib() -> float:
    """Resident memory of this process now (Linux ``/proc/self/statm``; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (a high-water mark: it never goes down)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str = "cpu") -> dict[str, object]:
    """Where a figure was taken: host, CPU model and cores, torch threads, GPU, torch version, UTC date."""
    device = torch.device(device)
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gst.model.bench", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["train-step", "kv-cache", "pose-latency"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--grid", type=int, default=8, help="image token grid side (h = w)")
    parser.add_argument("--camera-grid", type=int, default=None, help="camera grid side (default: --grid)")
    parser.add_argument(
        "--camera-grids",
        default=None,
        help="pose-latency: camera grids HxW, comma-separated (default: the grid, half, quarter and 2x2)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="training batch, or decoding conditions")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--num-text", type=int, default=49152)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights")
    parser.add_argument("--autocast", action="store_true", help="train-step: bf16 autocast over fp32 weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cam = args.camera_grid or args.grid
    seq_cfg = SequenceConfig(image_grid=(args.grid, args.grid), camera_grid=(cam, cam))
    with torch.device(args.device):  # initialise on the device: a 1.4B model initialises slowly on CPU
        model = build_gst_model(GSTModelConfig(backbone=get_preset(args.preset)), bench_layout(args.num_text))
    model = model.to(device=args.device, dtype=getattr(torch, args.dtype))
    info = {
        "what": args.what,
        "preset": args.preset,
        "seq_cfg": asdict(seq_cfg),
        "dtype": args.dtype,
        "autocast": args.autocast,
        "device": args.device,
        "model": {k: v for k, v in describe(model).items() if k != "backbone"},
        **environment(args.device),
    }
    if args.what == "train-step":
        peak = measure_matmul_peak(model.device) if model.device.type == "cuda" else None
        info["matmul_peak_tflops"] = peak / 1e12 if peak else None
        autocast = torch.bfloat16 if args.autocast else None
        rss_built = current_rss_mib()  # the process with the model built, before any step
        info["result"] = benchmark_train_step(
            model, seq_cfg, batch_size=args.batch_size, steps=args.steps, autocast=autocast, peak_flops=peak
        )
        # CPU: the whole process's high-water mark (this CLI runs one configuration per process).
        info["result"].update(rss_after_build_mib=rss_built, peak_rss_mib=peak_rss_mib())
    elif args.what == "kv-cache":
        with torch.no_grad():
            info["result"] = benchmark_kv_cache(model, seq_cfg, batch_size=args.batch_size)
    else:
        sides = tuple(dict.fromkeys(s for s in (args.grid, args.grid // 2, args.grid // 4, 2) if s >= 2))
        grids = parse_grids(args.camera_grids) if args.camera_grids else tuple((s, s) for s in sides)
        info["result"] = benchmark_pose_latency(model, seq_cfg.image_grid, grids, batch_size=args.batch_size)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
