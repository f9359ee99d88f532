"""A measured lever for spatial questions: a small answer reader over the pose reader's cell features.

The question (issue "Spatial questions the model answers by looking"): the backbone learns question priors
and not the lookup from a question's words to the image cells that show the named object, in the updates
a CPU gives it. Is the lookup learnable per CPU-minute by a small network that reads what the reader
already knows of every cell? This probe trains one and scores it as `gst eval qa` does.

- Cells: the checkpoint's pose reader (``model.stem_reader``, frozen) on each view's code grid: its 96
  per-cell features and its cell heads' readouts (object logit, shape and colour probabilities, centre in
  the camera frame, log depth); for two-view questions also its pose head on the pair (13 numbers).
  Computed once per distinct view.
- Question: word tokens (lower-case words, numbers and punctuation) from a vocabulary of the training
  phrasings' words; a word never seen in training is one "unknown" id.
- Network (1.25M parameters at the defaults): ``--layers`` layers over the question tokens, each
  self-attention, cross-attention to the cells and the pose token, MLP; then answer slots, one per
  answer token, attending to the question tokens and the cells, each read out over the text vocabulary
  with number tokens (``gst.tokenizers.numbers``) plus an end id. A closed answer (choice, count) is the
  candidate of highest likelihood under the slots; an open one the slots' argmax up to the first end.
- Training: cross-entropy of the answer tokens and end, AdamW, cosine schedule over ``--minutes`` of
  process CPU time (one torch thread: ``OMP_NUM_THREADS=1``), the chat cache's train split with
  training phrasings. ``--no-image`` zeroes the cells and pose: the same network on the question alone.
- Output: ``--out DIR/answers.jsonl`` ({"id", "answer_text"}) for every record of ``--heldout``
  (a chat cache of scenes never trained on), scored by ``gst eval qa --predictions``; a per-family table
  against the most frequent training answer on the chat cache's val split is printed.

    gst data chat-cache --qa data/qa2_heldout_s1000_10.jsonl --scenes data/eval_heldout_s1000_10 \\
        --tokenizers assets/tokenizers-tiny-aa --out data/chat2_heldout_s1000_10
    OMP_NUM_THREADS=1 python scripts/answer_reader_probe.py --chat data/chat2_world128 \\
        --heldout data/chat2_heldout_s1000_10 --minutes 10 --out runs/answer_probe
    gst eval qa --data data/qa2_heldout_s1000_10.jsonl --eval-split all \\
        --predictions runs/answer_probe/answers.jsonl --out runs/eval/answer_probe

Glossary: B batch, R records, M distinct views, n cells per view, F cell features, d width.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gst.api_checkpoint import resolve_checkpoint
from gst.data.chat_cache import ChatSplit, open_chat_cache
from gst.data.qa_types import QARecord
from gst.eval.qa_baselines import MostFrequentBaseline, closed_candidates
from gst.eval.qa_metrics import score_texts, summarize
from gst.model.backbone import load_gst_model
from gst.tokenizers.numbers import NUMBER_BINS
from gst.tokenizers.text import TextTokenizer

MAX_QUESTION, MAX_ANSWER, MAX_VIEWS = 48, 48, 2
WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")
IGNORE = -100


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@torch.no_grad()
def view_features(reader: nn.Module, codes: np.ndarray, batch: int = 512) -> torch.Tensor:
    """The reader's features and cell-head readouts of every view. Shapes: (M, h, w) -> (M, n, F) fp16."""
    out = []
    for start in range(0, len(codes), batch):
        grid = reader.grid_features(
            torch.from_numpy(codes[start : start + batch].astype(np.int64)).flatten(1)
        )
        p = reader.cell_predictions(grid)
        heads = [p["object"].unsqueeze(-1), p["shape"].softmax(-1), p["colour"].softmax(-1), p["centre"]]
        out.append(
            torch.cat([grid.flatten(2).transpose(1, 2), *heads, p["log_depth"].unsqueeze(-1)], -1).half()
        )
    return torch.cat(out)


