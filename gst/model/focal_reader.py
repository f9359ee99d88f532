"""The focal reader: a small CNN that reads one view's focal length from its pixels.

Why (docs/experiments.md, 2026-12-07): the pose head reads the target camera's focal length from the
pair stem over code grids at a median error of 12.3 % on held-out pairs; a CNN on one view's pixels
reads it about as well, and the two err nearly independently, so a weighted mean of their log focal
lengths is better than either. ``GST.estimate_pose`` (head readouts) replaces the pose head's
log(fx / W), log(fy / W) by ``(1 - weight) * head + weight * reader`` when the checkpoint ships one
(``focal_reader/``); ``weight`` is chosen on validation pairs of scenes neither was trained on.

The network: stride-2 conv blocks (BatchNorm, GELU; a second conv in each block from 16x16 on) down to
a 4x4 map, flattened (where the horizon and the ground's convergence lie is kept), an MLP to one number:
log(fx / W) of a square view at ``image_size`` pixels, in [0, 1]. Square pixels: fy = fx. With
``coords`` the view's pixel coordinates (x, y in [-1, 1]) join its colours as two more input channels
(CoordConv), so that the first layers can tie an edge's direction to where it lies in the view.

Sizes: 64 px views with the default widths; 128 px with ``channels=(16, 32, 64, 96, 128)``.

Export: ``model.safetensors`` + ``focal_reader.json`` (format, config, metadata) in one folder, written
atomically and read back without unpickling.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gst.model.weights_folder import save_weights_folder

FOCAL_READER_DIR = "focal_reader"
FOCAL_READER_FILE = "focal_reader.json"
FOCAL_READER_FORMAT = "gst-focal-reader"
FOCAL_READER_FORMAT_VERSION = 1


@dataclass(frozen=True)
class FocalReaderConfig:
    """The network's input size and widths, and its share of the combined log focal length."""

    image_size: int = 64  # square views: 4 * 2 ** len(channels) pixels
    channels: tuple[int, ...] = (32, 64, 96, 128)  # one stride-2 block each (128 px: (16, 32, 64, 96, 128))
    hidden: int = 256
    coords: bool = False  # pixel coordinates as two more input channels
    weight: float = 0.5  # share of this reader in the log focal length given with the pose head's

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.image_size != 4 * 2 ** len(self.channels):
            raise ValueError(
                f"FocalReaderConfig: {len(self.channels)} stride-2 stages end at a 4x4 map only for "
                f"{4 * 2 ** len(self.channels)} px views, not image_size {self.image_size}"
            )
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"FocalReaderConfig.weight must lie in [0, 1], got {self.weight}")


class FocalReader(nn.Module):
    """Views (B, 3, S, S) in [0, 1] at S = ``config.image_size`` -> log(fx / W) (B,)."""

    def __init__(self, config: FocalReaderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or FocalReaderConfig()
        chans = [5 if config.coords else 3, *config.channels]
        blocks, side = [], config.image_size
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            side //= 2
            blocks += [nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.GELU()]
            if side <= 16:
                blocks += [nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.GELU()]
        last = chans[-1] * 16
        self.net = nn.Sequential(
            *blocks, nn.Flatten(), nn.Linear(last, config.hidden), nn.GELU(), nn.Linear(config.hidden, 1)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        S = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, S, S):
            raise ValueError(f"FocalReader: images must be (B, 3, {S}, {S}), got {tuple(images.shape)}")
        if self.config.coords:
            axis = torch.linspace(-1.0, 1.0, S, device=images.device, dtype=images.dtype)
            yx = torch.stack(torch.meshgrid(axis, axis, indexing="ij"))  # (2, S, S) y then x
            images = torch.cat([images, yx.expand(len(images), 2, S, S)], dim=1)
        return self.net(images).squeeze(1)

    @torch.no_grad()
    def read(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """``forward`` in eval mode over batches; uint8 views are scaled to [0, 1]. Shapes: (N, 3, S, S)
        -> (N,) float32 on the CPU."""
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(images), batch):
            x = images[i : i + batch]
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            out.append(self(x.to(next(self.parameters()).device)).float().cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)


def combine_log_focal(head: torch.Tensor, reader: torch.Tensor, weight: float) -> torch.Tensor:
    """The weighted mean of two log focal readings: ``head`` (..., k) and ``reader`` (...,) broadcast over
    the last axis (fx and fy of square pixels)."""
    return (1.0 - weight) * head + weight * reader.unsqueeze(-1)


def with_focal_reading(vector: torch.Tensor, reader: FocalReader, images: torch.Tensor) -> torch.Tensor:
    """Camera parameter vectors (B, 13) (``gst.tokenizers.camera.camera_vector``, the target's log focal
    lengths at ``FOCAL_SLICE``) with their focal lengths combined with ``reader``'s reading of the target
    views ``images`` (B, 3, S, S) in [0, 1] (``combine_log_focal`` at ``reader.config.weight``)."""
    from gst.tokenizers.camera import FOCAL_SLICE

    reading = reader.read(images).to(vector.device, vector.dtype)  # (B,)
    out = vector.clone()
    out[:, FOCAL_SLICE] = combine_log_focal(vector[:, FOCAL_SLICE], reading, reader.config.weight)
    return out


def save_focal_reader(net: FocalReader, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """``model.safetensors`` + ``focal_reader.json``, written to a temporary folder and moved into place."""
    info = {
        "format": FOCAL_READER_FORMAT,
        "format_version": FOCAL_READER_FORMAT_VERSION,
        "config": asdict(net.config),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "metadata": metadata or {},
    }
    return save_weights_folder(net, out_dir, FOCAL_READER_FILE, info)


def read_focal_reader_info(path: str | Path) -> dict[str, Any]:
    """The JSON of a focal reader folder, its format checked."""
    meta_path = Path(path) / FOCAL_READER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{path}: no {FOCAL_READER_FILE}; give a focal reader folder (`gst train focal-reader --out "
            f"DIR` writes DIR/{FOCAL_READER_DIR}) or a checkpoint folder that ships one"
        )
    info = json.loads(meta_path.read_text())
    if info.get("format") != FOCAL_READER_FORMAT or info.get("format_version") != FOCAL_READER_FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format {info.get('format')!r} version {info.get('format_version')!r}, expected "
            f"{FOCAL_READER_FORMAT!r} version {FOCAL_READER_FORMAT_VERSION}"
        )
    unknown = sorted(set(info.get("config", {})) - {f.name for f in fields(FocalReaderConfig)})
    if unknown:
        raise ValueError(
            f"{meta_path}: config fields {unknown} are not options of this version's focal reader"
        )
    return info


def load_focal_reader(path: str | Path) -> tuple[FocalReader, dict[str, Any]]:
    """A focal reader saved by ``save_focal_reader``: the network (eval mode) and its JSON."""
    from safetensors.torch import load_model

    info = read_focal_reader_info(path)
    net = FocalReader(FocalReaderConfig(**info["config"]))
    load_model(net, str(Path(path) / "model.safetensors"))
    return net.eval(), info
