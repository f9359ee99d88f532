"""Paired bootstrap of the AUC@30 difference between two methods scored by `gst eval pose --json` on the
same pairs: is the gap bigger than the noise of a few hundred pairs?

    python scripts/pose_auc_bootstrap.py A.json METHOD_A B.json METHOD_B [--resamples 2000] [--seed 0]

AUC@30 is `gst.eval.metrics.auc` (per pair the larger of rotation and translation-direction error;
failures count as 180 degrees). Prints both AUCs, the 95 % interval of A - B over
resamples of the pairs, and the share of resamples where A is not better; then the same for the median
rotation error (B - A: positive when A's is lower), RRA@15 (A - B) and, where both predict it, the median
focal error (B - A), over the same resamples.
"""

from __future__ import annotations

import numpy as np

from gst.eval.metrics import auc
from gst.eval.paired import paired_values, two_method_parser


def pair_errors(row: dict) -> tuple[float, float, float]:
    """A pair's (rotation, translation-direction) error in degrees and its relative focal error (NaN:
    failed or not predicted)."""
    nan = float("nan")
    return (
        nan if row["rot_err_deg"] is None else row["rot_err_deg"],
        nan if row["trans_err_deg"] is None else row["trans_err_deg"],
        nan if row.get("focal_err") is None else row["focal_err"],
    )


def auc30(errors: np.ndarray) -> float:
    """Shapes: errors (n, 3) rotation, translation direction, focal."""
    return auc(errors[:, 0], errors[:, 1], 30)


def median_rot(errors: np.ndarray) -> float:
    """Median rotation error, failures (NaN) counted as 180 degrees. Shapes: errors (n, 3)."""
    return float(np.median(np.nan_to_num(errors[:, 0], nan=180.0)))


def median_focal(errors: np.ndarray) -> float:
    """Median relative focal error, failures (inf or NaN) counted as infinite. Shapes: errors (n, 3)."""
    return float(np.median(np.nan_to_num(errors[:, 2], nan=np.inf)))


def rra15(errors: np.ndarray) -> float:
    """Share of pairs with rotation error under 15 degrees (failures are not). Shapes: errors (n, 3)."""
    return float(np.mean(np.nan_to_num(errors[:, 0], nan=180.0) < 15.0))


def main() -> None:
    args = two_method_parser(__doc__).parse_args()
    ea, eb = paired_values(args, pair_errors)  # (n, 3)
    rng = np.random.default_rng(args.seed)
    stats = {"AUC@30": (auc30, 1.0), "median rotation (deg)": (median_rot, -1.0), "RRA@15": (rra15, 1.0)}
    if np.isfinite(ea[:, 2]).any() and np.isfinite(eb[:, 2]).any():
        stats["median focal error"] = (median_focal, -1.0)
    diffs: dict[str, list[float]] = {name: [] for name in stats}
    for _ in range(args.resamples):
        i = rng.integers(0, len(ea), len(ea))
        for name, (fn, sign) in stats.items():
            diffs[name].append(sign * (fn(ea[i]) - fn(eb[i])))
    for name, (fn, _) in stats.items():
        lo, hi = np.percentile(diffs[name], [2.5, 97.5])
        print(
            f"{name} {fn(ea):.3f} ({args.a_method}) vs {fn(eb):.3f} ({args.b_method}), {len(ea)} pairs; "
            f"gain of {args.a_method} 95% interval [{lo:.3f}, {hi:.3f}]; share of resamples with no gain "
            f"{np.mean(np.array(diffs[name]) <= 0):.3f}"
        )


if __name__ == "__main__":
    main()
