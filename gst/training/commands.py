"""`gst train regressor`: the siamese CNN pose regressor, the learned baseline at equal compute.

Heavy modules are imported inside the handler so that `gst --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path


def regressor_command(args: argparse.Namespace) -> str:
    """The canonical command line of a run (recorded in its exports): the flags that shape it."""
    argv = ["gst", "train", "regressor", "--data", str(args.data), "--out", str(args.out)]
    argv += ["--preset", args.preset]
    if args.scenes is not None:
        argv += ["--scenes", str(args.scenes)]
    if args.minutes is not None:
        argv += ["--minutes", f"{args.minutes:g}"]
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    for item in args.set or []:
        argv += ["--set", item]
    if args.resume:
        argv.append("--resume")
    return shlex.join(argv)


def resolve_regressor_run(args: argparse.Namespace):
    """Preset -> the cache's image size and pose scale -> --set overrides -> --minutes / --max-steps."""
    from gst.data.token_cache import read_manifest
    from gst.training.overrides import apply_overrides
    from gst.training.regressor_task import get_regressor_preset, with_cache_geometry

    run = with_cache_geometry(get_regressor_preset(args.preset), read_manifest(args.data))
    run = apply_overrides(run, args.set or [])
    train = run.train
    if args.minutes is not None:
        train = dataclasses.replace(train, max_minutes=args.minutes)
    if args.max_steps is not None:
        train = dataclasses.replace(train, max_steps=args.max_steps)
    return dataclasses.replace(run, train=train)


def _train_regressor(args: argparse.Namespace) -> int:
    import time

    from gst.training.loop import train
    from gst.training.regressor import num_parameters
    from gst.training.regressor_task import RegressorTask

    run = resolve_regressor_run(args)
    if args.quiet:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, progress=False))
    start = time.perf_counter()
    pixels = args.pixels if args.pixels is not None else args.out / "pixels"
    task = RegressorTask(run, args.data, scenes=args.scenes, pixels=pixels, progress=not args.quiet)
    print(
        f"gst: {task.num_train} train pairs, {len(task.val_images)} val pairs, "
        f"{task.train_images.views.shape[0] + task.val_images.views.shape[0]} views in memory "
        f"({time.perf_counter() - start:.0f} s to load), "
        f"{num_parameters(task.build_model()):,} parameters",
        file=sys.stderr,
    )
    result = train(task, run.train, args.out, resume=args.resume, command=regressor_command(args))
    summary = {
        "step": result.step,
        "stopped_by": result.stopped_by,
        "wall_minutes": result.train_seconds / 60.0,
        "cpu_minutes": result.cpu_seconds / 60.0,
        "steps_per_second": len(result.losses) / max(result.train_seconds, 1e-9) if result.losses else None,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "regressor": str(Path(result.checkpoint) / "export") if result.checkpoint else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "eval": result.eval_metrics,
    }
    print(json.dumps(summary, indent=1))
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "regressor",
        help="train the siamese CNN pose regressor (the learned baseline) on a token cache's pairs",
        description="Train a siamese CNN that regresses the relative camera (6D rotation, translation, "
        "the target's intrinsics) of a cache's pairs from their pixels, through the one training loop. "
        "The views are decoded once into memory (kept in --pixels for later runs). --minutes N is a "
        "wall-clock budget beside --max-steps: the run stops at the first, checkpoints and exports "
        "(with its command and CPU-minutes in export/training.json). Score it with "
        "`gst eval pose --method regressor --regressor OUT`.",
    )
    p.add_argument("--data", required=True, type=Path, help="token cache folder (gst data cache --out)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints/, tensorboard/)")
    p.add_argument("--preset", default="small", help="micro | small (default, 1.25M parameters) | base")
    p.add_argument(
        "--scenes", type=Path, default=None, help="the scene folders (default: the cache's scenes_root)"
    )
    p.add_argument(
        "--pixels",
        type=Path,
        default=None,
        help="folder keeping the decoded 64x64 views across runs (default OUT/pixels)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="time budget (train.max_minutes): wall clock, or this process's CPU time with "
        "--set train.budget_clock=cpu (equal compute on a shared machine)",
    )
    p.add_argument("--max-steps", type=int, default=None, help="optimizer updates (overrides the preset)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="typed config override (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train_regressor)
