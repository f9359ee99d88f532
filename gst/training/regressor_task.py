"""Training the siamese CNN pose regressor (``gst.training.regressor``) through the one loop.

Data: the pairs of a token cache (``gst.data.token_cache``), train and val splits as the cache's (by
scene), their pixels decoded once into memory (``gst.training.regressor_data``). Target: the true
relative camera of each pair as the camera tokenizer's 13-number vector (``camera_vector``; translation
divided by the cache camera tokenizer's ``pose_scale``, K at the cache's ``image_hw``). Loss: Huber
(delta 1, as the world model's pose head, ``gst.model.loss``) on the vector, each group weighted
(rotation 6D, translation, intrinsics); ``loss.kind`` offers L1 and MSE for comparison.

Micro-batch ``index`` reads items ``index * B ..`` of endless per-epoch permutations of the train split
seeded by ``(train.seed, epoch)``: every pair once per epoch, and data order a pure function of the step.

Presets (``REGRESSOR_PRESETS``): ``micro`` (tests: a few thousand parameters), ``small`` (the default:
1.25M parameters, about 14M multiply-adds per pair), ``base`` (wider convolutions, 1.9M parameters,
3.6x the multiply-adds).

Glossary: B batch, N pairs, P = 13 parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gst.training.config import TrainConfig
from gst.training.overrides import to_dict
from gst.training.regressor import (
    INTRINSICS_SLICE,
    PoseRegressor,
    RegressorConfig,
    camera_vector,
    num_parameters,
    params_from_vector,
    save_regressor,
)
from gst.training.task import Task


@dataclass(frozen=True, kw_only=True)
class RegressorLossConfig:
    """Regression loss on the 13-number camera vector."""

    kind: Literal["huber", "l1", "mse"] = "huber"
    delta: float = 1.0  # Huber threshold, in vector units (the world model's pose head uses 1)
    rotation_weight: float = 1.0  # the 6D rotation numbers
    translation_weight: float = 1.0  # the translation numbers (t / 4 in pose_scale units)
    intrinsics_weight: float = 1.0  # log focal lengths and principal point offsets

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise ValueError(f"loss.delta must be > 0, got {self.delta}")
        for name in ("rotation_weight", "translation_weight", "intrinsics_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class RegressorDataConfig:
    """Which pairs train and validate the regressor."""

    max_train_pairs: int = 0  # use only the first N train pairs of the cache (0 = all); quick runs
    num_eval_pairs: int = 512  # val pairs scored at every evaluation (a fixed seeded subset)
    eval_seed: int = 0  # which val pairs

    def __post_init__(self) -> None:
        if self.max_train_pairs < 0 or self.num_eval_pairs < 1:
            raise ValueError("data.max_train_pairs must be >= 0 and data.num_eval_pairs >= 1")


@dataclass(frozen=True, kw_only=True)
class RegressorRunConfig:
    """Everything one `gst train regressor` run is configured by (saved with every checkpoint)."""

    model: RegressorConfig = field(default_factory=RegressorConfig)
    loss: RegressorLossConfig = field(default_factory=RegressorLossConfig)
    data: RegressorDataConfig = field(default_factory=RegressorDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def micro_run() -> RegressorRunConfig:
    """Tests: a net of a few thousand parameters, a few steps."""
    model = RegressorConfig(
        channels=(4, 8, 8), pair_channels=8, num_pair_convs=1, pool_hw=(1, 1), hidden=32, num_hidden=1
    )
    train = TrainConfig(max_steps=20, batch_size=8, lr=1e-2, warmup_steps=2, checkpoint_every=100)
    return RegressorRunConfig(model=model, data=RegressorDataConfig(num_eval_pairs=16), train=train)


def small_run() -> RegressorRunConfig:
    """The default: 1.25M parameters (the issue's baseline); AdamW, batch 64, bf16 autocast where native."""
    train = TrainConfig(
        max_steps=100_000,  # a --minutes budget ends a run first (the cosine then follows the budget)
        batch_size=64,
        lr=1e-3,
        warmup_steps=200,
        weight_decay=0.01,
        # bf16 where native: 1.6x the fp32 steps per CPU-second on AVX-512 BF16 CPUs; emulated on AVX2
        # CPUs it is 11x slower than fp32 (docs/training.md), so those train in fp32
        mixed_precision="native",
        checkpoint_every=1000,
        eval_every=1000,
        log_every=50,
    )
    return RegressorRunConfig(model=RegressorConfig(), train=train)


def base_run() -> RegressorRunConfig:
    """Wider convolutions (1.9M parameters, 3.6x the multiply-adds of small) for larger budgets."""
    run = small_run()
    model = RegressorConfig(channels=(32, 64, 128), pair_channels=128, hidden=512)
    return dataclasses.replace(run, model=model)


REGRESSOR_PRESETS: dict[str, Callable[[], RegressorRunConfig]] = {
    "micro": micro_run,
    "small": small_run,
    "base": base_run,
}


def get_regressor_preset(name: str) -> RegressorRunConfig:
    if name not in REGRESSOR_PRESETS:
        raise ValueError(f"--preset {name!r}: choose one of {sorted(REGRESSOR_PRESETS)}")
    return REGRESSOR_PRESETS[name]()


def with_cache_geometry(run: RegressorRunConfig, manifest: dict[str, Any]) -> RegressorRunConfig:
    """The cache's image size and its camera tokenizer's pose scale (the units of its w2c_rel)."""
    pose_scale = float(manifest["tokenizers"]["camera"].get("pose_scale", 1.0))
    model = dataclasses.replace(run.model, image_hw=tuple(manifest["image_hw"]), pose_scale=pose_scale)
    return dataclasses.replace(run, model=model)


def cache_targets(split: Any, image_hw: tuple[int, int], pose_scale: float) -> torch.Tensor:
    """The camera vector of every pair of a cache split. Shapes: -> (N, 13) float32."""
    from gst.geometry import normalize_relative_pose

    K = torch.from_numpy(np.asarray(split.K_tgt, dtype=np.float64))  # (N, 3, 3)
    w2c = normalize_relative_pose(torch.from_numpy(np.asarray(split.w2c_rel, dtype=np.float64)), pose_scale)
    return camera_vector(K, w2c, image_hw)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, loss: RegressorLossConfig) -> torch.Tensor:
    """Weighted mean over pairs and numbers. Shapes: (B, 13), (B, 13) -> scalar."""
    if loss.kind == "huber":
        per = F.huber_loss(pred, target, delta=loss.delta, reduction="none")
    elif loss.kind == "l1":
        per = (pred - target).abs()
    else:
        per = (pred - target).pow(2)
    weights = pred.new_tensor(
        [loss.rotation_weight] * 6 + [loss.translation_weight] * 3 + [loss.intrinsics_weight] * 4
    )
    return (per * weights).mean()


