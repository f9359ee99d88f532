"""What `gst bench` measures and how much work each benchmark does (``QUICK``, ``FULL``); one result row."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


@dataclass(frozen=True, kw_only=True)
class BenchSizes:
    """How much work each benchmark does; ``QUICK`` for a fast check, ``FULL`` for published figures."""

    render_resolutions: tuple[int, ...]  # square image sizes
    render_scenes: int  # scenes per round (24 views each)
    render_repeats: int  # rounds; the best is reported
    tokenizer_batch: int  # images or cameras per encode/decode call
    train_batch: int  # sequences per optimiser step
    train_steps: int  # timed steps (median), after 2 warm-ups
    train_grid: int  # image and camera token grid side of training sequences (8: the tiny tokenizers)
    sample_grid: int  # image and camera grid side of sampling: 2 * side^2 generated tokens
    sample_batches: tuple[int, ...]  # conditions decoded at once
    repeats: int  # timed calls of the tokenizer and api benchmarks (best reported), after one warm-up
    # (preset, image grid side) training configurations of `scale`; the camera grid equals the image grid
    scale_points: tuple[tuple[str, int], ...]
    scale_batch: int  # sequences per step of `scale`
    scale_steps: int  # timed steps (median) of `scale`, after 2 warm-ups


FULL = BenchSizes(
    render_resolutions=(64, 128),
    render_scenes=20,
    render_repeats=3,
    tokenizer_batch=32,
    train_batch=32,
    train_steps=5,
    train_grid=8,
    sample_grid=16,
    sample_batches=(1, 16),
    repeats=5,
    # model size at grid 8 (64x64 images), then grid 16 and 32 (128 and 256 px) for tiny and small
    scale_points=(("micro", 8), ("tiny", 8), ("small", 8), ("tiny", 16), ("small", 16), ("tiny", 32)),
    scale_batch=8,
    scale_steps=3,
)
QUICK = replace(  # a check that everything runs, not figures
    FULL,
    render_resolutions=(64,),
    render_scenes=2,
    render_repeats=1,
    tokenizer_batch=4,
    train_batch=4,
    train_steps=2,
    sample_grid=4,
    repeats=1,
    scale_points=(("micro", 4), ("micro", 8)),
    scale_batch=2,
    scale_steps=1,
)


def bench_row(bench: str, figure: str, value: float | None, unit: str, **details: Any) -> dict[str, Any]:
    return {"bench": bench, "figure": figure, "value": value, "unit": unit, "details": details}


# ---- the benchmarks: each (args, sizes, device) -> rows ----
