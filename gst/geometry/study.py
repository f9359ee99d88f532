"""How accurately ``cameras_from_rays`` inverts ``plucker_rays`` under Gaussian noise on the rays.

Run: ``python -m gst.geometry.study --json`` (defaults: 200 cameras, noise 0 / 0.003 / 0.01 / 0.03,
images 16x16 and 32x32, seed 0).

Camera model of the study (``random_cameras``): horizontal field of view uniform in [20, 90] degrees,
fy = fx * U(0.9, 1.1), principal point offset from the image centre by up to 10 % of the size on each
axis, uniform random rotation, centre at a uniform random direction with distance U(0.5, 2) from the
origin (the scale of normalised relative poses). Noise: i.i.d. N(0, std^2) added to all 6 channels of
the exact ray map (unit directions, moments of norm <= 2).
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from gst.geometry.conventions import intrinsics_matrix
from gst.geometry.errors import camera_center_error, focal_error, rotation_error_deg
from gst.geometry.rays import cameras_from_rays, plucker_rays
from gst.geometry.rotations import random_rotations


def random_cameras(
    num_cameras: int,
    image_hw: tuple[int, int],
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    fov_deg: tuple[float, float] = (20.0, 90.0),
    max_distance: float = 2.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pinhole cameras (see the module docstring for the distribution).

    Shapes: -> K (num_cameras, 3, 3), w2c (num_cameras, 4, 4).
    """
    H, W = image_hw
    n = num_cameras

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    fov = torch.deg2rad(uniform(*fov_deg))
    fx = 0.5 * W / torch.tan(fov / 2)
    fy = fx * uniform(0.9, 1.1)
    cx = (W - 1) / 2 + uniform(-0.1, 0.1) * W
    cy = (H - 1) / 2 + uniform(-0.1, 0.1) * H
    K = intrinsics_matrix(fx, fy, cx, cy, dtype=torch.float64)  # (n, 3, 3)
    R = random_rotations(n, generator, torch.float64)  # (n, 3, 3)
    direction = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    centre = direction / direction.norm(dim=-1, keepdim=True) * uniform(0.5, max_distance)[:, None]  # (n, 3)
    w2c = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    w2c[:, :3, :3] = R
    w2c[:, :3, 3] = -(R @ centre.unsqueeze(-1)).squeeze(-1)
    return K.to(dtype), w2c.to(dtype)


def _summary(x: torch.Tensor) -> dict[str, float]:
    x = x.to(torch.float64)
    return {"median": float(x.median()), "p95": float(torch.quantile(x, 0.95)), "max": float(x.max())}


def ray_inversion_study(
    num_cameras: int, noise_stds: list[float], image_hw: tuple[int, int], seed: int
) -> dict:
    """Invert noisy ray maps of random cameras and summarise the errors per noise level.

    Returns {"image_hw", "num_cameras", "seed", "levels": [{"noise_std", "rotation_deg",
    "focal_rel", "center"}]}, each error a {"median", "p95", "max"} dict. Rotation error in degrees,
    focal error relative (mean of fx, fy), centre error in world units (cameras lie 0.5-2 from origin).
    """
    gen = torch.Generator().manual_seed(seed)
    K, w2c = random_cameras(num_cameras, image_hw, gen)
    rays = plucker_rays(K, w2c, image_hw)  # (n, 6, H, W)
    levels = []
    for std in noise_stds:
        noisy = rays + std * torch.randn(rays.shape, generator=gen, dtype=rays.dtype)
        K_hat, w2c_hat = cameras_from_rays(noisy)
        levels.append(
            {
                "noise_std": float(std),
                "rotation_deg": _summary(rotation_error_deg(w2c_hat[:, :3, :3], w2c[:, :3, :3])),
                "focal_rel": _summary(focal_error(K_hat, K)),
                "center": _summary(camera_center_error(w2c_hat, w2c)),
            }
        )
    return {"image_hw": list(image_hw), "num_cameras": num_cameras, "seed": seed, "levels": levels}


def _parse_hw(text: str) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--image-hw expects HxW such as 32x32, got {text!r}") from err
    return H, W


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-cameras", type=int, default=200)
    parser.add_argument("--noise-stds", type=float, nargs="+", default=[0.0, 0.003, 0.01, 0.03])
    parser.add_argument("--image-hw", type=_parse_hw, nargs="+", default=[(16, 16), (32, 32)])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = [ray_inversion_study(args.num_cameras, args.noise_stds, hw, args.seed) for hw in args.image_hw]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"{'image':>7} {'noise':>7} | {'rot med':>9} {'rot p95':>9} | {'focal med':>9} {'focal p95':>9} | "
        f"{'ctr med':>9} {'ctr p95':>9}"
    )
    for res in results:
        for lv in res["levels"]:
            hw = "x".join(map(str, res["image_hw"]))
            r, f, c = lv["rotation_deg"], lv["focal_rel"], lv["center"]
            print(
                f"{hw:>7} {lv['noise_std']:7.3f} | {r['median']:9.2e} {r['p95']:9.2e} | "
                f"{f['median']:9.2e} {f['p95']:9.2e} | {c['median']:9.2e} {c['p95']:9.2e}"
            )
    finite = all(math.isfinite(lv["rotation_deg"]["max"]) for res in results for lv in res["levels"])
    return 0 if finite else 1


if __name__ == "__main__":
    raise SystemExit(main())
