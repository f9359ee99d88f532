"""Tests of gst.geometry: the camera convention, Plücker rays and their inversion, rotations, errors."""

from __future__ import annotations

import math

import pytest
import torch

from gst.geometry import (
    RAY_CHANNELS,
    camera_centers,
    cameras_from_rays,
    intrinsics_matrix,
    invert_rigid,
    opencv_w2c_to_opengl_c2w,
    opengl_c2w_to_opencv_w2c,
    plucker_rays,
    project_points,
    relative_w2c,
)
from gst.geometry.errors import (
    camera_center_error,
    focal_error,
    rotation_error_deg,
    translation_direction_error_deg,
)
from gst.geometry.normalize import (
    denormalize_relative_pose,
    mean_pairwise_baseline,
    normalize_relative_pose,
    normalized_relative_pose,
    relative_plucker_rays,
    scale_world,
)
from gst.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    random_rotations,
    rotation_6d_to_matrix,
)
from gst.geometry.study import random_cameras, ray_inversion_study

F64 = torch.float64

# Hand-built camera: 64 x 48 image, looking along world +x with world +z up, centre (-2, 0, 1).
# Camera axes in world coordinates (the rows of R): right = -y, down = -z, forward = +x.
HAND_R = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=F64)
HAND_C = torch.tensor([-2.0, 0.0, 1.0], dtype=F64)
HAND_K = intrinsics_matrix(100.0, 120.0, 31.5, 23.5)


def hand_w2c() -> torch.Tensor:
    w2c = torch.eye(4, dtype=F64)
    w2c[:3, :3] = HAND_R
    w2c[:3, 3] = -HAND_R @ HAND_C
    return w2c


def random_rigid(n: int, gen: torch.Generator) -> torch.Tensor:
    T = torch.eye(4, dtype=F64).repeat(n, 1, 1)
    T[:, :3, :3] = random_rotations(n, gen)
    T[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=F64) * 3
    return T


# ---------------------------------------------------------------- convention


def test_hand_built_camera_projects_known_point() -> None:
    # World point (3, -1, 1.5): relative to the centre (5, -1, 0.5); camera coords R @ that = (1, -0.5, 5).
    # u = 100 * 1 / 5 + 31.5 = 51.5, v = 120 * -0.5 / 5 + 23.5 = 11.5, depth 5: right of and above centre.
    point = torch.tensor([[3.0, -1.0, 1.5]], dtype=F64)
    uvz = project_points(HAND_K, hand_w2c(), point)
    torch.testing.assert_close(uvz, torch.tensor([[51.5, 11.5, 5.0]], dtype=F64))
    torch.testing.assert_close(camera_centers(hand_w2c()), HAND_C)


def test_opengl_conversion_of_hand_camera_and_round_trip() -> None:
    # The same camera as Blender stores it: c2w columns are camera x (right), y (UP), z (BACKWARD).
    c2w_gl = torch.eye(4, dtype=F64)
    c2w_gl[:3, 0] = torch.tensor([0.0, -1.0, 0.0])
    c2w_gl[:3, 1] = torch.tensor([0.0, 0.0, 1.0])
    c2w_gl[:3, 2] = torch.tensor([-1.0, 0.0, 0.0])
    c2w_gl[:3, 3] = HAND_C
    torch.testing.assert_close(opengl_c2w_to_opencv_w2c(c2w_gl), hand_w2c())
    gen = torch.Generator().manual_seed(1)
    c2w = random_rigid(8, gen)
    torch.testing.assert_close(opencv_w2c_to_opengl_c2w(opengl_c2w_to_opencv_w2c(c2w)), c2w)
    torch.testing.assert_close(invert_rigid(c2w) @ c2w, torch.eye(4, dtype=F64).expand(8, 4, 4))


