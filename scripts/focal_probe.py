"""How well can one view's focal length be read at 64 px, and at 128? A small CNN on pixels regresses
log(fx / W) of single views of the procedural world, trained for a budget of process CPU-minutes, scored
on held-out scenes by the median relative focal error (as ``gst.geometry.errors.focal_error``) against
the best constant (the training median). Issue "A world model that learns on two CPU cores": its focal
target is 10 % and the pose head sits at 12.3 % on held-out pairs, 12.2 % on training ones.

    OMP_NUM_THREADS=1 python scripts/focal_probe.py --scenes data/world128 --heldout
        data/eval_heldout_s1000_100 --size 64 --minutes 15 --out runs/focal_probe_64.json

Views are resized with the loaders' antialiased ``crop_resize`` (the scenes are square, so fx / W does not
change); the network ends at a 4x4 map either way (one more stride-2 block at 128 px), flattened, so the
position of what it sees (the horizon, the ground's convergence) is kept.

``--zoom Z``: each training view is, with probability one half, a crop of side 1/s of the view (s
log-uniform in [1, Z], anywhere in the view) resized back, its label log(fx / W) + log s: the same
scene seen through a longer lens, so that a network cannot tie a scene's look to its focal length. The
views are then kept at twice ``--size`` and every training view (cropped or not) is shrunk by the same
antialiased resize.

``--pair``: does a second view of the same scene, with the observed camera's focal length given (as
``gst eval pose`` gives every method ``K_obs``), tell the target's? The network reads both views through
the reader's trunk (shared), its two 4x4 maps flattened side by side with log(fx_obs / W) into the MLP,
and regresses log(fx_tgt / fx_obs); trained on the pairs the evaluation's rule keeps (baseline 10-90
degrees, co-visible objects: ``gst.data.pairs.candidate_pairs``), scored on the held-out pairs ``gst eval
pose`` draws (``--eval-pairs``, seed 0). ``--no-observed-focal`` gives it zero instead of the observed
focal length (then it regresses log(fx_tgt / W)): what the pair alone tells.

``--predictions FILE`` writes every held-out view's reading (JSON lines: scene
folder, view, predicted and true log(fx / W)), to combine with other readouts.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from torch import nn

from gst.model.focal_reader import FocalReader, FocalReaderConfig
from gst.training.focal_reader import (
    cpu_budget,
    load_views,
    median_interval_by_scene,
    relative_errors,
    scene_folders,
    shrink,
    train_focal_reader,
    write_results,
)


class PairFocal(nn.Module):
    """Two views (B, 3, S, S) each and log(fx_obs / W) (B,) -> log(fx_tgt / fx_obs) (B,), or log(fx_tgt /
    W) when the observed focal length is not given."""

    def __init__(self, config: FocalReaderConfig, hidden: int = 256) -> None:
        super().__init__()
        self.trunk = FocalReader(config).net[:-3]  # conv blocks and Flatten: (B, C * 16)
        width = config.channels[-1] * 16
        self.head = nn.Sequential(nn.Linear(2 * width + 1, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor, tgt: torch.Tensor, log_f_obs: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(torch.cat([obs, tgt])).chunk(2)
        return self.head(torch.cat([*feats, log_f_obs[:, None]], dim=1)).squeeze(1)


def training_pairs(root: str, num_scenes: int | None, scene_of: list[int]) -> torch.Tensor:
    """The ordered view pairs (P, 2) of the first ``num_scenes`` scenes the evaluation's pair rule keeps,
    as indices into ``load_views``' views (which list every scene's views in order)."""
    from gst.data.loaders import load_scene
    from gst.data.pairs import PairConfig, candidate_pairs

    first = {}
    for i, s in enumerate(scene_of):
        first.setdefault(s, i)
    out = []
    for s, folder in enumerate(scene_folders(root, num_scenes)):
        pairs, _, _, _ = candidate_pairs(load_scene(folder), PairConfig())
        out.append(torch.as_tensor(pairs) + first[s])
    return torch.cat(out)


def run_pair(args: argparse.Namespace) -> dict:
    """``--pair``: train ``PairFocal`` and score it on the held-out pairs (module docstring)."""
    from gst.eval.data import build_evalset

    wide = (16, 32, 64, 96, 128) if args.size == 128 else (32, 64, 96, 128)
    net = PairFocal(FocalReaderConfig(image_size=args.size, channels=wide))
    images, logf, scene_of = load_views(args.scenes, args.num_scenes, args.size)
    pairs = training_pairs(args.scenes, args.num_scenes, scene_of)
    print(f"{len(images)} training views, {len(pairs)} training pairs at {args.size} px", flush=True)
    given = 0.0 if args.no_observed_focal else 1.0
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    rng, steps = torch.Generator().manual_seed(args.seed), 0
    for used in cpu_budget(opt, args.lr, args.minutes):
        pick = pairs[torch.randint(0, len(pairs), (args.batch,), generator=rng)]
        obs, tgt = images[pick[:, 0]].float() / 255, images[pick[:, 1]].float() / 255
        flip = torch.rand(args.batch, 1, 1, 1, generator=rng) < 0.5  # both views mirrored: focal-neutral
        obs, tgt = torch.where(flip, obs.flip(-1), obs), torch.where(flip, tgt.flip(-1), tgt)
        f_obs = logf[pick[:, 0]] * given
        loss = nn.functional.smooth_l1_loss(net(obs, tgt, f_obs), logf[pick[:, 1]] - f_obs, beta=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 1000 == 0:
            print(f"update {steps}: loss {loss.item():.4f}, {used:.1f} CPU-min", flush=True)
    evalset = build_evalset(args.heldout, num_pairs=args.eval_pairs, seed=0, resolution=args.size)
    net.eval()
    err, scenes = [], []
    with torch.no_grad():
        for p in evalset.pairs:
            W = evalset.image_hw(p.scene_index)[1]
            f_obs = math.log(float(evalset.K(p.scene_index, p.obs)[0, 0]) / W) * given
            f_tgt = math.log(float(evalset.K(p.scene_index, p.tgt)[0, 0]) / W)
            obs, tgt = evalset.image(p.scene_index, p.obs)[None], evalset.image(p.scene_index, p.tgt)[None]
            pred = float(net(obs, tgt, torch.tensor([f_obs]))) + f_obs
            err.append(abs(math.expm1(pred - f_tgt)))
            scenes.append(p.scene_index)
    err = np.array(err)
    return {
        "mode": "pair, observed focal " + ("zero" if args.no_observed_focal else "given"),
        "size": args.size,
        "num_scenes": args.num_scenes,
        "updates": steps,
        "cpu_minutes": args.minutes,
        "train_pairs": len(pairs),
        "heldout_pairs": len(err),
        "heldout_median_focal_error": float(np.median(err)),
        "heldout_median_interval_by_scene": median_interval_by_scene(err, scenes),
        "share_within_10pct": float((err <= 0.10).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", required=True, help="training scenes (the procedural world)")
    ap.add_argument("--heldout", required=True, help="held-out scenes (`gst data synth --seed 1000`)")
    ap.add_argument("--num-scenes", type=int, default=1000, help="training scenes read (default 1000)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels: 64 or 128")
    ap.add_argument("--minutes", type=float, default=15.0, help="process CPU-minutes of training")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--zoom", type=float, default=1.0, help="largest crop zoom of training views (1: none)")
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--predictions", help="JSON lines of every held-out view's reading")
    ap.add_argument("--pair", action="store_true", help="read the target's focal from both views")
    ap.add_argument("--no-observed-focal", action="store_true", help="--pair without the observed focal")
    ap.add_argument("--eval-pairs", type=int, default=1000, help="--pair: held-out pairs (default 1000)")
    args = ap.parse_args()
    if args.pair:
        torch.manual_seed(args.seed)
        write_results(args.out, run_pair(args))
        return
    if args.zoom < 1.0:
        raise SystemExit(f"--zoom {args.zoom}: at least 1 (1 = no zoom)")
    torch.manual_seed(args.seed)
    if args.size not in (64, 128):
        raise SystemExit(f"--size {args.size}: 64 or 128")
    wide = (16, 32, 64, 96, 128) if args.size == 128 else (32, 64, 96, 128)
    net = FocalReader(FocalReaderConfig(image_size=args.size, channels=wide))
    load_size = 2 * args.size if args.zoom > 1.0 else args.size
    train_x, train_y, _ = load_views(args.scenes, args.num_scenes, load_size)
    test_x, test_y, test_scene = load_views(args.heldout, None, args.size)
    print(f"{len(train_x)} training views, {len(test_x)} held-out views at {args.size} px")
    constant = float(train_y.quantile(0.5))  # as np.median
    steps = train_focal_reader(
        net, train_x, train_y, minutes=args.minutes, zoom=args.zoom, batch=args.batch, lr=args.lr,
        seed=args.seed, log=lambda m: print(m, flush=True),
    )  # fmt: skip
    num_train = len(train_x)
    test_pred = net.read(test_x)
    test_err = relative_errors(test_pred, test_y)
    train_x = shrink(train_x[:2400], args.size) if args.zoom > 1.0 else train_x[:2400]
    train_err = relative_errors(net.read(train_x), train_y[:2400])
    const_err = ((constant - test_y).exp() - 1).abs().numpy()
    result = {
        "size": args.size,
        "zoom": args.zoom,
        "num_scenes": args.num_scenes,
        "updates": steps,
        "cpu_minutes": args.minutes,
        "train_views": num_train,
        "heldout_views": len(test_x),
        "heldout_median_focal_error": float(np.median(test_err)),
        "heldout_median_interval_by_scene": median_interval_by_scene(test_err, test_scene),
        "train_median_focal_error": float(np.median(train_err)),
        "constant_median_focal_error": float(np.median(const_err)),
        "share_within_10pct": float((test_err <= 0.10).mean()),
    }
    write_results(args.out, result, args.predictions, args.heldout, test_scene, test_pred, test_y)


if __name__ == "__main__":
    main()
