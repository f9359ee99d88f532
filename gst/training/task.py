"""What a training stage must provide to the one training loop: a small ``Task`` object.

The loop (``gst.training.loop.train``) owns optimisation, distribution, precision, checkpoints, resume,
logging and the progress bar; a task owns only what differs between stages:

- ``build_model()``: the trainable ``nn.Module``. Its ``forward`` must compute everything that needs
  gradients (DDP synchronises gradients of what runs inside the wrapped module's forward), so stages
  with several networks (a tokenizer and its discriminator) wrap them in one training module.
- ``batch(index, generator, batch_size)``: micro-batch number ``index``, drawn with ``generator``. The
  loop seeds the generator from (seed, index), so data order is a pure function of the step: resuming
  needs no data-loader state, and process r of P at update s, micro-batch a reads index
  ``(s * A + a) * P + r`` (the same data a single process with A * P micro-batches would read).
- ``loss(model, batch, step)``: a scalar loss and float metrics for logging.

Optional hooks have defaults here: ``param_groups`` (e.g. no weight decay on norms, another lr for a
discriminator), ``evaluate`` (main process only) and ``export`` (the deployable artefact written
beside every checkpoint, e.g. tokenizer weights without the discriminator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


class Task:
    """Base class of training stages; subclasses override the four required members."""

    name: str = "task"  # short stage name, saved in checkpoints
    # Set when some parameters do not receive gradients at every step (e.g. a discriminator before its
    # delayed start); DDP then searches for unused parameters.
    find_unused_parameters: bool = False

    def config_dict(self) -> dict[str, Any]:
        """The task's resolved config (JSON-able). Resume refuses a checkpoint whose config differs."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def batch(self, index: int, generator: torch.Generator, batch_size: int) -> Any:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups; ``lr_scale`` multiplies the scheduled lr of a group (default 1)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Validation metrics logged to TensorBoard (called on the main process with the unwrapped model)."""
        return {}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        """Write the deployable artefact of ``model`` (unwrapped) into ``out_dir`` (created by the loop)."""
        return None
