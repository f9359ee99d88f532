"""The adversarial part of VQGAN training: a PatchGAN discriminator and hinge losses.

PatchGAN (Isola et al. 2017, pix2pix): stride-2 4x4 convolutions whose output is a grid of real/fake
logits, one per overlapping patch. GroupNorm instead of pix2pix's BatchNorm, so that the logits of a
sample do not depend on the rest of the batch (and DDP needs no synchronised statistics).

Glossary: B batch, C channels, H/W pixels, P patch logits per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Shapes: (B, 3, H, W) in [-1, 1] -> (B, 1, H', W') logits."""

    def __init__(self, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, num_layers + 1):
            c_out = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [
                nn.Conv2d(c, c_out, 4, stride=stride, padding=1),
                nn.GroupNorm(min(32, c_out // 8), c_out),
                nn.LeakyReLU(0.2),
            ]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss (Lim & Ye 2017): mean(relu(1 - real)) + mean(relu(1 + fake)), halved."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN: -mean(D(fake))."""
    return -logits_fake.mean()
