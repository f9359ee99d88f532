"""The convolutional reader: which segments it reads, that it never sees what is predicted, the pair
stem's pose readout, its code features from the tokenizer's decoder, and its loss and overrides."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from gst.model.backbone import build_gst_model, load_gst_model, save_gst_model
from gst.model.config import REQUIRED_SPECIAL_TOKENS, GSTModelConfig, ReaderConfig, TokenLayout, micro
from gst.model.loss import LossConfig, compute_loss
from gst.model.reader import correlation_maps, est_pairs, given_segments
from gst.model.sampling import read_pose_head
from gst.model.sequences import (
    TASK_EST,
    TASK_GEN,
    ImageSegment,
    SequenceConfig,
    build_chat_example,
    collate_pose_batch,
    pose_offsets,
)

torch.set_num_threads(1)
LAYOUT = TokenLayout(
    num_text=100, special_tokens=REQUIRED_SPECIAL_TOKENS, num_image_codes=32, num_camera_codes=16
)
CFG = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2), cond_dropout=0.0)
READER = ReaderConfig(grid_hw=(4, 4), code_dim=8, channels=16, num_blocks=1, pair_dim=24)


def _model(pose_dim: int = 13, reader: ReaderConfig = READER) -> torch.nn.Module:
    config = GSTModelConfig(backbone=micro(), reader=reader, pose_head_dim=pose_dim, seed=0)
    model = build_gst_model(config, LAYOUT)
    with torch.no_grad():  # a visible reader: its projections start small, like embeddings
        for p in model.reader.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _batch(tasks: list[int], seed: int = 0, null: bool = False):
    g = torch.Generator().manual_seed(seed)
    n = len(tasks)
    obs, tgt = torch.randint(0, 32, (n, 16), generator=g), torch.randint(0, 32, (n, 16), generator=g)
    cam = torch.randint(0, 16, (n, 4), generator=g)
    cfg = dataclasses.replace(CFG, cond_dropout=1.0, cond_dropout_est=1.0) if null else CFG
    return collate_pose_batch(LAYOUT, cfg, obs, tgt, cam, step=0, generator=g, tasks=torch.tensor(tasks))


def test_given_segments_are_the_conditioning_images_only() -> None:
    batch = _batch([TASK_GEN, TASK_EST])
    rows, starts = given_segments(batch.input_ids, LAYOUT, 16)
    gen, est = pose_offsets(CFG, TASK_GEN), pose_offsets(CFG, TASK_EST)
    # gen: the observed image only (its target is generated); est: both images
    assert list(zip(rows.tolist(), starts.tolist(), strict=True)) == [
        (0, gen.obs),
        (1, est.obs),
        (1, est.tgt),
    ]
    obs_i, tgt_i = est_pairs(batch.input_ids, LAYOUT, rows, starts, 16)
    assert obs_i.tolist() == [1] and tgt_i.tolist() == [2]
    # a null (dropped) observation is not read, and then the est target has no pair
    rows, starts = given_segments(_batch([TASK_GEN, TASK_EST], null=True).input_ids, LAYOUT, 16)
    assert list(zip(rows.tolist(), starts.tolist(), strict=True)) == [(1, est.tgt)]
    # chat: an image in the user's prompt is read; an incomplete one (decoding chunks) is not
    image = ImageSegment(codes=torch.arange(16) % 32)
    ids, _, _ = build_chat_example(LAYOUT, CFG, [("user", [[5, 6], image, [7]]), ("assistant", [[8]])])
    rows, starts = given_segments(ids.unsqueeze(0), LAYOUT, 16)
    assert rows.tolist() == [0] and starts.tolist() == [4]  # [user] 5 6 [img_start] codes...
    assert given_segments(ids[:12].unsqueeze(0), LAYOUT, 16)[0].numel() == 0


@pytest.mark.parametrize("task", [TASK_GEN, TASK_EST])
def test_predictions_never_see_the_tokens_they_predict(task: int) -> None:
    """Changing a labelled token (a gen target code, an est camera code) leaves every logit at and
    before its position unchanged: the reader reads conditioning tokens only."""
    model = _model()
    batch = _batch([task])
    labelled = (batch.labels[0] != -100).nonzero().squeeze(1)
    for pos in (int(labelled[0]), int(labelled[len(labelled) // 2])):
        ids = batch.input_ids.clone()
        lo, hi = (
            (LAYOUT.image_offset, LAYOUT.camera_offset)
            if ids[0, pos] < LAYOUT.camera_offset
            else (LAYOUT.camera_offset, LAYOUT.num_used)
        )
        ids[0, pos] = lo + (int(ids[0, pos]) - lo + 1) % (hi - lo)
        with torch.no_grad():
            a = model(batch.input_ids, batch.grid_pos).logits
            b = model(ids, batch.grid_pos).logits
        torch.testing.assert_close(a[0, :pos], b[0, :pos])
        assert not torch.allclose(a[0, pos:], b[0, pos:])


def test_reader_changes_the_conditioned_predictions() -> None:
    """The observed image's codes reach the first camera code's logits through the reader too: with the
    transformer's token embeddings of the observed image zeroed, they still depend on it."""
    model = _model()
    batch = _batch([TASK_EST])
    with torch.no_grad():
        model.lm.get_input_embeddings().weight[LAYOUT.image_offset : LAYOUT.camera_offset] = 0.0
        other = batch.input_ids.clone()
        other[0, 1:17] = LAYOUT.image_offset + (other[0, 1:17] - LAYOUT.image_offset + 3) % 32
        cam = pose_offsets(CFG, TASK_EST).cam - 1  # [cam_start]: predicts the first camera code
        a = model(batch.input_ids, batch.grid_pos).logits[0, cam]
        b = model(other, batch.grid_pos).logits[0, cam]
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("corr_dim", [0, 4])
def test_pose_head_reads_the_pair_stem(corr_dim: int) -> None:
    model = _model(reader=dataclasses.replace(READER, corr_dim=corr_dim))
    assert (model.reader.corr_proj is not None) == bool(corr_dim)
    batch = _batch([TASK_EST, TASK_EST], seed=3)
    est = pose_offsets(CFG, TASK_EST)
    obs = batch.input_ids[:, est.obs : est.obs + 16]
    tgt = batch.input_ids[:, est.tgt : est.tgt + 16]
    with torch.no_grad():
        via_model = read_pose_head(model, obs, tgt, seq_cfg=CFG)  # the est prefix up to [cam_start]
        direct = model.reader.read_pairs(obs - LAYOUT.image_offset, tgt - LAYOUT.image_offset)
    assert via_model.shape == (2, 13)
    torch.testing.assert_close(via_model, direct)
    with pytest.raises(ValueError, match="cam_start"):  # a gen row has no pair to read a pose from
        model(
            batch.input_ids[:, :5], batch.grid_pos[:, :5], pose_positions=torch.ones(2, 5, dtype=torch.bool)
        )


