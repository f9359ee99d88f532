"""Views with and without the pixel warp (``GST.synthesize_view(warp=...)``), from one generation per pair.

Per pair of ``--data`` (the pairs and seeds of ``gst eval nvs``, true target camera): PSNR and SSIM of the
generated view (one sample, or the pixel mean of ``--samples``) alone, as ``gst eval nvs`` scores it, and
with the observed pixels moved by ``gst.model.warp.warp_image`` pasted where they land: with one depth per
cell interpolated ("cells"), with the ground plane fitted to the cells the model reads as ground
("plane", what ``warp=1`` does), blended with the generated view (``warp=0.5``, ``0.3``), and with
other limits on how far one observed pixel may stretch.
Means overall and by baseline band. ``--orbit-figure`` also draws the demo's orbit on a few scenes.

    python scripts/warp_views.py --checkpoint assets/gst-tiny --data data/eval_val_s2000_20 \
        --num-pairs 100 [--samples 16 --temperature 0.7] --out runs/warp_views_val.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from gst.eval.baselines import pair_seed
from gst.eval.data import EvalSet, build_evalset
from gst.eval.metrics import psnr, ssim
from gst.model import SamplingConfig
from gst.model.warp import warp_image

# name -> warp_image options and the weight of the warped pixels (None: the generated view alone)
VARIANTS: dict[str, dict | None] = {
    "generated": None,
    "cells": {"ground": False, "max_stretch": 5.0},
    "plane": {"ground": True, "max_stretch": 5.0},
    "plane_weight0.5": {"ground": True, "max_stretch": 5.0, "weight": 0.5},
    "plane_weight0.3": {"ground": True, "max_stretch": 5.0, "weight": 0.3},
    "plane_stretch2": {"ground": True, "max_stretch": 2.0},
    "plane_no_limit": {"ground": True, "max_stretch": None},
}
BANDS = ((0.0, 30.0), (30.0, 60.0), (60.0, 180.0))  # baseline angle, degrees


def score_pairs(gst, evalset: EvalSet, samples: int, temperature: float, seed: int) -> list[dict]:
    """One row per pair: its baseline and, per variant, PSNR and SSIM against the target."""
    rows = []
    sampling = SamplingConfig(temperature=temperature, top_k=0)
    for pair in evalset.pairs:
        s = pair.scene_index
        observed, target = evalset.image(s, pair.obs), evalset.image(s, pair.tgt)
        K_obs, K_tgt, w2c = evalset.K(s, pair.obs), evalset.K(s, pair.tgt), evalset.w2c_rel(pair)
        hw = tuple(target.shape[-2:])
        if hw != tuple(gst.image_hw):
            raise ValueError(f"--resolution must give the model's image size {gst.image_hw}, got {hw}")
        view = gst.synthesize_view(
            observed, w2c, K=K_tgt, K_hw=hw, K_obs=K_obs, sampling=sampling, num_samples=samples,
            seed=pair_seed(seed, pair),
        )  # fmt: skip
        generated = view.images.mean(0)  # (3, H, W)
        prepared = gst.prepare(observed, K_obs)
        depth, ground = gst.observed_depth(prepared)
        row = {"scene": pair.scene, "obs": pair.obs, "tgt": pair.tgt, "baseline_deg": pair.baseline_angle_deg}
        for name, options in VARIANTS.items():
            pred = generated
            if options is not None:
                warped, covered = warp_image(
                    prepared.image, depth, prepared.K_model, K_tgt, w2c,
                    max_stretch=options["max_stretch"], ground=ground if options["ground"] else None,
                )  # fmt: skip
                weight = options.get("weight", 1.0)
                pred = torch.where(covered, weight * warped + (1.0 - weight) * generated, generated)
                row[f"{name}_covered"] = float(covered.float().mean())
            row[f"{name}_psnr"] = float(psnr(pred.clamp(0, 1)[None], target[None])[0])
            row[f"{name}_ssim"] = float(ssim(pred.clamp(0, 1)[None], target[None])[0])
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per variant: mean PSNR / SSIM (and covered fraction) over all pairs and per baseline band."""
    angle = np.array([r["baseline_deg"] for r in rows])
    out = {}
    for name in VARIANTS:
        entry = {}
        for lo, hi in ((0.0, 180.0), *BANDS):
            keep = (angle >= lo) & (angle < hi)
            band = {"num_pairs": int(keep.sum())}
            for metric in ("psnr", "ssim", "covered"):
                key = f"{name}_{metric}"
                if keep.any() and key in rows[0]:
                    band[metric] = float(np.mean([r[key] for r, k in zip(rows, keep, strict=True) if k]))
            entry["all" if hi - lo == 180.0 else f"{lo:g}-{hi:g}"] = band
        out[name] = entry
    return out


