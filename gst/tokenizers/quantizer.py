"""One quantizer interface over ``vector-quantize-pytorch``'s ``VectorQuantize`` and ``FSQ``.

Both map a latent grid to integer codes and back; ``codes_to_latent(codes)`` equals the quantized
latent exactly (no projection happens inside: the tokenizers own the 1x1 projections around it).

Glossary: B batch, D latent channels (``QuantizerConfig.latent_dim``), h/w token grid, K codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gst.tokenizers.config import QuantizerConfig


@dataclass
class QuantizerOutput:
    """Shapes: quantized (B, D, h, w) with straight-through gradients; codes (B, h, w) int64 in
    [0, K); commit_loss scalar (beta-weighted commitment, 0 for FSQ)."""

    quantized: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor


class Quantizer(nn.Module):
    """VQ or FSQ as configured. VQ's codebook lives in buffers (EMA updates, k-means init state)."""

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        self.config = config
        if config.kind == "vq":
            from vector_quantize_pytorch import VectorQuantize

            self.vq = VectorQuantize(
                dim=config.code_dim,
                codebook_size=config.codebook_size,
                decay=config.ema_decay,
                kmeans_init=config.kmeans_init,
                kmeans_iters=config.kmeans_iters,
                use_cosine_sim=config.cosine,
                threshold_ema_dead_code=config.dead_code_threshold,
                commitment_weight=config.commitment_beta,
                rotation_trick=config.rotation_trick,
                accept_image_fmap=True,
            )
        else:
            from vector_quantize_pytorch import FSQ

            self.fsq = FSQ(levels=list(config.levels))

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize a latent grid. Shapes: z (B, D, h, w) -> QuantizerOutput."""
        # Code lookups in float32 even under bf16 autocast: distances between nearby codes underflow.
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            if self.config.kind == "vq":
                quantized, codes, commit = self.vq(z)  # (B, D, h, w), (B, h, w), scalar
                if not self.training:
                    commit = z.new_zeros(())
            else:
                quantized, codes = self.fsq(z)  # (B, D, h, w), (B, h, w)
                commit = z.new_zeros(())
        return QuantizerOutput(quantized=quantized, codes=codes.long(), commit_loss=commit)

    def codes_to_latent(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes -> the quantized latent the decoder reads. Shapes: (B, h, w) -> (B, D, h, w)."""
        if codes.dtype.is_floating_point:
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if bool(((codes < 0) | (codes >= self.num_codes)).any()):
            lo, hi = int(codes.min()), int(codes.max())
            raise ValueError(f"codes must lie in [0, {self.num_codes}), got [{lo}, {hi}]")
        if codes.ndim != 3:
            raise ValueError(f"codes must be a (B, h, w) grid, got {tuple(codes.shape)}")
        if self.config.kind == "vq":
            return self.vq.get_output_from_indices(codes)  # (B, D, h, w) for image feature maps
        return self.fsq.indices_to_codes(codes)  # (B, D, h, w)

    def codebook_vectors(self) -> torch.Tensor:
        """Every code's latent vector. Shapes: -> (K, D)."""
        if self.config.kind == "vq":
            return self.vq.codebook.reshape(self.num_codes, -1)
        return self.fsq.implicit_codebook