def test_correlation_maps_find_where_content_moved() -> None:
    """The cost volume (ReaderConfig.corr_dim): with the target the observed map shifted one cell right,
    each observed cell's best match is the cell to its right, with similarity 1, and back."""
    a = torch.randn(1, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    b = torch.roll(a, 1, dims=3)  # b[..., x] = a[..., x - 1]
    fwd, bwd = correlation_maps(a, b)
    assert fwd.shape == bwd.shape == (1, 16, 4, 4)
    for r in range(4):
        for c in range(4):
            best_fwd = fwd[0, :, r, c].max(0)  # over target cells
            best_bwd = bwd[0, :, r, c].max(0)  # over observed cells
            assert int(best_fwd.indices) == r * 4 + (c + 1) % 4
            assert int(best_bwd.indices) == r * 4 + (c - 1) % 4
            assert float(best_fwd.values) == pytest.approx(1.0, abs=1e-5)
            assert float(best_bwd.values) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="corr_dim"):
        ReaderConfig(corr_dim=-1)


@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_stem_pairs_add_their_pose_loss(beta: float) -> None:
    model = _model().train()
    batch = _batch([TASK_GEN, TASK_EST])
    g = torch.Generator().manual_seed(1)
    batch.pose_target = torch.randn(2, 13, generator=g)
    batch.stem_codes = torch.randint(0, 32, (3, 2, 16), generator=g)
    batch.stem_pose = torch.randn(3, 13, generator=g)
    config = LossConfig(pose_weight=0.5, pose_beta=beta)
    out = compute_loss(model, batch, config)
    with torch.no_grad():  # smooth L1 with beta: Huber with delta 1 at beta 1
        stem = (
            F.huber_loss(
                model.reader.read_pairs(batch.stem_codes[:, 0], batch.stem_codes[:, 1]),
                batch.stem_pose,
                delta=beta,
            )
            / beta
        )
    torch.testing.assert_close(out.metrics["stem/pose_huber"], stem)
    batch.stem_codes = batch.stem_pose = None
    without = compute_loss(model, batch, config)
    torch.testing.assert_close(out.loss, without.loss + 0.5 * stem)
    out.loss.backward()
    assert model.reader.code_feats.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pose_beta"):
        LossConfig(pose_beta=0.0)


