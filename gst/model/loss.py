"""The GST training loss: next-token cross-entropy on the loss segments of each task layout.

By default the softmax at a position whose target is an image (camera) code runs over the image
(camera) codes only: that is exactly the distribution segment-constrained decoding samples from, so
this is the likelihood of the model as it is used, and it skips the full-vocabulary matmul where text
cannot occur (most of the head's cost with a 49k text vocabulary). Text targets (chat answers) use the
whole vocabulary. ``restrict_vocab=False`` gives the plain full-vocabulary loss.

Glossary: B batch, T tokens, N labelled positions, K rows of one head kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gst.model.backbone import GSTModel
from gst.model.config import HeadKind, TokenLayout
from gst.model.sequences import IGNORE_INDEX, TASK_EST, TASK_NAMES, SequenceBatch
from gst.tokenizers.camera import FOCAL_SLICE

_KIND_NAMES = {HeadKind.FULL: "text", HeadKind.IMAGE: "image", HeadKind.CAMERA: "camera"}


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Per-kind token weights and the head restriction."""

    camera_weight: float = 1.0
    image_weight: float = 1.0
    text_weight: float = 1.0
    restrict_vocab: bool = True  # softmax over the target segment's codes (see module docstring)
    # Weight of the auxiliary pose readout (GeoVR-style geometric target): smooth-L1 loss (``pose_beta``, mean
    # over the P numbers) between the pose head at each est row's [cam_start] and the batch's pose_target,
    # added to the token loss. Needs a model with a pose head (GSTModelConfig.pose_head_dim). 0 = off.
    pose_weight: float = 0.0
    # The pose loss is smooth L1 with this beta (Huber / beta), both readouts: est rows and reader-only
    # pairs. 1: about a squared error on the camera vector's numbers (their errors are mostly below 1);
    # smaller: an absolute error beyond beta, which weighs the many near pairs over the few far-off ones.
    pose_beta: float = 1.0
    # Weight of the two log-focal numbers of the camera vector (p[9:11]) in the pose loss, the other numbers
    # weighing 1 (the loss stays a mean over the P numbers). 1 = off.
    pose_focal_weight: float = 1.0
    # Weight of the first code of each camera segment, times camera_weight: the one code predicted from the
    # images alone (the codes after it largely follow from it; docs/experiments.md, 2026-12-02, "where
    # the pose comes from"). 1 = off.
    camera_first_weight: float = 1.0
    # Weight of the reader's cell heads on the reader-only pairs (``cell_loss``: objectness BCE + shape and
    # colour CE on object cells + centre and log-depth Huber), added to the loss. Needs
    # ``model.reader.cell_heads`` and cell labels (``gst data cells``). 0 = off.
    cell_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in (
            "camera_weight",
            "image_weight",
            "text_weight",
            "pose_weight",
            "camera_first_weight",
            "cell_weight",
            "pose_focal_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.pose_beta <= 0:
            raise ValueError(f"LossConfig.pose_beta must be > 0, got {self.pose_beta}")

    def weight(self, kind: HeadKind) -> float:
        return {HeadKind.CAMERA: self.camera_weight, HeadKind.IMAGE: self.image_weight}.get(
            kind, self.text_weight
        )


@dataclass
class GSTLossOutput:
    """Shapes: loss () with grad; metrics {name: () detached}: ``{task}/{kind}_ce`` (nats per token),
    ``{task}/{kind}_acc`` (top-1 accuracy), ``{task}/{kind}_tokens``, the same for ``camera_first`` (the first
    code of each camera segment only), plus ``tokens``; with the pose
    readout on, ``est/pose_huber`` (mean Huber loss per number) and ``est/pose_rows``."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def head_kinds(layout: TokenLayout, targets: torch.Tensor, restrict_vocab: bool = True) -> torch.Tensor:
    """The head kind that predicts each target. Shapes: targets (B, T) long -> (B, T) long HeadKind."""
    kinds = torch.full_like(targets, int(HeadKind.NONE))
    labelled = targets != IGNORE_INDEX
    kinds[labelled] = int(HeadKind.FULL)
    if restrict_vocab:
        is_img = labelled & (targets >= layout.image_offset) & (targets < layout.camera_offset)
        is_cam = labelled & (targets >= layout.camera_offset) & (targets < layout.num_used)
        kinds[is_img] = int(HeadKind.IMAGE)
        kinds[is_cam] = int(HeadKind.CAMERA)
    return kinds


def compute_loss(model: GSTModel, batch: SequenceBatch, config: LossConfig | None = None) -> GSTLossOutput:
    """Cross-entropy of ``batch.labels`` given the tokens before them, with per-task/kind metrics.

    The loss is the weighted sum of token cross-entropies over the sum of token weights (a token
    mean when all weights are 1), so gen rows (camera + image) count more than est rows (camera).
    """
    config = config or LossConfig()
    if batch.batch_size == 0:  # a reader-only micro-batch (SequenceConfig.stem_warmup_steps)
        return _stem_loss(model, batch, config, GSTLossOutput(loss=torch.zeros(()), metrics={}))
    layout = model.layout if not hasattr(model, "module") else model.module.layout  # DDP-wrapped models
    # Position t predicts token t + 1; the last position predicts nothing.
    targets = torch.cat(
        [batch.labels[:, 1:], torch.full_like(batch.labels[:, :1], IGNORE_INDEX)], 1
    )  # (B, T)
    kinds = head_kinds(layout, targets, config.restrict_vocab)  # (B, T)
    pose_positions = _pose_positions(layout, batch) if config.pose_weight > 0 else None  # (B, T)
    out = model(
        batch.input_ids,
        batch.grid_pos,
        attention_mask=batch.attention_mask,
        head=kinds,
        pose_positions=pose_positions,
    )
    task = batch.task.unsqueeze(1).expand_as(targets)  # (B, T)
    total = torch.zeros((), device=batch.input_ids.device)
    weight_sum = torch.zeros((), device=batch.input_ids.device)
    metrics: dict[str, torch.Tensor] = {}
    for kind, logits in out.kind_logits.items():
        sel = kinds == kind  # (B, T)
        start = layout.kind_rows(kind)[0]
        tgt = targets[sel] - start  # (N,) rows of this kind
        ce = F.cross_entropy(logits.float(), tgt, reduction="none")  # (N,)
        w = config.weight(kind)
        # The first code of each camera segment is predicted from the images alone; the codes after it
        # largely follow from it (every code describes the whole camera), so all-code accuracy overstates
        # what the model knows about the pose (docs/experiments.md, 2026-12-02, "where the pose comes from").
        first = _segment_starts(kinds == kind)[sel] if kind == HeadKind.CAMERA else None  # (N,)
        if first is not None and config.camera_first_weight != 1.0:
            token_w = w * torch.where(first, config.camera_first_weight, 1.0)  # (N,)
            total = total + (token_w * ce).sum()
            weight_sum = weight_sum + token_w.sum()
        else:
            total = total + w * ce.sum()
            weight_sum = weight_sum + w * ce.numel()
        correct = logits.detach().argmax(-1) == tgt
        _kind_metrics(metrics, _KIND_NAMES[kind], ce.detach(), correct, task[sel])
        if first is not None:
            _kind_metrics(metrics, "camera_first", ce.detach()[first], correct[first], task[sel][first])
    metrics["tokens"] = torch.as_tensor(float((kinds != HeadKind.NONE).sum()))
    loss = total / weight_sum.clamp_min(1.0)
    if pose_positions is not None and out.pose is not None and out.pose.shape[0] > 0:
        rows = pose_positions.any(1)  # (B,) one [cam_start] per est row
        target = batch.pose_target[rows].to(out.pose.device, torch.float32)  # (N, P)
        huber = pose_loss(out.pose, target, config)
        loss = loss + config.pose_weight * huber
        metrics["est/pose_huber"] = huber.detach()
        metrics["est/pose_rows"] = torch.as_tensor(float(target.shape[0]))
    return _stem_loss(model, batch, config, GSTLossOutput(loss=loss, metrics=metrics))


def pose_loss(pose: torch.Tensor, target: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Smooth L1 (``pose_beta``) between pose readouts and camera vectors, the log-focal numbers weighted
    by ``pose_focal_weight``; mean over rows and numbers. Shapes: (N, P), (N, P) -> ()."""
    per = F.smooth_l1_loss(pose.float(), target, beta=config.pose_beta, reduction="none")  # (N, P)
    if config.pose_focal_weight != 1.0:
        weight = torch.ones(per.shape[-1], device=per.device)
        weight[FOCAL_SLICE] = config.pose_focal_weight
        per = per * weight
    return per.mean()


def _stem_loss(
    model: GSTModel, batch: SequenceBatch, config: LossConfig, out: GSTLossOutput
) -> GSTLossOutput:
    """``out`` plus the pose loss (and, with ``cell_weight``, the cell loss) of the batch's reader-only
    pairs (``SequenceConfig.stem_pairs``)."""
    use_cells = config.cell_weight > 0 and batch.stem_cells is not None
    if batch.stem_codes is None or (config.pose_weight <= 0 and not use_cells):
        return out
    reader = (model.module if hasattr(model, "module") else model).stem_reader
    feats = reader.grid_features(
        torch.cat([batch.stem_codes[:, 0], batch.stem_codes[:, 1]])
    )  # (2B2, C, h, w)
    loss = out.loss.to(feats.device)
    if config.pose_weight > 0:
        pose = reader.pose_from_features(feats)  # (B2, P)
        huber = pose_loss(pose, batch.stem_pose.to(pose.device, torch.float32), config)
        out.metrics["stem/pose_huber"] = huber.detach()
        loss = loss + config.pose_weight * huber
    if use_cells:
        labels = batch.stem_cells.to(feats.device)  # (B2, 2, n, CELL_LABEL_DIM)
        cells, metrics = cell_loss(reader.cell_predictions(feats), torch.cat([labels[:, 0], labels[:, 1]]))
        out.metrics.update({f"stem/{k}": v for k, v in metrics.items()})
        loss = loss + config.cell_weight * cells
    return GSTLossOutput(loss=loss, metrics=out.metrics)


def cell_loss(
    pred: dict[str, torch.Tensor], labels: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reader's cell-head loss and metrics (``gst.model.reader``, ``gst.data.cell_labels``).

    ``labels`` (S, n, 7) float: object index (-1 none), shape class, colour class (-1 none), centre xyz
    (camera frame, metres; NaN none), depth (metres; NaN where no surface). Loss: objectness BCE over
    all cells + shape CE + colour CE + centre Huber (delta 1 m, mean over xyz) over object cells +
    log-depth Huber (delta 1) over cells with a surface. Metrics (detached): ``cell_object_acc`` (object
    vs none), ``cell_shape_acc`` / ``cell_colour_acc`` / ``cell_centre_err_m`` (mean Euclidean) on object
    cells, ``cell_depth_absrel`` (mean |d - d*| / d*) on surface cells.
    """
    obj = labels[..., 0] >= 0  # (S, n)
    has_depth = torch.isfinite(labels[..., 6])  # (S, n)
    logit = pred["object"].float()
    loss = F.binary_cross_entropy_with_logits(logit, obj.float())
    metrics = {"cell_object_acc": ((logit > 0) == obj).float().mean().detach()}
    zero = logit.sum() * 0.0  # keeps the graph when a batch has no object / depth cell
    if bool(obj.any()):
        shape_logits, colour_logits = pred["shape"][obj].float(), pred["colour"][obj].float()
        shape, colour = labels[..., 1][obj].long(), labels[..., 2][obj].long()
        centre_pred, centre = pred["centre"][obj].float(), labels[..., 3:6][obj]
        loss = loss + F.cross_entropy(shape_logits, shape) + F.cross_entropy(colour_logits, colour)
        loss = loss + F.huber_loss(centre_pred, centre, delta=1.0)
        metrics["cell_shape_acc"] = (shape_logits.argmax(-1) == shape).float().mean().detach()
        metrics["cell_colour_acc"] = (colour_logits.argmax(-1) == colour).float().mean().detach()
        metrics["cell_centre_err_m"] = (centre_pred - centre).norm(dim=-1).mean().detach()
    else:
        loss = loss + zero
    if bool(has_depth.any()):
        depth = labels[..., 6][has_depth]
        log_pred = pred["log_depth"][has_depth].float()
        loss = loss + F.huber_loss(log_pred, depth.log(), delta=1.0)
        metrics["cell_depth_absrel"] = ((log_pred.exp() - depth).abs() / depth).mean().detach()
    return loss, metrics


def _pose_positions(layout: TokenLayout, batch: SequenceBatch) -> torch.Tensor:
    """The [cam_start] of every est row with a pose target: where the camera is read out before its
    first code. Shapes: -> (B, T) bool, at most one True per row."""
    if batch.pose_target is None:
        raise ValueError(
            "LossConfig.pose_weight > 0 needs batches with pose_target (the camera parameter vector of "
            "each est row); the GST training task fills it"
        )
    has_target = (batch.task == TASK_EST) & torch.isfinite(batch.pose_target).all(1)  # (B,)
    return (batch.input_ids == layout.special_id("<|cam_start|>")) & has_target.unsqueeze(1)


def _segment_starts(mask: torch.Tensor) -> torch.Tensor:
    """The first position of every run of True along each row. Shapes: (B, T) bool -> (B, T) bool."""
    before = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], 1)  # (B, T)
    return mask & ~before


def _kind_metrics(
    metrics: dict[str, torch.Tensor], kind: str, ce: torch.Tensor, correct: torch.Tensor, task: torch.Tensor
) -> None:
    for t, name in enumerate(TASK_NAMES):
        sel = task == t
        n = int(sel.sum())
        if n == 0:
            continue
        metrics[f"{name}/{kind}_ce"] = ce[sel].mean()
        metrics[f"{name}/{kind}_acc"] = correct[sel].float().mean()
        metrics[f"{name}/{kind}_tokens"] = torch.as_tensor(float(n))


def gst_loss(model: GSTModel, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """The training-loop entry point: (loss with grad, float metrics for logging; one device sync)."""
    out = compute_loss(model, batch)
    names = list(out.metrics)
    values = torch.stack([out.metrics[k].float().to(out.loss.device) for k in names]).tolist()
    return out.loss, dict(zip(names, values, strict=True))
