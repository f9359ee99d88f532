"""Run configs and presets of tokenizer training: architecture + loss + data + the loop's TrainConfig.

Presets are plain functions in ``PRESETS`` (``get_preset(kind, name)``); the CLI applies typed
``--set group.key=value`` overrides on top (``gst.training.overrides``).

- ``tiny``: 64x64 images, 8x8 token grid (downsampling 8); trains in minutes on 2 CPU cores.
- ``base``: 256x256 images, 16x16 grid (downsampling 16), GST's scale; meant for a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gst.data.synth.cameras import CameraSamplingConfig
from gst.tokenizers.config import CameraTokenizerConfig, ImageTokenizerConfig, QuantizerConfig
from gst.training.config import TrainConfig


@dataclass(frozen=True, kw_only=True)
class ImageLossConfig:
    """Losses of the image tokenizer (VQGAN recipe; LlamaGen's weights unless noted)."""

    l1_weight: float = 1.0  # pixel L1 in [-1, 1]
    l2_weight: float = 0.0  # pixel MSE in [-1, 1]
    perceptual_weight: float = 1.0  # LPIPS; skipped with one notice when its ImageNet weights are absent
    adversarial_weight: float = 0.1  # hinge PatchGAN, generator side
    adversarial_start_step: int = 2000  # the discriminator joins after the reconstruction has settled
    disc_channels: int = 64  # PatchGAN width of the first layer
    disc_layers: int = 3  # stride-2 layers (receptive field 70 px for 3, as pix2pix)
    disc_lr_scale: float = 1.0  # discriminator lr relative to the tokenizer's

    def __post_init__(self) -> None:
        for name in ("l1_weight", "l2_weight", "perceptual_weight", "adversarial_weight", "disc_lr_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.l1_weight == 0 and self.l2_weight == 0:
            raise ValueError("loss: l1_weight and l2_weight cannot both be 0 (no reconstruction loss)")
        if self.adversarial_start_step < 0 or self.disc_channels < 8 or self.disc_layers < 1:
            raise ValueError(f"loss: bad discriminator settings {self}")


@dataclass(frozen=True, kw_only=True)
class ImageDataConfig:
    """Which images train and validate the image tokenizer."""

    val_fraction: float = 0.1  # scenes whose name hashes below this are validation (gst.data.pairs)
    crop: Literal["center_crop", "stretch"] = "center_crop"  # how other sizes reach image_hw
    hflip: bool = True  # random horizontal flips (image tokens carry no geometry)
    max_images: int = 0  # cap on loaded images per split (0 = all); for quick runs
    num_eval_images: int = 256  # validation images scored during training (the CLI eval uses all)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_images < 0 or self.num_eval_images < 1:
            raise ValueError("data.max_images must be >= 0 and data.num_eval_images >= 1")


@dataclass(frozen=True, kw_only=True)
class ImageRunConfig:
    model: ImageTokenizerConfig
    loss: ImageLossConfig = field(default_factory=ImageLossConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    train: TrainConfig


@dataclass(frozen=True, kw_only=True)
class CameraLossConfig:
    """Losses of the camera tokenizer, all L1 (sharper than L2 near zero error, where targets live)."""

    stage_weight: float = 1.0  # each stage's running estimate vs the exact vector, times gain**stage
    rotation_weight: float = 1.0  # final rotation matrix entries (the recovered pose), times gain**(S-1)
    ray_weight: float = 0.0  # rendered vs input ray map (redundant with the above; off by default)

    def __post_init__(self) -> None:
        if min(self.stage_weight, self.rotation_weight, self.ray_weight) < 0:
            raise ValueError(f"loss weights must be >= 0, got {self}")
        if self.stage_weight == 0 and self.rotation_weight == 0 and self.ray_weight == 0:
            raise ValueError("loss: all camera loss weights are 0")


@dataclass(frozen=True, kw_only=True)
class CameraDataConfig:
    """Camera pairs: fresh random pairs for training, a held-out seed for validation.

    A pair is two independent draws of ``gst.data.synth.cameras.sample_cameras`` with ``sampling``
    (look-at cameras around a scene centred near the origin, horizontal fov and principal-point jitter
    as configured): the first is the observed camera, the second the target. Training pairs come from
    generators seeded by (train.seed, micro-batch index); validation pairs from ``val_seed``.
    """

    sampling: CameraSamplingConfig = field(default_factory=CameraSamplingConfig)
    val_seed: int = 1_000_003  # held-out pairs (never a training generator's seed)
    num_val_pairs: int = 2048

    def __post_init__(self) -> None:
        if self.num_val_pairs < 1 or self.val_seed < 0:
            raise ValueError("data.num_val_pairs must be >= 1 and data.val_seed >= 0")


@dataclass(frozen=True, kw_only=True)
class CameraRunConfig:
    model: CameraTokenizerConfig
    loss: CameraLossConfig = field(default_factory=CameraLossConfig)
    data: CameraDataConfig = field(default_factory=CameraDataConfig)
    train: TrainConfig


def image_tiny() -> ImageRunConfig:
    """64x64 -> 8x8 codes from 1024 (VQ, 8-dim cosine lookup); minutes on 2 CPU cores."""
    return ImageRunConfig(
        model=ImageTokenizerConfig(
            image_hw=(64, 64),
            channels=32,
            channel_mult=(1, 2, 2, 4),
            num_res_blocks=1,
            z_channels=64,
            # Restart codes used less than once per 4 batches (16 x 64 tokens per batch ~ K): without it
            # usage stalled at 15% (k-means on the untrained encoder's outputs), with it 89% by step 200.
            quantizer=QuantizerConfig(kind="vq", codebook_size=1024, code_dim=8, dead_code_threshold=0.25),
        ),
        loss=ImageLossConfig(l2_weight=1.0, adversarial_start_step=1500, disc_channels=32, disc_layers=2),
        train=TrainConfig(
            max_steps=2000,
            batch_size=16,
            lr=4e-4,
            warmup_steps=100,
            checkpoint_every=250,
            eval_every=250,
            log_every=25,
        ),
    )


def image_base() -> ImageRunConfig:
    """256x256 -> 16x16 codes from 16384 (LlamaGen's codebook); for a GPU."""
    return ImageRunConfig(
        model=ImageTokenizerConfig(
            image_hw=(256, 256),
            channels=64,
            channel_mult=(1, 1, 2, 2, 4),
            num_res_blocks=2,
            z_channels=256,
            mid_attention=True,
            quantizer=QuantizerConfig(kind="vq", codebook_size=16384, code_dim=8, dead_code_threshold=0.1),
        ),
        loss=ImageLossConfig(adversarial_start_step=20_000),
        train=TrainConfig(
            max_steps=100_000,
            batch_size=32,
            lr=1e-4,
            warmup_steps=1000,
            checkpoint_every=5000,
            eval_every=5000,
            log_every=100,
        ),
    )


def camera_tiny() -> CameraRunConfig:
    """Camera grid 8x8 (matching image_tiny), two residual stages of FSQ [8,5,5,5]."""
    return CameraRunConfig(
        model=CameraTokenizerConfig(image_hw=(64, 64), grid_hw=(8, 8), ray_hw=(16, 16)),
        train=TrainConfig(
            max_steps=3000,
            batch_size=256,
            lr=1e-3,
            warmup_steps=100,
            min_lr_ratio=0.02,
            checkpoint_every=500,
            eval_every=500,
            log_every=50,
            mixed_precision="no",
        ),
    )


def camera_base() -> CameraRunConfig:
    """Camera grid 16x16 (matching image_base) for 256x256 images."""
    return CameraRunConfig(
        model=CameraTokenizerConfig(image_hw=(256, 256), grid_hw=(16, 16), ray_hw=(32, 32), hidden=512),
        train=TrainConfig(
            max_steps=20_000,
            batch_size=512,
            lr=1e-3,
            warmup_steps=200,
            min_lr_ratio=0.02,
            checkpoint_every=2000,
            eval_every=2000,
            log_every=100,
            mixed_precision="no",
        ),
    )


PRESETS: dict[str, dict[str, Callable[[], ImageRunConfig | CameraRunConfig]]] = {
    "image": {"tiny": image_tiny, "base": image_base},
    "camera": {"tiny": camera_tiny, "base": camera_base},
}


def get_preset(kind: str, name: str) -> ImageRunConfig | CameraRunConfig:
    if kind not in PRESETS:
        raise ValueError(f"--kind {kind!r}: choose one of {sorted(PRESETS)}")
    if name not in PRESETS[kind]:
        raise ValueError(f"--preset {name!r}: {kind} presets are {sorted(PRESETS[kind])}")
    return PRESETS[kind][name]()
