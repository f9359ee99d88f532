"""CLI: ``gst train tokenizer`` and ``gst eval tokenizer``.

The parsers live here; the handlers live in ``gst.training.tokenizer_cli`` (training pipelines may use
``gst.data``, which the tokenizers themselves must not import) and are imported only when a command
runs, so ``gst --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from gst.training.tokenizer_cli import train_tokenizer

    return train_tokenizer(args)


def _eval(args: argparse.Namespace) -> int:
    from gst.training.tokenizer_cli import eval_tokenizer

    return eval_tokenizer(args)


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="train the image or camera tokenizer",
        description="Train a tokenizer with the project's training loop (accelerate; checkpoints every "
        "train.checkpoint_every steps into OUT/checkpoints, TensorBoard logs in OUT/tensorboard). Run "
        "under `accelerate launch` for several processes. The camera tokenizer trains on fresh random "
        "camera pairs and needs no --data.",
    )
    p.add_argument("--kind", choices=("image", "camera"), required=True, help="which tokenizer")
    p.add_argument("--preset", default="tiny", help="tiny (64x64, 8x8 grid, CPU) or base (256x256, 16x16)")
    p.add_argument("--data", type=Path, help="folder of scenes (transforms.json family); required for images")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs, config.json)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--max-steps", type=int, help="shorthand for --set train.max_steps=N")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="typed override, e.g. train.lr=2e-4, model.quantizer.codebook_size=512, loss.l2_weight=1 "
        "(repeatable; unknown keys are errors)",
    )
    p.add_argument("--lpips-weights", type=Path, help="torchvision AlexNet weights for the LPIPS loss")
    p.set_defaults(func=_train)


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer",
        help="measure a tokenizer's round trip",
        description="Image: PSNR / SSIM (torchmetrics, data range 1) of decode(encode(x)) on the validation "
        "split of --data, beside a bilinear down-up baseline at the token grid, codebook usage and "
        "perplexity. Camera: rotation, translation-direction, centre and focal errors (median, p95) on "
        "held-out random pairs (--seed), or on pairs of the validation scenes of --data.",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="tokenizer export, checkpoint or run")
    p.add_argument("--data", type=Path, help="folder of scenes (required for image tokenizers)")
    p.add_argument("--split", choices=("val", "train", "all"), default="val", help="which scenes of --data")
    p.add_argument("--max-images", type=int, default=0, help="cap on evaluated images (0 = all)")
    p.add_argument("--num-pairs", type=int, help="camera pairs (default: the config's num_val_pairs)")
    p.add_argument("--seed", type=int, help="seed of random camera pairs (default: the config's val_seed)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_eval)
