"""`gst train export`: one self-contained checkpoint folder (backbone, tokenizers, optional readers) from
a `gst train gst` model, as ``GST.from_pretrained`` and every --checkpoint option read
(gst.api_checkpoint.export_checkpoint)."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_export(args: argparse.Namespace) -> int:
    from gst.api_checkpoint import export_checkpoint

    out = export_checkpoint(
        args.source,
        args.out,
        tokenizers=args.tokenizers,
        backbone_dtype=args.backbone_dtype,
        overwrite=args.overwrite,
        answer_reader=args.answer_reader,
        focal_reader=args.focal_reader,
    )
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: checkpoint written ({size / 1e6:.1f} MB); load it with GST.from_pretrained({str(out)!r})")
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="assemble a self-contained checkpoint folder (backbone + both tokenizers)",
        description="Copy a `gst train gst` model (an export, checkpoint or run folder: its newest "
        "checkpoint) and the tokenizers it was trained with into one folder that `GST.from_pretrained` and "
        "every --checkpoint option read: OUT/model, OUT/tokenizers/{image,camera}, OUT/gst_checkpoint.json "
        "(sha256 of every file). Everything is loaded and cross-checked first; a README.md in OUT is kept.",
    )
    p.add_argument("source", type=Path, help="`gst train gst` run folder, checkpoint folder or export folder")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument(
        "--tokenizers",
        type=Path,
        default=None,
        help="folder with image/ and camera/ (default: the paths the export recorded)",
    )
    p.add_argument(
        "--backbone-dtype",
        choices=("float32", "float16", "bfloat16"),
        default="float32",
        help="storage dtype of the backbone's weights (loaded back as float32; default float32)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.add_argument(
        "--answer-reader",
        type=Path,
        default=None,
        help="an answer reader folder (`gst train answer-reader --out DIR` writes DIR/answer_reader) to "
        "ship as OUT/answer_reader (default: the source checkpoint's own, if any)",
    )
    p.add_argument(
        "--focal-reader",
        type=Path,
        default=None,
        help="a focal reader folder (`gst train focal-reader --out DIR` writes DIR/focal_reader) to ship "
        "as OUT/focal_reader (default: the source checkpoint's own, if any)",
    )
    p.set_defaults(func=run_export)
