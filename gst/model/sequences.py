"""Task layouts: token sequences, loss labels and 2D grid positions for gen, est and chat.

Layouts (one row each; ``[x]`` is a special token, ``obs``/``tgt`` are h*w image codes in raster order,
``cam`` is hc*wc camera codes in raster order):

- gen: ``[img_start] obs [img_end] [task_gen] [cam_start] cam [cam_end] [img_start] tgt [img_end]``,
  loss on the camera and target image codes: the joint p(camera, image | observation).
- est: ``[img_start] obs [img_end] [task_est] [img_start] tgt [img_end] [cam_start] cam [cam_end]``,
  loss on the camera codes: p(camera | observation, target).
- chat: ``[system] text [end] [user] text/images [end] [assistant] answer [end]``, loss on the
  assistant's answer and its closing ``[end]``.

Structure tokens carry no loss: decoding forces them, since segment lengths are known. gen and est rows
have the same length, so they mix in one batch without padding.

Grid positions: each image or camera token carries its normalised cell centre
``((r + 0.5) / h, (c + 0.5) / w)``; other tokens carry ``NO_GRID``. Observed image, camera map and target
image thus line up cell for cell (see ``gst.model.backbone``).

Classifier-free guidance: a dropped condition replaces the observed image codes by ``<|pad|>`` tokens
(same length and grid positions, so conditional and unconditional rows stay aligned). The pad row is a
learned embedding: the backbone sets no padding_idx.

Glossary: B batch, T tokens, h/w image token grid, hc/wc camera token grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch

from gst.model.config import TokenLayout

IGNORE_INDEX = -100  # label value outside the loss segments (torch cross_entropy's default ignore_index)
NO_GRID = -1.0  # grid position of tokens outside image and camera segments
TASK_GEN, TASK_EST, TASK_CHAT = 0, 1, 2
TASK_NAMES = ("gen", "est", "chat")


@dataclass(frozen=True, kw_only=True)
class SequenceConfig:
    """Grids, task mixing and conditioning dropout for the pose/view tasks."""

    image_grid: tuple[int, int] = (8, 8)  # (h, w) image tokens per image (tiny: 8x8, base: 16x16)
    camera_grid: tuple[int, int] = (8, 8)  # (hc, wc) camera tokens (issue 7: image grid down to 2x2)
    # joint: gen and est rows mixed in every batch (GST); alternate: whole batches alternate by step
    # parity; gen / est: one task only (ablations).
    task_mix: Literal["joint", "alternate", "gen", "est"] = "joint"
    est_fraction: float = 0.5  # joint: fraction of est rows in each batch (rounded)
    cond_dropout: float = 0.1  # gen rows: probability that the observed image becomes the null segment
    cond_dropout_est: float = 0.0  # est rows: the same (p(camera | target) alone is rarely wanted)
    # Share of each training batch taken by chat (spatial QA) rows, rounded, at least one row when > 0;
    # needs a chat cache (`gst train gst --chat DIR`). 0 keeps pose-only training (and old configs).
    chat_fraction: float = 0.0
    # Questions per chat row at most: the drawn record, then up to chat_turns - 1 other training records
    # that show the same views, as follow-up turns of one conversation (the images only in the first
    # user turn, a loss on every answer), as many as fit in the batch's right padding: more answers for
    # the same compute. 1: one question per row.
    chat_turns: int = 1
    # Extra train pairs per micro-batch read by the reader's pair stem alone (GSTModelConfig.reader), with
    # the pose loss only: the stem costs a small share of a backbone row, so it can see many more pairs
    # per CPU-minute than the backbone does. 0 = none.
    stem_pairs: int = 0
    # Optimiser updates at the start that train the reader alone: micro-batches of stem_pairs pairs and
    # no backbone rows (the pose head learns at the speed of a small CNN regressor first). 0 = none.
    stem_warmup_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("image_grid", "camera_grid"):
            grid = getattr(self, name)
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(f"SequenceConfig.{name} must be (h, w) with h, w >= 1, got {grid}")
        if self.task_mix not in ("joint", "alternate", "gen", "est"):
            raise ValueError(
                f"SequenceConfig.task_mix must be joint/alternate/gen/est, got {self.task_mix!r}"
            )
        for name in ("est_fraction", "cond_dropout", "cond_dropout_est", "chat_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SequenceConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("stem_pairs", "stem_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"SequenceConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.chat_turns, int) or self.chat_turns < 1:
            raise ValueError(f"SequenceConfig.chat_turns must be an integer >= 1, got {self.chat_turns!r}")

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SequenceConfig:
        d = dict(d)
        for name in ("image_grid", "camera_grid"):
            if name in d:
                d[name] = tuple(d[name])  # JSON gives lists
        return cls(**d)

    @property
    def num_image_tokens(self) -> int:
        return self.image_grid[0] * self.image_grid[1]

    @property
    def num_camera_tokens(self) -> int:
        return self.camera_grid[0] * self.camera_grid[1]

    @property
    def pose_seq_len(self) -> int:
        """Length of a gen or est row: two images, one camera, 7 structure tokens."""
        return 2 * self.num_image_tokens + self.num_camera_tokens + 7


@dataclass
class SequenceBatch:
    """A training (or scoring) batch.

    Shapes: input_ids (B, T) long; labels (B, T) long, IGNORE_INDEX outside the loss (aligned with
    input_ids: the model predicts labels[t] from tokens < t, the loss shifts); grid_pos (B, T, 2) float32;
    attention_mask (B, T) long, 1 = token, 0 = padding, or None when no row is padded (pose batches: lets
    SDPA use its causal flash kernel); task (B,) long in {TASK_GEN, TASK_EST, TASK_CHAT}; pose_target
    (B, P) float32 or None: the camera parameter vector an est row's pose head should read out at its
    ``[cam_start]`` (``LossConfig.pose_weight``), NaN in rows without one; stem_codes (B2, 2, h*w) long
    image codes in [0, K) of (observed, target) pairs read by the reader alone, stem_pose (B2, P) float32
    their camera parameter vectors, or None (``SequenceConfig.stem_pairs``); stem_cells (B2, 2, h*w, 7)
    float32 the cell labels of those pairs' images (``gst.model.loss.cell_loss``), or None.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    grid_pos: torch.Tensor
    attention_mask: torch.Tensor | None
    task: torch.Tensor
    pose_target: torch.Tensor | None = None
    stem_codes: torch.Tensor | None = None
    stem_pose: torch.Tensor | None = None
    stem_cells: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> SequenceBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return SequenceBatch(**{k: v.to(device) if v is not None else None for k, v in moved.items()})

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])


