"""Training the image tokenizer through the one loop (VQGAN recipe, LlamaGen's settings).

Loss = l1 |x_hat - x| + l2 |x_hat - x|^2 + beta |z_e - sg(q)|^2 (the quantizer's commitment term, whose
gradient reaches the encoder only; the codebook follows an EMA) + LPIPS(x_hat, x) where its ImageNet
weights exist + after ``adversarial_start_step``: adversarial_weight * -D(x_hat) for the tokenizer and
the hinge loss for the discriminator.

Both networks live in one training module so that DDP synchronises both, and they train from one
backward pass: the generator term calls the discriminator with DETACHED parameters
(``torch.func.functional_call``), so it moves only the tokenizer, while the discriminator's own loss
sees a detached reconstruction, so it moves only the discriminator.

Glossary: B batch, H/W pixels, N images.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from gst.tokenizers.image import ImageTokenizer, to_signed
from gst.tokenizers.io import save_tokenizer
from gst.training.gan import PatchDiscriminator, generator_loss, hinge_d_loss
from gst.training.overrides import to_dict
from gst.training.task import Task
from gst.training.tokenizer_config import ImageRunConfig
from gst.training.tokenizer_eval import evaluate_image_tokenizer

Perceptual = nn.Module  # (x_hat, x) in [-1, 1], (B, 3, H, W) each -> (B, ...) distances


class ImageTokenizerTrainModule(nn.Module):
    """The tokenizer, its discriminator and the loss computation. ``perceptual`` is frozen and kept out
    of the state dict (its weights are not ours to checkpoint)."""

    def __init__(self, run: ImageRunConfig, perceptual: Perceptual | None = None) -> None:
        super().__init__()
        self.run = run
        self.tokenizer = ImageTokenizer(run.model)
        self.discriminator = PatchDiscriminator(run.loss.disc_channels, run.loss.disc_layers)
        self._perceptual = [perceptual] if perceptual is not None else []  # a list hides it from nn.Module

    def forward(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Shapes: images (B, 3, H, W) in [-1, 1] -> (scalar loss, detached scalar metrics)."""
        w = self.run.loss
        out = self.tokenizer(images)
        rec = out.reconstruction  # (B, 3, H, W)
        l1 = (rec - images).abs().mean()
        l2 = (rec - images).pow(2).mean()
        loss = w.l1_weight * l1 + w.l2_weight * l2 + out.commit_loss
        metrics = {"l1": l1, "l2": l2, "commit": out.commit_loss}
        if self._perceptual and w.perceptual_weight > 0:
            perceptual = self._perceptual[0](rec, images).mean()
            loss = loss + w.perceptual_weight * perceptual
            metrics["lpips"] = perceptual
        if w.adversarial_weight > 0 and step >= w.adversarial_start_step:
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            g_loss = generator_loss(functional_call(self.discriminator, frozen, (rec,)))
            d_loss = hinge_d_loss(self.discriminator(images), self.discriminator(rec.detach()))
            loss = loss + w.adversarial_weight * g_loss + d_loss
            metrics.update(g_loss=g_loss, d_loss=d_loss)
        return loss, {k: v.detach() for k, v in metrics.items()}


def load_perceptual(weight: float, weights_path: str | Path | None = None) -> tuple[Perceptual | None, str]:
    """LPIPS (AlexNet, v0.1) when its ImageNet trunk weights are on disk (``weights_path``,
    $GST_LPIPS_WEIGHTS or the torch hub cache; see ``gst.eval.lpips_metric``); else None and one notice."""
    if weight <= 0:
        return None, "disabled (loss.perceptual_weight = 0)"
    from gst.eval.lpips_metric import HOW_TO_PROVIDE, build_lpips, find_alexnet_weights

    path = find_alexnet_weights(weights_path)
    if path is None:
        print(
            f"gst: notice: LPIPS perceptual loss is off: ImageNet AlexNet weights are not on this machine "
            f"(never replaced by random weights). To enable it, {HOW_TO_PROVIDE}.",
            file=sys.stderr,
        )
        return None, "unavailable (no AlexNet weights)"
    model = build_lpips(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, f"lpips AlexNet v0.1, trunk {path}"


class ImageTokenizerTask(Task):
    """Stage ``image_tokenizer``. Images are loaded once (uint8, in memory) from ``data_dir``."""

    name = "image_tokenizer"

    def __init__(
        self,
        run: ImageRunConfig,
        data_dir: str | Path,
        *,
        perceptual: Perceptual | None = None,
        perceptual_source: str | None = None,
    ) -> None:
        from gst.training.image_data import load_image_splits

        self.run = run
        self.data_dir = Path(data_dir).resolve()
        self.train_images, self.val_images, self.data_info = load_image_splits(
            self.data_dir, run.model.image_hw, run.data
        )
        if perceptual is None and perceptual_source is None:
            perceptual, perceptual_source = load_perceptual(run.loss.perceptual_weight)
        self.perceptual, self.perceptual_source = perceptual, perceptual_source or "injected"
        # The discriminator gets no gradient before its start step; DDP must tolerate that.
        self.find_unused_parameters = run.loss.adversarial_weight > 0

    def config_dict(self) -> dict[str, Any]:
        return {
            "kind": "image",
            "data_dir": str(self.data_dir),
            **{k: v for k, v in to_dict(self.run).items() if k != "train"},
        }

    def build_model(self) -> nn.Module:
        return ImageTokenizerTrainModule(self.run, self.perceptual)

    def batch(self, index: int, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(self.train_images.shape[0], (batch_size,), generator=generator)
        x = self.train_images[idx].float() / 255.0  # (B, 3, H, W) in [0, 1]
        if self.run.data.hflip:
            flip = torch.rand(batch_size, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return {"images": to_signed(x)}

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.perceptual is not None:
            self.perceptual.to(batch["images"].device)
        loss, metrics = model(batch["images"], step)
        return loss, {k: float(v) for k, v in metrics.items()}

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        return [
            {"params": list(model.tokenizer.parameters()), "weight_decay": weight_decay, "lr_scale": 1.0},
            {
                "params": list(model.discriminator.parameters()),
                "weight_decay": weight_decay,
                "lr_scale": self.run.loss.disc_lr_scale,
            },
        ]

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        images = self.val_images if self.val_images.shape[0] else self.train_images
        report = evaluate_image_tokenizer(model.tokenizer, images[: self.run.data.num_eval_images])
        return {k: v for k, v in report.items() if isinstance(v, float)}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_tokenizer(
            model.tokenizer,
            out_dir,
            metadata={"task": self.name, "data": self.data_info, "perceptual": self.perceptual_source},
        )
