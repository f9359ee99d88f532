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
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gst.data.loaders import load_scene
from gst.data.views import crop_resize


def load_views(root: str, num_scenes: int | None, size: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every view of the first ``num_scenes`` scenes under ``root``: images (N, 3, size, size) uint8,
    log(fx / W) (N,), and each view's scene index."""
    folders = sorted(p for p in Path(root).iterdir() if (p / "transforms.json").exists())[:num_scenes]
    if not folders:
        raise SystemExit(f"{root}: no scene folders with transforms.json; render them with `gst data synth`")
    images, targets, scene_of = [], [], []
    for s, folder in enumerate(folders):
        scene = load_scene(folder)
        img, K = crop_resize(scene.load_images(), scene.K.float(), (size, size))
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        targets.append((K[:, 0, 0] / size).log())
        scene_of += [s] * len(img)
    return torch.cat(images), torch.cat(targets), scene_of


def network(size: int) -> nn.Module:
    """Stride-2 conv blocks down to 4x4 (a second conv in each block from 16x16 on), flattened, an MLP to
    one number."""
    chans = ([3, 16] if size == 128 else [3]) + [32, 64, 96, 128]
    if size // 2 ** (len(chans) - 1) != 4:
        raise SystemExit(f"--size {size}: 64 or 128")
    blocks, side = [], size
    for cin, cout in zip(chans[:-1], chans[1:], strict=True):
        side //= 2
        blocks += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.GELU()]
        if side <= 16:
            blocks += [nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.GELU()]
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 16, 256), nn.GELU(), nn.Linear(256, 1))


def errors(net: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Relative focal error |f_pred - f| / f of every view."""
    net.eval()
    with torch.no_grad():
        pred = torch.cat(
            [net(images[i : i + 256].float() / 255).squeeze(1) for i in range(0, len(images), 256)]
        )
    net.train()
    return ((pred - targets).exp() - 1).abs().numpy()


def median_interval(err: np.ndarray, scene_of: list[int], seed: int = 0) -> list[float]:
    """95 % interval of the median error over resampled scenes."""
    by_scene = [err[np.array(scene_of) == s] for s in sorted(set(scene_of))]
    rng = np.random.default_rng(seed)
    meds = [np.median(np.concatenate([by_scene[i] for i in rng.integers(0, len(by_scene), len(by_scene))]))
            for _ in range(1000)]  # fmt: skip
    return [float(np.quantile(meds, 0.025)), float(np.quantile(meds, 0.975))]


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
    ap.add_argument("--out", required=True, help="results JSON")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    net = network(args.size)
    train_x, train_y, _ = load_views(args.scenes, args.num_scenes, args.size)
    test_x, test_y, test_scene = load_views(args.heldout, None, args.size)
    print(f"{len(train_x)} training views, {len(test_x)} held-out views at {args.size} px")
    constant = float(train_y.quantile(0.5))  # as np.median
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    rng, start, steps = torch.Generator().manual_seed(args.seed), time.process_time(), 0
    budget = 60 * args.minutes
    while (used := time.process_time() - start) < budget:
        for group in opt.param_groups:  # cosine decay over the CPU budget
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * used / budget))
        idx = torch.randint(0, len(train_x), (args.batch,), generator=rng)
        x = train_x[idx].float() / 255
        x = torch.where(torch.rand(args.batch, 1, 1, 1, generator=rng) < 0.5, x, x.flip(-1))  # focal-neutral
        loss = nn.functional.smooth_l1_loss(net(x).squeeze(1), train_y[idx], beta=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 1000 == 0:
            print(f"update {steps}: loss {loss.item():.4f}, {used / 60:.1f} CPU-min", flush=True)
    test_err = errors(net, test_x, test_y)
    train_err = errors(net, train_x[:2400], train_y[:2400])
    const_err = ((constant - test_y).exp() - 1).abs().numpy()
    result = {
        "size": args.size,
        "updates": steps,
        "cpu_minutes": args.minutes,
        "train_views": len(train_x),
        "heldout_views": len(test_x),
        "heldout_median_focal_error": float(np.median(test_err)),
        "heldout_median_interval_by_scene": median_interval(test_err, test_scene),
        "train_median_focal_error": float(np.median(train_err)),
        "constant_median_focal_error": float(np.median(const_err)),
        "share_within_10pct": float((test_err <= 0.10).mean()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
