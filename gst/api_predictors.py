"""GST models as ``gst.eval`` predictors: ``GSTPosePredictor`` and ``GSTViewPredictor``, re-exported by
``gst.api``, which ``gst eval pose|nvs`` scores beside the baselines.

This module reads the model through ``PredictorModel``, the part of ``gst.api.GST`` it uses, and never
imports ``gst.api`` (which imports it; tests/test_layering.py).
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch

from gst.api_types import ImageInput, PoseEstimate, ViewResult
from gst.data.views import CropMode
from gst.model import SamplingConfig


class PredictorModel(Protocol):
    """What the predictors use of ``gst.api.GST``: its input mapping and two of its tasks."""

    image_hw: tuple[int, int]
    crop: CropMode

    def estimate_pose(
        self,
        observed: ImageInput,
        target: ImageInput,
        *,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        readout: str = "auto",
    ) -> PoseEstimate: ...

    def synthesize_view(
        self,
        observed: ImageInput,
        camera: torch.Tensor | PoseEstimate,
        *,
        K: Any = None,
        K_hw: tuple[int, int] | None = None,
        K_obs: Any = None,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        warp: float = 0.0,
    ) -> ViewResult: ...


def _tick(progress: Any) -> None:
    """Advance an optional tqdm bar; close it at its total (the evaluator never tells us it is done)."""
    if progress is not None:
        progress.update(1)
        if progress.total is not None and progress.n >= progress.total:
            progress.close()


class GSTPosePredictor:
    """``gst.eval.predictors.PosePredictor`` on a GST model: greedy est decoding, metric translation."""

    scale_known = True
    uses_target_intrinsics = False

    def __init__(
        self,
        gst: PredictorModel,
        *,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        name: str = "gst",
        progress: Any = None,
        readout: str = "auto",
    ) -> None:
        self.gst, self.sampling, self.seed, self.name, self.progress = gst, sampling, seed, name, progress
        self.readout = readout

    def predict_pose(self, observed, target, K_obs, *, K_tgt=None, pair=None):
        from gst.eval.baselines import pair_seed
        from gst.eval.predictors import PosePrediction

        est = self.gst.estimate_pose(
            observed, target, sampling=self.sampling, seed=pair_seed(self.seed, pair), readout=self.readout
        )
        _tick(self.progress)
        return PosePrediction(w2c_rel=est.w2c, K_tgt=est.K_tgt, info={"summary": est.summary})


class GSTViewPredictor:
    """``gst.eval.predictors.ViewPredictor`` on a GST model: the view from the true target camera (the
    target's K at its resolution), resized to ``target_hw``. Targets whose aspect ratio differs from the
    model's go through "stretch" so that the resized view still matches K exactly.

    ``num_samples`` > 1 returns the pixel mean of that many sampled views: a Monte-Carlo estimate of the
    posterior mean E[image | observed, camera], the prediction that minimises expected squared error
    (higher PSNR, blurrier) where one sample is a plausible view (sharper, scored lower by PSNR).
    ``warp``: ``synthesize_view(warp=...)``, the weight of the observed pixels moved with the model's depth
    where they land (0: off)."""

    uses_target_image = False

    def __init__(
        self,
        gst: PredictorModel,
        *,
        sampling: SamplingConfig | None = None,
        num_samples: int = 1,
        seed: int = 0,
        name: str = "gst",
        progress: Any = None,
        warp: float = 0.0,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.gst, self.sampling, self.seed, self.name, self.progress = gst, sampling, seed, name, progress
        self.num_samples, self.warp = num_samples, warp

    def predict_view(self, observed, K_obs, K_tgt, w2c_rel, *, target_hw, target=None, pair=None):
        from gst.eval.baselines import pair_seed, resize_image

        gst = self.gst
        h, w = self.gst.image_hw
        if target_hw[0] * w != target_hw[1] * h:
            gst = copy.copy(self.gst)
            gst.crop = "stretch"
        view = gst.synthesize_view(
            observed,
            w2c_rel,
            K=K_tgt,
            K_hw=tuple(target_hw),
            K_obs=K_obs,
            sampling=self.sampling,
            num_samples=self.num_samples,
            seed=pair_seed(self.seed, pair),
            warp=self.warp,
        )
        _tick(self.progress)
        return resize_image(view.images.mean(0), tuple(target_hw))


__all__ = ["GSTPosePredictor", "GSTViewPredictor", "PredictorModel"]
