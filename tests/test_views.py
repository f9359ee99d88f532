"""crop_resize keeps intrinsics exact: projected points land on the same image content (gst.data.views)."""

from __future__ import annotations

import math

import pytest
import torch

from gst.data.views import crop_box, crop_resize, crop_resize_intrinsics, crop_resize_nearest
from gst.geometry.conventions import intrinsics_matrix, project_points


def ramp(H: int, W: int, dtype=torch.float64) -> torch.Tensor:
    """Two channels holding each pixel's own (u, v) in pixel-centre coordinates. Shapes: (2, H, W)."""
    v, u = torch.meshgrid(torch.arange(H, dtype=dtype), torch.arange(W, dtype=dtype), indexing="ij")
    return torch.stack([u, v])


def bilinear(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Sample (C, H, W) at pixel-centre coordinates uv (N, 2). Exact for images linear in (u, v)."""
    H, W = img.shape[-2:]
    grid = torch.stack([(uv[:, 0] + 0.5) / W * 2 - 1, (uv[:, 1] + 0.5) / H * 2 - 1], -1)  # (N, 2)
    out = torch.nn.functional.grid_sample(img[None], grid[None, None], align_corners=False)
    return out[0, :, 0].T  # (N, C)


def camera_and_points(H: int, W: int, n: int = 64, seed: int = 0):
    """A camera with an off-centre principal point and skew-free K, and world points inside its view."""
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_matrix(0.9 * W, 0.85 * W, 0.47 * W, 0.53 * H)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, 3] = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    # Points whose pixels fall in the central 60% of the image (away from the resampling border).
    uv = torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    uv = uv * torch.tensor([W - 1.0, H - 1.0], dtype=torch.float64)
    z = 2.0 + torch.rand(n, 1, generator=g, dtype=torch.float64) * 3
    x_cam = torch.cat([(uv - K[:2, 2]) / torch.diagonal(K)[:2] * z, z], -1)  # (n, 3)
    points = x_cam - w2c[:3, 3]  # w2c has R = I
    return K, w2c, points


def test_crop_box_centres_the_window_at_the_target_aspect():
    assert crop_box((90, 160), (32, 32)) == (0, 35, 90, 90)
    assert crop_box((160, 90), (20, 30)) == (50, 0, 60, 90)
    assert crop_box((100, 100), (50, 50)) == (0, 0, 100, 100)
    assert crop_box((90, 160), (32, 32), mode="stretch") == (0, 0, 90, 160)


@pytest.mark.parametrize(
    ("in_hw", "out_hw", "mode", "tol"),
    [
        ((90, 160), (18, 18), "center_crop", 1e-9),  # 90x90 crop, exact 5x shrink
        ((90, 160), (45, 80), "stretch", 1e-9),  # exact 2x shrink
        ((90, 160), (33, 41), "center_crop", 0.05),  # non-integer shrink: filter asymmetry, see views.py
        ((90, 160), (37, 53), "stretch", 0.05),
        ((40, 30), (100, 120), "center_crop", 1e-9),  # enlarging is plain bilinear: exact on a ramp
    ],
)
def test_projected_points_land_on_the_same_content(in_hw, out_hw, mode, tol):
    H, W = in_hw
    K, w2c, points = camera_and_points(H, W)
    uvz = project_points(K, w2c, points)  # (n, 3) pixels in the input
    out, K_out = crop_resize(ramp(H, W), K, out_hw, mode)
    assert out.shape == (2, *out_hw)
    uvz_out = project_points(K_out, w2c, points)  # (n, 3) pixels in the output
    # Away from the borders of the output and of the crop, where the filter is truncated or clamped.
    (h, w), (y0, x0, crop_h, crop_w) = out_hw, crop_box(in_hw, out_hw, mode)
    u, v, u_in, v_in = uvz_out[:, 0], uvz_out[:, 1], uvz[:, 0] - x0, uvz[:, 1] - y0
    keep = (u >= 1) & (u <= w - 2) & (v >= 1) & (v <= h - 2)
    keep &= (u_in >= 1) & (u_in <= crop_w - 2) & (v_in >= 1) & (v_in <= crop_h - 2)
    assert keep.sum() >= 10
    # The output ramp at the new projection holds the input pixel coordinate it came from.
    source_uv = bilinear(out, uvz_out[keep, :2])  # (n', 2)
    assert (source_uv - uvz[keep, :2]).abs().max() < tol
    torch.testing.assert_close(uvz_out[:, 2], uvz[:, 2], rtol=0, atol=0)  # depth is untouched


def test_intrinsics_formula_in_the_pixel_centre_convention():
    K = intrinsics_matrix(100.0, 120.0, 63.5, 47.5)  # exact centre of a 128x96 image
    K_out = crop_resize_intrinsics(K, (96, 128), (32, 32))  # crop 96x96 at x0 = 16, scale 1/3
    expected = intrinsics_matrix(100.0 / 3, 40.0, (63.5 - 16 + 0.5) / 3 - 0.5, (47.5 + 0.5) / 3 - 0.5)
    torch.testing.assert_close(K_out, expected, rtol=0, atol=1e-12)
    assert K_out[0, 2].item() == pytest.approx(15.5) and K_out[1, 2].item() == pytest.approx(15.5)


def test_batched_views_match_one_by_one():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 48, 64, generator=g)  # (V, C, H, W)
    K = torch.stack([intrinsics_matrix(50.0 + i, 52.0, 31.5 + i, 23.5) for i in range(3)])
    out, K_out = crop_resize(images, K, (20, 24))
    for i in range(3):
        one, K_one = crop_resize(images[i], K[i], (20, 24))
        torch.testing.assert_close(out[i], one)
        torch.testing.assert_close(K_out[i], K_one)
    assert out.shape == (3, 3, 20, 24)
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_shrinking_is_antialiased():
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float()[None]  # (1, 64, 64)
    out, _ = crop_resize(checker, torch.eye(3, dtype=torch.float64), (16, 16))
    # Point-sampling would return all 0 or all 1; a low-pass filter averages to 0.5.
    assert (out[..., 1:-1, 1:-1] - 0.5).abs().max() < 1e-6  # the border pixels see a truncated filter


def test_nearest_keeps_values_and_content_location():
    H, W = 90, 160
    K, w2c, points = camera_and_points(H, W, seed=2)
    index = (ramp(H, W)[1] * W + ramp(H, W)[0]).long()  # (H, W) the flat index of each pixel
    for out_hw, mode in (((33, 41), "center_crop"), ((45, 71), "stretch"), ((120, 200), "center_crop")):
        out, K_out = crop_resize_nearest(index, K, out_hw, mode)
        assert out.shape == out_hw and out.dtype == torch.int64
        y0, x0, crop_h, crop_w = crop_box((H, W), out_hw, mode)
        uv_in = project_points(K, w2c, points)[:, :2]
        uv_out = project_points(K_out, w2c, points)[:, :2]
        inside = (uv_in[:, 0] > x0) & (uv_in[:, 0] < x0 + crop_w - 1) & (uv_in[:, 1] > y0)
        inside &= uv_in[:, 1] < y0 + crop_h - 1
        cols, rows = uv_out[inside].round().long().unbind(-1)
        src = out[rows, cols]  # flat source index of the nearest output pixel
        src_uv = torch.stack([src % W, src // W], -1).double()
        # Two roundings: to the nearest output pixel (half an output pixel, in input pixels) and to the
        # nearest source pixel (half an input pixel).
        bound = 0.5 * torch.tensor([crop_w / out_hw[1], crop_h / out_hw[0]], dtype=torch.float64) + 0.5
        assert ((src_uv - uv_in[inside]).abs() <= bound + 1e-9).all()


def test_nearest_on_batched_masks_and_depth():
    masks = torch.zeros(2, 40, 60, dtype=torch.int64)
    masks[0, 10:30, 20:40] = 3
    masks[1, :, 30:] = 7
    out, _ = crop_resize_nearest(masks, torch.eye(3, dtype=torch.float64).expand(2, 3, 3), (20, 20))
    assert out.shape == (2, 20, 20)
    assert set(out[0].unique().tolist()) == {0, 3} and set(out[1].unique().tolist()) == {0, 7}
    # View 1: the 40x40 centre crop spans columns 10..49, so ids 7 start at crop column 20 = output 10.
    assert (out[1, :, 10:] == 7).all() and (out[1, :, :10] == 0).all()
    depth = torch.linspace(1.0, 2.0, 40 * 60).reshape(40, 60)
    d_out, _ = crop_resize_nearest(depth, torch.eye(3, dtype=torch.float64), (10, 10))
    assert torch.isin(d_out, depth).all()  # no blended depths


def test_bad_arguments_raise():
    K = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="mode must be one of"):
        crop_resize(torch.zeros(3, 8, 8), K, (4, 4), mode="pad")
    with pytest.raises(ValueError, match=">= 1 pixel"):
        crop_resize(torch.zeros(3, 8, 8), K, (0, 4))
    with pytest.raises(ValueError, match="floating"):
        crop_resize(torch.zeros(3, 8, 8, dtype=torch.uint8), K, (4, 4))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(V, H, W\)"):
        crop_resize_nearest(torch.zeros(1, 1, 8, 8), K, (4, 4))
    assert math.isclose(crop_resize_intrinsics(K, (8, 8), (4, 4))[0, 0].item(), 0.5)
