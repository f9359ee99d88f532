"""Task layouts: token order, loss labels, grid alignment, task mixing, conditioning dropout, chat."""

from __future__ import annotations

import pytest
import torch

from gst.model.config import REQUIRED_SPECIAL_TOKENS, TokenLayout
from gst.model.sequences import (
    IGNORE_INDEX,
    NO_GRID,
    TASK_CHAT,
    TASK_EST,
    TASK_GEN,
    ImageSegment,
    SequenceConfig,
    build_chat_example,
    choose_tasks,
    collate_chat,
    collate_pose_batch,
    grid_coords,
    pose_offsets,
)

LAYOUT = TokenLayout(
    num_text=100, special_tokens=REQUIRED_SPECIAL_TOKENS, num_image_codes=32, num_camera_codes=16
)
CFG = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2))


def _codes(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 32, (batch, 16), generator=g)
    tgt = torch.randint(0, 32, (batch, 16), generator=g)
    cam = torch.randint(0, 16, (batch, 4), generator=g)
    return obs, tgt, cam


def _names(ids: torch.Tensor) -> list[str]:
    """Render a row: text as 't', specials by name, image codes as 'i', camera codes as 'c'."""
    out = []
    for t in ids.tolist():
        if t < LAYOUT.num_text:
            out.append("t")
        elif t < LAYOUT.image_offset:
            out.append(LAYOUT.special_tokens[t - LAYOUT.num_text].strip("<|>"))
        else:
            out.append("i" if t < LAYOUT.camera_offset else "c")
    return out


def test_gen_and_est_rows_follow_the_layouts() -> None:
    obs, tgt, cam = _codes(2)
    tasks = torch.tensor([TASK_GEN, TASK_EST])
    batch = collate_pose_batch(LAYOUT, CFG, obs, tgt, cam, step=0, generator=torch.Generator(), tasks=tasks)
    assert batch.input_ids.shape == (2, CFG.pose_seq_len) == (2, 2 * 16 + 4 + 7)
    img, c4 = ["i"] * 16, ["c"] * 4
    gen = [
        "img_start",
        *img,
        "img_end",
        "task_gen",
        "cam_start",
        *c4,
        "cam_end",
        "img_start",
        *img,
        "img_end",
    ]
    est = [
        "img_start",
        *img,
        "img_end",
        "task_est",
        "img_start",
        *img,
        "img_end",
        "cam_start",
        *c4,
        "cam_end",
    ]
    assert _names(batch.input_ids[0]) == gen and _names(batch.input_ids[1]) == est
    g, e = pose_offsets(CFG, TASK_GEN), pose_offsets(CFG, TASK_EST)
    assert torch.equal(batch.input_ids[0, g.obs : g.obs + 16], obs[0] + LAYOUT.image_offset)
    assert torch.equal(batch.input_ids[0, g.cam : g.cam + 4], cam[0] + LAYOUT.camera_offset)
    assert torch.equal(batch.input_ids[1, e.tgt : e.tgt + 16], tgt[1] + LAYOUT.image_offset)
    # Loss: gen on camera + target image, est on camera only; nothing else.
    lab = batch.labels
    assert (lab[0] != IGNORE_INDEX).nonzero().squeeze(1).tolist() == [
        *range(g.cam, g.cam + 4),
        *range(g.tgt, g.tgt + 16),
    ]
    assert (lab[1] != IGNORE_INDEX).nonzero().squeeze(1).tolist() == list(range(e.cam, e.cam + 4))
    assert torch.equal(lab[0, g.cam : g.cam + 4], batch.input_ids[0, g.cam : g.cam + 4])
    assert batch.task.tolist() == [TASK_GEN, TASK_EST] and batch.attention_mask is None


def test_grid_positions_line_up_across_observed_camera_and_target() -> None:
    obs, tgt, cam = _codes(1)
    batch = collate_pose_batch(
        LAYOUT, CFG, obs, tgt, cam, step=0, generator=torch.Generator(), tasks=torch.tensor([TASK_GEN])
    )
    off = pose_offsets(CFG, TASK_GEN)
    grid = batch.grid_pos[0]  # (T, 2)
    assert torch.equal(grid[off.obs : off.obs + 16], grid[off.tgt : off.tgt + 16])
    assert torch.equal(grid[off.obs : off.obs + 16], grid_coords(4, 4))
    # The 2x2 camera cell (0, 1) covers image cells rows 0-1, cols 2-3: same centre (0.25, 0.75).
    cam_cell = grid[off.cam + 1]
    image_block = grid_coords(4, 4).reshape(4, 4, 2)[0:2, 2:4].reshape(-1, 2).mean(0)
    assert torch.allclose(cam_cell, torch.tensor([0.25, 0.75])) and torch.allclose(cam_cell, image_block)
    structure = batch.input_ids[0] < LAYOUT.image_offset
    assert bool((grid[structure] == NO_GRID).all()) and bool((grid[~structure] > 0).all())