def test_relative_pose_invariant_to_global_rigid_and_scale() -> None:
    gen = torch.Generator().manual_seed(2)
    obs, tgt, G = random_rigid(16, gen), random_rigid(16, gen), random_rigid(16, gen)
    rel = relative_w2c(obs, tgt)
    # A global rigid motion x' = G x of the world changes every w2c into w2c @ G^{-1}.
    rel_moved = relative_w2c(obs @ invert_rigid(G), tgt @ invert_rigid(G))
    torch.testing.assert_close(rel_moved, rel)
    # Observed camera is the identity in its own frame.
    torch.testing.assert_close(relative_w2c(obs, obs), torch.eye(4, dtype=F64).expand(16, 4, 4))
    # Global scale: rotation and translation direction unchanged, translation length scaled.
    rel_scaled = relative_w2c(scale_world(obs, 2.5), scale_world(tgt, 2.5))
    assert rotation_error_deg(rel_scaled[:, :3, :3], rel[:, :3, :3]).max() < 1e-6
    assert translation_direction_error_deg(rel_scaled[:, :3, 3], rel[:, :3, 3]).max() < 1e-6
    torch.testing.assert_close(rel_scaled[:, :3, 3].norm(dim=-1), 2.5 * rel[:, :3, 3].norm(dim=-1))
    # The relative ray maps are invariant to the global rigid motion too.
    K = intrinsics_matrix(20.0, 20.0, 5.5, 3.5).expand(16, 3, 3)
    torch.testing.assert_close(
        relative_plucker_rays(K, obs @ invert_rigid(G), tgt @ invert_rigid(G), (8, 12), 1.0),
        relative_plucker_rays(K, obs, tgt, (8, 12), 1.0),
    )


# ---------------------------------------------------------------- rays


def test_plucker_rays_layout_and_moment_orthogonality() -> None:
    assert RAY_CHANNELS == ("dx", "dy", "dz", "mx", "my", "mz")
    # Integer principal point (u=3, v=1) so that pixel [row 1, col 3] looks along the optical axis.
    K = intrinsics_matrix(10.0, 12.0, 3.0, 1.0)
    rays = plucker_rays(K, hand_w2c(), (4, 5))
    assert rays.shape == (6, 4, 5)
    torch.testing.assert_close(rays[:3, 1, 3], HAND_R[2])  # forward axis = world +x
    torch.testing.assert_close(rays[3:, 1, 3], torch.linalg.cross(HAND_C, HAND_R[2]))
    # Pixel (u=4, v=1) is one pixel right: direction ∝ R^T [0.1, 0, 1] = (1, -0.1, 0).
    expected = torch.tensor([1.0, -0.1, 0.0], dtype=F64)
    torch.testing.assert_close(rays[:3, 1, 4], expected / expected.norm())
    gen = torch.Generator().manual_seed(3)
    Kb, w2c = random_cameras(10, (6, 7), gen)
    rays = plucker_rays(Kb, w2c, (6, 7))
    torch.testing.assert_close(rays[:, :3].norm(dim=1), torch.ones(10, 6, 7, dtype=F64))
    assert (rays[:, :3] * rays[:, 3:]).sum(dim=1).abs().max() < 1e-14
    # Broadcasting: one K for a batch of w2c; several leading dimensions round trip.
    torch.testing.assert_close(plucker_rays(Kb[0], w2c, (6, 7))[0], rays[0])
    K_hat, w2c_hat = cameras_from_rays(rays.reshape(2, 5, 6, 6, 7))
    assert K_hat.shape == (2, 5, 3, 3) and w2c_hat.shape == (2, 5, 4, 4)
    torch.testing.assert_close(w2c_hat.reshape(10, 4, 4), w2c)
    torch.testing.assert_close(K_hat.reshape(10, 3, 3), Kb)


@pytest.mark.parametrize(
    # Measured maxima: float64 2e-11 deg / 8e-15; float32 2e-6 deg / 5e-8 (the fit runs in float64).
    "dtype, rot_bound_deg, focal_bound",
    [(torch.float64, 1e-8, 1e-12), (torch.float32, 1e-4, 1e-6)],
)
@pytest.mark.parametrize("image_hw", [(48, 64), (64, 40)])
def test_exact_rays_inverted(
    dtype: torch.dtype, rot_bound_deg: float, focal_bound: float, image_hw: tuple[int, int]
) -> None:
    gen = torch.Generator().manual_seed(4)
    K, w2c = random_cameras(64, image_hw, gen)
    K_hat, w2c_hat = cameras_from_rays(plucker_rays(K, w2c, image_hw).to(dtype))
    assert K_hat.dtype == dtype and w2c_hat.dtype == dtype
    K_hat, w2c_hat = K_hat.to(F64), w2c_hat.to(F64)
    assert rotation_error_deg(w2c_hat[:, :3, :3], w2c[:, :3, :3]).max() < rot_bound_deg
    assert focal_error(K_hat, K).max() < focal_bound
    assert camera_center_error(w2c_hat, w2c).max() < (1e-9 if dtype == torch.float64 else 1e-5)
    assert (K_hat[:, :2, 2] - K[:, :2, 2]).abs().max() < (1e-8 if dtype == torch.float64 else 1e-2)
    if dtype == torch.float64:
        torch.testing.assert_close(w2c_hat, w2c)
        torch.testing.assert_close(K_hat, K)


