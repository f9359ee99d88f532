"""Tokenizer folders: ``model.safetensors`` (weights and buffers) + ``config.json``.

``config.json`` = {"format_version", "kind": "image" | "camera", "config": the architecture config,
"num_codes", "grid_hw", and for cameras "ray_channels" (``gst.geometry.RAY_CHANNELS``) and
"pose_scale" with the normalisation rule}, plus "metadata" the trainer adds (steps, data). Loading
checks the version, the kind and every config key (unknown keys are errors).

``load_tokenizer`` also accepts a training run folder (``OUT``: its newest checkpoint's export) or a
checkpoint folder (``OUT/checkpoints/step_*``: its ``export``), as ``gst.training`` lays them out;
``load_image_tokenizer`` / ``load_camera_tokenizer`` also check the kind.

Layering: this module is the only one that knows both concrete tokenizers; ``image`` and ``camera``
never import it (tests/test_layering.py), so there is no import circle between them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gst.geometry import RAY_CHANNELS
from gst.tokenizers.camera import CameraTokenizer
from gst.tokenizers.config import (
    CameraTokenizerConfig,
    ImageTokenizerConfig,
    config_from_dict,
    config_to_dict,
)
from gst.tokenizers.image import ImageTokenizer

TOKENIZER_FORMAT_VERSION = 1
POSE_NORMALISATION = (
    "target camera relative to the observed one (w2c_tgt @ inv(w2c_obs)), translation divided by "
    "pose_scale (gst.geometry.normalize); decoding multiplies it back"
)


def save_tokenizer(
    model: torch.nn.Module, out_dir: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (an ``ImageTokenizer`` or ``CameraTokenizer``) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"))
    info: dict[str, Any] = {
        "format_version": TOKENIZER_FORMAT_VERSION,
        "kind": model.kind,
        "config": config_to_dict(model.config),
        "num_codes": model.num_codes,
        "grid_hw": list(model.grid_hw),
    }
    if model.kind == "camera":
        info["ray_channels"] = list(RAY_CHANNELS)
        info["pose_scale"] = model.config.pose_scale
        info["pose_normalisation"] = POSE_NORMALISATION
    info["metadata"] = metadata or {}
    tmp = out_dir / "config.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, out_dir / "config.json")
    return out_dir


def resolve_tokenizer_dir(path: str | Path) -> Path:
    """The folder holding the tokenizer files for an export, checkpoint or run folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such tokenizer folder; train one with `gst train tokenizer`")
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        info = json.loads((path / "config.json").read_text())
        if "kind" in info:
            return path
    if (path / "export" / "config.json").exists():
        return path / "export"
    pointer = path / "checkpoints" / "latest"
    if pointer.exists():
        step_dir = path / "checkpoints" / json.loads(pointer.read_text())["dir"]
        if (step_dir / "export" / "config.json").exists():
            return step_dir / "export"
    raise FileNotFoundError(
        f"{path}: neither a tokenizer folder (model.safetensors + config.json with a 'kind'), a checkpoint "
        "(export/) nor a training run (checkpoints/latest)"
    )


def load_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """An ``ImageTokenizer`` or ``CameraTokenizer`` in eval mode on ``device``."""
    folder = resolve_tokenizer_dir(path)
    config_path = folder / "config.json"
    info = json.loads(config_path.read_text())
    version = info.get("format_version")
    if version != TOKENIZER_FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: tokenizer format version {version} differs from this build's "
            f"{TOKENIZER_FORMAT_VERSION}; re-export it with the matching gst version"
        )
    kind = info.get("kind")
    if kind == "image":
        config = config_from_dict(ImageTokenizerConfig, info["config"], "image")
        model: torch.nn.Module = ImageTokenizer(config)
    elif kind == "camera":
        if tuple(info.get("ray_channels", ())) != RAY_CHANNELS:
            raise ValueError(
                f"{config_path}: ray channels {info.get('ray_channels')} differ from this build's "
                f"{RAY_CHANNELS}"
            )
        model = CameraTokenizer(config_from_dict(CameraTokenizerConfig, info["config"], "camera"))
    else:
        raise ValueError(f"{config_path}: kind must be 'image' or 'camera', got {kind!r}")
    state = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    model.metadata = info.get("metadata", {})
    return model.to(device).eval()


def load_image_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> ImageTokenizer:
    """An image tokenizer from an export folder, a training checkpoint or a training run folder."""
    model = load_tokenizer(path, device=device)
    if not isinstance(model, ImageTokenizer):
        raise ValueError(f"{path}: holds a {model.kind} tokenizer, not an image tokenizer")
    return model


def load_camera_tokenizer(path: str | Path, device: str | torch.device = "cpu") -> CameraTokenizer:
    """A camera tokenizer from an export folder, a training checkpoint or a training run folder."""
    model = load_tokenizer(path, device=device)
    if not isinstance(model, CameraTokenizer):
        raise ValueError(f"{path}: holds a {model.kind} tokenizer, not a camera tokenizer")
    return model
