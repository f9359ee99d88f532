"""How much of a motion-visibility answer the observed image can hold: "<camera motion>. Will the <object>
be visible afterwards?" (gst.data.qa_families.motion_visibility), for ``vis_yesno`` (the object is out of
view now) or ``vis_stay`` (it is in view now).

    OMP_NUM_THREADS=1 python scripts/visibility_evidence.py --scenes data/world128 [--num-scenes 800] \
        [--kind vis_yesno|vis_stay]

Every question of ``--kind`` the generator could ask in the first ``--num-scenes`` scenes (the objects out
of view, or in view, in the observed view and clearly in or out of the target view), answered by three
small classifiers (an MLP on standardised features, trained on 80 % of the scenes, stopped early on a
fifth of those questions, scored on the questions of the other 20 % of the scenes):

- **motion**: the five numbers of the motion the question states (turn, tilt, forward, left, up): all a
  text-only reader has;
- **motion + image, perfect perception**: also what the observed view shows, read from the metadata
  without error: how many objects are clearly / partly in view, and the azimuth (atan2(x, z)) and depth of
  the ones clearly in view (min, mean, max), the camera's pitch and height;
- **motion + the object's position**: also the asked object's centre in the observed camera frame
  (azimuth, elevation, log distance). For ``vis_yesno`` the image does not show it (a ceiling); for
  ``vis_stay`` it does (the object is in view): what perfect perception of the named object gives.

If the second is level with the first for ``vis_yesno``, the image holds no evidence for these questions
beyond the motion: they cannot be answered by looking, whatever the model. Paired bootstrap intervals
(2,000 resamples of the test questions).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gst.data.loaders import load_scene
from gst.data.qa import QAConfig, scene_context
from gst.data.qa_families import IN, OUT, view_pairs
from gst.data.qa_geometry import WORLD_UP, camera_center, camera_motion


def view_summary(ctx, i: int) -> list[float]:
    """What view ``i`` shows, read without error from the metadata."""
    seen = [ctx.p(o, i) for o in ctx.objects if ctx.status(o, i) == IN]
    partly = sum(ctx.status(o, i) not in (IN, OUT) for o in ctx.objects)
    az = [math.atan2(p[0], p[2]) for p in seen] or [0.0]
    depth = [float(np.linalg.norm(p)) for p in seen] or [0.0]
    up = np.asarray(WORLD_UP)
    forward = ctx.w2c[i][2, :3]  # the camera's z axis in the world frame (a row of the rotation)
    pitch = math.asin(float(np.clip(forward @ up, -1.0, 1.0)))
    height = float(camera_center(ctx.w2c[i]) @ up)
    return [len(seen), partly, min(az), float(np.mean(az)), max(az), min(depth), float(np.mean(depth)),
            max(depth), pitch, height]  # fmt: skip


def questions(scenes: list[Path], seed: int, kind: str = "vis_yesno") -> tuple[np.ndarray, ...]:
    """Features (motion, image, object) and answers of every ``kind`` question of ``scenes``."""
    now = {"vis_yesno": OUT, "vis_stay": IN}[kind]  # the asked object's status in the observed view
    motion, image, obj, ans, scene_of = [], [], [], [], []
    for s, path in enumerate(scenes):
        ctx = scene_context(load_scene(path), QAConfig(), seed)
        for i, j in view_pairs(ctx):
            m = camera_motion(ctx.w2c[i], ctx.w2c[j])
            summary = view_summary(ctx, i)
            for o in ctx.objects:
                sj = ctx.status(o, j)
                if ctx.status(o, i) != now or sj not in (IN, OUT) or not ctx.unique(o):
                    continue
                p = ctx.p(o, i)
                motion.append([m.turn_left_deg, m.tilt_up_deg, m.forward_m, m.left_m, m.up_m])
                image.append(summary)
                obj.append([math.atan2(p[0], p[2]), math.atan2(-p[1], math.hypot(p[0], p[2])),
                            math.log(float(np.linalg.norm(p)) + 1e-3)])  # fmt: skip
                ans.append(sj == IN)
                scene_of.append(s)
    arrays = (motion, image, obj, ans, scene_of)
    return tuple(np.asarray(a, np.float64) for a in arrays)


def fit_predict(x_train, y_train, x_test, steps: int, seed: int) -> np.ndarray:
    """P(yes) of the test questions from an MLP trained full-batch on the training ones, stopped at the
    update (of every 50) that scores best on a fifth of the training questions kept aside."""
    torch.manual_seed(seed)
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x = torch.tensor((x_train - mu) / sd, dtype=torch.float32)
    y = torch.tensor(y_train, dtype=torch.float32)
    aside = torch.rand(len(x), generator=torch.Generator().manual_seed(seed)) < 0.2
    net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-2)
    best, state = -1.0, None
    for step in range(steps):
        loss = F.binary_cross_entropy_with_logits(net(x[~aside]).squeeze(-1), y[~aside])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 49:
            with torch.no_grad():
                acc = float(((net(x[aside]).squeeze(-1) > 0) == (y[aside] > 0.5)).float().mean())
            if acc > best:
                best, state = acc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    with torch.no_grad():
        return torch.sigmoid(net(torch.tensor((x_test - mu) / sd, dtype=torch.float32))).squeeze(-1).numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", required=True, help="a folder of procedural scenes (`gst data world`)")
    ap.add_argument("--num-scenes", type=int, default=800)
    ap.add_argument("--steps", type=int, default=1500, help="full-batch updates per classifier")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=("vis_yesno", "vis_stay"), default="vis_yesno")
    args = ap.parse_args()
    torch.set_num_threads(1)
    scenes = sorted(p for p in Path(args.scenes).iterdir() if p.is_dir())[: args.num_scenes]
    if not scenes:
        raise SystemExit(f"--scenes {args.scenes}: no scene folders")
    motion, image, obj, ans, scene_of = questions(scenes, args.seed, args.kind)
    # the generator balances the answers of a kind (`gst data qa`): as many "yes" as "no", drawn at random
    rng = np.random.default_rng(args.seed)
    few, many = sorted((np.flatnonzero(ans == 0), np.flatnonzero(ans == 1)), key=len)  # "no" first on ties
    keep = np.sort(np.concatenate([few, rng.choice(many, len(few), replace=False)]))
    motion, image, obj, ans, scene_of = (a[keep] for a in (motion, image, obj, ans, scene_of))
    test = scene_of >= int(0.8 * len(scenes))
    n_test = int(test.sum())
    print(f"{len(ans)} {args.kind} questions (balanced) of {len(scenes)} scenes, {n_test} on the test scenes")
    majority = float(ans[~test].mean() >= 0.5)
    rows = {
        "the training majority answer": np.full(test.sum(), majority),
        "motion": fit_predict(motion[~test], ans[~test], motion[test], args.steps, args.seed),
    }
    both = np.concatenate([motion, image], 1)
    rows["motion + image, perfect perception"] = fit_predict(
        both[~test], ans[~test], both[test], args.steps, args.seed
    )
    full = np.concatenate([motion, obj], 1)
    rows["motion + the object's position"] = fit_predict(
        full[~test], ans[~test], full[test], args.steps, args.seed
    )
    correct = {k: ((p >= 0.5) == ans[test]).astype(np.float64) for k, p in rows.items()}
    idx = rng.integers(0, test.sum(), (2000, test.sum()))
    base = correct["motion"]
    print(f"{'features':<38} {'accuracy':>9}   lead over motion (95 %)")
    for k, c in correct.items():
        d = (c - base)[idx].mean(1)
        lo, hi = np.percentile(d, [2.5, 97.5])
        print(f"{k:<38} {c.mean():>9.3f}   {c.mean() - base.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
