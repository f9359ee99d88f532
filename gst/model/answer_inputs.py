"""The answer reader's inputs (gst.model.answer_reader): what it reads of QA records, encoded once per
split: question word ids (``encode_questions``), the rows of the views each record shows, the pose
reader's readout of each pair of views (``pair_poses``) and its cell features of every view
(``view_features``), gathered by ``encode_records``; ``word_role_targets`` is the word-role target of a
question; ``text_tokenizer`` the answers' text tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from gst.data.qa_types import QARecord
from gst.model.answer_geometry import ROLES, stated_motions
from gst.model.answer_reader import MAX_QUESTION, MAX_VIEWS, POSE_DIMS, words
from gst.tokenizers.numbers import NUMBER_BINS
from gst.tokenizers.text import TextTokenizer


@torch.no_grad()
def view_features(
    reader: nn.Module, codes: np.ndarray, code_features: bool = False, batch: int = 512
) -> torch.Tensor:
    """The reader's features and cell-head readouts of every view; with ``code_features`` also each cell's
    code feature (the reader's input, ``code_feats``: what the tokenizer's decoder reads of the code).
    Shapes: (M, h, w) -> (M, n, F) fp16."""
    out = []
    for start in range(0, len(codes), batch):
        ids = torch.from_numpy(codes[start : start + batch].astype(np.int64)).flatten(1)
        grid = reader.grid_features(ids)
        p = reader.cell_predictions(grid)
        heads = [p["object"].unsqueeze(-1), p["shape"].softmax(-1), p["colour"].softmax(-1), p["centre"]]
        feats = [grid.flatten(2).transpose(1, 2), *heads, p["log_depth"].unsqueeze(-1)]
        if code_features:
            feats.append(reader.code_feats(ids))
        out.append(torch.cat(feats, -1).half())
    return torch.cat(out)


def text_tokenizer() -> TextTokenizer:
    """The answers' text tokenizer: the language base's, with the number tokens."""
    return TextTokenizer.from_pretrained(None).with_numbers(NUMBER_BINS)


def encode_questions(questions: Sequence[str], vocab: dict[str, int]) -> torch.Tensor:
    """Question word ids (``words``; 1 for a word outside ``vocab``, 0 pad). Shapes: -> (B, MAX_QUESTION)."""
    q = torch.zeros(len(questions), MAX_QUESTION, dtype=torch.int64)
    for i, question in enumerate(questions):
        ids = [vocab.get(w, 1) for w in words(question)][:MAX_QUESTION]
        q[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return q


def word_role_targets(question: str, references: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Which words of ``question`` (``words``, the first MAX_QUESTION) name each role's objects: the
    words of ``references[role]`` where they first occur in the question, and which roles have a
    reference. Raises when a reference is not in its question. Shapes: -> (MAX_QUESTION, R) float32,
    (R,) bool."""
    tags, defined = np.zeros((MAX_QUESTION, len(ROLES)), np.float32), np.zeros(len(ROLES), bool)
    ws = words(question)
    for role, text in references.items():
        ref = words(text)
        start = next((i for i in range(len(ws) - len(ref) + 1) if ws[i : i + len(ref)] == ref), None)
        if role not in ROLES or not ref or start is None:
            raise ValueError(f"reference {role!r}: {text!r} is not a role's wording in {question!r}")
        tags[start : min(start + len(ref), MAX_QUESTION), ROLES.index(role)] = 1.0
        defined[ROLES.index(role)] = True
    return tags, defined


@torch.no_grad()
def pair_poses(reader: nn.Module, codes: np.ndarray, views: np.ndarray, shown: np.ndarray) -> torch.Tensor:
    """The pose reader's pair readout of each record that shows two views (zeros for one view).
    Shapes: codes (M, h, w), views (B, V) rows of codes, shown (B, V) bool -> (B, POSE_DIMS)."""
    pose = torch.zeros(len(views), POSE_DIMS)
    two = np.nonzero(shown[:, 1])[0] if shown.shape[1] > 1 else np.zeros(0, np.int64)
    for start in range(0, len(two), 512):
        idx = two[start : start + 512]
        pair = torch.from_numpy(codes[views[idx]].astype(np.int64)).flatten(2)  # (b, 2, n)
        pose[idx] = reader.read_pairs(pair[:, 0], pair[:, 1]).float()
    return pose


def encode_records(
    records: Sequence[QARecord],
    view_rows: Sequence[Sequence[int]],
    codes: np.ndarray,
    reader: nn.Module,
    vocab: dict[str, int],
    code_features: bool = False,
) -> dict[str, Any]:
    """What the network reads of ``records``: question ids ``q``, view rows ``views`` and ``shown``, pair
    poses ``pose``, the stated motions ``stated_motion`` (``stated_motions``), the cells of every view
    ``feats`` (``view_features``, with ``code_features``) and the ``records``.
    ``view_rows[i]``: the rows of ``codes`` (M, h, w) that record i shows, in its view order."""
    views = np.zeros((len(records), MAX_VIEWS), np.int64)
    shown = np.zeros((len(records), MAX_VIEWS), bool)
    for i, rows in enumerate(view_rows):
        rows = list(rows)[:MAX_VIEWS]
        views[i, : len(rows)], shown[i, : len(rows)] = rows, True
    return {
        "q": encode_questions([r.question for r in records], vocab),
        "views": torch.from_numpy(views),
        "shown": torch.from_numpy(shown),
        "pose": pair_poses(reader, codes, views, shown),
        "stated_motion": stated_motions([r.question for r in records]),
        "feats": view_features(reader, codes, code_features),
        "records": list(records),
    }
