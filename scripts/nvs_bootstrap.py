"""Paired bootstrap of the PSNR and SSIM differences between two methods scored by `gst eval nvs` on the
same pairs: is the gap bigger than the noise of a few hundred pairs?

    python scripts/nvs_bootstrap.py A.json METHOD_A B.json METHOD_B [--resamples 2000] [--seed 0]

Both figures are means over pairs of the per-pair scores `gst eval nvs` writes (PSNR in dB, data range 1;
SSIM). Prints both means, the 95 % interval of the mean of A - B over resamples of the pairs, and the share
of resamples where A is not better.
"""

from __future__ import annotations

import numpy as np

from gst.eval.paired import paired_values, two_method_parser


def main() -> None:
    args = two_method_parser(__doc__).parse_args()
    sa, sb = paired_values(args, lambda r: (r["psnr"], r["ssim"]))  # (n, 2)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(sa), (args.resamples, len(sa)))  # (R, n)
    diffs = (sa - sb)[idx].mean(1)  # (R, 2)
    for j, name in enumerate(("PSNR (dB)", "SSIM")):
        lo, hi = np.percentile(diffs[:, j], [2.5, 97.5])
        print(
            f"{name} {sa[:, j].mean():.3f} ({args.a_method}) vs {sb[:, j].mean():.3f} ({args.b_method}), "
            f"{len(sa)} pairs; gain of {args.a_method} 95% interval [{lo:.3f}, {hi:.3f}]; share of "
            f"resamples with no gain {np.mean(diffs[:, j] <= 0):.3f}"
        )


if __name__ == "__main__":
    main()
