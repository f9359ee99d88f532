"""Scoring a GST backbone on a token cache: teacher-forced token metrics, greedy pose decoding and the
pose head's readout, each against the cache's true relative cameras. Used by ``GSTTask.evaluate`` during
training and by `gst eval cache-score` on a loaded model.

Glossary: n scored pairs, b pairs per forward, h/w image token grid, hc/wc camera token grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gst.data.token_cache import CacheSplit
from gst.model import (
    LossConfig,
    SequenceConfig,
    TokenLayout,
    collate_pose_batch,
    compute_loss,
    estimate_camera_tokens,
    read_pose_head,
)
from gst.model.loss import cell_loss
from gst.model.sequences import TASK_EST, TASK_GEN


def eval_rows(num_pairs: int, count: int, seed: int = 0) -> np.ndarray:
    """A fixed random subset of ``count`` of ``num_pairs`` rows (spread over scenes), sorted.
    Shapes: -> (min(count, num_pairs),) int64."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_pairs, size=min(count, num_pairs), replace=False)).astype(np.int64)


@torch.no_grad()
def teacher_forced_metrics(
    model: nn.Module,
    layout: TokenLayout,
    seq: SequenceConfig,
    split: CacheSplit,
    rows: np.ndarray,
    *,
    loss_config: LossConfig | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Every pair scored as a gen row and as an est row, teacher-forced, without conditioning dropout:
    ``loss`` (token mean over both), and ``{gen,est}/{camera,image}_{ce,acc}`` (CE in nats per token,
    top-1 accuracy), each a token-weighted mean over ``rows``."""
    seq = dataclasses.replace(seq, cond_dropout=0.0, cond_dropout_est=0.0)
    # Token scores only: the pose readout is scored by pose_head_metrics, in degrees.
    loss_config = dataclasses.replace(loss_config or LossConfig(), pose_weight=0.0)
    sums: dict[str, float] = {}
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)  # draws nothing: no dropout, tasks given
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        obs, tgt, cam = split.codes(chunk)
        for task in (TASK_GEN, TASK_EST):
            tasks = torch.full((len(chunk),), task, dtype=torch.long)
            batch = collate_pose_batch(layout, seq, obs, tgt, cam, step=0, generator=generator, tasks=tasks)
            out = compute_loss(model, batch.to(device), loss_config)
            tokens = float(out.metrics["tokens"])
            sums["loss"] = sums.get("loss", 0.0) + float(out.loss) * tokens
            sums["tokens"] = sums.get("tokens", 0.0) + tokens
            for key, value in out.metrics.items():
                if key.endswith(("_ce", "_acc")):
                    n = float(out.metrics[key.rsplit("_", 1)[0] + "_tokens"])
                    sums[key] = sums.get(key, 0.0) + float(value) * n
                    sums[key + "#n"] = sums.get(key + "#n", 0.0) + n
    metrics = {"loss": sums["loss"] / sums["tokens"]}
    for key in sums:
        if key.endswith(("_ce", "_acc")):
            metrics[key] = sums[key] / sums[key + "#n"]
    return metrics


@dataclass
class PosePredictions:
    """Greedy est predictions decoded by the camera tokenizer, and the true codes decoded the same way.

    Shapes: K_* (n, 3, 3) at the tokenizer's image_hw; w2c_* (n, 4, 4) relative, world units; float64.
    """

    rows: np.ndarray
    K_pred: torch.Tensor
    w2c_pred: torch.Tensor
    K_ceiling: torch.Tensor
    w2c_ceiling: torch.Tensor


def _pair_ids(
    model: nn.Module, layout: TokenLayout, split: CacheSplit, rows: np.ndarray, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The cached pairs of ``rows`` in chunks: observed and target image ids on the model's device, and
    the true camera codes. Shapes: (b, h*w), (b, h*w), (b, hc, wc)."""
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        obs, tgt, cam = split.codes(rows[start : start + batch_size])
        obs_ids = (obs.reshape(len(obs), -1) + layout.image_offset).to(device)
        tgt_ids = (tgt.reshape(len(tgt), -1) + layout.image_offset).to(device)
        yield obs_ids, tgt_ids, cam


@torch.no_grad()
def predict_poses(
    model: nn.Module,
    layout: TokenLayout,
    seq: SequenceConfig,
    split: CacheSplit,
    rows: np.ndarray,
    camera_tokenizer: nn.Module,
    *,
    batch_size: int = 64,
) -> PosePredictions:
    """Greedy est decoding (KV cache) of the camera codes of ``rows``, decoded to cameras."""
    hc, wc = seq.camera_grid
    preds, ceilings = [], []
    for obs_ids, tgt_ids, cam in _pair_ids(model, layout, split, rows, batch_size):
        out = estimate_camera_tokens(model, obs_ids, tgt_ids, seq_cfg=seq)
        codes = (out.camera_ids[:, 0] - layout.camera_offset).reshape(-1, hc, wc).cpu()  # (b, hc, wc)
        preds.append(camera_tokenizer.decode_cameras(codes))
        ceilings.append(camera_tokenizer.decode_cameras(cam))
    return PosePredictions(
        rows=rows,
        K_pred=torch.cat([p[0] for p in preds]),
        w2c_pred=torch.cat([p[1] for p in preds]),
        K_ceiling=torch.cat([c[0] for c in ceilings]),
        w2c_ceiling=torch.cat([c[1] for c in ceilings]),
    )


def score_poses(predictions: PosePredictions, split: CacheSplit) -> dict[str, float]:
    """``pose/*``: the model; ``ceiling/*``: the true camera codes decoded the same way (the tokenizer's own
    error, the best a perfect token predictor could reach); ``_pose_scores`` each."""
    return {
        **_pose_scores("pose", predictions.w2c_pred, split, predictions.rows),
        **_pose_scores("ceiling", predictions.w2c_ceiling, split, predictions.rows),
    }


def pose_head_targets(camera_tokenizer: nn.Module, split: CacheSplit, rows: np.ndarray) -> torch.Tensor:
    """The camera tokenizer's parameter vector of pairs' true relative cameras (normalised by its
    pose scale). Shapes: -> (n, 13) float32."""
    from gst.geometry import normalize_relative_pose

    K = torch.from_numpy(np.asarray(split.K_tgt[rows], dtype=np.float64))  # (n, 3, 3)
    w2c = torch.from_numpy(np.asarray(split.w2c_rel[rows], dtype=np.float64))  # (n, 4, 4)
    w2c = normalize_relative_pose(w2c, camera_tokenizer.config.pose_scale)
    return camera_tokenizer.camera_vector(K, w2c).float()


@torch.no_grad()
def pose_head_metrics(
    model: nn.Module,
    layout: TokenLayout,
    seq: SequenceConfig,
    split: CacheSplit,
    rows: np.ndarray,
    camera_tokenizer: nn.Module,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """``pose_head/*``: the auxiliary pose readout at each est row's [cam_start] (``read_pose_head``: no
    camera code seen), made a camera by the tokenizer's ``params_from_vector`` and scored as
    ``score_poses`` scores decoded codes."""
    from gst.geometry import denormalize_relative_pose

    preds = [
        read_pose_head(model, obs_ids, tgt_ids, seq_cfg=seq).cpu()  # (b, 13)
        for obs_ids, tgt_ids, _ in _pair_ids(model, layout, split, rows, batch_size)
    ]
    params = camera_tokenizer.params_from_vector(torch.cat(preds))
    w2c = denormalize_relative_pose(params.w2c().double(), camera_tokenizer.config.pose_scale)
    return _pose_scores("pose_head", w2c, split, rows)


def _pose_scores(prefix: str, w2c: torch.Tensor, split: CacheSplit, rows: np.ndarray) -> dict[str, float]:
    """Rotation: geodesic error (degrees), median and the fraction under 15 degrees; translation:
    direction error (degrees), median; against the cache's true relative poses of ``rows``.
    Shapes: w2c (n, 4, 4) float64, world units."""
    from gst.geometry import rotation_error_deg, translation_direction_error_deg

    w2c_true = torch.from_numpy(np.asarray(split.w2c_rel[rows])).double()  # (n, 4, 4)
    rot = rotation_error_deg(w2c[:, :3, :3], w2c_true[:, :3, :3])  # (n,)
    trans = translation_direction_error_deg(w2c[:, :3, 3], w2c_true[:, :3, 3])  # (n,)
    return {
        f"{prefix}/rotation_err_median_deg": float(rot.median()),
        f"{prefix}/rotation_acc_15deg": float((rot < 15.0).double().mean()),
        f"{prefix}/translation_dir_err_median_deg": float(trans.median()),
    }


@torch.no_grad()
def cell_metrics(
    model: nn.Module, split: CacheSplit, rows: np.ndarray, labels: torch.Tensor
) -> dict[str, float]:
    """The reader's cell heads on some pairs' observed and target images (``cell_loss`` metrics, named
    ``val_cell_*``). Shapes: labels (n, 2, h*w, 7) as ``CellLabels.pair_targets``."""
    reader = (model.module if hasattr(model, "module") else model).stem_reader
    device = next(reader.parameters()).device
    obs, tgt, _ = split.codes(rows)
    codes = torch.cat([obs.reshape(len(rows), -1), tgt.reshape(len(rows), -1)]).to(device)
    labels = labels.to(device)
    pred = reader.cell_predictions(reader.grid_features(codes))
    _, metrics = cell_loss(pred, torch.cat([labels[:, 0], labels[:, 1]]))
    return {f"val_{k}": float(v) for k, v in metrics.items()}


def pose_metrics(
    model: nn.Module,
    layout: TokenLayout,
    seq: SequenceConfig,
    split: CacheSplit,
    rows: np.ndarray,
    camera_tokenizer: nn.Module,
    *,
    batch_size: int = 64,
) -> dict[str, float]:
    """``score_poses(predict_poses(...))``: greedy est pose error against the cache's true pose, plus
    ``pose_head_metrics`` for a model with a pose head."""
    args = (model, layout, seq, split, rows, camera_tokenizer)
    metrics = score_poses(predict_poses(*args, batch_size=batch_size), split)
    if model.has_pose_head:
        metrics.update(pose_head_metrics(*args, batch_size=batch_size))
    return metrics


__all__ = [
    "PosePredictions",
    "cell_metrics",
    "eval_rows",
    "pose_head_metrics",
    "pose_head_targets",
    "pose_metrics",
    "predict_poses",
    "score_poses",
    "teacher_forced_metrics",
]
