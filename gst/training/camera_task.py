"""Training the camera tokenizer through the one loop: fresh random camera pairs, no images needed.

Pair distribution: see ``CameraDataConfig`` (two independent look-at cameras of
``gst.data.synth.cameras.sample_cameras``; the first is observed, the second the target). Relative
poses are normalised by the tokenizer's ``pose_scale`` (``gst.geometry.normalize``).

Glossary: B batch of pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gst.data.synth.cameras import CameraSamplingConfig, sample_cameras
from gst.geometry import normalize_relative_pose, relative_w2c, rotation_error_deg
from gst.tokenizers.camera import CameraTokenizer
from gst.tokenizers.io import save_tokenizer
from gst.training.overrides import to_dict
from gst.training.task import Task
from gst.training.tokenizer_config import CameraRunConfig
from gst.training.tokenizer_eval import evaluate_camera_tokenizer


def sample_relative_cameras(
    generator: torch.Generator, num_pairs: int, image_hw: tuple[int, int], sampling: CameraSamplingConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pairs -> (K_tgt (B, 3, 3), w2c_rel (B, 4, 4) in world units), float64."""
    K, w2c = sample_cameras(generator, 2 * num_pairs, image_hw, config=sampling)
    K, w2c = K.reshape(num_pairs, 2, 3, 3), w2c.reshape(num_pairs, 2, 4, 4)
    return K[:, 1], relative_w2c(w2c[:, 0], w2c[:, 1])


def validation_pairs(run: CameraRunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out pairs (seeded by ``data.val_seed``)."""
    generator = torch.Generator().manual_seed(run.data.val_seed)
    return sample_relative_cameras(generator, run.data.num_val_pairs, run.model.image_hw, run.data.sampling)


class CameraTokenizerTask(Task):
    """Stage ``camera_tokenizer``: the model is the tokenizer itself (no discriminator)."""

    name = "camera_tokenizer"

    def __init__(self, run: CameraRunConfig) -> None:
        self.run = run
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None

    def config_dict(self) -> dict[str, Any]:
        return {"kind": "camera", **{k: v for k, v in to_dict(self.run).items() if k != "train"}}

    def build_model(self) -> nn.Module:
        return CameraTokenizer(self.run.model)

    def batch(self, index: int, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        run = self.run
        K, w2c_rel = sample_relative_cameras(generator, batch_size, run.model.image_hw, run.data.sampling)
        return {"K": K, "w2c": normalize_relative_pose(w2c_rel, self.run.model.pose_scale)}

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        tokenizer = model.module if hasattr(model, "module") else model
        rays = tokenizer.rays_from_cameras(batch["K"], batch["w2c"])  # (B, 6, Hr, Wr) float64
        out = model(rays)
        cfg, weights = self.run.model, self.run.loss
        g = cfg.stage_gain
        stage = sum((est - out.target).abs().mean() * g**s for s, est in enumerate(out.stage_estimates))
        R_true = batch["w2c"][:, :3, :3].float()
        rotation = (out.params.rotation - R_true).abs().mean() * g ** (cfg.num_stages - 1)
        loss = weights.stage_weight * stage + weights.rotation_weight * rotation + out.commit_loss
        if weights.ray_weight > 0:
            loss = loss + weights.ray_weight * (out.rays - rays.float()).abs().mean()
        with torch.no_grad():
            rot_err = rotation_error_deg(out.params.rotation.double(), batch["w2c"][:, :3, :3])
        return loss, {
            "stage_l1": float(stage.detach()),
            "rotation_l1": float(rotation.detach()),
            "rotation_error_deg_median": float(rot_err.median()),
        }

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        if self._val is None:
            self._val = validation_pairs(self.run)
        report = evaluate_camera_tokenizer(model, *self._val)
        return {k: v for k, v in report.items() if isinstance(v, float)}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_tokenizer(model, out_dir, metadata={"task": self.name, "data": to_dict(self.run.data)})
