"""The gen warp (gst.model.warp): where observed cells land in the target grid, that the warp reads
conditioning tokens only, that a grown model computes what it did, and that KV-cache decoding sees the
same warp as whole-row forwards."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gst.model.backbone import build_gst_model
from gst.model.config import REQUIRED_SPECIAL_TOKENS, GSTModelConfig, ReaderConfig, TokenLayout, micro
from gst.model.sampling import SamplingConfig, generate_camera_and_image, generate_image_given_camera
from gst.model.sequences import TASK_EST, TASK_GEN, SequenceConfig, collate_pose_batch, pose_offsets
from gst.model.warp import forward_warp, pixel_depth, warp_image
from gst.tokenizers.camera import CameraTokenizer
from gst.tokenizers.config import CameraTokenizerConfig, QuantizerConfig

torch.set_num_threads(1)
LAYOUT = TokenLayout(
    num_text=100, special_tokens=REQUIRED_SPECIAL_TOKENS, num_image_codes=32, num_camera_codes=16
)
CFG = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2), cond_dropout=0.0)
READER = ReaderConfig(grid_hw=(4, 4), code_dim=8, channels=16, num_blocks=1, pair_dim=24, cell_heads=True)
EYE = torch.eye(4, dtype=torch.float64)


def _K(f: float, size: int) -> torch.Tensor:
    c = (size - 1) / 2
    return torch.tensor([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=torch.float64)


def test_identity_camera_keeps_every_cell_in_place() -> None:
    depth = torch.full((1, 4, 4), 3.0)
    src = forward_warp(depth, torch.tensor([[20.0, 20.0]]), _K(20.0, 16)[None], EYE[None], (16, 16))
    assert src.tolist() == [list(range(16))]


def test_a_sideways_step_shifts_the_cells_by_the_parallax() -> None:
    """Camera 0.25 m to the right, depth 1 m, focal 16 px on 16 px images of 4x4 cells: the scene moves
    4 px = one cell to the left; the right column sees nothing observed."""
    w2c = EYE.clone()
    w2c[0, 3] = -0.25  # x_target = x_observed - 0.25
    depth = torch.ones(1, 4, 4)
    src = forward_warp(depth, torch.tensor([[16.0, 16.0]]), _K(16.0, 16)[None], w2c[None], (16, 16))
    want = [[r * 4 + c + 1 if c < 3 else -1 for c in range(4)] for r in range(4)]
    assert src.reshape(4, 4).tolist() == want


def test_the_nearest_surface_wins_a_target_cell() -> None:
    """Two 1-px cells on a 1x2 image, both moved into the right cell: the nearer one is seen there."""
    w2c = EYE.clone()
    w2c[0, 3] = 1.0
    K = _K(1.0, 2)[None]
    K[0, 1, 2] = 0.0  # one pixel row: its centre is y = 0
    near_left = forward_warp(
        torch.tensor([[[1.0, 4.0]]]), torch.tensor([[1.0, 1.0]]), K, w2c[None], (1, 2), 1
    )
    assert near_left.tolist() == [[-1, 0]]
    far_left = forward_warp(torch.tensor([[[8.0, 4.0]]]), torch.tensor([[1.0, 1.0]]), K, w2c[None], (1, 2), 1)
    assert far_left.tolist() == [[0, 1]]


def test_points_behind_the_target_camera_are_not_seen() -> None:
    w2c = EYE.clone()
    w2c[2, 3] = -5.0  # the target camera stands 5 m in front of the observed surface, looking away
    src = forward_warp(
        torch.ones(1, 4, 4), torch.tensor([[16.0, 16.0]]), _K(16.0, 16)[None], w2c[None], (16, 16)
    )
    assert (src == -1).all()


def _image(size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def test_warp_image_with_the_identity_camera_returns_the_image() -> None:
    image = _image()
    warped, covered = warp_image(image, torch.full((4, 4), 3.0), _K(20.0, 16), _K(20.0, 16), EYE)
    assert covered.all()
    torch.testing.assert_close(warped, image, atol=0.0, rtol=0.0)


def test_warp_image_a_sideways_step_shifts_the_pixels_by_the_parallax() -> None:
    """Camera 0.25 m to the right, depth 2 m, focal 16 px: the scene moves 2 px to the left; the two
    right-hand columns see nothing observed."""
    image = _image()
    w2c = EYE.clone()
    w2c[0, 3] = -0.25
    warped, covered = warp_image(image, torch.full((4, 4), 2.0), _K(16.0, 16), _K(16.0, 16), w2c)
    assert covered[:, :14].all() and not covered[:, 14:].any()
    torch.testing.assert_close(warped[:, :, :14], image[:, :, 2:], atol=0.0, rtol=0.0)
    assert (warped[:, :, 14:] == 0).all()


def test_warp_image_the_nearer_pixel_wins() -> None:
    """Left half at 1 m, right half at 4 m, camera 0.5 m to the left, focal 8 px: the near half moves
    4 px right, over the far half (which moves 1 px); nothing lands in the four left columns."""
    image = _image()
    depth = torch.tensor([[1.0, 1.0, 4.0, 4.0]]).expand(4, 4)
    w2c = EYE.clone()
    w2c[0, 3] = 0.5
    warped, covered = warp_image(image, depth, _K(8.0, 16), _K(8.0, 16), w2c)
    torch.testing.assert_close(warped[:, :, 4:9], image[:, :, 0:5], atol=0.0, rtol=0.0)  # near, +4 px
    torch.testing.assert_close(warped[:, :, 14:], image[:, :, 13:15], atol=0.0, rtol=0.0)  # far, +1 px
    assert not covered[:, :4].any()


def test_warp_image_drops_the_streak_of_a_stretched_seam() -> None:
    """Left half at 1 m, right half at 8 m, camera 1 m to the right, focal 8 px: the far half moves 1 px
    left, the near half 8 px (mostly out of view); the seam between them, interpolated in inverse depth
    between cell centres, spreads each pixel over 2.75 target pixels: kept with no stretch limit, dropped
    with a limit of 2, which leaves the columns it covered to the generated view."""
    image = _image()
    depth = torch.tensor([[1.0, 1.0, 8.0, 8.0]]).expand(4, 4)
    w2c = EYE.clone()
    w2c[0, 3] = -1.0
    warped, covered = warp_image(image, depth, _K(8.0, 16), _K(8.0, 16), w2c, max_stretch=2.0)
    torch.testing.assert_close(warped[:, :, 9:15], image[:, :, 10:16], atol=0.0, rtol=0.0)
    assert not covered[:, :8].any() and covered[:, 9:15].all()
    streak = warp_image(image, depth, _K(8.0, 16), _K(8.0, 16), w2c, max_stretch=None)[1]
    assert streak[:, :8].all()


def test_warp_image_refuses_a_depth_grid_that_does_not_divide_the_image() -> None:
    with pytest.raises(ValueError, match="must divide"):
        warp_image(_image(), torch.ones(3, 3), _K(8.0, 16), _K(8.0, 16), EYE)


def test_pixel_depth_fits_the_ground_plane_through_outliers() -> None:
    """Cells of a ground plane (inverse depth 0.1 + 0.02 u - ... linear in the pixel coordinates), two
    of them replaced by an object at 1 m and weighted as ground 0.1: the fitted plane gives every
    ground point its exact depth; the object's cells keep their own, nearer."""
    H = W = 16
    cu = (torch.arange(4, dtype=torch.float64) + 0.5) * 4 - 0.5

    def plane(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return 0.05 + 0.01 * v + 0.002 * u  # inverse depth, > 0 everywhere

    cells = 1.0 / plane(cu[None, :], cu[:, None])  # (4, 4)
    ground = torch.ones(4, 4)
    cells[1, 2] = cells[2, 2] = 1.0
    ground[1, 2] = ground[2, 2] = 0.1
    z = pixel_depth(cells, (H, W), sub=1, ground=ground)
    px = torch.arange(16, dtype=torch.float64)
    want = 1.0 / plane(px[None, :], px[:, None])
    on_ground = ground.repeat_interleave(4, 0).repeat_interleave(4, 1) > 0.5
    torch.testing.assert_close(z[on_ground], want[on_ground], atol=1e-9, rtol=1e-9)
    assert (z[~on_ground] < want[~on_ground]).all()  # the object's cells: nearer than the ground
    flat = pixel_depth(cells, (H, W), sub=1)  # no ground weights: interpolation only
    assert not torch.allclose(flat[on_ground], want[on_ground], atol=1e-3)


def _camera_tokenizer() -> CameraTokenizer:
    torch.manual_seed(0)
    config = CameraTokenizerConfig(
        image_hw=(16, 16),
        grid_hw=(2, 2),
        ray_hw=(4, 4),
        hidden=16,
        depth=1,
        quantizer=QuantizerConfig(kind="fsq", levels=(4, 4)),
    )
    return CameraTokenizer(config).eval()


def _model(warp: bool = True, visible: bool = True, values: str = "features"):
    config = GSTModelConfig(
        backbone=micro(), reader=READER, pose_head_dim=13, seed=0, gen_warp=warp, gen_warp_values=values
    )
    model = build_gst_model(config, LAYOUT).attach_camera_tokenizer(_camera_tokenizer())
    if visible:  # random weights large enough to matter, including the zero-initialised warp
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith(("reader.", "gen_warp.")):
                    p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _batch(tasks: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = len(tasks)
    obs, tgt = torch.randint(0, 32, (n, 16), generator=g), torch.randint(0, 32, (n, 16), generator=g)
    cam = torch.randint(0, 16, (n, 4), generator=g)
    return collate_pose_batch(LAYOUT, CFG, obs, tgt, cam, step=0, generator=g, tasks=torch.tensor(tasks))


@pytest.mark.parametrize("values", ["features", "code"])
def test_the_warp_reads_conditioning_tokens_only_at_the_predicting_positions(values: str) -> None:
    model = _model(values=values)
    batch = _batch([TASK_GEN, TASK_EST, TASK_GEN], seed=1)
    off = pose_offsets(CFG, TASK_GEN)
    with torch.no_grad():
        warp = model.warp_embeddings(batch.input_ids)
        changed = batch.input_ids.clone()
        changed[:, off.tgt : off.tgt + 16] = LAYOUT.image_offset + 5  # other target codes
        assert torch.equal(model.warp_embeddings(changed), warp)
    nonzero = warp.abs().sum(-1) > 0  # (B, T)
    want = torch.zeros_like(nonzero)
    want[[0, 2], off.tgt - 1 : off.tgt + 15] = True  # [img_start] and the target codes but the last
    assert torch.equal(nonzero, want)


@pytest.mark.parametrize("values", ["features", "code"])
def test_a_model_grown_with_the_warp_computes_what_it_did(values: str) -> None:
    from gst.training.gst_init import grow_reader, reader_growth

    model = _model(warp=False)
    config = dataclasses.replace(model.config, gen_warp=True, gen_warp_values=values)
    assert reader_growth(model.config, config) and not reader_growth(config, model.config)
    batch = _batch([TASK_GEN, TASK_EST], seed=2)
    with torch.no_grad():
        before = model(batch.input_ids, batch.grid_pos).logits
        grown = grow_reader(model, config).attach_camera_tokenizer(_camera_tokenizer()).eval()
        after = grown(batch.input_ids, batch.grid_pos).logits
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="cell_heads=true"):
        dataclasses.replace(config, reader=dataclasses.replace(READER, cell_heads=False))


@pytest.mark.parametrize("values", ["features", "code"])
def test_kv_cache_decoding_sees_the_same_warp_as_whole_rows(values: str) -> None:
    model = _model(values=values)
    g = torch.Generator().manual_seed(4)
    obs = torch.randint(0, 32, (2, 16), generator=g) + LAYOUT.image_offset
    cam = torch.randint(0, 16, (2, 4), generator=g) + LAYOUT.camera_offset
    sample = SamplingConfig(temperature=1.0)
    for generate, args in ((generate_image_given_camera, (obs, cam)), (generate_camera_and_image, (obs,))):
        outs = [
            generate(
                model, *args, seq_cfg=CFG, config=sample, num_samples=2,
                generator=torch.Generator().manual_seed(7), use_cache=use_cache,
            ).image_ids
            for use_cache in (True, False)
        ]  # fmt: skip
        assert torch.equal(outs[0], outs[1])
    # and the warp changes what is generated
    plain = _model(warp=False)
    with torch.no_grad():
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("gen_warp.")})
    other = generate_image_given_camera(
        plain, obs, cam, seq_cfg=CFG, config=sample, num_samples=2, generator=torch.Generator().manual_seed(7)
    ).image_ids
    assert not torch.equal(other, outs[0])


def test_a_warp_model_needs_its_camera_tokenizer() -> None:
    config = GSTModelConfig(backbone=micro(), reader=READER, pose_head_dim=13, seed=0, gen_warp=True)
    model = build_gst_model(config, LAYOUT)
    batch = _batch([TASK_GEN])
    with pytest.raises(ValueError, match="attach its camera tokenizer"):
        model(batch.input_ids, batch.grid_pos)
    with torch.no_grad():
        assert math.isfinite(float(_model()(batch.input_ids, batch.grid_pos).logits.sum()))
