"""Decoding: KV cache equals recomputation, constraints, forced structure, guidance, seeds, filters."""

from __future__ import annotations

import pytest
import torch

from gst.model.backbone import build_gst_model
from gst.model.config import (
    REQUIRED_SPECIAL_TOKENS,
    BackboneConfig,
    GSTModelConfig,
    HeadKind,
    TokenLayout,
    micro,
)
from gst.model.sampling import (
    SamplingConfig,
    estimate_camera_tokens,
    filter_logits,
    generate_camera_and_image,
    generate_image_given_camera,
    generate_text,
)
from gst.model.sequences import TASK_GEN, SequenceConfig, assemble_pose, build_chat_example, pose_offsets

torch.set_num_threads(1)
LAYOUT = TokenLayout(
    num_text=100, special_tokens=REQUIRED_SPECIAL_TOKENS, num_image_codes=32, num_camera_codes=16
)
CFG = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2))
SAMPLE = SamplingConfig(temperature=1.0, top_k=8, top_p=0.9)


@pytest.fixture(scope="module")
def model():
    # A large init std makes the random model's predictions depend on its input (not a constant argmax).
    backbone = BackboneConfig(**{**micro().__dict__, "init_std": 0.3})
    return build_gst_model(GSTModelConfig(backbone=backbone, seed=0), LAYOUT).double().eval()


def _images(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 32, (batch, 16), generator=g) + LAYOUT.image_offset  # (B, 16) image ids


def _cams(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 16, (batch, 4), generator=g) + LAYOUT.camera_offset  # (B, 4) camera ids


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "config",
    [
        SamplingConfig(temperature=0.0),
        SamplingConfig(temperature=0.0, cfg_scale=2.5),
        SAMPLE,
        SamplingConfig(temperature=0.8, top_p=0.8, cfg_scale=3.0),
    ],
)
def test_kv_cache_matches_recomputing_the_prefix(model, config: SamplingConfig) -> None:
    obs = _images(2, 0)
    kw = dict(seq_cfg=CFG, config=config, num_samples=3)
    a = generate_camera_and_image(model, obs, generator=_gen(1), use_cache=True, **kw)
    b = generate_camera_and_image(model, obs, generator=_gen(1), use_cache=False, **kw)
    assert torch.equal(a.camera_ids, b.camera_ids) and torch.equal(a.image_ids, b.image_ids)
    assert a.num_forwards == b.num_forwards == 1 + 4 + 15  # prefill, then one per sampled code but the last
    a = estimate_camera_tokens(model, obs, _images(2, 1), generator=_gen(2), use_cache=True, **kw)
    b = estimate_camera_tokens(model, obs, _images(2, 1), generator=_gen(2), use_cache=False, **kw)
    assert torch.equal(a.camera_ids, b.camera_ids)
    a = generate_image_given_camera(model, obs, _cams(2, 3), generator=_gen(3), use_cache=True, **kw)
    b = generate_image_given_camera(model, obs, _cams(2, 3), generator=_gen(3), use_cache=False, **kw)
    assert torch.equal(a.image_ids, b.image_ids)


def test_greedy_decoding_is_input_dependent_and_matches_one_by_one(model) -> None:
    obs = _images(3, 4)
    out = generate_camera_and_image(model, obs, seq_cfg=CFG)
    assert out.camera_ids.shape == (3, 1, 4) and out.image_ids.shape == (3, 1, 16)
    assert len({tuple(r) for r in out.image_ids[:, 0].tolist()}) == 3  # different conditions, different views
    single = generate_camera_and_image(model, obs[1:2], seq_cfg=CFG)
    assert torch.equal(single.image_ids[0], out.image_ids[1])  # batching does not change the answer


