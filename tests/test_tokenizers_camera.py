"""The camera tokenizer: geometry plumbing, exact code/latent round trips, valid decoded cameras,
scale normalisation, learning, and the shipped tiny checkpoint against the issue's targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gst.data.synth.cameras import CameraSamplingConfig, sample_cameras
from gst.geometry import cameras_from_rays, normalize_relative_pose, plucker_rays, relative_w2c, scale_world
from gst.tokenizers.camera import CameraTokenizer, scale_intrinsics
from gst.tokenizers.config import CameraTokenizerConfig, QuantizerConfig
from gst.tokenizers.io import load_tokenizer, save_tokenizer

torch.set_num_threads(1)
ASSET = Path(__file__).resolve().parents[1] / "assets" / "tokenizers-tiny" / "camera"


def _pairs(seed: int, n: int, hw=(64, 64)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    K, w2c = sample_cameras(torch.Generator().manual_seed(seed), 2 * n, hw, config=CameraSamplingConfig())
    return K[1::2], w2c[0::2], w2c[1::2]


def _small(**kw) -> CameraTokenizer:
    torch.manual_seed(0)
    return CameraTokenizer(CameraTokenizerConfig(hidden=64, **kw)).eval()


def test_scale_intrinsics_matches_subsampled_rays() -> None:
    K, w2c_obs, w2c_tgt = _pairs(0, 3)
    full = plucker_rays(K, w2c_tgt, (64, 64))  # (3, 6, 64, 64)
    coarse = plucker_rays(scale_intrinsics(K, (64, 64), (16, 16)), w2c_tgt, (16, 16))
    # Coarse pixel (i, j) covers fine pixels 4i..4i+3, so its centre is fine coordinate 4i + 1.5: the
    # mean of the four centre rays' directions, renormalised, up to curvature.
    d = full[:, :3, 1::4, 1::4] + full[:, :3, 2::4, 2::4]
    d = d / d.norm(dim=1, keepdim=True)
    assert (d - coarse[:, :3]).abs().max() < 2e-3
    back = scale_intrinsics(scale_intrinsics(K, (64, 64), (16, 16)), (16, 16), (64, 64))
    torch.testing.assert_close(back, K, rtol=0, atol=1e-12)


def test_camera_vector_round_trip_and_valid_decoded_cameras() -> None:
    tok = _small()
    K, w2c_obs, w2c_tgt = _pairs(1, 8)
    w2c_rel = normalize_relative_pose(relative_w2c(w2c_obs, w2c_tgt), 1.0)
    p = tok.camera_vector(K, w2c_rel)
    params = tok.params_from_vector(p.double())
    torch.testing.assert_close(params.K(), K, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(params.w2c(), w2c_rel, rtol=1e-5, atol=1e-5)
    codes = tok.encode(tok.rays_from_cameras(K, w2c_rel))
    assert codes.shape == (8, 8, 8) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < tok.num_codes == 1000
    # An untrained decoder still emits an exact pinhole camera: its ray map re-renders identically.
    rays = tok.decode(codes)
    K_hat, w2c_hat = cameras_from_rays(rays.double())
    torch.testing.assert_close(plucker_rays(K_hat, w2c_hat, (16, 16)), rays.double(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["fsq", "vq"])
def test_codes_to_latent_is_the_quantized_latent(kind: str) -> None:
    q = QuantizerConfig(kind=kind, codebook_size=64, code_dim=4, kmeans_init=False)
    tok = _small(quantizer=q)
    K, w2c_obs, w2c_tgt = _pairs(2, 4)
    target = tok.camera_vector(K, normalize_relative_pose(relative_w2c(w2c_obs, w2c_tgt), 1.0))
    with torch.no_grad():
        latent, codes, _, estimates = tok._quantize_stages(target)
        assert torch.equal(tok.quantizer.codes_to_latent(codes), latent)
        torch.testing.assert_close(tok._decode_vector(latent), estimates[-1], rtol=0, atol=1e-6)
    assert codes.shape == (4, 8, 8)  # stage 0 owns rows 0-3, stage 1 rows 4-7
    with pytest.raises(ValueError, match="must lie in"):
        tok.quantizer.codes_to_latent(torch.full((1, 8, 8), tok.num_codes))


@pytest.mark.parametrize(("grid", "stages"), [((2, 2), 4), ((4, 2), 4), ((2, 2), 2)])
def test_small_grids_split_stages_into_raster_runs(grid: tuple[int, int], stages: int) -> None:
    """Issue 7's small camera grids: stage s owns raster tokens [s n / S, (s + 1) n / S), also where a
    stage is less than one row (2x2 grid, four one-token stages)."""
    tok = _small(grid_hw=grid, num_stages=stages)
    K, w2c_obs, w2c_tgt = _pairs(5, 6)
    target = tok.camera_vector(K, normalize_relative_pose(relative_w2c(w2c_obs, w2c_tgt), 1.0))
    with torch.no_grad():
        latent, codes, _, estimates = tok._quantize_stages(target)
        assert codes.shape == (6, *grid) and len(estimates) == stages
        assert torch.equal(tok.quantizer.codes_to_latent(codes), latent)
        torch.testing.assert_close(tok._decode_vector(latent), estimates[-1], rtol=0, atol=1e-6)
        # Changing the last raster token changes only the last stage's correction.
        n = grid[0] * grid[1] // stages
        flat = codes.flatten(1).clone()
        flat[:, -1] = (flat[:, -1] + 1) % tok.num_codes
        bent = tok.quantizer.codes_to_latent(flat.reshape(codes.shape))
        for s in range(stages - 1):
            torch.testing.assert_close(tok._band(bent, s), tok._band(latent, s), rtol=0, atol=0)
        last = stages - 1
        assert not torch.equal(tok._band(bent, last)[..., n - 1], tok._band(latent, last)[..., n - 1])
    with pytest.raises(ValueError, match="divide the grid's 4 tokens"):
        CameraTokenizerConfig(grid_hw=(2, 2), num_stages=3)


def test_pose_scale_normalisation_is_applied_and_undone() -> None:
    K, w2c_obs, w2c_tgt = _pairs(3, 4)
    unit, scaled = _small(), _small(pose_scale=2.5)
    scaled.load_state_dict(unit.state_dict())
    codes = unit.encode_cameras(K, w2c_obs, w2c_tgt)
    # The same cameras in a world 2.5x larger, with pose_scale 2.5: the same tokens...
    codes_big = scaled.encode_cameras(K, scale_world(w2c_obs, 2.5), scale_world(w2c_tgt, 2.5))
    assert torch.equal(codes, codes_big)
    # ...which decode to translations 2.5x longer.
    _, w2c_unit = unit.decode_cameras(codes)
    _, w2c_scaled = scaled.decode_cameras(codes)
    torch.testing.assert_close(w2c_scaled[:, :3, 3], 2.5 * w2c_unit[:, :3, 3], rtol=1e-6, atol=1e-6)


def test_save_load_round_trip(tmp_path: Path) -> None:
    tok = _small(pose_scale=2.0)
    save_tokenizer(tok, tmp_path / "cam", metadata={"note": "test"})
    loaded = load_tokenizer(tmp_path / "cam")
    K, w2c_obs, w2c_tgt = _pairs(4, 4)
    assert torch.equal(loaded.encode_cameras(K, w2c_obs, w2c_tgt), tok.encode_cameras(K, w2c_obs, w2c_tgt))
    assert loaded.config == tok.config and loaded.metadata == {"note": "test"}
    info = (tmp_path / "cam" / "config.json").read_text()
    assert '"ray_channels"' in info and '"pose_scale": 2.0' in info


@pytest.mark.skipif(not (ASSET / "model.safetensors").exists(), reason="no tiny camera tokenizer asset")
def test_shipped_tiny_checkpoint_meets_the_targets() -> None:
    from gst.training.tokenizer_eval import evaluate_camera_tokenizer

    tok = load_tokenizer(ASSET)
    K, w2c_obs, w2c_tgt = _pairs(424242, 512)  # a seed no training generator used
    report = evaluate_camera_tokenizer(tok, K, relative_w2c(w2c_obs, w2c_tgt))
    assert report["rotation_error_deg_median"] <= 0.5
    assert report["rotation_error_deg_p95"] <= 2.0
    assert report["focal_error_pct_median"] <= 1.0


def test_symmetric_camera_vector_averages_a_pose_with_the_inverse_of_its_reverse() -> None:
    """A consistent pair of readings gives the forward pose back; a backward reading off by a rotation
    about one axis moves the rotation half-way (the chordal mean of two rotations about one axis)."""
    from gst.geometry import axis_angle_to_matrix, random_rotations
    from gst.tokenizers.camera import camera_vector, params_from_vector, symmetric_camera_vector

    g = torch.Generator().manual_seed(0)
    R = random_rotations(4, generator=g)
    t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    w2c = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    w2c[:, :3, :3], w2c[:, :3, 3] = R, t
    K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]], dtype=torch.float64).repeat(4, 1, 1)
    fwd = camera_vector(K, w2c, (64, 64))
    bwd = camera_vector(K, torch.linalg.inv(w2c), (64, 64))
    torch.testing.assert_close(symmetric_camera_vector(fwd, bwd), fwd, atol=1e-5, rtol=1e-5)
    turn = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64))  # 0.2 rad about z
    off = torch.linalg.inv(w2c)
    off[:, :3, :3] = turn.T @ off[:, :3, :3]  # the backward reading's rotation, inverted, is R @ turn
    sym = params_from_vector(symmetric_camera_vector(fwd, camera_vector(K, off, (64, 64))), (64, 64))
    half = R @ axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.1], dtype=torch.float64))
    torch.testing.assert_close(sym.rotation.double(), half, atol=1e-5, rtol=1e-5)