def test_pose_focal_weight_scales_the_log_focal_numbers_only() -> None:
    from gst.model.loss import pose_loss

    g = torch.Generator().manual_seed(2)
    pose, target = torch.randn(5, 13, generator=g), torch.randn(5, 13, generator=g)
    per = F.smooth_l1_loss(pose, target, beta=0.1, reduction="none")  # (5, 13)
    plain = pose_loss(pose, target, LossConfig(pose_beta=0.1))
    torch.testing.assert_close(plain, per.mean())
    weighted = pose_loss(pose, target, LossConfig(pose_beta=0.1, pose_focal_weight=4.0))
    torch.testing.assert_close(weighted, (per.sum() + 3.0 * per[:, 9:11].sum()) / per.numel())
    with pytest.raises(ValueError, match="pose_focal_weight"):
        LossConfig(pose_focal_weight=-1.0)


def test_decoder_code_features_initialise_the_reader() -> None:
    from gst.tokenizers.config import ImageTokenizerConfig, QuantizerConfig
    from gst.tokenizers.image import ImageTokenizer
    from gst.training.code_init import decoder_code_features, init_reader_codes

    torch.manual_seed(0)
    quantizer = QuantizerConfig(kind="vq", codebook_size=32, code_dim=4, kmeans_init=False)
    tok = ImageTokenizer(
        ImageTokenizerConfig(
            image_hw=(16, 16), channels=8, channel_mult=(1, 2, 2), z_channels=8, quantizer=quantizer
        )
    )
    feats = decoder_code_features(tok)  # (32, 8)
    assert feats.shape == (32, 8)
    torch.testing.assert_close(feats.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(feats.std(0), torch.ones(8), atol=1e-5, rtol=0)
    # code k's feature is what the decoder's first layer receives for a grid of code k
    k = 7
    with torch.no_grad():
        latent = tok.quantizer.codes_to_latent(torch.full((1, 2, 2), k))
        raw = tok.post_quant_conv(latent)[0, :, 0, 0]  # (8,)
        all_raw = tok.post_quant_conv(tok.quantizer.codes_to_latent(torch.arange(32).reshape(1, 1, 32)))[
            0, :, 0
        ].T
    torch.testing.assert_close(feats[k], (raw - all_raw.mean(0)) / all_raw.std(0), atol=1e-5, rtol=1e-5)
    model = _model()
    init_reader_codes(model, tok)
    torch.testing.assert_close(model.reader.code_feats.weight, feats)
    wrong = build_gst_model(
        GSTModelConfig(backbone=micro(), reader=dataclasses.replace(READER, code_dim=5), pose_head_dim=13),
        LAYOUT,
    )
    with pytest.raises(ValueError, match="model.reader.code_dim=8"):
        init_reader_codes(wrong, tok)


def test_reader_round_trips_through_save_and_overrides(tmp_path) -> None:
    from gst.training.overrides import apply_overrides

    model = _model()
    save_gst_model(model, tmp_path / "m")
    again = load_gst_model(tmp_path / "m")
    assert again.config.reader == READER
    batch = _batch([TASK_GEN, TASK_EST])
    with torch.no_grad():
        torch.testing.assert_close(
            model(batch.input_ids, batch.grid_pos).logits, again(batch.input_ids, batch.grid_pos).logits
        )
    plain = GSTModelConfig(backbone=micro())
    on = apply_overrides(plain, ["reader.channels=32"])
    assert on.reader == ReaderConfig(channels=32)
    assert apply_overrides(plain, ["reader=default"]).reader == ReaderConfig()
    assert apply_overrides(on, ["reader=none"]).reader is None
    with pytest.raises(ValueError, match="multiple of 8"):
        apply_overrides(plain, ["reader.channels=12"])


def test_a_grown_reader_computes_what_it_did_until_trained() -> None:
    """--init-from with model.reader.corr_dim / cell_heads switched on (gst_init.grow_reader): the new
    correspondence channels start at zero weight, so poses and logits are unchanged."""
    from gst.training.gst_init import grow_reader, reader_growth

    model = _model()
    config = dataclasses.replace(
        model.config, reader=dataclasses.replace(READER, corr_dim=4, cell_heads=True)
    )
    assert reader_growth(model.config, config)
    assert not reader_growth(
        model.config, dataclasses.replace(model.config, reader=dataclasses.replace(READER, channels=32))
    )
    assert not reader_growth(config, model.config)  # switching parts off is not a growth
    batch = _batch([TASK_GEN, TASK_EST], seed=5)
    obs, tgt = torch.randint(0, 32, (3, 16)), torch.randint(0, 32, (3, 16))
    with torch.no_grad():
        before = model(batch.input_ids, batch.grid_pos).logits, model.reader.read_pairs(obs, tgt)
        grown = grow_reader(model, config).eval()
        after = grown(batch.input_ids, batch.grid_pos).logits, grown.reader.read_pairs(obs, tgt)
    assert grown.reader.corr_proj is not None and grown.reader.cell_head is not None
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    with pytest.raises(ValueError, match="not a growth"):
        grow_reader(grown, model.config)


def test_a_pose_reader_serves_the_pose_apart_from_the_backbone_inputs() -> None:
    """model.pose_reader: grown from the reader (a copy, with the reader's pose head), it reads the same
    poses; it adds nothing to the embeddings; the pose losses train it and not the reader."""
    from gst.training.gst_init import grow_reader, reader_growth

    model = _model()
    config = dataclasses.replace(model.config, pose_reader=dataclasses.replace(READER, cell_heads=True))
    assert reader_growth(model.config, config)
    assert not reader_growth(config, model.config)  # a pose reader is not dropped by growth
    batch = _batch([TASK_GEN, TASK_EST], seed=6)
    est = pose_offsets(CFG, TASK_EST)
    obs = batch.input_ids[1:, est.obs : est.obs + 16]
    tgt = batch.input_ids[1:, est.tgt : est.tgt + 16]
    with torch.no_grad():
        before = model(batch.input_ids, batch.grid_pos).logits, read_pose_head(model, obs, tgt, seq_cfg=CFG)
        grown = grow_reader(model, config).eval()
        after = grown(batch.input_ids, batch.grid_pos).logits, read_pose_head(grown, obs, tgt, seq_cfg=CFG)
    assert grown.reader.pose_head is None and grown.pose_reader.to_cell is None
    assert grown.stem_reader is grown.pose_reader and grown.config.stem_reader == config.pose_reader
    torch.testing.assert_close(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    grown.train()
    g = torch.Generator().manual_seed(1)
    batch.pose_target = torch.randn(2, 13, generator=g)
    batch.stem_codes = torch.randint(0, 32, (3, 2, 16), generator=g)
    batch.stem_pose = torch.randn(3, 13, generator=g)
    pose_only = LossConfig(pose_weight=1.0, camera_weight=0.0, image_weight=0.0, text_weight=0.0)
    compute_loss(grown, batch, pose_only).loss.backward()
    assert grown.pose_reader.code_feats.weight.grad.abs().sum() > 0
    assert grown.pose_reader.pose_head.weight.grad.abs().sum() > 0
    for name, p in grown.reader.named_parameters():  # the pose losses do not reach the reader
        assert p.grad is None or float(p.grad.abs().sum()) == 0.0, name
    with pytest.raises(ValueError, match="pose_reader needs"):
        dataclasses.replace(model.config, pose_head_dim=0, pose_reader=READER)


def test_frozen_parameters_stay_out_of_training() -> None:
    from gst.training.gst_init import freeze

    model = freeze(_model().train(), ("reader.code_feats", "reader.single"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "reader.code_feats.weight" in frozen and "reader.single.0.weight" in frozen
    assert not any(n.startswith(("reader.pair", "reader.pose_head", "lm.")) for n in frozen)
    with pytest.raises(ValueError, match="reader.singl"):
        freeze(model, ("reader.singl",))  # a prefix must name whole modules or parameters