def test_segments_are_constrained_and_structure_is_forced(model) -> None:
    fed: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda mod, args: fed.append(args[0][-1].clone()))
    try:
        out = generate_camera_and_image(
            model,
            _images(2, 5),
            seq_cfg=CFG,
            config=SamplingConfig(temperature=5.0),
            num_samples=4,
            generator=_gen(0),
        )
    finally:
        handle.remove()
    cam, img = out.camera_ids, out.image_ids
    assert bool(((cam >= LAYOUT.camera_offset) & (cam < LAYOUT.size)).all())
    assert bool(((img >= LAYOUT.image_offset) & (img < LAYOUT.camera_offset)).all())
    row = torch.cat(fed)  # what the last row of the batch saw, in order (all but the final sampled code)
    off = pose_offsets(CFG, TASK_GEN)
    assert row.shape == (off.length - 2,)
    sid = LAYOUT.special_id
    assert row[off.cam - 1] == sid("<|cam_start|>") and row[off.cam + 4] == sid("<|cam_end|>")
    assert row[off.tgt - 1] == sid("<|img_start|>")
    assert torch.equal(row[off.cam : off.cam + 4], cam[1, 3]) and torch.equal(row[off.tgt :], img[1, 3, :-1])


def test_same_seed_same_samples_and_samples_differ(model) -> None:
    obs = _images(1, 6)
    a = generate_camera_and_image(model, obs, seq_cfg=CFG, config=SAMPLE, num_samples=6, generator=_gen(11))
    b = generate_camera_and_image(model, obs, seq_cfg=CFG, config=SAMPLE, num_samples=6, generator=_gen(11))
    c = generate_camera_and_image(model, obs, seq_cfg=CFG, config=SAMPLE, num_samples=6, generator=_gen(12))
    assert torch.equal(a.image_ids, b.image_ids) and torch.equal(a.camera_ids, b.camera_ids)
    assert not torch.equal(a.image_ids, c.image_ids)
    assert len({tuple(r) for r in a.image_ids[0].tolist()}) > 1  # many samples per condition


def test_guidance_combines_conditional_and_unconditional_logits(model) -> None:
    cfg = SequenceConfig(image_grid=(4, 4), camera_grid=(1, 1))
    obs, tgt = _images(2, 7), _images(2, 8)
    scale = 4.0
    out = estimate_camera_tokens(
        model, obs, tgt, seq_cfg=cfg, config=SamplingConfig(temperature=0.0, cfg_scale=scale)
    )
    cam = torch.full((2, 1), LAYOUT.camera_offset)
    null = torch.tensor([False, False])
    cond, _, grid = assemble_pose(LAYOUT, cfg, 1, obs, tgt, cam, null)
    uncond, _, _ = assemble_pose(LAYOUT, cfg, 1, obs, tgt, cam, ~null)
    start = pose_offsets(cfg, 1).cam
    with torch.no_grad():
        lc = model(cond[:, :start], grid[None, :start], head=HeadKind.CAMERA).logits
        lu = model(uncond[:, :start], grid[None, :start], head=HeadKind.CAMERA).logits
    expected = (lu + scale * (lc - lu)).argmax(-1) + LAYOUT.camera_offset
    assert torch.equal(out.camera_ids[:, 0, 0], expected)
    assert bool((uncond[:, 1:17] == LAYOUT.special_id("<|pad|>")).all())


def test_filter_logits_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda x: torch.isfinite(x)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.6)) == [True, True, False, False, False]  # 0.5 < 0.6 <= 0.7
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False, False]
    assert kept(filter_logits(logits, top_p=0.1)) == [True, False, False, False, False]  # the top survives
    assert kept(filter_logits(logits[:, [3, 0, 4, 1, 2]], top_p=0.8)) == [False, True, False, True, True]
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)


def test_generate_text_stays_in_text_and_keeps_train_mode(model) -> None:
    prompt, _, grid = build_chat_example(LAYOUT, CFG, [("user", [[3, 4, 5]])], add_generation_prompt=True)
    model.train()
    try:
        new = generate_text(model, prompt, grid, max_new_tokens=6)
        assert model.training
    finally:
        model.eval()
    assert 1 <= len(new) <= 6 and bool((new < LAYOUT.image_offset).all())
    ids = prompt.clone()  # the same greedy tokens, recomputing the prefix every step
    for token in new.tolist():
        with torch.no_grad():
            logits = model(ids[None], None).logits[0, -1, : LAYOUT.image_offset]
        assert int(logits.argmax()) == token
        ids = torch.cat([ids, torch.tensor([token])])