def vector_errors(pred: torch.Tensor, target: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, float]:
    """Rotation and translation-direction errors (degrees) and the relative focal error of predicted
    vectors against true ones: median, and the share of rotations within 15 and 30 degrees."""
    from gst.geometry import focal_error, rotation_error_deg, translation_direction_error_deg

    p, t = params_from_vector(pred.double(), image_hw), params_from_vector(target.double(), image_hw)
    rot = rotation_error_deg(p.rotation, t.rotation)
    trans = translation_direction_error_deg(p.translation, t.translation)
    focal = focal_error(p.K(), t.K())
    return {
        "rotation_err_median_deg": float(rot.median()),
        "rra15": float((rot < 15).double().mean()),
        "rra30": float((rot < 30).double().mean()),
        "translation_dir_err_median_deg": float(trans.median()),
        "focal_err_median": float(focal.median()),
    }


class RegressorTask(Task):
    """Stage ``pose_regressor``: the model is ``PoseRegressor`` itself."""

    name = "pose_regressor"

    def __init__(
        self,
        run: RegressorRunConfig,
        cache_dir: str | Path,
        *,
        scenes: str | Path | None = None,
        pixels: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        """``scenes``: the scene folders (default: the cache manifest's); ``pixels``: a folder keeping
        the decoded views across runs (``gst.training.regressor_data``)."""
        from gst.data.token_cache import open_token_cache
        from gst.training.regressor_data import load_pair_images

        self.cache = open_token_cache(cache_dir)
        self.run = run
        image_hw = tuple(self.cache.manifest["image_hw"])
        if tuple(run.model.image_hw) != image_hw:
            raise ValueError(
                f"model.image_hw {run.model.image_hw} differs from the cache's images {image_hw}; the "
                "cache's intrinsics describe its own size (leave model.image_hw to the cache)"
            )
        load = {"scenes_root": scenes, "store": pixels, "progress": progress}
        self.train_images = load_pair_images(self.cache, "train", **load)
        self.val_images = load_pair_images(self.cache, "val", **load)
        if len(self.train_images) == 0:
            raise ValueError(f"--data {cache_dir}: the train split holds no pairs")
        pose_scale = run.model.pose_scale
        self.train_targets = cache_targets(self.cache.split("train"), image_hw, pose_scale)  # (N, 13)
        self.val_targets = cache_targets(self.cache.split("val"), image_hw, pose_scale)
        n = len(self.train_images)
        self.num_train = min(n, run.data.max_train_pairs) if run.data.max_train_pairs else n
        self._perms: dict[int, np.ndarray] = {}
        val_n = len(self.val_images)
        rng = np.random.default_rng(run.data.eval_seed)
        self.eval_rows = np.sort(rng.permutation(val_n)[: run.data.num_eval_pairs]) if val_n else None

    def config_dict(self) -> dict[str, Any]:
        return {
            "cache": str(self.cache.root.resolve()),
            **{k: v for k, v in to_dict(self.run).items() if k != "train"},
        }

    def build_model(self) -> nn.Module:
        return PoseRegressor(self.run.model)

    def train_rows(self, index: int, batch_size: int) -> np.ndarray:
        """Train pairs of micro-batch ``index`` (module docstring). Shapes: -> (B,) int64."""
        n = self.num_train
        positions = index * batch_size + np.arange(batch_size)
        epochs, offsets = positions // n, positions % n
        for epoch in np.unique(epochs).tolist():
            if epoch not in self._perms:
                self._perms[epoch] = np.random.default_rng([self.run.train.seed, epoch]).permutation(n)
        rows = np.asarray([self._perms[int(e)][o] for e, o in zip(epochs, offsets, strict=True)])
        while len(self._perms) > 2:  # evicted epochs are recomputed identically
            self._perms.pop(min(self._perms))
        return rows.astype(np.int64)

    def batch(self, index: int, generator: torch.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        rows = self.train_rows(index, batch_size)
        obs, tgt = self.train_images.pairs(rows)  # (B, 3, H, W) in [0, 1]
        return {"observed": obs * 2 - 1, "target": tgt * 2 - 1, "vector": self.train_targets[rows]}

    def loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        pred = model(batch["observed"], batch["target"]).float()  # (B, 13)
        loss = regression_loss(pred, batch["vector"], self.run.loss)
        with torch.no_grad():
            err = vector_errors(pred.detach().cpu(), batch["vector"].cpu(), self.run.model.image_hw)
            k = INTRINSICS_SLICE
            intrinsics = float((pred[:, k] - batch["vector"][:, k]).abs().mean())
        return loss, {"rotation_err_median_deg": err["rotation_err_median_deg"], "intrinsics_l1": intrinsics}

    @torch.no_grad()
    def predict_rows(self, model: nn.Module, images: Any, rows: np.ndarray, batch_size: int = 256):
        """Vectors of some pairs. Shapes: rows (n,) -> (n, 13) float32."""
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(rows), batch_size):
            obs, tgt = images.pairs(rows[start : start + batch_size])
            out.append(model(obs.to(device) * 2 - 1, tgt.to(device) * 2 - 1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 13)

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        if self.eval_rows is None or len(self.eval_rows) == 0:
            return {}
        pred = self.predict_rows(model, self.val_images, self.eval_rows)
        target = self.val_targets[self.eval_rows]
        return {
            "loss": float(regression_loss(pred, target, self.run.loss)),
            **vector_errors(pred, target, self.run.model.image_hw),
        }

    def export(self, model: nn.Module, out_dir: Path) -> None:
        manifest = self.cache.manifest
        data = {
            "cache": str(self.cache.root.resolve()),
            "scenes_root": manifest["scenes_root"],
            "crop": manifest["config"]["crop"],
            "image_hw": manifest["image_hw"],
            "num_train_pairs": self.num_train,
            "num_train_scenes": manifest["splits"]["train"]["num_scenes"],
            "num_val_pairs": len(self.val_images),
            "pairs": manifest["config"]["pairs"],
        }
        metadata = {
            "task": self.name,
            "data": data,
            "run": to_dict(self.run),
            "parameters": num_parameters(model),
        }
        save_regressor(model, out_dir, metadata=metadata)


__all__ = [
    "REGRESSOR_PRESETS",
    "RegressorDataConfig",
    "RegressorLossConfig",
    "RegressorRunConfig",
    "RegressorTask",
    "get_regressor_preset",
    "with_cache_geometry",
]