def encode_split(
    split: ChatSplit, rows: np.ndarray, reader: nn.Module, vocab: dict, text: TextTokenizer
) -> dict:
    """Question ids, answer ids, view rows and pair poses of records ``rows``; the split's view features."""
    end = text.vocab_size + 1
    codes = np.asarray(split.image_codes)
    q = np.zeros((len(rows), MAX_QUESTION), np.int64)
    a = np.full((len(rows), MAX_ANSWER), IGNORE, np.int64)
    views = np.zeros((len(rows), MAX_VIEWS), np.int64)
    shown = np.zeros((len(rows), MAX_VIEWS), bool)
    for i, r in enumerate(rows):
        rec = split.records[r]
        ids = [vocab.get(w, 1) for w in words(rec["question"])][:MAX_QUESTION]
        ans = (text.encode(rec["answer_text"]) + [end])[:MAX_ANSWER]
        q[i, : len(ids)], a[i, : len(ans)] = ids, ans
        v = rec["image_rows"][:MAX_VIEWS]
        views[i, : len(v)], shown[i, : len(v)] = v, True
    pose = torch.zeros(len(rows), 13)
    two = np.nonzero(shown[:, 1])[0]
    with torch.no_grad():
        for start in range(0, len(two), 512):
            idx = two[start : start + 512]
            pair = torch.from_numpy(codes[views[idx]].astype(np.int64)).flatten(2)  # (b, 2, n)
            pose[idx] = reader.read_pairs(pair[:, 0], pair[:, 1]).float()
    records = [
        QARecord.from_json({k: v for k, v in split.records[r].items() if k != "image_rows"}) for r in rows
    ]
    return {
        "q": torch.from_numpy(q),
        "a": torch.from_numpy(a),
        "views": torch.from_numpy(views),
        "shown": torch.from_numpy(shown),
        "pose": pose,
        "feats": view_features(reader, codes),
        "records": records,
    }


class AnswerNet(nn.Module):
    """Module docstring, "Network"."""

    def __init__(self, vocab: int, question_vocab: int, feat: int, n: int, d: int = 128, layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(question_vocab, d)
        self.qpos = nn.Parameter(torch.randn(MAX_QUESTION, d) * 0.02)
        self.cell_in = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, d), nn.GELU(), nn.Linear(d, d))
        self.cpos = nn.Parameter(torch.randn(MAX_VIEWS, n, d) * 0.02)
        self.pose_in = nn.Linear(13, d)

        def layer() -> nn.Module:
            return nn.TransformerDecoderLayer(d, 4, 4 * d, 0.0, batch_first=True, norm_first=True)

        self.qlayers = nn.ModuleList([layer() for _ in range(layers)])
        self.slots = nn.Parameter(torch.randn(MAX_ANSWER, d) * 0.02)
        self.alayers = nn.ModuleList([layer() for _ in range(2)])
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, vocab + 2))

    def forward(self, q, cells, shown, pose, num_slots: int = MAX_ANSWER) -> torch.Tensor:
        """Shapes: q (B, Lq) ids (0 pad), cells (B, V, n, F), shown (B, V) bool, pose (B, 13) ->
        (B, num_slots, vocab + 2) logits."""
        qmask = q != 0
        L = int(qmask.sum(1).max())
        q, qmask = q[:, :L], qmask[:, :L]
        x = self.tok(q) + self.qpos[:L]
        n = cells.shape[2]
        xc = (self.cell_in(cells.float()) + self.cpos[: cells.shape[1]]).flatten(1, 2)  # (B, V n, d)
        mem = torch.cat([xc, self.pose_in(pose).unsqueeze(1)], 1)
        mpad = torch.cat([~shown.repeat_interleave(n, 1), ~shown[:, 1:2]], 1)
        for lay in self.qlayers:
            x = lay(x, mem, tgt_key_padding_mask=~qmask, memory_key_padding_mask=mpad)
        mem, mpad = torch.cat([x, mem], 1), torch.cat([~qmask, mpad], 1)
        y = self.slots[:num_slots].expand(q.shape[0], -1, -1)
        for lay in self.alayers:
            y = lay(y, mem, memory_key_padding_mask=mpad)
        return self.out(y)


def inputs(d: dict, idx: torch.Tensor, no_image: bool) -> tuple[torch.Tensor, ...]:
    cells, pose = d["feats"][d["views"][idx]], d["pose"][idx]  # (B, V, n, F), (B, 13)
    if no_image:
        cells, pose = torch.zeros_like(cells), torch.zeros_like(pose)
    return d["q"][idx], cells, d["shown"][idx], pose