def grid_coords(h: int, w: int) -> torch.Tensor:
    """Normalised cell centres of an h x w grid in raster order. Shapes: (h*w, 2) as (row, col).
    Range: (0, 1)."""
    rows = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(h * w, 2)


@dataclass(frozen=True)
class PoseOffsets:
    """Start index of each code segment in a gen/est row, and the row length."""

    obs: int
    cam: int
    tgt: int
    length: int


def pose_offsets(cfg: SequenceConfig, task: int) -> PoseOffsets:
    n_img, n_cam = cfg.num_image_tokens, cfg.num_camera_tokens
    obs = 1
    if task == TASK_GEN:
        cam = obs + n_img + 3  # [img_end] [task_gen] [cam_start]
        tgt = cam + n_cam + 2  # [cam_end] [img_start]
        return PoseOffsets(obs=obs, cam=cam, tgt=tgt, length=tgt + n_img + 1)
    if task == TASK_EST:
        tgt = obs + n_img + 3  # [img_end] [task_est] [img_start]
        cam = tgt + n_img + 2  # [img_end] [cam_start]
        return PoseOffsets(obs=obs, cam=cam, tgt=tgt, length=cam + n_cam + 1)
    raise ValueError(f"pose layouts are gen ({TASK_GEN}) and est ({TASK_EST}), got task {task}")


