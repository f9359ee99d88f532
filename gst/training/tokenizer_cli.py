"""Handlers of ``gst train tokenizer`` and ``gst eval tokenizer`` (parsers: ``gst.tokenizers.commands``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from gst.hashing import file_sha256


def _build_run(args: argparse.Namespace):
    from gst.training.overrides import apply_overrides
    from gst.training.tokenizer_config import get_preset

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    return apply_overrides(get_preset(args.kind, args.preset), overrides)


def train_tokenizer(args: argparse.Namespace) -> int:
    from gst.training.loop import train

    run = _build_run(args)
    if args.kind == "image":
        from gst.training.image_task import ImageTokenizerTask, load_perceptual

        if args.data is None:
            raise ValueError(
                "--data DIR is required for --kind image (a folder of scenes, e.g. from `gst data synth`)"
            )
        perceptual, source = load_perceptual(run.loss.perceptual_weight, args.lpips_weights)
        task = ImageTokenizerTask(run, args.data, perceptual=perceptual, perceptual_source=source)
    else:
        from gst.training.camera_task import CameraTokenizerTask

        if args.data is not None:
            print(
                "gst: notice: the camera tokenizer trains on random camera pairs; --data is not used "
                "(evaluate on scenes with `gst eval tokenizer --data`)",
                file=sys.stderr,
            )
        task = CameraTokenizerTask(run)
    result = train(task, run.train, args.out, resume=args.resume)
    summary = {
        "step": result.step,
        "checkpoint": str(result.checkpoint),
        "tokenizer": str(Path(result.checkpoint) / "export") if result.checkpoint else None,
        "last_train_metrics": result.last_metrics,
        "eval": result.eval_metrics,
    }
    from accelerate import PartialState

    if PartialState().is_main_process:  # one summary, also under torchrun / accelerate launch
        print(json.dumps(summary, indent=2))
    return 0


def _image_report(model, args: argparse.Namespace) -> dict[str, Any]:
    from gst.training.image_data import load_image_splits
    from gst.training.tokenizer_config import ImageDataConfig
    from gst.training.tokenizer_eval import evaluate_image_tokenizer

    if args.data is None:
        raise ValueError("--data DIR is required to evaluate an image tokenizer (a folder of scenes)")
    val_fraction = float(model.metadata.get("data", {}).get("val_fraction", 0.1))
    train_images, val_images, info = load_image_splits(
        args.data, model.config.image_hw, ImageDataConfig(val_fraction=val_fraction)
    )
    splits = {"val": val_images, "train": train_images, "all": torch.cat([train_images, val_images])}
    images = splits[args.split]
    if images.shape[0] == 0:
        raise ValueError(f"--data {args.data}: the {args.split} split holds no images; try --split all")
    if args.max_images:
        images = images[: args.max_images]
    report = evaluate_image_tokenizer(model, images)
    return {**report, "data": {**info, "split": args.split}}


def _scene_pairs(model, args: argparse.Namespace, num_pairs: int, seed: int):
    """Pairs of the chosen split's scenes: (K_tgt at the model's image_hw, w2c_rel), float64."""
    from gst.data.loaders import load_scene
    from gst.data.pairs import sample_pairs, scene_split
    from gst.data.views import crop_resize_intrinsics
    from gst.geometry import relative_w2c
    from gst.training.image_data import find_scene_dirs

    paths = find_scene_dirs(args.data)
    if len(paths) > 1 and args.split != "all":
        paths = [p for p in paths if scene_split(p.name) == args.split]
    scenes = [load_scene(p, None if (p / "transforms.json").is_file() else "all") for p in paths]
    if not scenes:
        raise ValueError(f"--data {args.data}: no {args.split} scenes; try --split all")
    pairs = sample_pairs(scenes, num_pairs, seed, allow_fewer=True)
    K = torch.stack(
        [
            crop_resize_intrinsics(
                scenes[p.scene_index].K[p.tgt], scenes[p.scene_index].image_hw, model.config.image_hw
            )
            for p in pairs
        ]
    )
    w2c = torch.stack(
        [relative_w2c(scenes[p.scene_index].w2c[p.obs], scenes[p.scene_index].w2c[p.tgt]) for p in pairs]
    )
    info = {
        "root": str(Path(args.data).resolve()),
        "num_scenes": len(scenes),
        "split": args.split,
        "pairs": "gst.data.pairs.sample_pairs (default PairConfig)",
    }
    return K.double(), w2c.double(), info


def _camera_report(model, args: argparse.Namespace) -> dict[str, Any]:
    from gst.tokenizers.config import config_from_dict, config_to_dict
    from gst.training.camera_task import sample_relative_cameras
    from gst.training.tokenizer_config import CameraDataConfig
    from gst.training.tokenizer_eval import evaluate_camera_tokenizer

    data_meta = model.metadata.get("data", {})
    data_cfg = config_from_dict(CameraDataConfig, data_meta, "metadata.data") if data_meta else None
    data_cfg = data_cfg or CameraDataConfig()
    num_pairs = args.num_pairs or data_cfg.num_val_pairs
    seed = data_cfg.val_seed if args.seed is None else args.seed
    if args.data is not None:
        K, w2c_rel, info = _scene_pairs(model, args, num_pairs, seed)
    else:
        generator = torch.Generator().manual_seed(seed)
        K, w2c_rel = sample_relative_cameras(generator, num_pairs, model.config.image_hw, data_cfg.sampling)
        info = {
            "pairs": "random (gst.data.synth.cameras.sample_cameras, two independent draws per pair)",
            "seed": seed,
            "sampling": config_to_dict(data_cfg.sampling),
        }
    return {**evaluate_camera_tokenizer(model, K, w2c_rel), "data": info}


def eval_tokenizer(args: argparse.Namespace) -> int:
    from gst.tokenizers.io import load_tokenizer, resolve_tokenizer_dir
    from gst.training.tokenizer_eval import METRIC_IMPLEMENTATIONS

    folder = resolve_tokenizer_dir(args.checkpoint)
    model = load_tokenizer(folder, device=args.device)
    report = _image_report(model, args) if model.kind == "image" else _camera_report(model, args)
    out = {
        "kind": model.kind,
        "checkpoint": str(folder.resolve()),
        "sha256": file_sha256(folder / "model.safetensors"),
        **report,
    }
    if model.kind == "image":
        out["metric_implementations"] = METRIC_IMPLEMENTATIONS
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            if not isinstance(value, dict):
                print(f"{key:40s} {value:.4f}" if isinstance(value, float) else f"{key:40s} {value}")
    return 0
