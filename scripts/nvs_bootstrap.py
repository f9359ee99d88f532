"""Paired bootstrap of the PSNR and SSIM differences between two methods scored by `gst eval nvs` on the
same pairs: is the gap bigger than the noise of a few hundred pairs?

    python scripts/nvs_bootstrap.py A.json METHOD_A B.json METHOD_B [--resamples 2000] [--seed 0]

Both figures are means over pairs of the per-pair scores `gst eval nvs` writes (PSNR in dB, data range 1;
SSIM). Prints both means, the 95 % interval of the mean of A - B over resamples of the pairs, and the share
of resamples where A is not better.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def pair_scores(path: str, method: str) -> dict[tuple, tuple[float, float]]:
    """(scene, observed, target) -> (PSNR, SSIM) of one method in a `gst eval nvs` results.json."""
    methods = json.load(open(path))["methods"]
    if method not in methods:
        raise SystemExit(f"{path}: no method {method!r}; it has {sorted(methods)}")
    return {(r["scene"], r["obs"], r["tgt"]): (r["psnr"], r["ssim"]) for r in methods[method]["rows"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a_json")
    p.add_argument("a_method")
    p.add_argument("b_json")
    p.add_argument("b_method")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    a, b = pair_scores(args.a_json, args.a_method), pair_scores(args.b_json, args.b_method)
    if sorted(a) != sorted(b):
        raise SystemExit("the two runs scored different pairs: use the same --data, --num-pairs and --seed")
    keys = sorted(a)
    sa, sb = np.array([a[k] for k in keys]), np.array([b[k] for k in keys])  # (n, 2)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(keys), (args.resamples, len(keys)))  # (R, n)
    diffs = (sa - sb)[idx].mean(1)  # (R, 2)
    for j, name in enumerate(("PSNR (dB)", "SSIM")):
        lo, hi = np.percentile(diffs[:, j], [2.5, 97.5])
        print(
            f"{name} {sa[:, j].mean():.3f} ({args.a_method}) vs {sb[:, j].mean():.3f} ({args.b_method}), "
            f"{len(keys)} pairs; gain of {args.a_method} 95% interval [{lo:.3f}, {hi:.3f}]; share of "
            f"resamples with no gain {np.mean(diffs[:, j] <= 0):.3f}"
        )


if __name__ == "__main__":
    main()