def orbit_figure(gst, data: str, num_scenes: int, out: str) -> None:
    """For the first view of each of the first ``num_scenes`` scenes of ``data``: the view, the demo's
    orbit (``gst.demo.ORBIT_AZIMUTHS_DEG`` about the world origin) with ``warp=1``, and the last orbit
    camera's generated view alone; one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gst.api import orbit_camera
    from gst.data.loaders import load_scene
    from gst.demo import ORBIT_AZIMUTHS_DEG
    from gst.eval.data import discover_scene_dirs
    from gst.geometry import camera_centers

    dirs = discover_scene_dirs(data)[:num_scenes]
    cols = len(ORBIT_AZIMUTHS_DEG) + 2
    fig, axes = plt.subplots(len(dirs), cols, figsize=(2 * cols, 2 * len(dirs)), squeeze=False)
    for row, folder in zip(axes, dirs, strict=True):
        scene = load_scene(folder)
        image, K = scene.load_image(0), scene.K[0]
        radius = float(camera_centers(scene.w2c[:1].double())[0].norm())
        views = [(image, f"{folder.name}, view 0")]
        for az in ORBIT_AZIMUTHS_DEG:
            view = gst.synthesize_view(image, orbit_camera(az, 0.0, radius_m=radius), K_obs=K, warp=1.0)
            views.append((view.image, f"{az:+.0f} deg, warped"))
        view = gst.synthesize_view(image, orbit_camera(ORBIT_AZIMUTHS_DEG[-1], 0.0, radius_m=radius), K_obs=K)
        views.append((view.image, f"{ORBIT_AZIMUTHS_DEG[-1]:+.0f} deg, generated"))
        for ax, (img, title) in zip(row, views, strict=True):
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="assets/gst-tiny", help="a checkpoint whose reader reads depth")
    ap.add_argument("--data", required=True, help="scene folders (gst data synth)")
    ap.add_argument("--num-pairs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="pairs and sampling, as gst eval nvs --seed")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--samples", type=int, default=1, help="views per pair; more than 1 scores their mean")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--orbit-figure", default=None, help="also a PNG of the demo's orbit on some scenes")
    ap.add_argument("--orbit-scenes", type=int, default=4, help="scenes in --orbit-figure")
    args = ap.parse_args()
    from gst.api import GST

    gst = GST.from_pretrained(args.checkpoint)
    if args.orbit_figure:
        orbit_figure(gst, args.data, args.orbit_scenes, args.orbit_figure)
    evalset = build_evalset(args.data, num_pairs=args.num_pairs, seed=args.seed, resolution=args.resolution)
    rows = score_pairs(gst, evalset, args.samples, args.temperature, args.seed)
    summary = summarize(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary, "rows": rows}, indent=1))
    print(f"{'variant':16s}" + "".join(f"{band:>18s}" for band in summary["generated"]))
    for name, entry in summary.items():
        cells = "".join(
            f"{b.get('psnr', float('nan')):9.2f}{b.get('ssim', float('nan')):9.3f}" for b in entry.values()
        )
        print(f"{name:16s}{cells}")


if __name__ == "__main__":
    main()