def assemble_pose(
    layout: TokenLayout,
    cfg: SequenceConfig,
    task: int,
    obs_ids: torch.Tensor,
    tgt_ids: torch.Tensor,
    cam_ids: torch.Tensor,
    null_obs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full gen or est rows from vocabulary ids.

    Shapes: obs_ids, tgt_ids (B, h*w) image ids; cam_ids (B, hc*wc) camera ids; null_obs (B,) bool
    -> input_ids (B, T) long, labels (B, T) long, grid_pos (T, 2) float32 (shared by all rows).
    """
    off = pose_offsets(cfg, task)
    n_img, n_cam = cfg.num_image_tokens, cfg.num_camera_tokens
    batch = obs_ids.shape[0]
    _check_ids(obs_ids, (batch, n_img), layout.image_offset, layout.camera_offset, "obs_ids (image)")
    _check_ids(tgt_ids, (batch, n_img), layout.image_offset, layout.camera_offset, "tgt_ids (image)")
    _check_ids(cam_ids, (batch, n_cam), layout.camera_offset, layout.num_used, "cam_ids (camera)")
    sid = layout.special_id
    ids = torch.full((batch, off.length), sid("<|pad|>"), dtype=torch.long, device=obs_ids.device)
    grid = torch.full((off.length, 2), NO_GRID, dtype=torch.float32)
    img_coords, cam_coords = grid_coords(*cfg.image_grid), grid_coords(*cfg.camera_grid)
    segments = (
        (off.obs, obs_ids, img_coords, "<|img_start|>", "<|img_end|>"),
        (off.tgt, tgt_ids, img_coords, "<|img_start|>", "<|img_end|>"),
        (off.cam, cam_ids, cam_coords, "<|cam_start|>", "<|cam_end|>"),
    )
    for start, seg_ids, coords, begin, end in segments:
        n = seg_ids.shape[1]
        ids[:, start - 1] = sid(begin)
        ids[:, start : start + n] = seg_ids
        ids[:, start + n] = sid(end)
        grid[start : start + n] = coords
    ids[:, off.obs + n_img + 1] = sid("<|task_gen|>" if task == TASK_GEN else "<|task_est|>")
    if null_obs is not None:
        ids[null_obs.to(ids.device), off.obs : off.obs + n_img] = sid("<|pad|>")
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, off.cam : off.cam + n_cam] = ids[:, off.cam : off.cam + n_cam]
    if task == TASK_GEN:
        labels[:, off.tgt : off.tgt + n_img] = ids[:, off.tgt : off.tgt + n_img]
    return ids, labels, grid.to(obs_ids.device)


def _check_ids(ids: torch.Tensor, shape: tuple[int, int], lo: int, hi: int, name: str) -> None:
    if tuple(ids.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(ids.shape)}, expected {shape}")
    if ids.numel() and (int(ids.min()) < lo or int(ids.max()) >= hi):
        raise ValueError(
            f"{name} must be vocabulary ids in [{lo}, {hi}); got [{int(ids.min())}, {int(ids.max())}]"
        )


def choose_tasks(cfg: SequenceConfig, batch_size: int, step: int, generator: torch.Generator) -> torch.Tensor:
    """The task of each row.

    ``step`` is the optimiser update index: in ``alternate`` mode every micro-batch and process of one
    update must share a task, or the update mixes gen and est and the comparison with ``joint``
    is lost. (With the training loop's micro-batch index i, A accumulation steps and P processes,
    pass ``i // (A * P)``.)

    Shapes: -> (B,) long in {TASK_GEN, TASK_EST}.
    """
    if cfg.task_mix == "gen" or (cfg.task_mix == "alternate" and step % 2 == 0):
        return torch.full((batch_size,), TASK_GEN, dtype=torch.long)
    if cfg.task_mix in ("est", "alternate"):
        return torch.full((batch_size,), TASK_EST, dtype=torch.long)
    # joint: a fixed number of est rows per batch (stratified), at random places.
    num_est = int(round(cfg.est_fraction * batch_size))
    tasks = torch.full((batch_size,), TASK_GEN, dtype=torch.long)
    tasks[torch.randperm(batch_size, generator=generator)[:num_est]] = TASK_EST
    return tasks


def collate_pose_batch(
    layout: TokenLayout,
    cfg: SequenceConfig,
    obs_codes: torch.Tensor,
    tgt_codes: torch.Tensor,
    cam_codes: torch.Tensor,
    *,
    step: int,
    generator: torch.Generator,
    tasks: torch.Tensor | None = None,
) -> SequenceBatch:
    """A gen/est training batch from tokenizer codes (what the data cache stores).

    Tasks follow ``cfg.task_mix`` (or ``tasks`` when given); the observed image is dropped to the null
    segment with probability ``cfg.cond_dropout`` (gen rows) / ``cfg.cond_dropout_est`` (est rows).

    Shapes: obs_codes, tgt_codes (B, h*w) or (B, h, w); cam_codes (B, hc*wc) or (B, hc, wc).
    Range: image codes in [0, num_image_codes), camera codes in [0, num_camera_codes).
    """
    batch = obs_codes.shape[0]
    obs_ids = obs_codes.reshape(batch, -1).long() + layout.image_offset  # (B, h*w)
    tgt_ids = tgt_codes.reshape(batch, -1).long() + layout.image_offset  # (B, h*w)
    cam_ids = cam_codes.reshape(batch, -1).long() + layout.camera_offset  # (B, hc*wc)
    tasks = choose_tasks(cfg, batch, step, generator) if tasks is None else tasks.long().cpu()
    p_drop = torch.where(tasks == TASK_GEN, cfg.cond_dropout, cfg.cond_dropout_est)  # (B,)
    null_obs = torch.rand(batch, generator=generator) < p_drop  # (B,)
    input_ids = torch.empty(batch, cfg.pose_seq_len, dtype=torch.long, device=obs_ids.device)
    labels = torch.empty_like(input_ids)
    grid_pos = torch.empty(batch, cfg.pose_seq_len, 2, dtype=torch.float32, device=obs_ids.device)
    for task in (TASK_GEN, TASK_EST):
        rows = (tasks == task).nonzero().squeeze(1).to(obs_ids.device)
        if rows.numel() == 0:
            continue
        ids, lab, grid = assemble_pose(
            layout, cfg, task, obs_ids[rows], tgt_ids[rows], cam_ids[rows], null_obs[rows.cpu()]
        )
        input_ids[rows], labels[rows], grid_pos[rows] = ids, lab, grid
    return SequenceBatch(
        input_ids=input_ids,
        labels=labels,
        grid_pos=grid_pos,
        attention_mask=None,  # gen and est rows have one length: no padding
        task=tasks.to(obs_ids.device),
    )


@dataclass(frozen=True)
class ImageSegment:
    """An image inside a chat message. Shapes: codes (h*w,) or (h, w). Range: [0, num_image_codes)."""

    codes: torch.Tensor


ChatPart = Sequence[int] | ImageSegment  # text ids, or an image
ChatMessage = tuple[Literal["system", "user", "assistant"], Sequence[ChatPart]]


def build_chat_example(
    layout: TokenLayout,
    cfg: SequenceConfig,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chat row: ``[role] content [end]`` per message, loss on assistant content and its [end].

    ``add_generation_prompt`` appends ``[assistant]`` so decoding can continue with the answer.
    Shapes: -> input_ids (T,) long, labels (T,) long, grid_pos (T, 2) float32.
    """
    ids: list[torch.Tensor] = []
    grids: list[torch.Tensor] = []
    loss: list[bool] = []
    coords = grid_coords(*cfg.image_grid)

    def add(tok: torch.Tensor, grid: torch.Tensor | None, with_loss: bool) -> None:
        ids.append(tok)
        grids.append(torch.full((len(tok), 2), NO_GRID) if grid is None else grid)
        loss.append(with_loss)

    def special(name: str, with_loss: bool = False) -> None:
        add(torch.tensor([layout.special_id(f"<|{name}|>")]), None, with_loss)

    for role, parts in messages:
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"chat role must be system/user/assistant, got {role!r}")
        answer = role == "assistant"
        special(role)
        for part in parts:
            if isinstance(part, ImageSegment):
                codes = part.codes.reshape(-1).long()
                if codes.numel() != cfg.num_image_tokens:
                    raise ValueError(f"chat image has {codes.numel()} codes, expected {cfg.num_image_tokens}")
                special("img_start", answer)
                add(codes + layout.image_offset, coords, answer)
                special("img_end", answer)
            else:
                text = torch.as_tensor(list(part), dtype=torch.long)
                if text.numel() and (int(text.min()) < 0 or int(text.max()) >= layout.num_text):
                    raise ValueError(f"chat text ids must lie in [0, {layout.num_text})")
                add(text, None, answer)
        special("end", answer)
    if add_generation_prompt:
        special("assistant")
    input_ids = torch.cat(ids)  # (T,)
    labels = torch.cat(
        [t if keep else torch.full_like(t, IGNORE_INDEX) for t, keep in zip(ids, loss, strict=True)]
    )
    return input_ids, labels, torch.cat(grids).float()


def collate_chat(
    layout: TokenLayout, examples: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> SequenceBatch:
    """Right-pad chat rows into one batch (pad tokens are masked out and carry no loss)."""
    length = max(int(ex[0].shape[0]) for ex in examples)
    batch = len(examples)
    input_ids = torch.full((batch, length), layout.special_id("<|pad|>"), dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    grid_pos = torch.full((batch, length, 2), NO_GRID, dtype=torch.float32)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    for i, (ids, lab, grid) in enumerate(examples):
        n = ids.shape[0]
        input_ids[i, :n], labels[i, :n], grid_pos[i, :n], attention_mask[i, :n] = ids, lab, grid, 1
    return SequenceBatch(
        input_ids=input_ids,
        labels=labels,
        grid_pos=grid_pos,
        attention_mask=attention_mask,
        task=torch.full((batch,), TASK_CHAT, dtype=torch.long),
    )
