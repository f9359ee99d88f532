"""The image tokenizer: a VQGAN-style convolutional encoder/decoder around a VQ or FSQ quantizer.

Images are in [-1, 1] inside the tokenizer and in [0, 1] at metric boundaries; ``to_signed`` /
``to_unit`` are the one conversion. Losses (L1/L2, commitment, PatchGAN, LPIPS) live in
``gst.training.image_task``; this module holds the architecture only.

Glossary: B batch, C channels, H/W pixels, h/w token grid (H / downsample), D latent channels, K codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gst.tokenizers.config import ImageTokenizerConfig
from gst.tokenizers.layers import AttnBlock, Downsample, ResBlock, Upsample, norm
from gst.tokenizers.quantizer import Quantizer


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (the tokenizer's range). Shapes: any -> same."""
    return images * 2.0 - 1.0


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (the metrics' range), clamped. Shapes: any -> same."""
    return ((images + 1.0) * 0.5).clamp(0.0, 1.0)


@dataclass
class ImageTokenizerOutput:
    """Shapes: reconstruction (B, 3, H, W) in about [-1, 1] (not clamped, so losses see overshoot);
    codes (B, h, w) int64; commit_loss scalar; latent (B, D, h, w) encoder output before quantization."""

    reconstruction: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    latent: torch.Tensor


class Encoder(nn.Module):
    """Shapes: (B, 3, H, W) -> (B, z_channels, h, w)."""

    def __init__(self, config: ImageTokenizerConfig) -> None:
        super().__init__()
        widths = [config.channels * m for m in config.channel_mult]
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        c = widths[0]
        for i, width in enumerate(widths):
            for _ in range(config.num_res_blocks):
                layers.append(ResBlock(c, width))
                c = width
            if i < len(widths) - 1:
                layers.append(Downsample(c))
        layers.append(ResBlock(c, c))
        if config.mid_attention:
            layers += [AttnBlock(c), ResBlock(c, c)]
        layers += [norm(c), nn.SiLU(), nn.Conv2d(c, config.z_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Shapes: (B, z_channels, h, w) -> (B, 3, H, W)."""

    def __init__(self, config: ImageTokenizerConfig) -> None:
        super().__init__()
        widths = [config.channels * m for m in config.channel_mult][::-1]
        c = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(config.z_channels, c, 3, padding=1), ResBlock(c, c)]
        if config.mid_attention:
            layers += [AttnBlock(c), ResBlock(c, c)]
        for i, width in enumerate(widths):
            # One more block per stage than the encoder, as in taming-transformers' decoder.
            for _ in range(config.num_res_blocks + 1):
                layers.append(ResBlock(c, width))
                c = width
            if i < len(widths) - 1:
                layers.append(Upsample(c))
        layers += [norm(c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ImageTokenizer(nn.Module):
    """Images <-> a grid of integer codes.

    ``encode``: (B, 3, H, W) in [-1, 1] -> codes (B, h, w) int64 in [0, K).
    ``decode``: codes (B, h, w) -> (B, 3, H, W) in [-1, 1] (clamped).
    """

    kind = "image"

    def __init__(self, config: ImageTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        q = config.quantizer
        self.encoder = Encoder(config)
        self.quant_conv = nn.Conv2d(config.z_channels, q.latent_dim, 1)  # LlamaGen: low-dim code space
        self.quantizer = Quantizer(q)
        self.post_quant_conv = nn.Conv2d(q.latent_dim, config.z_channels, 1)
        self.decoder = Decoder(config)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.config.grid_hw

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def _check_images(self, images: torch.Tensor) -> None:
        H, W = self.config.image_hw
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (H, W):
            raise ValueError(f"images must be (B, 3, {H}, {W}) in [-1, 1], got {tuple(images.shape)}")

    def forward(self, images: torch.Tensor) -> ImageTokenizerOutput:
        """Encode, quantize and decode. Shapes: (B, 3, H, W) in [-1, 1] -> ImageTokenizerOutput."""
        self._check_images(images)
        latent = self.quant_conv(self.encoder(images))  # (B, D, h, w)
        q = self.quantizer(latent)
        reconstruction = self.decoder(self.post_quant_conv(q.quantized))  # (B, 3, H, W)
        return ImageTokenizerOutput(reconstruction, q.codes, q.commit_loss, latent)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 3, H, W) -> (B, h, w) int64. Range: images in [-1, 1]; codes in [0, K)."""
        self._check_images(images)
        return self.quantizer(self.quant_conv(self.encoder(images))).codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, h, w) int64 -> (B, 3, H, W). Range: [-1, 1]."""
        latent = self.quantizer.codes_to_latent(codes.to(self.post_quant_conv.weight.device))
        return self.decoder(self.post_quant_conv(latent)).clamp(-1.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, images01: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)) at the metric boundary. Shapes: (B, 3, H, W) -> same. Range: [0, 1]."""
        device = self.post_quant_conv.weight.device
        return to_unit(self.decode(self.encode(to_signed(images01.to(device)))))
