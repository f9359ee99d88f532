"""Rendering throughput of the procedural world (``gst data bench-render``).

Two figures per resolution, on primitive scenes (no OBJ meshes), after one warm-up scene:

- ``render``: views/s of scene sampling + camera sampling + rendering RGB, depth, mask and the
  visibility pass, read back to numpy (what a training loop rendering on the fly would pay);
- ``write``: views/s of the whole ``write_scene`` path: the above plus PNG encoding of the three
  images per view, transforms.json, and the atomic rename (what ``gst data synth`` pays).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from gst.data.synth.writer import SynthConfig, render_scene, write_scene


def _cpu_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_avg_1m_at_start": load[0],
        "python": platform.python_version(),
    }


def _timed(fn, num_scenes: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds incl. llvmpipe's threads) of fn(i) for i < num_scenes."""
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(num_scenes):
        fn(i)
    return time.perf_counter() - w0, time.process_time() - c0


def bench_render(
    resolutions: tuple[int, ...] = (64, 128),
    *,
    num_scenes: int = 20,
    views_per_scene: int = 24,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure views/s per resolution (see the module docstring); best and median of ``repeats`` rounds.

    On a shared machine the best round is the least disturbed one; CPU seconds per view are reported
    too (all threads of this process), which other processes disturb less than wall time.
    """
    from gst.data.synth.render import Renderer

    if num_scenes < 1 or views_per_scene < 1 or repeats < 1:
        raise ValueError("bench_render: num_scenes, views_per_scene and repeats must be >= 1")
    result: dict[str, Any] = {
        "host": _cpu_info(),
        "num_scenes": num_scenes,
        "views_per_scene": views_per_scene,
        "repeats": repeats,
        "seed": seed,
        "resolutions": {},
    }
    renderer = Renderer()
    result["gl_renderer"] = renderer.ctx.info.get("GL_RENDERER", "?")
    views = num_scenes * views_per_scene
    for res in resolutions:
        config = SynthConfig(
            num_scenes=num_scenes, views_per_scene=views_per_scene, image_hw=(res, res), seed=seed
        )
        render_scene(renderer, config, num_scenes)  # warm-up: builds the atlas for this size
        rounds: dict[str, list[tuple[float, float]]] = {"render": [], "write": []}
        for _ in range(repeats):
            rounds["render"].append(_timed(partial(render_scene, renderer, config), num_scenes))
            with tempfile.TemporaryDirectory(prefix="gst_bench_") as tmp:
                rounds["write"].append(_timed(partial(write_scene, renderer, Path(tmp), config), num_scenes))
        entry: dict[str, float] = {"views_per_round": views}
        for kind, times in rounds.items():
            walls = sorted(t[0] for t in times)
            entry[f"{kind}_views_per_s"] = views / walls[0]
            entry[f"{kind}_views_per_s_median"] = views / walls[len(walls) // 2]
            entry[f"{kind}_cpu_ms_per_view"] = 1e3 * min(t[1] for t in times) / views
        result["resolutions"][f"{res}x{res}"] = entry
    renderer.release()
    return result


def format_bench(result: dict[str, Any]) -> str:
    lines = [
        f"renderer: {result['gl_renderer']}; {result['host']['cpu_count']} CPUs, "
        f"load {result['host']['load_avg_1m_at_start']:.2f}; {result['num_scenes']} scenes x "
        f"{result['views_per_scene']} views per round, best of {result['repeats']} rounds"
    ]
    for res, r in result["resolutions"].items():
        lines.append(
            f"{res}: render {r['render_views_per_s']:.0f} views/s "
            f"(median {r['render_views_per_s_median']:.0f}, "
            f"{r['render_cpu_ms_per_view']:.2f} CPU ms/view) without PNG; with PNG writing "
            f"{r['write_views_per_s']:.0f} views/s (median {r['write_views_per_s_median']:.0f}, "
            f"{r['write_cpu_ms_per_view']:.2f} CPU ms/view)"
        )
    return "\n".join(lines)
