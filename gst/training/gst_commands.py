"""`gst data cache` / `gst data chat-cache` (tokenize pairs / QA views once), `gst train gst` (the
backbone, optionally with chat rows: `--chat DIR --set sequence.chat_fraction=F`), `gst train gst-curves`.

Heavy modules are imported inside the handlers so that `gst --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

# ---- gst data cache ----


def _cache(args: argparse.Namespace) -> int:
    import numpy as np

    from gst.data.pairs import PairConfig, format_histogram
    from gst.data.token_cache import CacheConfig, build_token_cache

    config = CacheConfig(
        pairs_per_scene=args.pairs_per_scene,
        seed=args.seed,
        val_fraction=args.val_fraction,
        crop=args.crop,
        pairs=PairConfig(min_baseline_deg=args.min_baseline, max_baseline_deg=args.max_baseline),
    )
    manifest = build_token_cache(args.scenes, args.tokenizers, args.out, config, progress=not args.quiet)
    print(
        f"{args.out}: image grid {manifest['image_grid']}, camera grid {manifest['camera_grid']}, "
        f"images {manifest['image_hw']}"
    )
    for split, entry in manifest["splits"].items():
        stats = entry["baseline_deg"]
        print(
            f"  {split}: {entry['num_pairs']} pairs from {entry['num_scenes']} scenes "
            f"({entry['scenes_with_fewer_pairs']} with fewer than {args.pairs_per_scene})"
        )
        if stats["count"]:
            print(
                f"    baseline angle (deg): mean {stats['mean']:.1f}, median {stats['median']:.1f}, "
                f"p10 {stats['p10']:.1f}, p90 {stats['p90']:.1f}, "
                f"range [{stats['min']:.1f}, {stats['max']:.1f}]"
            )
            print(format_histogram(np.asarray(stats["hist_edges_deg"]), np.asarray(stats["hist_counts"])))
    return 0


def register_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="tokenize scene pairs once into a memory-mapped cache for `gst train gst`",
        description="Sample (observed, target) pairs per scene (gst.data.pairs), encode both images with "
        "the image tokenizer and the relative camera with the camera tokenizer, and write uint16 code "
        "arrays + true cameras + a manifest (tokenizer hashes) to OUT. Train/val split by scene name.",
    )
    p.add_argument("--scenes", required=True, type=Path, help="a folder of scene folders (or one scene)")
    p.add_argument("--tokenizers", required=True, type=Path, help="folder with image/ and camera/ tokenizers")
    p.add_argument("--out", required=True, type=Path, help="cache folder to create (must not exist)")
    p.add_argument("--pairs-per-scene", type=int, required=True, help="at most N ordered pairs per scene")
    p.add_argument("--seed", type=int, default=0, help="pair sampling seed (default 0)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="scenes hashing below this are val (default 0.1; 1 = a held-out set, all val)",
    )
    p.add_argument(
        "--min-baseline", type=float, default=10.0, help="min baseline angle, degrees (default 10)"
    )
    p.add_argument(
        "--max-baseline", type=float, default=90.0, help="max baseline angle, degrees (default 90)"
    )
    p.add_argument(
        "--crop",
        choices=("center_crop", "stretch"),
        default="center_crop",
        help="how views reach the tokenizer resolution (default center_crop)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cache)

    p = sub.add_parser(
        "chat-cache",
        help="tokenize the views of spatial QA records once, for `gst train gst --chat`",
        description="Encode every view that a QA record (from `gst data qa`) shows with the image "
        "tokenizer, as `gst data cache` does, and keep each record's question and canonical answer text "
        "(tokenized by the run's text tokenizer at training time). Train/val split as the QA file marks "
        "it; held-out phrasings are kept and marked (never trained on).",
    )
    p.add_argument("--qa", required=True, type=Path, help="QA JSONL from `gst data qa`")
    p.add_argument("--scenes", required=True, type=Path, help="the scene folders the questions came from")
    p.add_argument("--tokenizers", required=True, type=Path, help="folder with image/ and camera/ tokenizers")
    p.add_argument("--out", required=True, type=Path, help="chat cache folder to create (must not exist)")
    p.add_argument(
        "--crop",
        choices=("center_crop", "stretch"),
        default="center_crop",
        help="how views reach the tokenizer resolution (default center_crop, as gst.api)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_chat_cache)


def _chat_cache(args: argparse.Namespace) -> int:
    from gst.data.chat_cache import build_chat_cache

    manifest = build_chat_cache(
        args.qa, args.scenes, args.tokenizers, args.out, crop=args.crop, progress=not args.quiet
    )
    print(f"{args.out}: image grid {manifest['image_grid']}, images {manifest['image_hw']}")
    for split, entry in manifest["splits"].items():
        print(
            f"  {split}: {entry['num_records']} records ({entry['num_train_phrasing_records']} with "
            f"training phrasings), {entry['num_images']} views from {entry['num_scenes']} scenes"
        )
    return 0


# ---- gst train gst ----


def resolve_run_config(args: argparse.Namespace):
    """Preset -> --pretrained or --init-from -> the cache's grids -> --set overrides -> --max-steps."""
    from gst.data.token_cache import open_token_cache
    from gst.model import GSTModelConfig
    from gst.training.gst_task import get_run_preset, with_cache_grids
    from gst.training.overrides import apply_overrides

    run = get_run_preset(args.preset)
    if args.pretrained:
        run = dataclasses.replace(run, model=GSTModelConfig(pretrained=args.pretrained), text=args.pretrained)
    if getattr(args, "init_from", None):
        from gst.training.gst_init import with_initial_weights

        if args.pretrained:
            raise ValueError("give --pretrained (a language model) or --init-from (a GST model), not both")
        run = with_initial_weights(run, args.init_from)
    run = with_cache_grids(run, open_token_cache(args.data))
    run = apply_overrides(run, args.set or [])
    if args.max_steps is not None:
        run = dataclasses.replace(run, train=dataclasses.replace(run.train, max_steps=args.max_steps))
    return run