def test_cameras_from_rays_is_differentiable() -> None:
    gen = torch.Generator().manual_seed(5)
    K, w2c = random_cameras(1, (3, 4), gen)
    rays = plucker_rays(K, w2c, (3, 4)) + 1e-3 * torch.randn(1, 6, 3, 4, generator=gen, dtype=F64)
    rays.requires_grad_(True)

    def fn(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return cameras_from_rays(r)

    assert torch.autograd.gradcheck(fn, (rays,), eps=1e-6, atol=1e-5)


def test_cameras_from_rays_rejects_degenerate_input() -> None:
    K, w2c = intrinsics_matrix(10.0, 10.0, 3.5, 3.5), hand_w2c()
    rays = plucker_rays(K, w2c, (8, 8))
    bad = rays.clone()
    bad[0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cameras_from_rays(bad)
    bad = rays.clone()
    bad[:3, 0, 0] = 0.0
    with pytest.raises(ValueError, match="zero-length"):
        cameras_from_rays(bad)
    parallel = rays.clone()
    parallel[:3] = torch.tensor([0.0, 0.0, 1.0], dtype=F64)[:, None, None]
    with pytest.raises(ValueError, match="parallel"):
        cameras_from_rays(parallel)
    with pytest.raises(ValueError, match="6, H, W"):
        cameras_from_rays(rays[:5])
    with pytest.raises(ValueError, match="2 x 2"):
        cameras_from_rays(rays[:, :1])


def test_ray_inversion_study_under_noise() -> None:
    res = ray_inversion_study(num_cameras=60, noise_stds=[0.0, 0.01, 0.03], image_hw=(16, 16), seed=0)
    levels = res["levels"]
    assert [lv["noise_std"] for lv in levels] == [0.0, 0.01, 0.03]
    assert levels[0]["rotation_deg"]["max"] < 1e-8 and levels[0]["focal_rel"]["max"] < 1e-12
    for key in ("rotation_deg", "focal_rel", "center"):
        medians = [lv[key]["median"] for lv in levels]
        assert medians[0] < medians[1] < medians[2], (key, medians)
    # Loose bounds, ~2-3x the measured medians
    # (0.45 deg, 0.18 %, 0.0022 at noise 0.01; 1.6 deg, 0.73 %, 0.0095 at noise 0.03).
    assert levels[1]["rotation_deg"]["median"] < 1.5 and levels[2]["rotation_deg"]["median"] < 4.0
    assert levels[1]["focal_rel"]["median"] < 0.006 and levels[2]["focal_rel"]["median"] < 0.02
    assert levels[1]["center"]["median"] < 0.006 and levels[2]["center"]["median"] < 0.025


# ---------------------------------------------------------------- normalisation


def test_pose_normalisation_round_trip_and_moment_scaling() -> None:
    gen = torch.Generator().manual_seed(6)
    obs, tgt = random_rigid(4, gen), random_rigid(4, gen)
    rel = relative_w2c(obs, tgt)
    norm = normalize_relative_pose(rel, 4.0)
    torch.testing.assert_close(norm[:, :3, :3], rel[:, :3, :3])
    torch.testing.assert_close(norm[:, :3, 3], rel[:, :3, 3] / 4.0)
    torch.testing.assert_close(denormalize_relative_pose(norm, 4.0), rel)
    torch.testing.assert_close(normalized_relative_pose(obs, tgt, 4.0), norm)
    K = intrinsics_matrix(8.0, 8.0, 2.5, 2.5)
    rays_1 = relative_plucker_rays(K, obs, tgt, (6, 6), 1.0)
    rays_4 = relative_plucker_rays(K, obs, tgt, (6, 6), 4.0)
    torch.testing.assert_close(rays_4[:, :3], rays_1[:, :3])
    torch.testing.assert_close(rays_4[:, 3:], rays_1[:, 3:] / 4.0)
    # Decoding: rays -> camera -> denormalise gives back the metric relative pose.
    _, w2c_hat = cameras_from_rays(rays_4)
    torch.testing.assert_close(denormalize_relative_pose(w2c_hat, 4.0), rel)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="pose scale"):
            normalize_relative_pose(rel, bad)


def test_mean_pairwise_baseline_by_hand() -> None:
    # Centres (0,0,0), (3,0,0), (0,4,0): distances 3, 4, 5, mean 4.
    w2c = torch.eye(4, dtype=F64).repeat(3, 1, 1)
    w2c[1, :3, 3] = torch.tensor([-3.0, 0.0, 0.0])
    w2c[2, :3, 3] = torch.tensor([0.0, -4.0, 0.0])
    assert mean_pairwise_baseline(w2c) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="V >= 2"):
        mean_pairwise_baseline(w2c[:1])


