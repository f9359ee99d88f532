"""`gst data ...` commands of the procedural world: synth, summary, bench-render, cells.

Heavy modules (moderngl, the renderer) are imported inside the handlers so `gst --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _resolution(text: str) -> tuple[int, int]:
    """ "128" -> (128, 128); "96x128" -> (H, W) = (96, 128)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"resolution must be R or HxW in pixels, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"resolution must be R or HxW with sides >= 8, got {text!r}")
    return parts[0], parts[1]


def _synth(args: argparse.Namespace) -> int:
    from gst.data.synth.writer import SynthConfig, generate_dataset

    config = SynthConfig(
        num_scenes=args.num_scenes,
        views_per_scene=args.views_per_scene,
        image_hw=args.resolution,
        seed=args.seed,
        meshes_dir=str(args.meshes) if args.meshes else None,
        png_compress_level=args.png_compress_level,
    )
    counts = generate_dataset(config, Path(args.out), progress=not args.quiet)
    print(f"{args.out}: wrote {counts['written']} scenes, {counts['skipped']} already complete")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from gst.data.synth.summary import format_summary, summarize

    result = summarize(Path(args.dir))
    print(json.dumps(result, indent=1) if args.json else format_summary(result))
    return 0


def _bench_render(args: argparse.Namespace) -> int:
    from gst.data.synth.bench import bench_render, format_bench

    result = bench_render(
        tuple(args.resolutions),
        num_scenes=args.num_scenes,
        views_per_scene=args.views_per_scene,
        repeats=args.repeats,
        seed=args.seed,
    )
    print(json.dumps(result, indent=1) if args.json else format_bench(result))
    return 0


def _cells(args: argparse.Namespace) -> int:
    from gst.data.cell_labels import build_cell_labels
    from gst.data.token_cache import open_token_cache

    out = build_cell_labels(open_token_cache(args.cache), workers=args.workers, progress=not args.quiet)
    info = json.loads((out / "cells.json").read_text())
    for name, entry in info["splits"].items():
        print(f"{out}/{name}: {entry['num_scenes']} scenes x {entry['views']} views")
    return 0


def register_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="render a procedural dataset (scenes of primitives on a textured ground)",
        description="Render scenes to OUT/scene_XXXXX/ (images, depth, masks, transforms.json). "
        "Deterministic per (seed, scene index); re-running resumes, skipping complete scenes.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--num-scenes", type=int, required=True, help="scenes 0 .. N-1 (existing ones are skipped)"
    )
    p.add_argument("--views-per-scene", type=int, default=24, help="cameras per scene (default 24)")
    p.add_argument("--resolution", type=_resolution, default=(128, 128), help="R or HxW pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument(
        "--meshes",
        type=Path,
        default=None,
        help="folder of OBJ meshes, one per sub-folder (the sub-folder names the shape)",
    )
    p.add_argument("--png-compress-level", type=int, default=6, help="zlib level 0-9 (default 6)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)

    p = sub.add_parser(
        "summary",
        help="statistics of a folder of scenes",
        description="Counts, resolutions, objects, shapes, colours, camera ranges, disk size.",
    )
    p.add_argument("dir", type=Path, help="a folder of scene_XXXXX folders, or one scene folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_summary)

    p = sub.add_parser(
        "bench-render",
        help="procedural-world rendering throughput (views/s)",
        description="Views/s of primitive scenes, without and with PNG writing.",
    )
    p.add_argument(
        "--resolutions", type=int, nargs="+", default=[64, 128], help="square sizes (default 64 128)"
    )
    p.add_argument("--num-scenes", type=int, default=20, help="scenes per resolution (default 20)")
    p.add_argument("--views-per-scene", type=int, default=24, help="views per scene (default 24)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the best and the median are reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_bench_render)

    p = sub.add_parser(
        "cells",
        help="per-cell object labels of a token cache's views (the reader's cell-head targets)",
        description="For every view of the cache's scenes and every image-token cell: the object it "
        "shows, its shape and colour class, its centre in the camera frame, the cell's depth "
        "(gst.data.cell_labels). Written to CACHE/cells/.",
    )
    p.add_argument("--cache", required=True, type=Path, help="a token cache of `gst data cache`")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cells)
