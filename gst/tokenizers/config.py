"""Configs of the tokenizers (architecture only; training settings live in ``gst.training``).

Every config is a frozen keyword-only dataclass, validated in ``__post_init__``, saved as JSON with its
checkpoint (``config_to_dict``) and read back strictly (``config_from_dict``: unknown keys are errors).
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


@dataclass(frozen=True, kw_only=True)
class QuantizerConfig:
    """A vector quantizer from ``vector-quantize-pytorch``: VQ (``VectorQuantize``) or FSQ.

    VQ follows LlamaGen's finding (Sun et al. 2024, Table 2): a low-dimensional (8) l2-normalised code
    lookup took codebook usage from 0.29% to 97%. The encoder features are projected to ``code_dim``
    by a 1x1 conv before the lookup. The codebook is updated by EMA (no gradient), initialised by
    k-means on the first batch, and codes whose EMA usage falls below ``dead_code_threshold`` are
    restarted from encoder outputs of the batch.
    FSQ (Mentzer et al. 2023) rounds each of ``len(levels)`` bounded channels to ``levels[i]`` values;
    its implicit codebook of ``prod(levels)`` codes cannot collapse.
    """

    kind: Literal["vq", "fsq"] = "vq"
    codebook_size: int = 1024  # VQ: number of codes K (FSQ: prod(levels))
    code_dim: int = 8  # VQ lookup dimension (FSQ: len(levels))
    cosine: bool = True  # VQ: l2-normalised codes and inputs (cosine-similarity lookup)
    kmeans_init: bool = True  # VQ: k-means on the first training batch
    kmeans_iters: int = 10
    ema_decay: float = 0.99  # VQ: codebook EMA decay
    dead_code_threshold: float = 0.0  # VQ: restart codes whose EMA cluster size (per batch) falls below
    commitment_beta: float = 0.25  # VQ: weight of |z_e - sg(q)|^2; the gradient goes to the ENCODER only
    rotation_trick: bool = False  # VQ: rotation-trick gradients (Fifty et al. 2024), not straight-through
    levels: tuple[int, ...] = (8, 5, 5, 5)  # FSQ levels per channel (1000 codes)

    def __post_init__(self) -> None:
        if self.kind not in ("vq", "fsq"):
            raise ValueError(f"quantizer.kind must be 'vq' or 'fsq', got {self.kind!r}")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise ValueError(f"quantizer: codebook_size >= 2 and code_dim >= 1 needed, got {self}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"quantizer.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.commitment_beta < 0 or self.dead_code_threshold < 0 or self.kmeans_iters < 1:
            raise ValueError("quantizer: commitment_beta, dead_code_threshold >= 0, kmeans_iters >= 1 needed")
        if len(self.levels) < 1 or any(level < 3 for level in self.levels):
            raise ValueError(f"quantizer.levels must be >= 3 each (FSQ), got {self.levels}")

    @property
    def num_codes(self) -> int:
        if self.kind == "fsq":
            n = 1
            for level in self.levels:
                n *= level
            return n
        return self.codebook_size

    @property
    def latent_dim(self) -> int:
        """Channels of the quantized latent (what the decoder reads)."""
        return len(self.levels) if self.kind == "fsq" else self.code_dim


@dataclass(frozen=True, kw_only=True)
class ImageTokenizerConfig:
    """VQGAN-style conv encoder/decoder (Esser et al. 2021; LlamaGen's layout).

    ``len(channel_mult) - 1`` stride-2 stages, so the downsampling factor is 8 for four entries and 16
    for five; the token grid is ``image_hw / downsample``.
    """

    image_hw: tuple[int, int] = (64, 64)  # (H, W) of the images it tokenizes
    channels: int = 32  # width of the first stage
    channel_mult: tuple[int, ...] = (1, 2, 2, 4)  # width multiplier per stage
    num_res_blocks: int = 1  # residual blocks per stage
    z_channels: int = 64  # encoder output / decoder input width (before the code projection)
    mid_attention: bool = False  # one self-attention block in the middle of encoder and decoder
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        if len(self.image_hw) != 2 or min(self.image_hw) < 1:
            raise ValueError(f"image.image_hw must be (H, W) > 0, got {self.image_hw}")
        if len(self.channel_mult) < 2:
            raise ValueError(f"image.channel_mult needs >= 2 entries, got {self.channel_mult}")
        widths = [self.channels * m for m in self.channel_mult] + [self.z_channels]
        if any(w < 8 or w % 8 for w in widths):
            raise ValueError(f"image: stage widths {widths} must be positive multiples of 8 (GroupNorm)")
        if self.num_res_blocks < 1:
            raise ValueError(f"image.num_res_blocks must be >= 1, got {self.num_res_blocks}")
        d = self.downsample
        if self.image_hw[0] % d or self.image_hw[1] % d:
            raise ValueError(f"image.image_hw {self.image_hw} must be divisible by the downsampling {d}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return (self.image_hw[0] // self.downsample, self.image_hw[1] // self.downsample)


@dataclass(frozen=True, kw_only=True)
class CameraTokenizerConfig:
    """Camera tokenizer over Plücker ray maps; its token grid matches the image token grid.

    See ``gst.tokenizers.camera`` for the pipeline: analytic inversion of the ray map, residual stages
    over bands of grid rows, FSQ by default, analytic rendering of the decoded camera.
    """

    image_hw: tuple[int, int] = (64, 64)  # (H, W) of the images whose intrinsics K refer to
    grid_hw: tuple[int, int] = (8, 8)  # token grid = the image tokenizer's grid
    ray_hw: tuple[int, int] = (16, 16)  # ray map resolution (encoder input and decoder output)
    pose_scale: float = 1.0  # world units per normalised unit (1 m for the procedural world); saved
    num_stages: int = 2  # residual stages, each owning h * w / num_stages tokens in raster order
    stage_gain: float = 8.0  # stage s encodes the residual magnified by stage_gain ** s
    hidden: int = 256  # MLP width of each stage's encoder and decoder
    depth: int = 2  # hidden layers per MLP
    quantizer: QuantizerConfig = field(
        default_factory=lambda: QuantizerConfig(kind="fsq", levels=(8, 5, 5, 5))
    )  # FSQ: 1000 codes per token, no collapse

    def __post_init__(self) -> None:
        for name in ("image_hw", "grid_hw", "ray_hw"):
            hw = getattr(self, name)
            if len(hw) != 2 or min(hw) < 1:
                raise ValueError(f"camera.{name} must be (H, W) > 0, got {hw}")
        if min(self.ray_hw) < 2:
            raise ValueError(f"camera.ray_hw must be at least 2 x 2 to define a camera, got {self.ray_hw}")
        if not self.pose_scale > 0:
            raise ValueError(f"camera.pose_scale must be > 0 (world units), got {self.pose_scale}")
        num_tokens = self.grid_hw[0] * self.grid_hw[1]
        if self.num_stages < 1 or num_tokens % self.num_stages:
            raise ValueError(
                f"camera.num_stages ({self.num_stages}) must be >= 1 and divide the grid's "
                f"{num_tokens} tokens"
            )
        if not self.stage_gain >= 1.0:
            raise ValueError(f"camera.stage_gain must be >= 1, got {self.stage_gain}")
        if self.hidden < 1 or self.depth < 1:
            raise ValueError(f"camera.hidden and camera.depth must be >= 1, got {self.hidden}, {self.depth}")


# ---- strict JSON round trips (shared with gst.training.overrides) ----


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-able dict of a (nested) config dataclass; tuples become lists."""
    return _json_ready(dataclasses.asdict(config))


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's fields."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def optional_inner(tp: Any) -> tuple[bool, Any]:
    """(True, X) for ``X | None``, else (False, tp)."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def config_from_dict(cls: type, d: dict[str, Any], where: str = "config") -> Any:
    """Rebuild ``cls`` from ``config_to_dict`` output; unknown keys raise ``ValueError``, missing keys
    take the field's default."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    types_by_name = field_types(cls)
    unknown = sorted(set(d) - set(types_by_name))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; {cls.__name__} has {sorted(types_by_name)}")
    kwargs = {n: _coerce(d[n], tp, f"{where}.{n}") for n, tp in types_by_name.items() if n in d}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    optional, inner = optional_inner(tp)
    if value is None and optional:
        return None
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        return config_from_dict(inner, value, where)
    if get_origin(inner) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