def _train_gst(args: argparse.Namespace) -> int:
    from gst.model.backbone import describe
    from gst.training.gst_task import GSTTask
    from gst.training.loop import train

    run = resolve_run_config(args)
    task = GSTTask(run, args.data, args.tokenizers, chat_dir=args.chat)
    info = describe(task.build_model())
    chat = ""
    if task.chat is not None:
        rows = task.num_chat_rows(run.train.batch_size)
        turns = run.sequence.chat_turns
        more = f", up to {turns} questions each" if turns > 1 else ""
        chat = f", {len(task.chat_pool)} chat records ({rows} rows/batch{more})"
    print(
        f"gst: {len(task.train_split)} train pairs{chat}, vocabulary {task.vocab.size} ids "
        f"(text {task.vocab.num_text}), {info['parameters']:,} parameters, task_mix {run.sequence.task_mix}",
        file=sys.stderr,
    )
    result = train(task, run.train, args.out, resume=args.resume)
    summary = {
        "step": result.step,
        "resumed_from": result.resumed_from,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "eval": result.eval_metrics,
    }
    print(json.dumps(summary, indent=1))
    return 0


# ---- gst train gst-curves ----


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of a run folder: {tag: [(step, value), ...]} sorted by step (the last
    write of a step wins, as a resumed run rewrites steps after its checkpoint)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = Path(run_dir) / "tensorboard"
    if not tb.is_dir():
        raise FileNotFoundError(f"{tb}: no TensorBoard folder; is {run_dir} a `gst train` --out folder?")
    out: dict[str, dict[int, float]] = {}
    for events in sorted(tb.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                out.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: sorted(values.items()) for tag, values in out.items()}


_CURVE_COLUMNS = (
    ("eval/loss", "val_loss"),
    ("eval/est/camera_acc", "val_est_cam_acc"),
    ("eval/est/camera_first_acc", "val_est_cam1_acc"),  # the first camera code: read from the images alone
    ("eval/gen/camera_acc", "val_gen_cam_acc"),
    ("eval/gen/image_acc", "val_gen_img_acc"),
    ("eval/pose/rotation_err_median_deg", "rot_err_med"),
    ("eval/pose/translation_dir_err_median_deg", "tdir_err_med"),
    ("eval/pose_head/rotation_err_median_deg", "head_rot_err_med"),  # models with a pose head
    ("eval/chat/token_acc", "val_chat_tok_acc"),
    ("eval/chat/exact", "val_chat_exact"),
)


