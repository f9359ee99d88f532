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
  phrasings' words; a word never seen in training is one "unknown" id (``--word-dropout`` trains on it).
- Network (1.25M parameters at the defaults): ``--layers`` layers over the question tokens, each
  self-attention, cross-attention to the cells and the pose token, MLP; then answer slots, one per
  answer token, attending to the question tokens and the cells, each read out over the text vocabulary
  with number tokens (``gst.tokenizers.numbers``) plus an end id. A closed answer (choice, count) is the
  candidate of highest likelihood under the slots; an open one the slots' argmax up to the first end.
- Pointers (``--pointer-layers N``): N layers over the cells (self-attention, cross-attention to the
  question) and one logit per cell for each role of ``QARecord.objects`` (``ROLES``: the objects a
  question names, counts, or answers with): a linear readout of the cell (``--pointer-match cell``) or
  the dot product of the cell with a query per role that reads the question (``query``, as a referring
  expression is matched to regions); each role's cells, weighted by their sigmoid, are pooled
  (cell readouts, grid position, cell state, weight sum) into one object token the answer slots read.
  With ``--cells`` (a token cache over the same scenes with cell labels) the pointers are supervised:
  binary cross-entropy against the cells that show the role's objects (``--pointer-weight``);
  ``--oracle-pointer`` pools the true cells instead (a ceiling, val split only); ``--teacher-pointer P``
  pools them for a fraction P of the training records (answers still pool the pointers').
- Numbers (``--numeric-head``): a typed readout for open answers, one query over everything the slots
  read: a number is a softmax over the number-token bins (``gst.tokenizers.numbers``) answered with the
  value of highest expected MRA (``--number-readout bins``; ``--unit-bins``: one set of bins per unit,
  the answer's unit reads its own) or a regressed log (``log``); a point's
  coordinates and a box's centre and log extents are regressed (smooth L1). Written back as the answer
  text of the question's answer type.
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

Glossary: B batch, M distinct views, V views per record, n cells per view, F cell features, d width, R
roles (``ROLES``), K objects per role (at most ``MAX_OBJECTS``).
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
from gst.data.cell_labels import CellLabels, open_cell_labels
from gst.data.chat_cache import ChatSplit, open_chat_cache
from gst.data.qa_types import UNIT_DECIMALS, Answer, QARecord, box_answer, number_answer, point_answer
from gst.data.token_cache import TokenCache, open_token_cache
from gst.eval.qa_baselines import MostFrequentBaseline, closed_candidates
from gst.eval.qa_metrics import score_texts, summarize, token_mbr_number
from gst.model.backbone import load_gst_model
from gst.tokenizers.numbers import NUMBER_BINS
from gst.tokenizers.text import TextTokenizer

MAX_QUESTION, MAX_ANSWER, MAX_VIEWS, MAX_OBJECTS = 48, 48, 2, 16
ROLES = ("a", "b", "counted", "answer")  # QARecord.objects roles, one pointer each
WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")
IGNORE = -100


# typed numeric readout (``--numeric-head``): points and boxes regress their values (NUMERIC_SLICES); a
# number is a log (regressed) or a distribution over the number-token bins (``NUMBER_BINS``, MBR decoded)
NUMERIC_SLICES = {"number": slice(0, 1), "point": slice(1, 4), "box": slice(4, 10)}
NUMERIC_DIMS = 10
UNITS = tuple(UNIT_DECIMALS)  # ``--unit-bins``: one set of bins per unit, the answer's unit picks its set


def numeric_target(answer: Answer) -> tuple[np.ndarray, np.ndarray, int]:
    """What the numeric head learns for one answer: the regressed values and which of them are defined (a
    number's log, so that an error is relative as MRA scores it; a point's coordinates in metres; a box's
    centre and log extents), and a number's bin (``NUMBER_BINS`` token, else IGNORE).
    Shapes: (NUMERIC_DIMS,) float32, (NUMERIC_DIMS,) bool, int."""
    target, defined, token = np.zeros(NUMERIC_DIMS, np.float32), np.zeros(NUMERIC_DIMS, bool), IGNORE
    if answer.type in NUMERIC_SLICES:
        if answer.type == "number":
            values = [np.log(max(answer.value, 1e-2))]
            token = NUMBER_BINS.token(answer.value)
            token = IGNORE if token is None else token
        elif answer.type == "point":
            values = answer.value
        else:
            values = [*answer.value["center"], *np.log(np.maximum(answer.value["size"], 1e-2))]
        target[NUMERIC_SLICES[answer.type]], defined[NUMERIC_SLICES[answer.type]] = values, True
    return target, defined, token


def numeric_text(answer: Answer, values: np.ndarray, bins: bool = False) -> str:
    """The answer text of the numeric head's output ``values`` (NUMERIC_DIMS + NUMBER_BINS.num_tokens,)
    for a question whose answer is of ``answer``'s type (and unit). ``bins``: a number is the MRA-optimal
    value under the bins' softmax (``token_mbr_number``), else the exponent of its regressed log."""
    v = values[NUMERIC_SLICES[answer.type]]
    if answer.type == "number" and bins:
        logits = values[NUMERIC_DIMS:]
        if len(logits) > NUMBER_BINS.num_tokens:  # --unit-bins: the answer's unit's bins
            logits = logits.reshape(len(UNITS), -1)[UNITS.index(answer.unit)]
        p = np.exp(logits - logits.max())
        decimals = UNIT_DECIMALS[answer.unit]
        return number_answer(token_mbr_number(NUMBER_BINS.values, p / p.sum(), decimals), answer.unit).text
    if answer.type == "number":
        return number_answer(float(np.exp(np.clip(v[0], -5, 7))), answer.unit).text
    if answer.type == "point":
        return point_answer(v.tolist()).text
    return box_answer(v[:3].tolist(), np.exp(np.clip(v[3:], -5, 3)).tolist()).text


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


def view_objects(split: ChatSplit, cells: CellLabels, cache: TokenCache) -> np.ndarray:
    """The object each cell of every view of a chat split shows (index into its scene's objects, -1 none),
    from the cell labels of a token cache over the same scenes. Shapes: (M, n) int64."""
    if tuple(cells.info["grid_hw"]) != tuple(split.image_codes.shape[1:]):
        raise ValueError(f"{cells.root}: cell grid {cells.info['grid_hw']} is not the chat cache's")
    where = {scene: (name, i) for name, s in cache.splits.items() for i, scene in enumerate(s.scenes)}
    out = np.full((len(split.image_codes), int(np.prod(split.image_codes.shape[1:]))), -1, np.int64)
    for r in split.records:
        if r["scene"] not in where:
            raise ValueError(
                f"--cells {cache.root}: no scene {r['scene']!r}; build it from the chat's scenes"
            )
        name, i = where[r["scene"]]
        for v, row in zip(r["views"], r["image_rows"], strict=True):
            out[row] = cells.arrays[name]["object"][i, v].reshape(-1)
    return out


def encode_split(
    split: ChatSplit,
    rows: np.ndarray,
    reader: nn.Module,
    vocab: dict,
    text: TextTokenizer,
    objects: np.ndarray | None = None,
) -> dict:
    """Question ids, answer ids, view rows and pair poses of records ``rows``; the split's view features;
    with ``objects`` (``view_objects``) each record's pointer targets: the objects of each role
    (``ROLES``, -2 padded), whether the record has that role, and the object of each cell of its views."""
    end = text.vocab_size + 1
    refs = np.full((len(rows), len(ROLES), MAX_OBJECTS), -2, np.int64)
    has_role = np.zeros((len(rows), len(ROLES)), bool)
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
        for k, role in enumerate(ROLES):
            if role in rec.get("objects", {}):
                idx = rec["objects"][role][:MAX_OBJECTS]
                refs[i, k, : len(idx)], has_role[i, k] = idx, True
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
    num, num_defined, num_token = (
        np.stack(v) for v in zip(*(numeric_target(r.answer) for r in records), strict=True)
    )
    return {
        "num": torch.from_numpy(num),
        "num_token": torch.from_numpy(num_token.astype(np.int64)),
        "num_unit": torch.tensor([UNITS.index(r.answer.unit) if r.answer.unit else 0 for r in records]),
        "num_defined": torch.from_numpy(num_defined),
        "refs": torch.from_numpy(refs),
        "has_role": torch.from_numpy(has_role),
        "cell_objects": None if objects is None else torch.from_numpy(objects),
        "q": torch.from_numpy(q),
        "a": torch.from_numpy(a),
        "views": torch.from_numpy(views),
        "shown": torch.from_numpy(shown),
        "pose": pose,
        "feats": view_features(reader, codes),
        "records": records,
    }


def pointer_targets(d: dict, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which cells of the records' views show an object of each role, and where that is defined (the role
    exists and the view is shown). Shapes: (B, V n, R) float, (B, V n, R) bool."""
    obj = d["cell_objects"][d["views"][idx]]  # (B, V, n)
    refs = d["refs"][idx]  # (B, R, K)
    hit = (obj[:, :, :, None, None] == refs[:, None, None]).any(-1)  # (B, V, n, R)
    defined = d["shown"][idx][:, :, None, None] & d["has_role"][idx][:, None, None, :]
    return hit.flatten(1, 2).float(), defined.expand_as(hit).flatten(1, 2)


class AnswerNet(nn.Module):
    """Module docstring, "Network"."""

    def __init__(
        self,
        vocab: int,
        question_vocab: int,
        feat: int,
        n: int,
        d: int = 128,
        layers: int = 2,
        pointer_layers: int = 0,
        pointer_match: str = "cell",
        numeric_head: bool = False,
        unit_bins: bool = False,
    ):
        super().__init__()
        self.tok = nn.Embedding(question_vocab, d)
        self.qpos = nn.Parameter(torch.randn(MAX_QUESTION, d) * 0.02)
        self.cell_in = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, d), nn.GELU(), nn.Linear(d, d))
        self.cpos = nn.Parameter(torch.randn(MAX_VIEWS, n, d) * 0.02)
        self.pose_in = nn.Linear(13, d)

        def layer() -> nn.Module:
            return nn.TransformerDecoderLayer(d, 4, 4 * d, 0.0, batch_first=True, norm_first=True)

        self.qlayers = nn.ModuleList([layer() for _ in range(layers)])
        # pointers: cell layers (self-attention over the cells, cross-attention to the question) and one
        # logit per cell and role; each role's cells pooled into one object token for the answer slots
        self.pointer_layers = nn.ModuleList([layer() for _ in range(pointer_layers)])
        self.pointer_match = pointer_match
        if pointer_layers and pointer_match == "cell":
            self.pointer = nn.Linear(d, len(ROLES))
        elif pointer_layers:  # "query": each role's query reads the question; a cell's logit is a dot product
            self.role_query = nn.Parameter(torch.randn(len(ROLES), d) * 0.02)
            self.role_layer = layer()
            self.ptr_key, self.ptr_query = nn.Linear(d, d), nn.Linear(d, d)
            self.ptr_bias = nn.Parameter(torch.full((len(ROLES),), -2.0))
        if pointer_layers:
            h, w = int(round(n**0.5)), n // int(round(n**0.5))
            uv = torch.stack(
                torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"), -1
            )
            self.register_buffer("uv", uv.reshape(n, 2), persistent=False)
            self.summary = nn.Sequential(
                nn.LayerNorm(feat + 2 + d + 2), nn.Linear(feat + 2 + d + 2, d), nn.GELU(), nn.Linear(d, d)
            )
            self.role_emb = nn.Parameter(torch.randn(len(ROLES), d) * 0.02)
        self.slots = nn.Parameter(torch.randn(MAX_ANSWER, d) * 0.02)
        self.alayers = nn.ModuleList([layer() for _ in range(2)])
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, vocab + 2))
        # typed numeric readout: one query over everything the slots read; regressed values and bin logits
        self.numeric = None
        if numeric_head:
            self.value_query = nn.Parameter(torch.randn(1, d) * 0.02)
            self.value_layers = nn.ModuleList([layer() for _ in range(2)])
            self.numeric = nn.Sequential(
                nn.LayerNorm(d),
                nn.Linear(d, d),
                nn.GELU(),
                nn.Linear(d, NUMERIC_DIMS + (len(UNITS) if unit_bins else 1) * NUMBER_BINS.num_tokens),
            )

    def forward(
        self,
        q,
        cells,
        shown,
        pose,
        num_slots: int = MAX_ANSWER,
        oracle: torch.Tensor | None = None,
        oracle_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Shapes: q (B, Lq) ids (0 pad), cells (B, V, n, F), shown (B, V) bool, pose (B, 13) ->
        (B, num_slots, vocab + 2) logits, pointer logits (B, V n, R) (None without pointer layers).
        ``oracle`` (B, V n, R): pool each role's cells with these weights instead of the pointers', in the
        records ``oracle_rows`` (B,) bool (all records when None)."""
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
        ptr = None
        if self.pointer_layers:
            cpad = mpad[:, :-1]  # (B, V n)
            c = xc
            for lay in self.pointer_layers:
                c = lay(c, x, tgt_key_padding_mask=cpad, memory_key_padding_mask=~qmask)
            if self.pointer_match == "cell":
                ptr = self.pointer(c)  # (B, V n, R)
            else:
                r = self.role_layer(
                    self.role_query.expand(len(q), -1, -1), x, memory_key_padding_mask=~qmask
                )  # (B, R, d)
                ptr = self.ptr_key(c) @ self.ptr_query(r).transpose(1, 2) / c.shape[-1] ** 0.5 + self.ptr_bias
            w = ptr.sigmoid()
            if oracle is not None:
                w = oracle if oracle_rows is None else torch.where(oracle_rows[:, None, None], oracle, w)
            w = w * (~cpad).unsqueeze(-1).float()
            count = w.sum(1)  # (B, R)
            p = w / (count.unsqueeze(1) + 1e-3)
            raw = torch.cat(
                [cells.float().flatten(1, 2), self.uv.repeat(cells.shape[1], 1).expand(len(q), -1, -1)], -1
            )
            pooled = torch.cat(
                [
                    p.transpose(1, 2) @ raw,
                    p.transpose(1, 2) @ c,
                    count.unsqueeze(-1).log1p(),
                    count.unsqueeze(-1) / 8,
                ],
                -1,
            )
            objs = self.summary(pooled) + self.role_emb  # (B, R, d)
            mem = torch.cat([objs, mem], 1)
            mpad = torch.cat([torch.zeros_like(mpad[:, : len(ROLES)]), mpad], 1)
        mem, mpad = torch.cat([x, mem], 1), torch.cat([~qmask, mpad], 1)
        y = self.slots[:num_slots].expand(q.shape[0], -1, -1)
        for lay in self.alayers:
            y = lay(y, mem, memory_key_padding_mask=mpad)
        if self.numeric is None:
            return self.out(y), ptr, None
        v = self.value_query.expand(q.shape[0], -1, -1)
        for lay in self.value_layers:
            v = lay(v, mem, memory_key_padding_mask=mpad)
        return self.out(y), ptr, self.numeric(v[:, 0])


def inputs(d: dict, idx: torch.Tensor, no_image: bool) -> tuple[torch.Tensor, ...]:
    cells, pose = d["feats"][d["views"][idx]], d["pose"][idx]  # (B, V, n, F), (B, 13)
    if no_image:
        cells, pose = torch.zeros_like(cells), torch.zeros_like(pose)
    return d["q"][idx], cells, d["shown"][idx], pose


@torch.no_grad()
def answer(
    net: AnswerNet,
    d: dict,
    text: TextTokenizer,
    no_image: bool,
    oracle_pointer: bool = False,
    number_bins: bool = True,
) -> list[str]:
    """Closed answers (choices, counts 0-10): the candidate of highest log-likelihood, its tokens and end
    summed over the slots (as ``gst eval qa --closed-answers score``); open ones: the slots' argmax up to
    the first end."""
    net.eval()
    texts = []
    for start in range(0, len(d["records"]), 256):
        idx = torch.arange(start, min(start + 256, len(d["records"])))
        oracle = pointer_targets(d, idx)[0] if oracle_pointer else None
        logits, _, values = net(*inputs(d, idx, no_image), oracle=oracle)
        logp = logits.float().log_softmax(-1)  # (b, S, vocab + 2)
        for i, row in enumerate(logp.argmax(-1).tolist()):
            rec = d["records"][int(idx[i])]
            candidates = closed_candidates(rec)
            if values is not None and rec.answer.type in NUMERIC_SLICES:
                texts.append(numeric_text(rec.answer, values[i].float().numpy(), number_bins))
            elif candidates:
                ids = [(text.encode(c) + [text.vocab_size + 1])[:MAX_ANSWER] for c in candidates]
                scores = [float(logp[i, torch.arange(len(t)), torch.tensor(t)].sum()) for t in ids]
                texts.append(candidates[int(np.argmax(scores))])
            else:
                texts.append(
                    text.decode(row[: next((k for k, t in enumerate(row) if t >= text.vocab_size), len(row))])
                )
    net.train()
    return texts


@torch.no_grad()
def pointer_iou(net: AnswerNet, d: dict, no_image: bool) -> dict[str, float]:
    """Per role, the mean intersection over union of the cells the pointer picks (logit > 0) and the cells
    that show the role's objects, over records whose role shows in at least one cell."""
    net.eval()
    inter, total = np.zeros(len(ROLES)), np.zeros(len(ROLES))
    for start in range(0, len(d["records"]), 256):
        idx = torch.arange(start, min(start + 256, len(d["records"])))
        ptr = net(*inputs(d, idx, no_image), num_slots=1)[1]
        hit, defined = pointer_targets(d, idx)
        pick, hit = (ptr > 0) & defined, hit.bool() & defined
        union = (pick | hit).sum(1).float()  # (b, R)
        ok = hit.any(1)
        inter += torch.where(ok, (pick & hit).sum(1) / union.clamp(min=1), 0).sum(0).numpy()
        total += ok.sum(0).numpy()
    net.train()
    return {role: round(float(i / max(t, 1)), 3) for role, i, t in zip(ROLES, inter, total, strict=True)}


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
    ap.add_argument(
        "--cells",
        default=None,
        help="a token cache over the chat's scenes with cell labels (`gst data cells`): pointer targets",
    )
    ap.add_argument("--pointer-layers", type=int, default=0, help="cell layers of the pointers (0: none)")
    ap.add_argument(
        "--pointer-match",
        choices=("cell", "query"),
        default="cell",
        help="a pointer logit: a linear readout of each cell (cell) or the dot product of the cell with "
        "a query per role that reads the question (query)",
    )
    ap.add_argument(
        "--numeric-head",
        action="store_true",
        help="answer numbers, points and boxes with a typed readout (--number-readout; points and boxes "
        "regressed) written back as text",
    )
    ap.add_argument(
        "--number-readout",
        choices=("bins", "log"),
        default="bins",
        help="with --numeric-head, a number is a softmax over the number-token bins, decoded for the "
        "highest expected MRA (bins), or a regressed log (log)",
    )
    ap.add_argument(
        "--unit-bins",
        action="store_true",
        help="with --number-readout bins: one set of bins per unit (metres, degrees), one softmax over all; "
        "an answer reads its unit's set",
    )
    ap.add_argument("--pointer-weight", type=float, default=1.0, help="weight of the pointers' cell loss")
    ap.add_argument(
        "--oracle-pointer", action="store_true", help="pool the true cells of each role (val only; a ceiling)"
    )
    ap.add_argument(
        "--word-dropout",
        type=float,
        default=0.0,
        help="rate at which training question words read as unknown",
    )
    ap.add_argument(
        "--teacher-pointer",
        type=float,
        default=0.0,
        help="in training, the fraction of records whose answer slots pool the true cells (the pointers "
        "still learn from every record); answers always pool the pointers'",
    )
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
    val_split = cache.split("val")
    objects = {"train": None, "val": None}
    if args.cells:
        token_cache = open_token_cache(args.cells)
        cells = open_cell_labels(token_cache)
        objects = {name: view_objects(cache.split(name), cells, token_cache) for name in objects}
    elif args.pointer_layers and args.pointer_weight or args.oracle_pointer or args.teacher_pointer:
        raise ValueError(
            "--pointer-weight > 0, --oracle-pointer and --teacher-pointer need --cells (the pointer targets)"
        )
    if args.oracle_pointer and (args.heldout or not args.pointer_layers):
        raise ValueError("--oracle-pointer: a val-only ceiling; give --pointer-layers and no --heldout")
    tr = encode_split(train_split, train_split.rows("train"), reader, vocab, text, objects["train"])
    val_rows = np.sort(np.random.default_rng(args.seed).permutation(val_split.rows("all"))[: args.num_val])
    va = encode_split(val_split, val_rows, reader, vocab, text, objects["val"])
    net = AnswerNet(
        text.vocab_size,
        len(vocab) + 2,
        tr["feats"].shape[-1],
        tr["feats"].shape[1],
        args.width,
        args.layers,
        args.pointer_layers,
        args.pointer_match,
        args.numeric_head,
        args.unit_bins,
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
        hit, defined = pointer_targets(tr, idx) if args.cells else (None, None)
        oracle, oracle_rows = (hit, None) if args.oracle_pointer else (None, None)
        if args.teacher_pointer:  # these records' answers read the true cells; the rest the pointers'
            oracle, oracle_rows = hit, torch.rand(len(idx), generator=g) < args.teacher_pointer
        q, cells, shown, pose = inputs(tr, idx, args.no_image)
        if args.word_dropout:  # known words read as unknown at this rate: held-out phrasings' new words
            q = torch.where((q > 1) & (torch.rand(q.shape, generator=g) < args.word_dropout), 1, q)
        logits, ptr, values = net(q, cells, shown, pose, slots, oracle, oracle_rows)
        loss = F.cross_entropy(logits.flatten(0, 1), target[:, :slots].flatten(), ignore_index=IGNORE)
        defined_num = tr["num_defined"][idx].clone()
        if values is not None and args.number_readout == "bins":
            defined_num[:, NUMERIC_SLICES["number"]] = False
            token = tr["num_token"][idx]
            if args.unit_bins:  # the class: the answer's unit's set of bins, then the bin
                token = torch.where(
                    token != IGNORE, token + tr["num_unit"][idx] * NUMBER_BINS.num_tokens, IGNORE
                )
            if (token != IGNORE).any():
                loss = loss + F.cross_entropy(values[:, NUMERIC_DIMS:], token, ignore_index=IGNORE)
        if values is not None and defined_num.any():
            loss = loss + F.smooth_l1_loss(
                values[:, :NUMERIC_DIMS][defined_num], tr["num"][idx][defined_num], beta=0.05
            )
        if ptr is not None and args.pointer_weight and not args.oracle_pointer:
            cell_loss = F.binary_cross_entropy_with_logits(ptr[defined], hit[defined])
            loss = loss + args.pointer_weight * cell_loss
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"update {step}: loss {loss.item():.3f}, {spent / 60:.1f} CPU-min", flush=True)
    bins = args.number_readout == "bins"
    texts = answer(net, va, text, args.no_image, args.oracle_pointer, bins)
    model_s = summarize(va["records"], score_texts(va["records"], texts))
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
        if args.pointer_layers and args.cells:
            result["val_pointer_iou"] = pointer_iou(net, va, args.no_image)
            print("val pointer IoU (cells > 0.5 against the role's cells):", result["val_pointer_iou"])
        result["val_most_frequent"] = base_s
        if args.heldout:
            held = open_chat_cache(args.heldout)
            lines = []
            for name in held.splits:
                split = held.split(name)
                d = encode_split(split, split.rows("all"), reader, vocab, text)
                texts = answer(net, d, text, args.no_image, number_bins=bins)
                lines += [
                    json.dumps({"id": r.id, "answer_text": t}) + "\n"
                    for r, t in zip(d["records"], texts, strict=True)
                ]
            (out / "answers.jsonl").write_text("".join(lines))
            print(f"{len(lines)} held-out answers -> {out / 'answers.jsonl'}")
        (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
