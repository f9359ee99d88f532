"""The GST loss: restricted-softmax cross-entropy, metrics, chat padding, and that it trains."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gst.model.backbone import build_gst_model
from gst.model.config import REQUIRED_SPECIAL_TOKENS, GSTModelConfig, TokenLayout, micro
from gst.model.loss import LossConfig, compute_loss, gst_loss
from gst.model.sequences import (
    IGNORE_INDEX,
    TASK_EST,
    TASK_GEN,
    ImageSegment,
    SequenceConfig,
    build_chat_example,
    collate_chat,
    collate_pose_batch,
)

torch.set_num_threads(1)
LAYOUT = TokenLayout(
    num_text=100, special_tokens=REQUIRED_SPECIAL_TOKENS, num_image_codes=32, num_camera_codes=16
)
CFG = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2), cond_dropout=0.0)


def _batch(batch_size: int, seed: int, tasks: torch.Tensor | None = None):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 32, (batch_size, 16), generator=g)
    tgt = torch.randint(0, 32, (batch_size, 16), generator=g)
    cam = torch.randint(0, 16, (batch_size, 4), generator=g)
    return collate_pose_batch(LAYOUT, CFG, obs, tgt, cam, step=0, generator=g, tasks=tasks)


def _model(seed: int = 0):
    return build_gst_model(GSTModelConfig(backbone=micro(), seed=seed), LAYOUT)


def test_restricted_loss_equals_cross_entropy_over_segment_rows() -> None:
    model = _model()
    batch = _batch(4, 0, torch.tensor([TASK_GEN, TASK_EST, TASK_GEN, TASK_EST]))
    out = compute_loss(model, batch)
    logits = model(batch.input_ids, batch.grid_pos).logits[:, :-1]  # (B, T-1, V)
    targets = batch.labels[:, 1:]  # (B, T-1)
    sel = targets != IGNORE_INDEX
    logp_rows = []
    for logit, tgt in zip(logits[sel], targets[sel], strict=True):
        lo, hi = (
            (LAYOUT.camera_offset, LAYOUT.size)
            if tgt >= LAYOUT.camera_offset
            else (LAYOUT.image_offset, LAYOUT.camera_offset)
        )
        logp_rows.append(logit[lo:hi].log_softmax(-1)[tgt - lo])
    expected = -torch.stack(logp_rows).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    assert float(out.metrics["tokens"]) == 2 * (4 + 16) + 2 * 4
    assert float(out.metrics["gen/image_tokens"]) == 32 and float(out.metrics["est/camera_tokens"]) == 8
    # camera_first: the first camera code of each row only (one per row), scored like the others.
    cam_pos = (targets >= LAYOUT.camera_offset) & sel  # (B, T-1)
    first_pos = cam_pos.float().argmax(1)  # (B,) first camera target of each row
    first_ce = torch.stack(
        [
            -logits[b, first_pos[b], LAYOUT.camera_offset :].log_softmax(-1)[
                targets[b, first_pos[b]] - LAYOUT.camera_offset
            ]
            for b in range(4)
        ]
    )  # (B,)
    assert (
        float(out.metrics["gen/camera_first_tokens"]) == 2
        and float(out.metrics["est/camera_first_tokens"]) == 2
    )
    torch.testing.assert_close(
        out.metrics["gen/camera_first_ce"], first_ce[[0, 2]].mean(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        out.metrics["est/camera_first_ce"], first_ce[[1, 3]].mean(), rtol=1e-5, atol=1e-6
    )
    # camera_first_weight weighs those codes more: a weighted mean over every scored token.
    n_tok = float(out.metrics["tokens"])
    heavy = compute_loss(model, batch, LossConfig(camera_first_weight=5.0)).loss
    expected_heavy = (expected * n_tok + 4.0 * first_ce.sum()) / (n_tok + 4.0 * 4)
    torch.testing.assert_close(heavy, expected_heavy, rtol=1e-5, atol=1e-6)
    # The full-vocabulary variant is the ordinary shifted LM loss.
    full = compute_loss(model, batch, LossConfig(restrict_vocab=False)).loss
    ref = F.cross_entropy(logits.reshape(-1, LAYOUT.size), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(full, ref, rtol=1e-5, atol=1e-6)
    assert float(full.detach()) > float(out.loss.detach())  # the restricted softmax has fewer competitors


def test_kind_weights_and_chat_padding() -> None:
    model = _model()
    batch = _batch(2, 1, torch.tensor([TASK_GEN, TASK_GEN]))
    cam_only = compute_loss(model, batch, LossConfig(image_weight=0.0))
    torch.testing.assert_close(cam_only.loss, cam_only.metrics["gen/camera_ce"], rtol=1e-5, atol=1e-6)
    chat = [
        build_chat_example(
            LAYOUT, CFG, [("user", [ImageSegment(torch.arange(16)), [5, 6]]), ("assistant", [[7, 8, 9]])]
        ),
        build_chat_example(LAYOUT, CFG, [("user", [[1]]), ("assistant", [[2]])]),
    ]
    out = compute_loss(model, collate_chat(LAYOUT, chat))
    assert float(out.metrics["tokens"]) == 4 + 2  # answers + their <|end|>
    assert float(out.metrics["chat/text_tokens"]) == 6 and "chat/image_ce" not in out.metrics


def test_gst_loss_trains_the_micro_model() -> None:
    """A camera read off the observed image is learnt: est camera loss falls well below chance (log 16)."""
    torch.manual_seed(0)
    model = _model(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def batch(step: int):
        obs = torch.randint(0, 32, (16, 16), generator=g)
        cam = (obs[:, :1] % 16).expand(16, 4)  # the "pose" is the first observed code, mod 16
        return collate_pose_batch(LAYOUT, CFG, obs, obs.flip(1), cam, step=step, generator=g)

    first = None
    for step in range(40):
        loss, metrics = gst_loss(model, batch(step))
        assert isinstance(metrics["est/camera_ce"], float)
        first = float(metrics["est/camera_ce"]) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model.grid_emb.proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        _, metrics = gst_loss(model, batch(0))
    assert first > 2.5  # about log(16) = 2.77 at initialisation
    assert float(metrics["est/camera_ce"]) < 1.5
