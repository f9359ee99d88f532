"""Configuration of the one training loop (``gst.training.loop``), shared by every stage.

A stage (image tokenizer, camera tokenizer, the GST backbone) differs only in its ``Task`` object and
its task config; the optimisation schedule below is the same code for all of them. The resolved config
is saved inside every checkpoint and next to it (``config.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, checkpointing and logging. Steps count optimizer updates, not micro-batches."""

    max_steps: int = 1000  # optimizer updates; also the length of the cosine schedule
    # Wall-clock budget of the training loop in minutes, summed over resumed calls; 0 = none. A run
    # stops at whichever of max_steps and the budget comes first (with a checkpoint and its export), and
    # the cosine then ends where the budget does (see lr_factor): equal-compute comparisons need both.
    max_minutes: float = 0.0
    # Which clock max_minutes reads: "wall" (elapsed time) or "cpu" (this process's CPU time, all its
    # threads): on a shared machine, where other jobs slow a run down, only "cpu" measures equal compute.
    budget_clock: Literal["wall", "cpu"] = "wall"
    batch_size: int = 16  # per process and micro-batch; global batch = batch_size * grad_accum * processes
    grad_accum_steps: int = 1  # micro-batches per optimizer update
    lr: float = 3e-4  # peak learning rate (per-group multipliers come from the task)
    warmup_steps: int = 100  # linear warm-up from 0 to lr over these updates
    min_lr_ratio: float = 0.1  # the cosine decays from lr to lr * min_lr_ratio at max_steps
    weight_decay: float = 0.0  # AdamW decoupled weight decay (the task may exempt groups)
    beta1: float = 0.9
    beta2: float = 0.99  # 0.99 rather than 0.999: VQ/GAN training is non-stationary (LlamaGen uses 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    # auto: bf16 on CUDA, full precision on CPU; native: bf16 wherever the hardware computes it natively
    # (CUDA, or a CPU with AVX-512 BF16 or AMX), else full precision; bf16: always (emulated on other
    # CPUs, where it is many times slower than full precision: gst.training.loop.resolve_precision)
    mixed_precision: Literal["auto", "native", "no", "bf16"] = "auto"
    checkpoint_every: int = 500  # write a checkpoint every N updates (and always at the end)
    keep_checkpoints: int = 2  # older step folders are deleted; 0 keeps all
    log_every: int = 10  # TensorBoard scalars every N updates
    eval_every: int = 0  # call task.evaluate every N updates on the main process; 0 = only at the end
    tensorboard: bool = True
    progress: bool = True  # tqdm bar on the main process
    seed: int = 0  # model init, data order (per micro-batch generators) and the model's own randomness

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum_steps", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        nonnegative = ("warmup_steps", "keep_checkpoints", "eval_every", "grad_clip", "weight_decay")
        for name in (*nonnegative, "max_minutes"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"train.beta1/beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"train.budget_clock must be wall or cpu, got {self.budget_clock!r}")
        if self.mixed_precision not in ("auto", "native", "no", "bf16"):
            raise ValueError(
                f"train.mixed_precision must be auto, native, no or bf16, got {self.mixed_precision!r}"
            )
        if self.seed < 0:
            raise ValueError(f"train.seed must be >= 0, got {self.seed}")


def lr_factor(step: int, config: TrainConfig, budget_fraction: float = 0.0) -> float:
    """Multiplier of the peak lr for the update that follows ``step`` completed updates.

    Linear warm-up over ``warmup_steps`` (the first update uses 1 / warmup), then a half cosine from 1
    down to ``min_lr_ratio`` at ``max_steps``. ``budget_fraction``: the share of ``max_minutes`` already
    spent (0 without a budget); the cosine's progress is the larger of the two shares, so it reaches
    ``min_lr_ratio`` at whichever end comes first, as budget-aware schedules do (Li et al., "Budgeted
    Training", ICLR 2020).
    Range: (0, 1].
    """
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(config.max_steps - config.warmup_steps, 1)
    progress = min(max((step - config.warmup_steps) / span, budget_fraction, 0.0), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine
