"""Focal length from dense perspective fields: does a per-cell target read the focal length better than
one regressed number? (Issue "A world model that learns on two CPU cores": focal target 10 %; one view's
focal regressed by a CNN: 12.1-12.4 % held out, and its errors are the pose head's: `scripts/focal_probe.py`.)

In the spirit of Perspective Fields (Jin et al., CVPR 2023): a fully convolutional CNN predicts, at every
cell of a 16x16 grid over a 64 px view, the **latitude** of the cell's ray (its angle above the
horizontal plane, world +z up) and the **up direction** (the image-plane direction in which the world's
vertical through the cell's ray points), both local: the ground grid's foreshortening tells the ray's
angle to the ground; vertical edges tell up. The camera that best explains the predicted fields (its
focal length, the world's up vector in the camera frame; principal point at the image centre) is then
fitted by gradient descent on all cells at once; its focal length is the reading. Training: every view of
``--scenes`` (targets from each view's K and w2c), smooth-L1 on latitude (radians) and on the unit up
vector, AdamW, cosine decay over ``--minutes`` of process CPU time; horizontal flips (the fields flip
with the view). Scored like ``scripts/focal_probe.py``: median relative focal error over every view of
the held-out scenes, with a 95 % interval over resampled scenes, and the fitted fields' own errors.

    OMP_NUM_THREADS=1 python scripts/focal_fields_probe.py --scenes data/world128 --heldout
        data/eval_heldout_s1000_100 --num-scenes 2000 --minutes 15 --out runs/focal_fields.json
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from torch import nn

from gst.data.loaders import load_scene
from gst.data.views import crop_resize
from gst.training.focal_reader import (
    cpu_budget,
    median_interval_by_scene,
    relative_errors,
    scene_folders,
    write_results,
)

GRID = 16  # field cells per side


def cell_rays(K: torch.Tensor, size: int, grid: int = GRID) -> torch.Tensor:
    """Unit rays in the camera frame through the cell centres of a ``grid`` x ``grid`` partition of a
    ``size`` px view (pixel-centre convention). Shapes: K (N, 3, 3) -> (N, grid, grid, 3)."""
    step = size / grid
    c = torch.arange(grid, dtype=K.dtype) * step + (step - 1) / 2  # cell centres in pixels
    v, u = torch.meshgrid(c, c, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (g, g, 3)
    rays = torch.einsum("nij,abj->nabi", torch.linalg.inv(K), pix)
    return rays / rays.norm(dim=-1, keepdim=True)


def fields(rays: torch.Tensor, up: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Latitude and image-plane up direction per cell. Shapes: rays (N, g, g, 3) unit, up (N, 3) the world
    vertical in the camera frame, K (N, 3, 3) -> (N, 3, g, g): latitude (radians), up_x, up_y (unit)."""
    up_ = up[:, None, None, :]
    lat = torch.asin((rays * up_).sum(-1).clamp(-1, 1))  # (N, g, g)
    x, y, z = rays.unbind(-1)
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    # d/dt of the projection of (ray + t up) at t = 0
    du = fx * (up_[..., 0] * z - x * up_[..., 2]) / z**2
    dv = fy * (up_[..., 1] * z - y * up_[..., 2]) / z**2
    norm = torch.sqrt(du**2 + dv**2).clamp_min(1e-9)
    return torch.stack([lat, du / norm, dv / norm], dim=1)


def load_field_views(root: str, num_scenes: int | None, size: int):
    """Every view at ``size`` px (uint8), its K at that size, its field targets (N, 3, g, g) and scene."""
    images, Ks, targets, scene_of = [], [], [], []
    for s, folder in enumerate(scene_folders(root, num_scenes)):
        scene = load_scene(folder)
        img, K = crop_resize(scene.load_images(), scene.K.float(), (size, size))
        up = scene.w2c[:, :3, :3].float() @ torch.tensor([0.0, 0.0, 1.0])  # (V, 3) world +z in camera
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        Ks.append(K)
        targets.append(fields(cell_rays(K, size), up, K))
        scene_of += [s] * len(img)
    return torch.cat(images), torch.cat(Ks), torch.cat(targets), scene_of


def network(width: int = 64) -> nn.Module:
    """64 px view + 2 coordinate channels -> (3, 16, 16): two stride-2 stages, then dilated convs."""

    def block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
        pad = dilation
        return [nn.Conv2d(cin, cout, 3, stride, pad, dilation=dilation), nn.BatchNorm2d(cout), nn.GELU()]

    layers = block(5, 32, 2) + block(32, width, 2) + block(width, width) + block(width, width, 1, 2)
    layers += block(width, width, 1, 4) + block(width, width, 1, 8) + block(width, width)
    return nn.Sequential(*layers, nn.Conv2d(width, 3, 1))