# ---------------------------------------------------------------- rotations and errors


def test_rotation_conversions_round_trip() -> None:
    gen = torch.Generator().manual_seed(7)
    R = random_rotations(256, gen)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=F64).expand(256, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(256, dtype=F64))
    q = matrix_to_quaternion(R)
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(quaternion_to_matrix(q), R)
    torch.testing.assert_close(quaternion_to_matrix(-q), R)
    torch.testing.assert_close(axis_angle_to_matrix(matrix_to_axis_angle(R)), R)
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R)
    # Edge angles: identity, tiny, and near pi (where the quaternion's w is ~0).
    aa = torch.tensor(
        [[0.0, 0.0, 0.0], [1e-9, 0.0, 0.0], [0.0, 0.0, math.pi - 1e-7], [0.3, 0.4, 1.2]], dtype=F64
    )
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa)
    # 90 degrees about z maps x to y (right-hand rule, column vectors).
    Rz = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=F64))
    ex, ey = torch.eye(3, dtype=F64)[0], torch.eye(3, dtype=F64)[1]
    torch.testing.assert_close(Rz @ ex, ey)
    half = math.sqrt(0.5)
    torch.testing.assert_close(matrix_to_quaternion(Rz), torch.tensor([half, 0, 0, half], dtype=F64))
    # 6D from a non-orthonormal pair still gives a proper rotation.
    R6 = rotation_6d_to_matrix(torch.randn(32, 6, generator=gen, dtype=F64))
    torch.testing.assert_close(torch.linalg.det(R6), torch.ones(32, dtype=F64))


def test_error_functions_by_hand() -> None:
    for dtype, angle in ((F64, 37.0), (torch.float32, 1e-3)):
        R = axis_angle_to_matrix(torch.tensor([0.0, math.radians(angle), 0.0], dtype=dtype))
        err = rotation_error_deg(R, torch.eye(3, dtype=dtype))
        assert err.item() == pytest.approx(angle, rel=1e-3)
    half_turn_x = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    assert rotation_error_deg(half_turn_x, torch.eye(3)).item() == pytest.approx(180.0)
    t = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0], [0.0, 0, 0], [2.0, 2.0, 0]])
    t_true = torch.tensor([[0.0, 3, 0], [-1.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0], [1.0, 1.0, 0]])
    expected = torch.tensor([90.0, 180.0, 90.0, 0.0, 0.0])
    torch.testing.assert_close(translation_direction_error_deg(t, t_true), expected)
    K_pred = intrinsics_matrix(110.0, 90.0, 0.0, 0.0)
    K_true = intrinsics_matrix(100.0, 100.0, 0.0, 0.0)
    assert focal_error(K_pred, K_true).item() == pytest.approx(0.1)
    w2c_moved = hand_w2c()
    w2c_moved[:3, 3] += HAND_R @ torch.tensor([0.0, 3.0, 4.0], dtype=F64)  # centre moves by (0, -3, -4)
    assert camera_center_error(w2c_moved, hand_w2c()).item() == pytest.approx(5.0)