@torch.no_grad()
def answer(net: AnswerNet, d: dict, text: TextTokenizer, no_image: bool) -> list[str]:
    """Closed answers (choices, counts 0-10): the candidate of highest log-likelihood, its tokens and end
    summed over the slots (as ``gst eval qa --closed-answers score``); open ones: the slots' argmax up to
    the first end."""
    net.eval()
    texts = []
    for start in range(0, len(d["records"]), 256):
        idx = torch.arange(start, min(start + 256, len(d["records"])))
        logp = net(*inputs(d, idx, no_image)).float().log_softmax(-1)  # (b, S, vocab + 2)
        for i, row in enumerate(logp.argmax(-1).tolist()):
            candidates = closed_candidates(d["records"][int(idx[i])])
            if candidates:
                ids = [(text.encode(c) + [text.vocab_size + 1])[:MAX_ANSWER] for c in candidates]
                scores = [float(logp[i, torch.arange(len(t)), torch.tensor(t)].sum()) for t in ids]
                texts.append(candidates[int(np.argmax(scores))])
            else:
                texts.append(
                    text.decode(row[: next((k for k, t in enumerate(row) if t >= text.vocab_size), len(row))])
                )
    net.train()
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chat", required=True, help="training chat cache (`gst data chat-cache`)")
    ap.add_argument("--heldout", default=None, help="chat cache of held-out scenes: every record answered")
    ap.add_argument(
        "--checkpoint", default="assets/gst-tiny", help="a model with a pose reader with cell heads"
    )
    ap.add_argument("--minutes", type=float, default=10, help="training budget, process CPU-minutes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--no-image", action="store_true", help="the question alone (cells and pose zeroed)")
    ap.add_argument("--num-val", type=int, default=4000, help="val records scored (all phrasings)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", default=None, help="write answers.jsonl (held-out answers) and results.json here"
    )
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    reader = load_gst_model(resolve_checkpoint(args.checkpoint).model_dir).eval().stem_reader
    if reader is None or reader.cell_head is None:
        raise ValueError(f"--checkpoint {args.checkpoint}: needs a pose reader with cell heads")
    cache = open_chat_cache(args.chat)
    text = TextTokenizer.from_pretrained(None).with_numbers(NUMBER_BINS)
    train_split = cache.split("train")
    counts = Counter(
        w for r in train_split.records if r["phrasing_split"] == "train" for w in words(r["question"])
    )
    vocab = {w: i + 2 for i, w in enumerate(sorted(counts))}  # 0 pad, 1 unknown
    tr = encode_split(train_split, train_split.rows("train"), reader, vocab, text)
    val_split = cache.split("val")
    val_rows = np.sort(np.random.default_rng(args.seed).permutation(val_split.rows("all"))[: args.num_val])
    va = encode_split(val_split, val_rows, reader, vocab, text)
    net = AnswerNet(
        text.vocab_size, len(vocab) + 2, tr["feats"].shape[-1], tr["feats"].shape[1], args.width, args.layers
    )
    params = sum(p.numel() for p in net.parameters())
    print(f"{len(tr['records'])} train records, {len(vocab)} question words, {params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    n, step, pos, perm = len(tr["records"]), 0, 0, None
    t0, budget = time.process_time(), args.minutes * 60
    while (spent := time.process_time() - t0) < budget:
        if perm is None or pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx, pos = perm[pos : pos + args.batch], pos + args.batch
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * spent / budget))
        for group in opt.param_groups:
            group["lr"] = lr
        target = tr["a"][idx]
        slots = int((target != IGNORE).sum(1).max())
        logits = net(*inputs(tr, idx, args.no_image), num_slots=slots)
        loss = F.cross_entropy(logits.flatten(0, 1), target[:, :slots].flatten(), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"update {step}: loss {loss.item():.3f}, {spent / 60:.1f} CPU-min", flush=True)
    model_s = summarize(va["records"], score_texts(va["records"], answer(net, va, text, args.no_image)))
    baseline = MostFrequentBaseline(tr["records"])
    base_s = summarize(va["records"], score_texts(va["records"], baseline.predict(va["records"])))
    print(f"{step} updates in {args.minutes} CPU-minutes; val split of {args.chat} (all phrasings)")
    print(f"{'family':<20} {'n':>5} {'probe':>7} {'most frequent':>13}")
    for fam, v in model_s["families"].items():
        print(f"{fam:<20} {v['n']:>5} {v['score']:>7.3f} {base_s['families'][fam]['score']:>13.3f}")
    o, b = model_s["overall"], base_s["overall"]
    print(f"{'overall':<20} {o['n']:>5} {o['score_micro']:>7.3f} {b['score_micro']:>13.3f}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result = {"updates": step, "cpu_minutes": args.minutes, "parameters": params, "val": model_s}
        result["val_most_frequent"] = base_s
        if args.heldout:
            held = open_chat_cache(args.heldout)
            lines = []
            for name in held.splits:
                split = held.split(name)
                d = encode_split(split, split.rows("all"), reader, vocab, text)
                texts = answer(net, d, text, args.no_image)
                lines += [
                    json.dumps({"id": r.id, "answer_text": t}) + "\n"
                    for r, t in zip(d["records"], texts, strict=True)
                ]
            (out / "answers.jsonl").write_text("".join(lines))
            print(f"{len(lines)} held-out answers -> {out / 'answers.jsonl'}")
        (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