def test_task_mixing_joint_alternate_and_single() -> None:
    g = torch.Generator().manual_seed(0)
    joint = choose_tasks(SequenceConfig(task_mix="joint", est_fraction=0.25), 8, 0, g)
    assert int((joint == TASK_EST).sum()) == 2 and int((joint == TASK_GEN).sum()) == 6
    alt = SequenceConfig(task_mix="alternate")
    assert choose_tasks(alt, 4, 0, g).tolist() == [TASK_GEN] * 4
    assert choose_tasks(alt, 4, 1, g).tolist() == [TASK_EST] * 4
    assert choose_tasks(SequenceConfig(task_mix="est"), 3, 0, g).tolist() == [TASK_EST] * 3
    with pytest.raises(ValueError, match="task_mix"):
        SequenceConfig(task_mix="both")


def test_conditioning_dropout_replaces_the_observed_image_with_pad() -> None:
    cfg = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2), cond_dropout=0.3, cond_dropout_est=0.0)
    obs, tgt, cam = _codes(400, seed=1)
    tasks = torch.tensor([TASK_GEN, TASK_EST] * 200)
    batch = collate_pose_batch(
        LAYOUT, cfg, obs, tgt, cam, step=0, generator=torch.Generator().manual_seed(2), tasks=tasks
    )
    pad = LAYOUT.special_id("<|pad|>")
    obs_seg = batch.input_ids[:, 1:17]  # (B, 16)
    dropped = (obs_seg == pad).all(1)
    assert bool(((obs_seg == pad).any(1) == dropped).all())  # all or nothing
    assert not bool(dropped[tasks == TASK_EST].any())
    rate = float(dropped[tasks == TASK_GEN].float().mean())
    assert 0.24 < rate < 0.36  # 200 draws of p = 0.3: 3 sigma is 0.097
    # Targets and labels are untouched by the dropout.
    kept = collate_pose_batch(
        LAYOUT,
        SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2), cond_dropout=0.0),
        obs,
        tgt,
        cam,
        step=0,
        generator=torch.Generator(),
        tasks=tasks,
    )
    assert int(dropped.sum()) > 0 and torch.equal(batch.labels, kept.labels)
    assert torch.equal(batch.input_ids[~dropped], kept.input_ids[~dropped])


def test_seeded_batches_are_reproducible_and_codes_are_checked() -> None:
    obs, tgt, cam = _codes(6)
    a = collate_pose_batch(LAYOUT, CFG, obs, tgt, cam, step=0, generator=torch.Generator().manual_seed(5))
    b = collate_pose_batch(LAYOUT, CFG, obs, tgt, cam, step=0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.task, b.task)
    with pytest.raises(ValueError, match="cam_ids"):
        collate_pose_batch(LAYOUT, CFG, obs, tgt, cam + 16, step=0, generator=torch.Generator())
    with pytest.raises(ValueError, match="shape"):
        collate_pose_batch(LAYOUT, CFG, obs[:, :8], tgt, cam, step=0, generator=torch.Generator())


def test_chat_example_labels_only_the_answer_and_pads_in_batches() -> None:
    image = ImageSegment(torch.arange(16) % 32)
    messages = [("system", [[1, 2]]), ("user", [image, [7, 8, 9]]), ("assistant", [[40, 41]])]
    ids, labels, grid = build_chat_example(LAYOUT, CFG, messages)
    assert _names(ids)[:7] == ["system", "t", "t", "end", "user", "img_start", "i"]
    sid = LAYOUT.special_id
    assert ids[-4:].tolist() == [sid("<|assistant|>"), 40, 41, sid("<|end|>")]
    assert (labels != IGNORE_INDEX).nonzero().squeeze(1).tolist() == [
        len(ids) - 3,
        len(ids) - 2,
        len(ids) - 1,
    ]
    img_pos = (ids >= LAYOUT.image_offset).nonzero().squeeze(1)
    assert torch.equal(grid[img_pos], grid_coords(4, 4)) and int((grid[:, 0] >= 0).sum()) == 16
    prompt, _, _ = build_chat_example(LAYOUT, CFG, messages[:2], add_generation_prompt=True)
    assert torch.equal(prompt, ids[:-3])
    short = build_chat_example(LAYOUT, CFG, [("user", [[3]]), ("assistant", [[4]])])
    batch = collate_chat(LAYOUT, [(ids, labels, grid), short])
    assert batch.input_ids.shape == (2, len(ids)) and batch.task.tolist() == [TASK_CHAT] * 2
    assert int(batch.attention_mask[1].sum()) == len(short[0])
    assert bool((batch.labels[1, len(short[0]) :] == IGNORE_INDEX).all())
    with pytest.raises(ValueError, match="text ids"):
        build_chat_example(LAYOUT, CFG, [("user", [[150]])])