def with_coords(x: torch.Tensor) -> torch.Tensor:
    """Views (B, 3, S, S) -> (B, 5, S, S) with x and y in [-1, 1] appended."""
    B, _, S, _ = x.shape
    c = torch.linspace(-1, 1, S)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.cat([x, xx.expand(B, 1, S, S), yy.expand(B, 1, S, S)], dim=1)


def predict(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Fields (N, 3, g, g) of uint8 views, the up channels normalised."""
    net.eval()
    with torch.no_grad():
        out = torch.cat(
            [net(with_coords(images[i : i + 256].float() / 255)) for i in range(0, len(images), 256)]
        )
    net.train()
    up = out[:, 1:] / out[:, 1:].norm(dim=1, keepdim=True).clamp_min(1e-6)
    return torch.cat([out[:, :1], up], dim=1)


def fit_focal(pred: torch.Tensor, size: int, steps: int = 400, up_weight: float = 1.0) -> torch.Tensor:
    """The log(f / W) of the camera whose fields best match ``pred`` (N, 3, g, g): focal length and the
    up vector fitted jointly by Adam on the squared field errors; principal point at the centre, square
    pixels. Returns (N,)."""
    N = len(pred)
    log_f = torch.full((N,), math.log(0.9), requires_grad=True)  # f / W near a 58 degree field of view
    up = torch.tensor([0.0, -0.8, -0.6]).repeat(N, 1).requires_grad_(True)
    opt = torch.optim.Adam([log_f, up], lr=0.02)
    c = (size - 1) / 2
    for _ in range(steps):
        f = size * log_f.exp()
        K = torch.zeros(N, 3, 3)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, c, c, 1.0
        u = up / up.norm(dim=-1, keepdim=True)
        fld = fields(cell_rays(K, size), u, K)
        loss = ((fld[:, 0] - pred[:, 0]) ** 2).sum() + up_weight * ((fld[:, 1:] - pred[:, 1:]) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return log_f.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", required=True, help="training scenes (the procedural world)")
    ap.add_argument("--heldout", required=True, help="held-out scenes (`gst data synth --seed 1000`)")
    ap.add_argument("--num-scenes", type=int, default=1000, help="training scenes read (default 1000)")
    ap.add_argument("--minutes", type=float, default=15.0, help="process CPU-minutes of training")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--predictions", help="JSON lines of every held-out view's fitted log(fx / W)")
    args = ap.parse_args()
    size = 64
    torch.manual_seed(args.seed)
    net = network(args.width)
    train_x, _, train_f, _ = load_field_views(args.scenes, args.num_scenes, size)
    test_x, test_K, test_f, test_scene = load_field_views(args.heldout, None, size)
    print(f"{len(train_x)} training views, {len(test_x)} held-out views", flush=True)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    rng, steps = torch.Generator().manual_seed(args.seed), 0
    for used in cpu_budget(opt, args.lr, args.minutes):
        idx = torch.randint(0, len(train_x), (args.batch,), generator=rng)
        x, y = train_x[idx].float() / 255, train_f[idx]
        flip = torch.rand(args.batch, 1, 1, 1, generator=rng) < 0.5  # mirrored: up_x changes sign
        x = torch.where(flip, x.flip(-1), x)
        y = torch.where(flip, y.flip(-1) * torch.tensor([1.0, -1.0, 1.0])[None, :, None, None], y)
        loss = nn.functional.smooth_l1_loss(net(with_coords(x)), y, beta=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 500 == 0:
            print(f"update {steps}: loss {loss.item():.4f}, {used:.1f} CPU-min", flush=True)
    pred = predict(net, test_x)
    log_f = fit_focal(pred, size)
    true = (test_K[:, 0, 0] / size).log()
    err = relative_errors(log_f, true)
    lat_err = (pred[:, 0] - test_f[:, 0]).abs().flatten(1).median(1).values  # per view, radians
    up_err = (
        torch.rad2deg(torch.acos((pred[:, 1:] * test_f[:, 1:]).sum(1).clamp(-1, 1)))
        .flatten(1)
        .median(1)
        .values
    )
    true_fit = relative_errors(fit_focal(test_f[:200], size), true[:200])  # the fit on true fields
    result = {
        "updates": steps,
        "cpu_minutes": args.minutes,
        "train_views": len(train_x),
        "heldout_views": len(test_x),
        "heldout_median_focal_error": float(np.median(err)),
        "heldout_median_interval_by_scene": median_interval_by_scene(err, test_scene),
        "share_within_10pct": float((err <= 0.10).mean()),
        "heldout_latitude_error_deg_median": math.degrees(float(lat_err.median())),
        "heldout_up_error_deg_median": float(up_err.median()),
        "fit_on_true_fields_median_focal_error": float(np.median(true_fit)),
    }
    write_results(args.out, result, args.predictions, args.heldout, test_scene, log_f, true)


if __name__ == "__main__":
    main()
