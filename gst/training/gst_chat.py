"""Chat (spatial QA) rows for GST training: the row format, mixing with pose rows, teacher-forced scores.

The row format is the one inference uses (``gst.api_chat.ChatSession.ask``, no system message), so a
model trained on these rows answers ``gst eval qa`` questions in the format its parser reads back
(``gst.data.qa_types.parse_like`` of the canonical ``answer_text``).

Glossary: B batch, T tokens, V vocabulary rows, N labelled positions, h/w image token grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from gst.data.chat_cache import ChatSplit
from gst.model import HeadKind, SequenceBatch, SequenceConfig, TokenLayout, build_chat_example
from gst.model.sequences import IGNORE_INDEX, NO_GRID, ImageSegment


def qa_chat_example(
    layout: TokenLayout,
    seq: SequenceConfig,
    split: ChatSplit,
    rows: int | Sequence[int],
    text_tokenizer: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Record ``rows`` as one chat row, in the exact format ``gst.api_chat.ChatSession.ask`` reads at
    inference (no system message; the user turn is its images, in view order, then the question):
    ``[user] [img_start] codes [img_end] ... question [end] [assistant] answer [end]``, labels on the
    answer (the canonical ``answer_text``) and its ``[end]`` only. Several records (all showing the same
    views) make one conversation: the first as above, each further one a follow-up turn
    ``[user] question [end] [assistant] answer [end]``, as a multi-turn chat reads them; every answer
    is labelled. With number tokens in the layout's text segment, numbers with a unit are number tokens
    (``TextTokenizer.for_text_ids``: the run's tokenizer is made from ``GSTRunConfig.text`` alone).

    Shapes: -> input_ids (T,) long, labels (T,) long (IGNORE_INDEX elsewhere), grid_pos (T, 2) float32.
    """
    text_tokenizer = text_tokenizer.for_text_ids(layout.num_text)
    rows = [rows] if isinstance(rows, (int, np.integer)) else list(rows)
    views = split.records[rows[0]]["image_rows"]
    messages = []
    for k, row in enumerate(rows):
        if split.records[row]["image_rows"] != views:
            raise ValueError(
                f"chat row: record {split.records[row]['id']!r} shows other views than "
                f"{split.records[rows[0]]['id']!r}; one conversation is about one set of views"
            )
        question, answer = split.texts(row)
        images = [ImageSegment(codes) for codes in split.images(row)] if k == 0 else []  # (h, w) each
        messages += [
            ("user", [*images, text_tokenizer.encode(question)]),
            ("assistant", [text_tokenizer.encode(answer)]),
        ]
    return build_chat_example(layout, seq, messages)


def concat_batches(layout: TokenLayout, batches: list[SequenceBatch]) -> SequenceBatch:
    """Rows of several batches in one, right-padded to the longest (pad tokens: no attention, no loss).
    Right padding keeps every real token's position and causal context unchanged."""
    length = max(b.seq_len for b in batches)

    def pad(x: torch.Tensor, value: float) -> torch.Tensor:
        extra = length - x.shape[1]
        return torch.cat([x, x.new_full((x.shape[0], extra, *x.shape[2:]), value)], 1) if extra else x

    masks = [
        b.attention_mask if b.attention_mask is not None else torch.ones_like(b.input_ids) for b in batches
    ]
    return SequenceBatch(
        input_ids=torch.cat([pad(b.input_ids, layout.special_id("<|pad|>")) for b in batches]),  # (B, T)
        labels=torch.cat([pad(b.labels, IGNORE_INDEX) for b in batches]),  # (B, T)
        grid_pos=torch.cat([pad(b.grid_pos, NO_GRID) for b in batches]),  # (B, T, 2)
        attention_mask=torch.cat([pad(m, 0) for m in masks]),  # (B, T)
        task=torch.cat([b.task for b in batches]),  # (B,)
        pose_target=_concat_pose_targets(batches),
        # reader-only pairs ride along with the pose rows (only those batches carry them)
        stem_codes=next((b.stem_codes for b in batches if b.stem_codes is not None), None),
        stem_pose=next((b.stem_pose for b in batches if b.stem_pose is not None), None),
        stem_cells=next((b.stem_cells for b in batches if b.stem_cells is not None), None),
    )


def _concat_pose_targets(batches: list[SequenceBatch]) -> torch.Tensor | None:
    """Rows' pose targets, NaN for rows of batches without any (chat). Shapes: -> (B, P) or None."""
    dims = {b.pose_target.shape[1] for b in batches if b.pose_target is not None}
    if not dims:
        return None
    (dim,) = dims
    return torch.cat(
        [
            b.pose_target if b.pose_target is not None else torch.full((b.batch_size, dim), float("nan"))
            for b in batches
        ]
    )  # (B, P)


@torch.no_grad()
def chat_metrics(
    model: nn.Module,
    make_batch: Callable[[np.ndarray], SequenceBatch],
    rows: np.ndarray,
    batch_size: int = 64,
) -> dict[str, float]:
    """Teacher-forced scores of chat rows (answer tokens and their ``[end]``): ``loss`` (nats per token),
    ``token_acc`` (top-1 accuracy per token) and ``exact`` (share of rows whose every answer token is the
    top-1 prediction: greedy decoding would write the answer)."""
    device = next(model.parameters()).device
    nll = correct = tokens = exact = 0.0
    for start in range(0, len(rows), batch_size):
        batch = make_batch(rows[start : start + batch_size]).to(device)
        # Position t predicts token t + 1; answers are text and <|end|>: full-vocabulary rows, as in training.
        targets = torch.cat([batch.labels[:, 1:], torch.full_like(batch.labels[:, :1], IGNORE_INDEX)], 1)
        mask = targets != IGNORE_INDEX  # (b, T)
        kinds = torch.where(mask, int(HeadKind.FULL), int(HeadKind.NONE))  # (b, T)
        out = model(batch.input_ids, batch.grid_pos, attention_mask=batch.attention_mask, head=kinds)
        logits = out.kind_logits[HeadKind.FULL].float()  # (N, V): the labelled positions, row-major
        ce = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="none")  # (N,)
        hit = logits.argmax(-1) == targets[mask]  # (N,)
        row_of = mask.nonzero()[:, 0]  # (N,) batch row of each labelled position
        misses = torch.zeros(mask.shape[0], device=device).index_add_(0, row_of, (~hit).float())  # (b,)
        nll += float(ce.sum())
        correct += float(hit.sum())
        tokens += float(mask.sum())
        exact += float((misses == 0).sum())
    return {"loss": nll / tokens, "token_acc": correct / tokens, "exact": exact / len(rows)}


__all__ = ["chat_metrics", "concat_batches", "qa_chat_example"]
