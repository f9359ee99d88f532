"""The siamese CNN pose regressor (``gst train regressor``) as a pose predictor: the learned baseline.

Each pair's two images are brought to the regressor's ``image_hw`` the way its training views were
(``gst.data.views.crop_resize`` with the training cache's crop mode), the network predicts the target
camera relative to the observed one (metric translation: ``scale_known``) and the target's K at
``image_hw``, which is mapped back to the evaluated image's pixels (the inverse of the crop and resize,
pixel-centre convention). The observed camera's intrinsics are not used.

Its provenance (weights hash, training command, the loop's wall-clock and CPU minutes) goes into
results.json beside its scores.

Glossary: H/W pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gst.data.pairs import Pair
from gst.data.views import crop_box, crop_resize
from gst.eval.predictors import PosePrediction
from gst.training.regressor import load_regressor, predict_cameras


def uncrop_intrinsics(
    K: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: str
) -> torch.Tensor:
    """Inverse of ``crop_resize_intrinsics``: K on the ``out_hw`` grid -> K on the ``in_hw`` image it was
    cropped and resized from. Shapes: (..., 3, 3) -> (..., 3, 3)."""
    y0, x0, crop_h, crop_w = crop_box(in_hw, out_hw, mode)  # type: ignore[arg-type]
    sy, sx = out_hw[0] / crop_h, out_hw[1] / crop_w
    out = K.clone()
    out[..., 0, 0], out[..., 0, 1] = K[..., 0, 0] / sx, K[..., 0, 1] / sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) / sx - 0.5 + x0
    out[..., 1, 1] = K[..., 1, 1] / sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) / sy - 0.5 + y0
    return out


class RegressorPose:
    """A trained ``PoseRegressor`` behind the ``PosePredictor`` interface."""

    name = "regressor"
    scale_known = True  # translation in world units (pose_scale)
    uses_target_intrinsics = False  # K_tgt comes from its intrinsics head

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.model, self.info = load_regressor(path, device=device)
        self.device = device
        self.crop = str(self.info.get("metadata", {}).get("data", {}).get("crop", "center_crop"))

    def predict_pose(
        self,
        observed: torch.Tensor,
        target: torch.Tensor,
        K_obs: torch.Tensor,
        *,
        K_tgt: torch.Tensor | None = None,
        pair: Pair | None = None,
    ) -> PosePrediction:
        """Shapes: observed, target (3, H, W) in [0, 1] -> w2c_rel (4, 4) metres, K_tgt (3, 3) at (H, W)."""
        image_hw = tuple(self.model.config.image_hw)
        in_hw = (int(target.shape[-2]), int(target.shape[-1]))
        if tuple(observed.shape[-2:]) != in_hw:
            raise ValueError(
                f"observed {tuple(observed.shape)} and target {tuple(target.shape)} differ in size"
            )
        images = torch.stack([observed, target]).float()  # (2, 3, H, W)
        resized, _ = crop_resize(images, torch.eye(3).expand(2, 3, 3), image_hw, mode=self.crop)  # type: ignore[arg-type]
        resized = resized.clamp(0.0, 1.0).to(self.device)
        K, w2c = predict_cameras(self.model, resized[:1], resized[1:])  # (1, 3, 3), (1, 4, 4)
        K_full = uncrop_intrinsics(K[0].cpu(), in_hw, image_hw, self.crop)  # type: ignore[arg-type]
        return PosePrediction(w2c_rel=w2c[0].cpu(), K_tgt=K_full)

    def meta(self) -> dict[str, Any]:
        """Provenance for results.json: weights hash, parameters, training command and minutes."""
        from gst.eval.report import sha256_of

        folder = Path(self.info["folder"])
        training = self.info.get("training") or {}
        metadata = self.info.get("metadata", {})
        return {
            "source": "learned baseline: siamese CNN pose regressor (gst train regressor)",
            "checkpoint": str(folder),
            "sha256": sha256_of(folder / "model.safetensors"),
            "num_parameters": self.info.get("num_parameters"),
            "train_data": metadata.get("data"),
            "training_command": training.get("command"),
            "training_steps": training.get("step"),
            "training_cpu_minutes": training.get("cpu_minutes"),
            "training_wall_minutes": training.get("wall_minutes"),
            "training_threads": training.get("torch_threads"),
            "training_mixed_precision": training.get("mixed_precision"),
            "input": f"both images {self.crop} to {list(self.model.config.image_hw)}; K_obs not used",
        }


__all__ = ["RegressorPose", "uncrop_intrinsics"]
