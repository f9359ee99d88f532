"""What the pose head's focal length errors look like on held-out pairs, and what combining it with other
readings gives. Issue "A world model that learns on two CPU cores": focal target 10 %, the head 12.3 %.

The head of ``--checkpoint`` is read on each of the ``--num-pairs`` pairs ``gst eval pose`` draws (seed
0, at the model's resolution) in both orders (forward: the target's log(fx / W); backward: the observed
view's) and, with ``--flip``, on both views mirrored. Reported (median relative errors):

- the forward reading, and by the target's horizontal field of view (mean signed log error per band);
- the correlation of the forward and backward errors, and the forward reading corrected by a given
  observed focal length through their ratio, ``forward - a (backward - true observed)``;
- with ``--flip``: the mirrored reading and the mean of both;
- with ``--probe FILE`` (``scripts/focal_probe.py --predictions`` or ``scripts/focal_fields_probe.py
  --predictions``: per held-out view log(fx / W)): that reading of each pair's target, its correlation
  with the head's errors, and their weighted means for weights 0.1-0.9 (chosen on the same pairs: an
  upper bound of what a fixed weight gives).

    OMP_NUM_THREADS=1 python scripts/focal_readings.py --checkpoint assets/gst-tiny --data
        data/eval_heldout_s1000_100 --flip --probe runs/focal_probe_64_s2000.jsonl
        --out runs/focal_readings.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gst.api import GST
from gst.eval.data import build_evalset
from gst.model.sampling import read_pose_head
from gst.tokenizers.camera import FOCAL_SLICE


def view_ids(gst: GST, images: list[torch.Tensor], flip: bool) -> torch.Tensor:
    """Image-code ids (N, h*w) of views (3, H, W), mirrored with ``flip``."""
    return torch.cat([gst.prepare(im.flip(-1) if flip else im).ids for im in images])


def readings(gst: GST, evalset, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward log(fx / W) readings of every pair (N,) each; ``flip``: both views mirrored."""
    fwd, bwd = [], []
    for start in range(0, len(evalset.pairs), 32):
        pairs = evalset.pairs[start : start + 32]

        obs = view_ids(gst, [evalset.image(p.scene_index, p.obs) for p in pairs], flip)
        tgt = view_ids(gst, [evalset.image(p.scene_index, p.tgt) for p in pairs], flip)
        with torch.no_grad():
            both = read_pose_head(
                gst.model, torch.cat([obs, tgt]), torch.cat([tgt, obs]), seq_cfg=gst.sequence
            )
        log_f = both[:, FOCAL_SLICE].mean(-1).cpu().numpy()
        fwd.append(log_f[: len(pairs)])
        bwd.append(log_f[len(pairs) :])
    return np.concatenate(fwd), np.concatenate(bwd)


def median_error(log_pred: np.ndarray, log_true: np.ndarray) -> float | None:
    """Median relative focal error of log focal lengths; None for no values."""
    return float(np.median(np.abs(np.expm1(log_pred - log_true)))) if len(log_true) else None


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None where either side is constant."""
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="assets/gst-tiny")
    ap.add_argument("--data", required=True, help="held-out scenes")
    ap.add_argument("--num-pairs", type=int, default=1000)
    ap.add_argument("--flip", action="store_true", help="also read both views mirrored")
    ap.add_argument("--probe", action="append", default=[], help="per-view readings (JSON lines; repeatable)")
    ap.add_argument("--out", required=True, help="results JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gst = GST.from_pretrained(args.checkpoint)
    evalset = build_evalset(args.data, num_pairs=args.num_pairs, seed=0, resolution=gst.image_hw[1])
    for path in args.probe:
        if not Path(path).is_file():
            raise SystemExit(f"--probe {path}: no such file (scripts/focal_probe.py --predictions writes it)")
    result = {"checkpoint": str(args.checkpoint), **analyse(gst, evalset, args.flip, args.probe)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


def analyse(gst: GST, evalset, flip: bool, probes: list[str]) -> dict:
    """The module docstring's report on ``evalset``'s pairs (``gst.eval.data.EvalSet`` at the model's
    resolution)."""
    W = gst.image_hw[1]

    def true_log_f(view: str) -> np.ndarray:
        return np.array(
            [np.log(float(evalset.K(p.scene_index, getattr(p, view))[0, 0]) / W) for p in evalset.pairs]
        )

    t_tgt, t_obs = true_log_f("tgt"), true_log_f("obs")
    fwd, bwd = readings(gst, evalset, flip=False)
    e_f, e_b = fwd - t_tgt, bwd - t_obs
    fov = np.degrees(2 * np.arctan(0.5 / np.exp(t_tgt)))
    bands = {}
    for lo, hi in ((30, 40), (40, 50), (50, 60), (60, 70), (70, 75.01)):
        m = (fov >= lo) & (fov < hi)
        bands[f"{lo}-{int(hi)}"] = {
            "pairs": int(m.sum()),
            "median_error": median_error(fwd[m], t_tgt[m]),
            "mean_signed_log_error": float(e_f[m].mean()) if m.any() else None,
        }
    result = {
        "pairs": len(fwd),
        "forward_median_error": median_error(fwd, t_tgt),
        "backward_median_error": median_error(bwd, t_obs),
        "by_target_fov_deg": bands,
        "forward_backward_error_correlation": correlation(e_f, e_b),
        "ratio_corrected_median_error": {
            f"{a:.2f}": median_error(fwd - a * e_b, t_tgt) for a in (0.25, 0.5, 0.75, 1.0)
        },
    }
    if flip:
        fwd_m, _ = readings(gst, evalset, flip=True)
        result["flipped"] = {
            "median_error": median_error(fwd_m, t_tgt),
            "mean_of_both_median_error": median_error((fwd + fwd_m) / 2, t_tgt),
            "error_correlation": correlation(e_f, fwd_m - t_tgt),
        }
    for path in probes:
        probe = {}
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            probe[(row["scene"], row["view"])] = (row["pred"], row["true"])
        got = [probe.get((evalset.scenes[p.scene_index].name, p.tgt)) for p in evalset.pairs]
        if any(g is None for g in got):
            raise SystemExit(f"{path}: no reading for some target views; run the probe on these scenes")
        pred, true = np.array([g[0] for g in got]), np.array([g[1] for g in got])
        if np.abs(true - t_tgt).max() > 1e-4:
            raise SystemExit(f"{path}: its true focal lengths are not these scenes'")
        result[f"probe {path}"] = {
            "median_error": median_error(pred, t_tgt),
            "error_correlation_with_head": correlation(e_f, pred - t_tgt),
            "weighted_mean_median_error": {
                f"{w:.1f}": median_error((1 - w) * fwd + w * pred, t_tgt) for w in np.arange(0.1, 1.0, 0.1)
            },
        }
    return result


if __name__ == "__main__":
    main()
