"""Initial embeddings of the image and camera codes from the tokenizers' own code vectors.

A from-scratch backbone starts with every code's embedding an independent random vector, so it must
learn from the data alone that two image codes look alike (or that two camera codes are neighbouring
bins of one FSQ channel) before it can match image patches across views. ``codebook`` initialisation
adds each code's latent vector, mapped into the model width by a fixed orthonormal projection, to its
random row: codes that the tokenizer decodes alike start with alike embeddings (and, with tied
embeddings, alike output rows). Image codes (VQ, cosine lookup) use their unit-normalised codebook
vectors; camera codes (FSQ) their centred level values, scaled to unit mean norm, so the ordinal
structure of each channel survives. The two code kinds get orthogonal subspaces. Text and special rows
are untouched. Chosen per run (``GSTRunConfig.code_init``) and seeded by the model seed.

Glossary: K codes of one kind, c latent channels, D model width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gst.model import GSTModel


def _unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """Image VQ codes: unit length each (the cosine lookup compares directions). Shapes: (K, c)."""
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _centred_levels(vectors: torch.Tensor) -> torch.Tensor:
    """Camera FSQ codes: centred, scaled to unit mean row norm (keeps level order). Shapes: (K, c)."""
    centred = vectors - vectors.mean(0, keepdim=True)
    return centred / centred.norm(dim=1).mean().clamp_min(1e-8)


@torch.no_grad()
def init_code_embeddings(
    model: GSTModel, image_tokenizer: nn.Module, camera_tokenizer: nn.Module, *, seed: int
) -> None:
    """Add the projected code vectors to the image and camera rows of the input embedding (in place).

    Each added part has the norm of a random row (``init_std * sqrt(D)``), so structure and noise start
    at equal strength.
    """
    layout = model.layout
    emb = model.lm.get_input_embeddings().weight  # (V, D)
    D = emb.shape[1]
    image = _unit_rows(image_tokenizer.quantizer.codebook_vectors().detach().float().cpu())  # (Ki, ci)
    camera = _centred_levels(camera_tokenizer.quantizer.codebook_vectors().detach().float().cpu())  # (Kc, cc)
    expected = (layout.num_image_codes, layout.num_camera_codes)
    if (image.shape[0], camera.shape[0]) != expected:
        raise ValueError(
            f"code_init=codebook: the tokenizers have {image.shape[0]} image / {camera.shape[0]} camera "
            f"codes, the vocabulary {expected[0]} / {expected[1]}"
        )
    c_img, c_cam = image.shape[1], camera.shape[1]
    if c_img + c_cam > D:
        raise ValueError(f"code_init=codebook needs {c_img + c_cam} <= model width {D}")
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, c_img + c_cam, generator=generator))  # (D, c) orthonormal
    std = model.config.backbone.init_std if model.config.backbone is not None else float(emb.std())
    scale = std * math.sqrt(D)
    img0, cam0 = layout.image_offset, layout.camera_offset
    emb[img0 : img0 + expected[0]] += (scale * image @ basis[:, :c_img].T).to(emb)  # (Ki, D)
    emb[cam0 : cam0 + expected[1]] += (scale * camera @ basis[:, c_img:].T).to(emb)  # (Kc, D)


def decoder_code_features(image_tokenizer: nn.Module) -> torch.Tensor:
    """What the tokenizer's decoder reads for each image code: ``post_quant_conv(code vector)``,
    standardised per channel over the codes. Shapes: -> (K, Z) float32, Z the decoder's input width."""
    with torch.no_grad():
        quantizer = image_tokenizer.quantizer
        codes = torch.arange(quantizer.num_codes).reshape(1, 1, -1)  # (1, 1, K) as a 1 x K code grid
        latent = quantizer.codes_to_latent(codes.to(image_tokenizer.post_quant_conv.weight.device))
        feats = image_tokenizer.post_quant_conv(latent)[0, :, 0].T.float().cpu()  # (K, Z)
    return (feats - feats.mean(0)) / feats.std(0).clamp_min(1e-6)


@torch.no_grad()
def init_reader_codes(model: GSTModel, image_tokenizer: nn.Module) -> None:
    """Set the readers' code features (the reader's, and a pose reader's) to the decoder-side features of
    each code (``gst.model.reader``; DESIGN.md: with random code features the reader memorises its pairs
    instead of learning pose)."""
    if model.reader is None:
        raise ValueError("init_reader_codes: this model has no reader (model.reader is unset)")
    feats = decoder_code_features(image_tokenizer)  # (K, Z)
    for name in ("reader", "pose_reader"):
        reader = getattr(model, name)
        if reader is None:
            continue
        table = reader.code_feats.weight
        if tuple(feats.shape) != tuple(table.shape):
            raise ValueError(
                f"model.{name}: the image tokenizer's decoder reads {tuple(feats.shape)} (codes, channels) "
                f"but the reader holds {tuple(table.shape)}; set --set model.{name}.code_dim={feats.shape[1]}"
            )
        table.copy_(feats.to(table))


@torch.no_grad()
def init_code_embeddings_from_decoder(model: GSTModel, image_tokenizer: nn.Module, *, seed: int) -> None:
    """``code_init=decoder``: add each image code's decoder-side feature (``decoder_code_features``),
    through a fixed orthonormal projection at the norm of a random row, to its input embedding row."""
    emb = model.lm.get_input_embeddings().weight  # (V, D)
    D = emb.shape[1]
    feats = decoder_code_features(image_tokenizer)  # (K, Z)
    feats = feats / feats.norm(dim=1).mean().clamp_min(1e-8)  # unit mean row norm
    if feats.shape[1] > D:
        raise ValueError(f"code_init=decoder needs the decoder width {feats.shape[1]} <= model width {D}")
    basis, _ = torch.linalg.qr(torch.randn(D, feats.shape[1], generator=torch.Generator().manual_seed(seed)))
    std = model.config.backbone.init_std if model.config.backbone is not None else float(emb.std())
    start = model.layout.image_offset
    emb[start : start + feats.shape[0]] += (std * math.sqrt(D) * feats @ basis.T).to(emb)  # (K, D)


__all__ = [
    "decoder_code_features",
    "init_code_embeddings",
    "init_code_embeddings_from_decoder",
    "init_reader_codes",
]
