"""How well does the gen warp (gst.model.warp) place observed cells? On val pairs of a token cache with cell
labels, per target cell: the cosine between the code features (the checkpoint's reader, decoder-initialised)
of the observed cell the warp gives it and of its true code, and how often the two codes are equal; for
the true depth, focal and camera, for the checkpoint's own readouts (what the model does), and for
copying the same cell or a random one.

    python scripts/warp_geometry_check.py --cache data/cache_world4000_p64 --checkpoint assets/gst-tiny
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from gst.api_checkpoint import resolve_checkpoint
from gst.data.cell_labels import open_cell_labels
from gst.data.token_cache import open_token_cache
from gst.model.backbone import load_gst_model
from gst.model.warp import forward_warp
from gst.tokenizers.io import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--checkpoint", required=True, help="a checkpoint with a pose reader with cell heads")
    ap.add_argument("--num-pairs", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cache = open_token_cache(args.cache)
    val = cache.split("val")
    rows = np.random.default_rng(args.seed).choice(len(val), args.num_pairs, replace=False)
    obs, tgt, cam = val.codes(rows)
    n = len(rows)
    o, t = obs.reshape(n, -1), tgt.reshape(n, -1)
    depth_true = torch.nan_to_num(
        torch.from_numpy(open_cell_labels(cache).pairs(val, rows)["depth"][:, 0]).double(), nan=1e3
    )
    K_obs = torch.from_numpy(val.K_obs[rows]).double()
    focal_true = torch.stack([K_obs[:, 0, 0], K_obs[:, 1, 1]], -1)
    model = load_gst_model(resolve_checkpoint(args.checkpoint).model_dir).eval()
    cam_tok = load_tokenizer(cache.manifest["tokenizers"]["camera"]["path"]).eval()
    H, W = cam_tok.config.image_hw
    h, w = obs.shape[1:]
    feat = torch.nn.functional.normalize(model.reader.code_feats.weight.detach(), dim=1)
    with torch.no_grad():
        K_cam, w2c_cam = cam_tok.decode_cameras(cam)
        depth, focal = model.stem_reader.observed_geometry(model.stem_reader.grid_features(o), W)
    K_true, w2c_true = (
        torch.from_numpy(val.K_tgt[rows]).double(),
        torch.from_numpy(val.w2c_rel[rows]).double(),
    )
    cases = {
        "copy the same cell": torch.arange(h * w).expand(n, -1),
        "a random cell": torch.randint(
            0, h * w, (n, h * w), generator=torch.Generator().manual_seed(args.seed)
        ),
        "true depth, focal and camera": forward_warp(depth_true, focal_true, K_true, w2c_true, (H, W)),
        "true depth and focal, decoded camera codes": forward_warp(
            depth_true, focal_true, K_cam, w2c_cam, (H, W)
        ),
        "the model's depth and focal, decoded camera codes": forward_warp(
            depth, focal, K_cam, w2c_cam, (H, W)
        ),
    }
    surface = depth_true < 1e3
    rel = ((depth.double() - depth_true).abs() / depth_true)[surface].median()
    print(f"{n} val pairs; the model's depth: median relative error {float(rel):.3f} on surface cells")
    for name, src in cases.items():
        hit = src >= 0
        warped = o.gather(1, src.clamp(min=0))
        cos = (feat[warped] * feat[t]).sum(-1)[hit].mean()
        exact = ((warped == t) & hit).sum() / hit.sum()
        print(
            f"{name}: cells hit {hit.float().mean():.3f}, code-feature cosine {cos:.3f}, "
            f"same code {exact:.3f}"
        )


if __name__ == "__main__":
    main()
