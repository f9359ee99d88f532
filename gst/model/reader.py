"""The convolutional reader: given image segments read as code grids, compared cell by cell for a pair.

Why (shared/DESIGN.md, "Learning efficiency"): on 2 CPU cores a transformer that must find the
correspondence between two views through attention stays at chance on relative pose, while a small CNN
that stacks the two views' 8x8 feature maps along channels learns it in minutes, provided the code ids
start from what the tokenizer's decoder reads (a random code embedding makes it memorise its pairs).
The reader gives the backbone that CNN:

- ``code_feats``: one feature vector per image code, initialised (``gst.training.code_init``) from the
  frozen image tokenizer's decoder input, ``post_quant_conv(code vector)``, standardised per channel.
- ``single``: a residual conv stem over one image's code grid -> per-cell features. Every *given*
  image segment gets them, projected to the model width and added to its token embeddings.
- ``pair``: the observed and target maps stacked along channels, convs -> per-cell pair features added
  to the target segment of an ``est`` row; strided convs + an MLP -> one pair vector, added to the
  row's ``[cam_start]`` embedding (where the first camera code is predicted) and read by the pose head
  (the camera parameter vector, ``gst.tokenizers.camera.camera_vector``).

- ``cell_head`` (``ReaderConfig.cell_heads``): per cell of the single-image features, what the cell
  shows: object or not (1 logit), its shape (``NUM_SHAPE_CLASSES``) and colour (``NUM_COLOUR_CLASSES``)
  class, its centre in the camera frame (3, metres) and the cell's log depth (1): object-level and
  dense geometric targets (``gst.data.cell_labels``; trained on the reader-only pairs, ``cell_loss``).
  The features they shape are the ones every given image adds to its token embeddings, chat prompt
  images included.

Which segments are given: an image segment is ``[img_start]`` + h*w image codes + ``[img_end]``, whole
inside one forward's ``input_ids``, and not the target of a ``gen`` row (an ``[img_start]`` right
after ``[cam_end]``), which is generated and keeps causal embeddings. Reading a segment mixes its
tokens, so only segments without loss targets may be read: the observed image of every layout, the
target of ``est`` rows, the images of chat prompts. The model still defines a distribution over token
sequences: the reader is a function of conditioning tokens only. A pair is an ``est`` row's two
segments: ``[img_start] obs [img_end] [task_est] [img_start] tgt [img_end] [cam_start]``.

Glossary: B batch, T tokens, S read segments, P pairs, h/w image token grid, n = h*w, C reader
channels, Z code feature channels, D model width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gst.model.config import ReaderConfig, TokenLayout
from gst.tokenizers.camera import FOCAL_SLICE

NUM_SHAPE_CLASSES = 8  # gst.data.cell_labels.SHAPE_CLASSES (checked by the training task)
NUM_COLOUR_CLASSES = 11  # gst.data.cell_labels.COLOUR_CLASSES
# cell_head outputs: objectness, shape, colour, centre xyz, log depth
CELL_SPLITS = (1, NUM_SHAPE_CLASSES, NUM_COLOUR_CLASSES, 3, 1)


@dataclass
class ReaderOutput:
    """Shapes: cell_emb (B, T, D) to add to the token embeddings (zero outside read segments);
    pair_vec (P, C2) the pooled pair features; pair_rows, cam_pos (P,) long: each pair's row and the
    position of its ``[cam_start]``."""

    cell_emb: torch.Tensor
    pair_vec: torch.Tensor
    pair_rows: torch.Tensor
    cam_pos: torch.Tensor


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, twice, plus the input. Shapes: (N, C, h, w) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _stem(in_channels: int, channels: int, num_blocks: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 1), *[ResBlock(channels) for _ in range(num_blocks)]
    )


class CodeGridReader(nn.Module):
    """Conv stems over the code grids of given image segments (module docstring)."""

    def __init__(
        self, config: ReaderConfig, layout: TokenLayout, hidden_size: int, pose_dim: int, init_std: float
    ) -> None:
        super().__init__()
        c, c2 = config.channels, config.pair_dim
        self.config = config
        self.layout = layout
        self.grid_hw = config.grid_hw
        self.code_feats = nn.Embedding(layout.num_image_codes, config.code_dim)  # set by code_init
        self.single = _stem(config.code_dim, c, config.num_blocks)
        h, w = self.grid_hw
        corr_channels = 2 * h * w if config.corr_dim else 0
        self.corr_proj = nn.Conv2d(c, config.corr_dim, 1) if config.corr_dim else None
        self.pair = _stem(2 * c + corr_channels, c, config.num_blocks)
        # 8x8 -> 4x4 -> 2x2, then an MLP over the flattened map: keeps where things moved (a mean
        # pool would keep only what).
        self.pool = nn.Sequential(
            nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, stride=2, padding=1),
            nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, stride=2, padding=1),
            nn.Flatten(), nn.SiLU(), nn.Linear(c * (-(-h // 4)) * (-(-w // 4)), c2), nn.SiLU(),
        )  # fmt: skip
        # hidden_size 0: a pose reader (GSTModelConfig.pose_reader), which adds nothing to the embeddings
        self.to_cell = nn.Linear(c, hidden_size) if hidden_size else None
        self.to_pair_cell = nn.Linear(c, hidden_size) if hidden_size else None
        self.to_cam = nn.Linear(c2, hidden_size) if hidden_size else None
        for proj in (self.to_cell, self.to_pair_cell, self.to_cam):
            if proj is not None:
                nn.init.normal_(proj.weight, std=init_std)
                nn.init.zeros_(proj.bias)
        self.pose_head = nn.Linear(c2, pose_dim) if pose_dim else None
        self.cell_head = nn.Linear(c, sum(CELL_SPLITS)) if config.cell_heads else None

    def grid_features(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-cell features of code grids. Shapes: (S, n) codes in [0, K) -> (S, C, h, w)."""
        h, w = self.grid_hw
        x = self.code_feats(codes).transpose(1, 2).reshape(codes.shape[0], -1, h, w)  # (S, Z, h, w)
        return self.single(x)

    def pair_features(self, obs: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes: obs, tgt (P, C, h, w) -> per-cell (P, C, h, w), pooled (P, C2)."""
        maps = [obs, tgt]
        if self.corr_proj is not None:
            maps += correlation_maps(self.corr_proj(obs), self.corr_proj(tgt))
        cells = self.pair(torch.cat(maps, dim=1))  # (P, C, h, w)
        return cells, self.pool(cells)

    def read_pairs(self, obs_codes: torch.Tensor, tgt_codes: torch.Tensor) -> torch.Tensor:
        """The pose head on pairs alone (no backbone): training the stem on extra pairs, and the
        ``gst eval`` readout. Shapes: (P, n) codes -> (P, pose_dim)."""
        return self.pose_from_features(self.grid_features(torch.cat([obs_codes, tgt_codes])))

    def pose_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """The pose head on stacked single-image features. Shapes: (2P, C, h, w), the P observed maps
        then the P target maps -> (P, pose_dim)."""
        if self.pose_head is None:
            raise ValueError("this reader has no pose head (model.pose_head_dim=0)")
        _, vec = self.pair_features(*feats.chunk(2))
        return self.pose_head(vec)

    def cell_predictions(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cell head (module docstring). Shapes: (S, C, h, w) -> object (S, n) logit, shape
        (S, n, NUM_SHAPE_CLASSES) and colour (S, n, NUM_COLOUR_CLASSES) logits, centre (S, n, 3) metres,
        log_depth (S, n)."""
        if self.cell_head is None:
            raise ValueError("this reader has no cell head (model.reader.cell_heads=false)")
        out = self.cell_head(feats.flatten(2).transpose(1, 2))  # (S, n, sum(CELL_SPLITS))
        obj, shape, colour, centre, depth = out.split(CELL_SPLITS, dim=-1)
        return {
            "object": obj.squeeze(-1),
            "shape": shape,
            "colour": colour,
            "centre": centre,
            "log_depth": depth.squeeze(-1),
        }

    def cell_geometry(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each cell's depth and the probability that an object covers it (the cell head).
        Shapes: (S, C, h, w) single features -> depth (S, h, w) metres, object (S, h, w) in [0, 1]."""
        pred = self.cell_predictions(feats)
        grid = (feats.shape[0], *feats.shape[2:])
        depth = pred["log_depth"].float().clamp(-6.0, 6.0).exp().reshape(grid)
        return depth, torch.sigmoid(pred["object"].float()).reshape(grid)

    def observed_geometry(self, feats: torch.Tensor, image_w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What the reader says of one image's geometry alone: each cell's depth (``cell_geometry``) and
        the focal lengths in pixels (the pose head on the pair (image, image)). Shapes: (S, C, h, w)
        single features -> depth (S, h, w) metres, focal (S, 2) fx, fy."""
        focal = image_w * torch.exp(
            self.pose_from_features(torch.cat([feats, feats]))[:, FOCAL_SLICE].float()
        )
        return self.cell_geometry(feats)[0], focal

    def read_pose(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pose head on every est pair of ``input_ids`` (B, T), without embeddings (a pose reader):
        each pair's row, its ``[cam_start]`` position and its pose. Shapes: -> (P,), (P,), (P, pose_dim)."""
        n = self.grid_hw[0] * self.grid_hw[1]
        rows, starts, _, codes = self._given_codes(input_ids)  # (S,), (S,), _, (S, n)
        obs_i, tgt_i = est_pairs(input_ids, self.layout, rows, starts, n)  # (P,)
        pose = self.read_pairs(codes[obs_i], codes[tgt_i])  # (P, pose_dim)
        return rows[tgt_i], starts[tgt_i] + n + 1, pose

    def _given_codes(
        self, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The given segments (``given_segments``): rows, first-code positions, every code position and
        the codes. Shapes: (B, T) -> (S,), (S,), (S, n), (S, n) codes in [0, K)."""
        n = self.grid_hw[0] * self.grid_hw[1]
        rows, starts = given_segments(input_ids, self.layout, n)  # (S,)
        pos = starts.unsqueeze(1) + torch.arange(n, device=input_ids.device)  # (S, n)
        return rows, starts, pos, input_ids[rows.unsqueeze(1), pos] - self.layout.image_offset

    def forward(self, input_ids: torch.Tensor, dtype: torch.dtype) -> ReaderOutput:
        """Read the given image segments of ``input_ids`` (B, T) (module docstring)."""
        if self.to_cell is None:
            raise ValueError("a pose reader (hidden_size 0) adds no embeddings: use read_pose")
        B, T = input_ids.shape
        D = self.to_cell.out_features
        rows, starts, pos, codes = self._given_codes(input_ids)  # (S,), (S,), (S, n), (S, n)
        cell_emb = torch.zeros(B, T, D, device=input_ids.device, dtype=dtype)
        empty = torch.zeros(0, dtype=torch.long, device=input_ids.device)
        if rows.numel() == 0:
            return ReaderOutput(cell_emb, cell_emb.new_zeros(0, self.config.pair_dim), empty, empty)
        n = self.grid_hw[0] * self.grid_hw[1]
        feats = self.grid_features(codes)  # (S, C, h, w)
        per_cell = self.to_cell(feats.flatten(2).transpose(1, 2))  # (S, n, D)
        obs_i, tgt_i = est_pairs(input_ids, self.layout, rows, starts, n)  # (P,), (P,) segment indices
        pair_vec = feats.new_zeros(0, self.config.pair_dim)
        cam_pos = starts[tgt_i] + n + 1  # (P,) the [cam_start] after the target's [img_end]
        if obs_i.numel():
            cells, pair_vec = self.pair_features(feats[obs_i], feats[tgt_i])  # (P, C, h, w), (P, C2)
            pair_cell = self.to_pair_cell(cells.flatten(2).transpose(1, 2))  # (P, n, D)
            per_cell = per_cell.index_add(0, tgt_i, pair_cell)
            cam = self.to_cam(pair_vec)  # (P, D)
            cell_emb = cell_emb.index_put((rows[tgt_i], cam_pos), cam.to(dtype), accumulate=True)
        cell_emb = cell_emb.index_put(
            (rows.unsqueeze(1).expand_as(pos), pos), per_cell.to(dtype), accumulate=True
        )
        return ReaderOutput(cell_emb, pair_vec, rows[tgt_i], cam_pos)


def correlation_maps(a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """The cost volume of two maps, flattened along channels (``ReaderConfig.corr_dim``): at cell i,
    channel j of the first map is the cosine similarity of ``a``'s cell i to ``b``'s cell j; the
    second is the same from ``b``'s side. Shapes: a, b (P, k, h, w) -> two (P, h*w, h, w)."""
    P, _, h, w = a.shape
    a = nn.functional.normalize(a.flatten(2).float(), dim=1)  # (P, k, n)
    b = nn.functional.normalize(b.flatten(2).float(), dim=1)
    corr = a.transpose(1, 2) @ b  # (P, n_a, n_b)
    return [corr.transpose(1, 2).reshape(P, h * w, h, w), corr.reshape(P, h * w, h, w)]


def given_segments(input_ids: torch.Tensor, layout: TokenLayout, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image segments the reader may read (module docstring): rows and first-code positions.

    Shapes: input_ids (B, T) -> rows (S,), starts (S,) long, in row-major order.
    """
    B, T = input_ids.shape
    sid = layout.special_id
    opens = input_ids[:, : max(T - n - 1, 0)] == sid("<|img_start|>")  # (B, T - n - 1)
    if T > n + 1:
        closes = input_ids[:, n + 1 :] == sid("<|img_end|>")  # (B, T - n - 1): [img_end] n + 1 later
        opens = opens & closes
        prev = torch.cat([torch.zeros_like(input_ids[:, :1]), input_ids[:, :-1]], 1)[:, : T - n - 1]
        opens = opens & (prev != sid("<|cam_end|>"))  # a gen row's target is generated, not given
    rows, pos = opens.nonzero(as_tuple=True)  # (S,), (S,) [img_start] positions
    starts = pos + 1
    if rows.numel():
        span = input_ids[rows.unsqueeze(1), starts.unsqueeze(1) + torch.arange(n, device=input_ids.device)]
        is_code = ((span >= layout.image_offset) & (span < layout.camera_offset)).all(1)  # (S,)
        rows, starts = rows[is_code], starts[is_code]  # a null (pad) observation is not read
    return rows, starts


def est_pairs(
    input_ids: torch.Tensor, layout: TokenLayout, rows: torch.Tensor, starts: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into (rows, starts) of each est pair's observed and target segment.

    A target starts 3 tokens after the observed segment's end (``[img_end] [task_est] [img_start]``)
    and is followed by ``[img_end] [cam_start]``. Shapes: -> (P,), (P,) long.
    """
    T = input_ids.shape[1]
    sid = layout.special_id
    obs_start = starts - n - 3
    ok = obs_start >= 1
    ok &= starts + n + 1 < T
    cam_at = (starts + n + 1).clamp(max=T - 1)
    ok &= input_ids[rows, cam_at] == sid("<|cam_start|>")
    ok &= input_ids[rows, (starts - 2).clamp(min=0)] == sid("<|task_est|>")
    # the observed segment must be a read segment of the same row
    key = rows * (T + 1) + starts  # (S,) unique per segment
    want = rows * (T + 1) + obs_start
    match = want.unsqueeze(1) == key.unsqueeze(0)  # (S, S)
    ok &= match.any(1)
    tgt_i = ok.nonzero(as_tuple=True)[0]
    obs_i = match[tgt_i].float().argmax(1)
    return obs_i, tgt_i


def pose_at(
    pair_rows: torch.Tensor, cam_pos: torch.Tensor, pose_positions: torch.Tensor, pose: torch.Tensor
) -> torch.Tensor:
    """The pair pose read at each True of ``pose_positions`` (B, T), row-major. Shapes: pair_rows,
    cam_pos (P,) as ``ReaderOutput``; pose (P, Q) -> (N, Q). Every position asked for must be the
    ``[cam_start]`` of a read est pair."""
    B, T = pose_positions.shape
    index = torch.full((B, T), -1, dtype=torch.long, device=pose_positions.device)
    index[pair_rows, cam_pos] = torch.arange(pair_rows.numel(), device=index.device)
    picked = index[pose_positions]  # (N,)
    if bool((picked < 0).any()):
        raise ValueError(
            "pose_positions must be the [cam_start] of est rows whose observed and target images are "
            "given in full (the reader's pair stem reads the pose there)"
        )
    return pose[picked]


__all__ = [
    "CELL_SPLITS",
    "NUM_COLOUR_CLASSES",
    "NUM_SHAPE_CLASSES",
    "CodeGridReader",
    "ReaderOutput",
    "est_pairs",
    "given_segments",
    "pose_at",
]