def curve_table(scalars: dict[str, list[tuple[int, float]]]) -> list[dict[str, Any]]:
    """One row per evaluation step: train loss (mean of the logged updates since the previous evaluation),
    val metrics, and the median update time."""
    eval_steps = [s for s, _ in scalars.get("eval/loss", [])]
    train_loss = scalars.get("train/loss", [])
    step_time = scalars.get("train/step_time_s", [])
    rows, previous = [], 0
    for step in eval_steps:
        window = [v for s, v in train_loss if previous < s <= step]
        times = sorted(v for s, v in step_time if previous < s <= step)
        row: dict[str, Any] = {
            "step": step,
            "train_loss": sum(window) / len(window) if window else None,
            "step_time_s": times[len(times) // 2] if times else None,
        }
        for tag, name in _CURVE_COLUMNS:
            row[name] = dict(scalars.get(tag, [])).get(step)
        rows.append(row)
        previous = step
    return rows


def _format_table(name: str, rows: list[dict[str, Any]]) -> str:
    keys = ["step", "train_loss", *[n for _, n in _CURVE_COLUMNS], "step_time_s"]
    lines = [name, "  ".join(f"{k:>15}" for k in keys)]
    for row in rows:
        cells = [f"{row[k]:15.4g}" if isinstance(row[k], float) else f"{row[k]!s:>15}" for k in keys]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def plot_curves(tables: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Train/val loss, camera-token accuracy and pose error of several runs, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("train_loss", "train loss"),
        ("val_loss", "val loss"),
        ("val_est_cam_acc", "val est camera-token acc"),
        ("val_est_cam1_acc", "val est first camera code acc"),
        ("rot_err_med", "val rotation error, median (deg)"),
        ("head_rot_err_med", "val rotation error, pose head (deg)"),
        ("val_chat_exact", "val chat answers exact (teacher-forced)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name, rows in tables.items():
            pts = [(r["step"], r[key]) for r in rows if r[key] is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _curves(args: argparse.Namespace) -> int:
    tables = {Path(run).name: curve_table(read_scalars(run)) for run in args.runs}
    if args.json:
        print(json.dumps(tables, indent=1))
    else:
        print("\n\n".join(_format_table(name, rows) for name, rows in tables.items()))
    if args.plot:
        plot_curves(tables, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


# ---- gst eval cache-score ----


def score_on_cache(
    model_dir: str | Path,
    cache_dir: str | Path,
    tokenizers_dir: str | Path,
    *,
    split: str = "val",
    num_pairs: int = 1024,
    num_pose_pairs: int = 256,
    batch_size: int = 64,
    seed: int = 0,
    predictions: Path | None = None,
) -> dict[str, Any]:
    """Teacher-forced and greedy-pose metrics of a trained model on a cache split (see gst_task); with
    ``predictions``, also write the greedy poses in the evaluator's pose-prediction format."""
    from gst.api_checkpoint import find_model_dir
    from gst.data.token_cache import open_token_cache
    from gst.model import SequenceConfig, load_gst_model, read_gst_meta
    from gst.tokenizers.io import load_tokenizer
    from gst.training.gst_eval import eval_rows, predict_poses, score_poses, teacher_forced_metrics

    folder = find_model_dir(model_dir)
    cache = open_token_cache(cache_dir, tokenizers_dir=tokenizers_dir)
    extra = read_gst_meta(folder)["extra"]
    for kind, entry in cache.manifest["tokenizers"].items():
        if extra["tokenizers"][kind]["sha256"] != entry["sha256"]:
            raise ValueError(
                f"--model {folder} was trained with another {kind} tokenizer than the one "
                f"--data {cache_dir} was built with; use a cache built with the model's tokenizers"
            )
    model = load_gst_model(folder).eval()
    seq = SequenceConfig.from_dict(extra["sequence"])
    data = cache.split(split)
    if len(data) == 0:
        raise ValueError(f"--data {cache_dir}: split {split!r} is empty")
    rows = eval_rows(len(data), num_pairs, seed)
    metrics = teacher_forced_metrics(model, model.layout, seq, data, rows, batch_size=batch_size)
    rows = eval_rows(len(data), num_pose_pairs, seed)
    if len(rows):
        camera = load_tokenizer(cache.manifest["tokenizers"]["camera"]["path"])
        poses = predict_poses(model, model.layout, seq, data, rows, camera, batch_size=batch_size)
        metrics.update(score_poses(poses, data))
        if predictions is not None:
            K_orig = data.original_intrinsics(rows, poses.K_pred, tuple(cache.manifest["image_hw"]))
            write_pose_predictions(predictions, f"gst ({folder})", data, rows, poses.w2c_pred, K_orig)
    return {
        "model": str(folder.resolve()),
        "cache": str(Path(cache_dir).resolve()),
        "split": split,
        "num_pairs": min(num_pairs, len(data)),
        "num_pose_pairs": len(rows),
        "task_mix": seq.task_mix,
        "metrics": metrics,
    }


def write_pose_predictions(path: Path, method: str, split: Any, rows: Any, w2c_rel: Any, K_tgt: Any) -> None:
    """The evaluator's JSON pose-prediction format (``gst.eval.predictors``: "gst.pose_predictions.v1"),
    so `gst eval pose --predictions FILE` scores the model next to the baselines. Translations are in
    world units (the camera tokenizer's pose_scale is metric), so ``scale_known`` is true.

    Shapes: ``split`` a CacheSplit, rows (n,), w2c_rel (n, 4, 4), K_tgt (n, 3, 3) at the scenes' sizes."""
    keys = split.pair_keys(rows)
    entries = [
        {
            "scene": scene,
            "obs": obs,
            "tgt": tgt,
            "w2c_rel": w2c_rel[i].tolist(),
            "K_tgt": K_tgt[i].tolist(),
            "failed": False,
        }
        for i, (scene, obs, tgt) in enumerate(keys)
    ]
    doc = {"format": "gst.pose_predictions.v1", "method": method, "scale_known": True, "predictions": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) + "\n")


def _cache_score(args: argparse.Namespace) -> int:
    result = score_on_cache(
        args.model,
        args.data,
        args.tokenizers,
        split=args.split,
        num_pairs=args.num_pairs,
        num_pose_pairs=args.num_pose_pairs,
        batch_size=args.batch_size,
        seed=args.seed,
        predictions=args.predictions,
    )
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache-score",
        help="score a `gst train gst` model on a token cache (teacher-forced CE/accuracy, greedy pose error)",
        description="Teacher-forced loss, cross-entropy and top-1 accuracy of gen and est rows, and the "
        "rotation / translation-direction error of greedy est decoding decoded by the camera tokenizer, "
        "on a fixed random subset of a cache split (e.g. a held-out cache built with --val-fraction 1).",
    )
    p.add_argument("--model", required=True, type=Path, help="run folder, checkpoint folder or model export")
    p.add_argument("--data", required=True, type=Path, help="token cache folder")
    p.add_argument("--tokenizers", required=True, type=Path, help="folder with image/ and camera/ tokenizers")
    p.add_argument("--split", default="val", choices=("train", "val"), help="cache split (default val)")
    p.add_argument("--num-pairs", type=int, default=1024, help="pairs scored teacher-forced (default 1024)")
    p.add_argument("--num-pose-pairs", type=int, default=256, help="pairs decoded greedily (default 256)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="which random subset of pairs (default 0)")
    p.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="write the greedy poses as a `gst eval pose --predictions` file (K at the scenes' size)",
    )
    p.set_defaults(func=_cache_score)


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gst",
        help="train the GST backbone on a token cache (gen/est layouts, joint or alternate)",
        description="Train the GST backbone through the one training loop on a cache made by `gst data "
        "cache`. --tokenizers must hold the tokenizers the cache was built with (checked by hash). "
        "Overrides: --set sequence.task_mix=joint|alternate, --set train.lr=1e-3, "
        "--set model.backbone.num_layers=4, --set eval.num_pose_pairs=0, ...; with --chat DIR, "
        "--set sequence.chat_fraction=0.25 mixes that share of spatial QA chat rows into each batch.",
    )
    p.add_argument("--preset", required=True, help="micro | tiny | small | base")
    p.add_argument("--data", required=True, type=Path, help="token cache folder (gst data cache --out)")
    p.add_argument("--tokenizers", required=True, type=Path, help="folder with image/ and camera/ tokenizers")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints/, tensorboard/)")
    p.add_argument(
        "--chat",
        type=Path,
        default=None,
        help="chat cache (gst data chat-cache --out): mix spatial QA rows into every batch; needs "
        "--set sequence.chat_fraction=F (e.g. 0.25)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer updates (overrides the preset)")
    p.add_argument(
        "--pretrained",
        default=None,
        help="start from a local LM (HF dir, .gguf, or smollm2-135m-instruct) instead of the "
        "preset's backbone; also its text tokenizer",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="fine-tune a trained GST checkpoint (e.g. assets/gst-tiny): its backbone and weights, a "
        "fresh optimiser and schedule; the cache must use its tokenizers",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="typed config override (repeatable)")
    p.set_defaults(func=_train_gst)

    p = sub.add_parser(
        "gst-curves",
        help="training curves of `gst train gst` runs (table, optional PNG)",
        description="Read the TensorBoard scalars of run folders: train loss, val loss, camera-token "
        "accuracy and greedy-pose error at every evaluation step.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders (gst train gst --out)")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG with one panel per metric")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_curves)
