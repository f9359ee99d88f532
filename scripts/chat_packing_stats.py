"""How many questions a training chat row holds, and how long the batches are, for `sequence.chat_turns`.

Builds the training batches `gst train gst` would build (tiny preset, batch 32, seed 0) from a pair
cache and a chat cache, without a model, and reports per chat_turns value: answers per chat row,
labelled answer tokens of the chat rows per batch and the padded batch length (the compute per update).

    python scripts/chat_packing_stats.py --data data/cache_world128 \
        --tokenizers assets/tokenizers-tiny-aa --chat data/chat_world128 --chat-fraction 0.75
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from gst.data.token_cache import open_token_cache
from gst.model.sequences import IGNORE_INDEX, TASK_CHAT
from gst.training.gst_task import GSTTask, get_run_preset, with_cache_grids


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="pair cache (gst data cache)")
    parser.add_argument("--tokenizers", required=True)
    parser.add_argument("--chat", required=True, help="chat cache (gst data chat-cache)")
    parser.add_argument("--chat-fraction", type=float, default=0.75)
    parser.add_argument("--turns", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batches", type=int, default=100, help="micro-batches 0..N-1")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    base = with_cache_grids(get_run_preset("tiny"), open_token_cache(args.data))
    print("| chat_turns | answers per chat row | labelled chat tokens per batch | padded batch length |")
    print("| --- | --- | --- | --- |")
    for turns in args.turns:
        seq = dataclasses.replace(base.sequence, chat_fraction=args.chat_fraction, chat_turns=turns)
        task = GSTTask(
            dataclasses.replace(base, sequence=seq), args.data, args.tokenizers, chat_dir=args.chat
        )
        assistant = task.layout.special_id("<|assistant|>")
        answers, labelled, lengths = [], [], []
        for index in range(args.batches):
            batch = task.batch(index, torch.Generator().manual_seed(index), args.batch_size)
            chat = batch.task == TASK_CHAT  # (B,)
            answers += (batch.input_ids[chat] == assistant).sum(1).tolist()
            labelled.append(int((batch.labels[chat] != IGNORE_INDEX).sum()))
            lengths.append(batch.seq_len)
        print(f"| {turns} | {np.mean(answers):.2f} | {np.mean(labelled):.0f} | {np.mean(lengths):.0f} |")


if __name__ == "__main__":
    main()
