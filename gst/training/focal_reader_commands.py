"""`gst train focal-reader`: train the focal reader (gst.model.focal_reader) and choose its weight.

The reader trains on every view of ``--scenes`` for ``--minutes`` of process CPU time; with
``--val-scenes`` and ``--checkpoint`` its weight beside the checkpoint's pose head is chosen on
``--val-pairs`` pairs of those scenes (``gst.training.focal_reader.choose_weight``); else ``--weight``
sets it. Writes OUT/focal_reader/ (ship it with `gst train export SOURCE --focal-reader
OUT/focal_reader`) and OUT/results.json (updates, CPU-minutes, the validation errors per weight).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def pose_head_log_focal(checkpoint: str | Path, scenes: str | Path, num_pairs: int, seed: int):
    """The pose head's forward reading of the target's log(fx / W) on ``num_pairs`` pairs of ``scenes``
    (as ``gst eval pose`` draws them, at the model's resolution), the true values and the prepared
    target views. Returns (head (N,), true (N,), views (N, 3, S, S) float in [0, 1]) as numpy / torch."""
    import numpy as np
    import torch

    from gst.api import GST
    from gst.eval.data import build_evalset
    from gst.model.sampling import read_pose_head
    from gst.tokenizers.camera import FOCAL_SLICE

    gst = GST.from_pretrained(checkpoint)
    evalset = build_evalset(scenes, num_pairs=num_pairs, seed=seed, resolution=gst.image_hw[1])
    head, true, views = [], [], []
    for start in range(0, len(evalset.pairs), 64):
        pairs = evalset.pairs[start : start + 64]
        obs = [gst.prepare(evalset.image(p.scene_index, p.obs)) for p in pairs]
        tgt = [gst.prepare(evalset.image(p.scene_index, p.tgt)) for p in pairs]
        obs_ids, tgt_ids = torch.cat([o.ids for o in obs]), torch.cat([t.ids for t in tgt])
        with torch.no_grad():
            vector = read_pose_head(gst.model, obs_ids, tgt_ids, seq_cfg=gst.sequence)  # (B, 13)
        head.append(vector[:, FOCAL_SLICE].mean(-1).cpu().numpy())
        views += [t.image for t in tgt]
        for p, t in zip(pairs, tgt, strict=True):
            true.append(float(np.log(evalset.K(p.scene_index, p.tgt)[0, 0].item() / t.image.shape[-1])))
    return np.concatenate(head), np.array(true), torch.stack(views)


def _train(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np
    import torch

    from gst.model.focal_reader import FocalReader, FocalReaderConfig, save_focal_reader
    from gst.training.focal_reader import choose_weight, load_views, relative_errors, train_focal_reader

    if (args.val_scenes is None) != (args.checkpoint is None):
        raise SystemExit("gst train focal-reader: --val-scenes and --checkpoint go together")
    if args.val_scenes is None and args.weight is None:
        raise SystemExit("gst train focal-reader: give --val-scenes and --checkpoint, or --weight")
    if args.zoom < 1.0:
        raise SystemExit(f"gst train focal-reader: --zoom must be at least 1 (1: none), got {args.zoom}")
    torch.manual_seed(args.seed)
    net = FocalReader(FocalReaderConfig(image_size=args.size, coords=args.coords, weight=args.weight or 0.0))
    load_size = 2 * args.size if args.zoom > 1.0 else args.size
    loaded = [load_views(root, args.num_scenes, load_size) for root in args.scenes]
    images, targets = torch.cat([v[0] for v in loaded]), torch.cat([v[1] for v in loaded])
    roots = ", ".join(str(r) for r in args.scenes)
    print(f"{len(images)} training views of {roots} at {load_size} px", file=sys.stderr)
    cpu0 = time.process_time()
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr))
    steps = train_focal_reader(
        net, images, targets, minutes=args.minutes, zoom=args.zoom, colour=args.colour, batch=args.batch,
        lr=args.lr, seed=args.seed, max_steps=args.max_steps, log=log,
    )  # fmt: skip
    results = {
        "command": "gst train focal-reader " + " ".join(sys.argv[3:]),
        "updates": steps,
        "cpu_minutes": (time.process_time() - cpu0) / 60.0,
        "train_views": len(images),
        "zoom": args.zoom,
        "colour": args.colour,
    }
    weight = args.weight
    if args.val_scenes is not None:
        head, true, views = pose_head_log_focal(args.checkpoint, args.val_scenes, args.val_pairs, args.seed)
        reader = net.read(views).numpy()
        chosen, medians = choose_weight(head, reader, true)
        weight = chosen if args.weight is None else args.weight
        results["val"] = {
            "scenes": str(args.val_scenes),
            "pairs": len(true),
            "pose_head_median_focal_error": float(np.median(relative_errors(head, true))),
            "reader_median_focal_error": float(np.median(relative_errors(reader, true))),
            "median_focal_error_by_weight": medians,
            "chosen_weight": chosen,
        }
    net.config = dataclasses.replace(net.config, weight=float(weight))
    meta = {k: v for k, v in results.items() if k != "val"}
    save_focal_reader(net, args.out / "focal_reader", metadata=meta)
    results["weight"] = float(weight)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    return 0


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "focal-reader",
        help="train the focal reader: a CNN reading one view's focal length, beside the pose head",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenes", required=True, type=Path, action="append",
        help="a folder of training scenes (gst data synth --out); repeat to train on several",
    )  # fmt: skip
    p.add_argument("--num-scenes", type=int, default=None, help="the first N scenes of each (default all)")
    p.add_argument("--out", required=True, type=Path, help="run folder: focal_reader/ and results.json")
    p.add_argument("--minutes", type=float, default=15.0, help="process CPU-minutes of training (default 15)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many updates as well")
    p.add_argument("--size", type=int, default=64, help="view side in pixels, the model's (default 64)")
    p.add_argument("--zoom", type=float, default=1.0, help="largest crop zoom of training views (1: none)")
    p.add_argument("--coords", action="store_true", help="pixel coordinates as two more input channels")
    p.add_argument("--colour", action="store_true", help="shuffle and scale the views' colour channels")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-scenes", type=Path, default=None, help="scenes to choose the weight on")
    p.add_argument("--checkpoint", type=Path, default=None, help="the checkpoint whose pose head it joins")
    p.add_argument("--val-pairs", type=int, default=400, help="validation pairs (default 400)")
    p.add_argument("--weight", type=float, default=None, help="the reader's share, instead of choosing it")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_train)
