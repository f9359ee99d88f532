"""The answer reader: a small network that answers spatial questions over the pose reader's cells.

The backbone learns question priors, not the lookup from a question's words to the image cells that show
the named object, in the updates a CPU gives it (issue "Spatial questions the model answers by looking").
The answer reader is that lookup, trained beside the backbone on what its pose reader
(``GSTModel.stem_reader``, frozen) already knows of every cell; it ships in a checkpoint folder as
``answer_reader/`` (gst.model.answer_reader_io), is trained by `gst train answer-reader`
(gst.training.answer_reader) and answers in `gst eval qa --method answer-reader`.

- Cells (``view_features``): the reader's 96 per-cell features and its cell heads' readouts (object
  logit, shape and colour probabilities, centre in the camera frame, log depth) of each view's code grid;
  for two-view questions also its pose head on the pair (``pair_poses``, 13 numbers).
- Question (``encode_questions``): lower-case words, numbers and punctuation (``words``), ids from a
  vocabulary of the training phrasings' words (0 pad, 1 a word never seen in training).
- Network (``AnswerReader``): ``layers`` layers over the question tokens, each self-attention,
  cross-attention to the cells and the pose token, MLP; then answer slots, one per answer token,
  attending to the question tokens and the cells, each read out over the text vocabulary with number
  tokens (``gst.tokenizers.numbers``) plus an end id. A closed answer (choice, count) is the candidate of
  highest likelihood under the slots; an open one the slots' argmax up to the first end (``answer``).
- Pointers (``pointer_layers`` N > 0): N layers over the cells (self-attention, cross-attention to the
  question) and one logit per cell for each role of ``QARecord.objects`` (``ROLES``: the objects a
  question names, counts, or answers with): a linear readout of the cell (``pointer_match="cell"``) or
  the dot product of the cell with a query per role that reads the question (``"query"``, as a referring
  expression is matched to regions); each role's cells, weighted by their sigmoid, are pooled (cell
  readouts, grid position, cell state, weight sum) into one object token the answer slots read.
- Relations (``relations``): one more token for the answer slots, an MLP of explicit geometry between
  the objects that the pointers of roles a and b pool (``relation_features``: their centres, difference,
  distances, image offset and size ratio), which an MLP over the pooled tokens would otherwise have to
  learn to subtract.
- Word roles (``word_roles``, with ``pointer_match="query"``): a logit per question word and role, whether
  the word belongs to the wording that names that role's objects (``QARecord.references``: "the red box",
  learnt by ``word_role_targets``); each role's query adds the words it tags, pooled. Without it the two
  pointers of a two-object question split their mass evenly between both objects (a and b are bound to
  the wrong words); with it a role reads its own words.
- Attribute match (``attribute_match``, with ``word_roles``): each role's tagged words also give a
  distribution over colour and shape classes, one more class each for "any" (``COLOUR_CLASSES``,
  ``SHAPE_CLASSES``); a cell's pointer logit adds the log-probability that the cell heads' colour and
  shape of the cell are the ones named: an explicit lookup of the named attributes in the cells'
  readouts, where the bilinear query above has to learn every word-to-readout pairing from the pointer
  loss. It starts near "any" (adding a near-constant).
- Numbers (``numeric_head``): a typed readout for open answers, one query over everything the slots
  read: a number is a softmax over the number-token bins answered with the value of highest expected MRA
  (``number_readout="bins"``; ``unit_bins``: one set of bins per unit, the answer's unit reads its own)
  or a regressed log (``"log"``); a point's coordinates and a box's centre and log extents are regressed.
  Written back as the answer text of the question's answer type (gst.model.answer_numbers: its targets
  ``numeric_target``, its text ``numeric_text``).
- Number words (``number_words``): each question word that is a number also adds an embedding of its
  value (gst.model.answer_numbers ``number_word_values``: log and linear scales), so "turns 59 degrees"
  reads as a magnitude near "turns 60 degrees", where a word embedding alone learns every number apart.
  It starts adding nothing.
- Motion token (``motion_token``): the camera motion a question states, parsed from its words
  (gst.data.qa_geometry ``parse_motion``, ``stated_motions``: turn, tilt and the three displacements,
  and whether one is stated), read as one more token for the answer slots together with explicit
  geometry (``motion_features``): the centre of the object that role a's pointer pools, moved into the
  camera after the motion (the camera taken as level) and projected, which a network reading "turns 56
  degrees to the right and moves 3.5 m left" word by word would otherwise have to learn to compute. The
  text-only network reads the same parsed motion (its pooled centre is that of zeroed cells).
- Elevation (``elevation_head``, with ``motion_token``): the observed camera's elevation (the angle of
  its forward axis above the horizontal, degrees) read from its cells (a head over their mean, trained on
  the scenes' cameras by `gst train answer-reader --elevation-weight`); the motion token then untilts the
  object's centre by it before moving it (the camera's turn is about the world's up axis, not the image's
  vertical; this world's cameras look 10 to 60 degrees down). It starts at 0 (the camera taken as level).
- ``no_image``: the cells and pose are zeroed; the same network on the question alone (the text-only row).

The explicit geometry (cell readouts by name, the relation and motion tokens' inputs) is
gst.model.answer_geometry; the encoding of records into the network's inputs (``view_features``,
``pair_poses``, ``encode_questions``, ``encode_records``) is gst.model.answer_inputs.

Glossary: B batch, M distinct views, V views per record, n cells per view, F cell features, d width, R
roles (``ROLES``), K objects per role (at most ``MAX_OBJECTS``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from gst.data.cell_labels import COLOUR_CLASSES, SHAPE_CLASSES
from gst.eval.qa_baselines import closed_candidates
from gst.model.answer_geometry import (
    MOTION_DIMS,
    RELATION_DIMS,
    ROLES,
    cell_readouts,
    motion_features,
    relation_features,
)
from gst.model.answer_numbers import NUMBER_WORD_DIMS, NUMERIC_DIMS, NUMERIC_SLICES, UNITS, numeric_text
from gst.tokenizers.numbers import NUMBER_BINS
from gst.tokenizers.text import TextTokenizer

MAX_QUESTION, MAX_ANSWER, MAX_VIEWS, MAX_OBJECTS = 48, 48, 2, 16
WORD = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")
POSE_DIMS = 13  # the pose reader's pair readout
ANSWER_READER_DIR = "answer_reader"  # inside a checkpoint folder
ANSWER_READER_FILE = "answer_reader.json"
ANSWER_READER_FORMAT, ANSWER_READER_FORMAT_VERSION = "gst-answer-reader", 1


ELEVATION_SCALE = 30.0  # degrees per unit of the elevation head's output
ANY_BIAS = 4.0  # ``attribute_match``: the "any" class's starting logit (the others' 0)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass(frozen=True)
class AnswerReaderConfig:
    """The network's shape and readouts (module docstring). ``text_vocab``: the text tokenizer's ids with
    number tokens; ``question_vocab``: question word ids (pad, unknown and the training words); ``feat``
    and ``cells``: features per cell and cells per view of the pose reader's grid."""

    text_vocab: int
    question_vocab: int
    feat: int
    cells: int
    width: int = 128
    layers: int = 2
    pointer_layers: int = 0
    pointer_match: str = "cell"
    numeric_head: bool = False
    unit_bins: bool = False
    number_readout: str = "bins"
    no_image: bool = False
    pointer_pool: str = "sigmoid"
    code_features: bool = False
    relations: bool = False
    word_roles: bool = False
    attribute_match: bool = False
    number_words: bool = False
    motion_token: bool = False
    elevation_head: bool = False

    def __post_init__(self) -> None:
        if self.elevation_head and not self.motion_token:
            raise ValueError("elevation_head: needs motion_token")
        if self.motion_token and (not self.pointer_layers or self.code_features):
            raise ValueError("motion_token: needs pointer_layers > 0 and the cells without code_features")
        if self.attribute_match and (not self.word_roles or self.code_features):
            raise ValueError("attribute_match: needs word_roles and the cells without code_features")
        if self.word_roles and (not self.pointer_layers or self.pointer_match != "query"):
            raise ValueError("word_roles: needs pointer_layers > 0 and pointer_match 'query'")
        if self.relations and (not self.pointer_layers or self.code_features):
            raise ValueError("relations: needs pointer_layers > 0 and the cells without code_features")
        if self.pointer_pool not in ("sigmoid", "softmax"):
            raise ValueError(f"pointer_pool: {self.pointer_pool!r}, expected 'sigmoid' or 'softmax'")
        if self.pointer_match not in ("cell", "query"):
            raise ValueError(f"pointer_match: {self.pointer_match!r}, expected 'cell' or 'query'")
        if self.number_readout not in ("bins", "log"):
            raise ValueError(f"number_readout: {self.number_readout!r}, expected 'bins' or 'log'")


class ReaderOutput(NamedTuple):
    """``AnswerReader.forward``: answer slot logits (B, S, vocab + 2); pointer logits (B, V n, R) or None
    without pointer layers; numeric head outputs (B, NUMERIC_DIMS + bins) or None without it; word-role
    logits (B, Lq, R) or None without ``word_roles``; the observed camera's elevation in degrees (B,) or
    None without ``elevation_head``."""

    logits: torch.Tensor
    pointers: torch.Tensor | None
    numeric: torch.Tensor | None
    word_roles: torch.Tensor | None
    elevation: torch.Tensor | None = None


class AnswerReader(nn.Module):
    """Module docstring, "Network". Built from an ``AnswerReaderConfig``."""

    def __init__(self, config: AnswerReaderConfig):
        super().__init__()
        self.config = config
        vocab, question_vocab, feat, n, d = (
            config.text_vocab,
            config.question_vocab,
            config.feat,
            config.cells,
            config.width,
        )
        layers, pointer_layers, pointer_match = config.layers, config.pointer_layers, config.pointer_match
        numeric_head, unit_bins = config.numeric_head, config.unit_bins
        self.tok = nn.Embedding(question_vocab, d)
        if config.number_words:  # ``number_word_values`` of the words; saved with the weights
            self.register_buffer("word_values", torch.zeros(question_vocab, NUMBER_WORD_DIMS))
            self.number_in = nn.Sequential(nn.Linear(NUMBER_WORD_DIMS, d), nn.GELU(), nn.Linear(d, d))
        self.qpos = nn.Parameter(torch.randn(MAX_QUESTION, d) * 0.02)
        self.cell_in = nn.Sequential(nn.LayerNorm(feat), nn.Linear(feat, d), nn.GELU(), nn.Linear(d, d))
        self.cpos = nn.Parameter(torch.randn(MAX_VIEWS, n, d) * 0.02)
        self.pose_in = nn.Linear(POSE_DIMS, d)

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
        if config.word_roles:  # which question words name each role's objects; their pool joins its query
            self.word_role = nn.Linear(d, len(ROLES))
            self.span_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))
        if config.attribute_match:  # the colour / shape a role's words name, or "any" (the last class)
            self.colour_words, self.shape_words = (
                nn.Linear(d, len(COLOUR_CLASSES) + 1),
                nn.Linear(d, len(SHAPE_CLASSES) + 1),
            )
            with torch.no_grad():
                for lin in (self.colour_words, self.shape_words):
                    lin.weight.zero_()
                    lin.bias.zero_()
                    lin.bias[-1] = ANY_BIAS
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
        if config.relations:  # one token of explicit geometry between the objects of roles a and b
            self.relation = nn.Sequential(
                nn.LayerNorm(RELATION_DIMS), nn.Linear(RELATION_DIMS, d), nn.GELU(), nn.Linear(d, d)
            )
        if config.motion_token:  # one token of the stated motion and role a's object moved by it
            self.motion_in = nn.Sequential(
                nn.LayerNorm(MOTION_DIMS), nn.Linear(MOTION_DIMS, d), nn.GELU(), nn.Linear(d, d)
            )
        if config.elevation_head:  # the observed camera's elevation from the mean of its cells
            self.elevation_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
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
        motion: torch.Tensor | None = None,
        num_slots: int = MAX_ANSWER,
        oracle: torch.Tensor | None = None,
        oracle_rows: torch.Tensor | None = None,
    ) -> ReaderOutput:
        """Shapes: q (B, Lq) ids (0 pad), cells (B, V, n, F), shown (B, V) bool, pose (B, 13), motion
        (B, STATED_DIMS) (``stated_motions``; needed with ``motion_token``) -> ``ReaderOutput`` (its
        docstring; S = ``num_slots``).
        ``oracle`` (B, V n, R): pool each role's cells with these weights instead of the pointers', in the
        records ``oracle_rows`` (B,) bool (all records when None)."""
        qmask = q != 0
        L = int(qmask.sum(1).max())
        q, qmask = q[:, :L], qmask[:, :L]
        x = self.tok(q) + self.qpos[:L]
        if self.config.number_words:
            x = x + self.number_in(self.word_values[q])
        n = cells.shape[2]
        xc = (self.cell_in(cells.float()) + self.cpos[: cells.shape[1]]).flatten(1, 2)  # (B, V n, d)
        mem = torch.cat([xc, self.pose_in(pose).unsqueeze(1)], 1)
        mpad = torch.cat([~shown.repeat_interleave(n, 1), ~shown[:, 1:2]], 1)
        for lay in self.qlayers:
            x = lay(x, mem, tgt_key_padding_mask=~qmask, memory_key_padding_mask=mpad)
        ptr, roles, elevation = None, None, None
        if self.config.elevation_head:
            first = self.cell_in(cells[:, 0].float()).mean(1)  # (B, d): the observed view's cells
            elevation = ELEVATION_SCALE * self.elevation_head(first)[:, 0]
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
                if self.config.word_roles:
                    roles = self.word_role(x)  # (B, Lq, R)
                    tag = roles.sigmoid() * qmask.unsqueeze(-1)
                    span = tag.transpose(1, 2) @ x / (tag.sum(1).unsqueeze(-1) + 1e-3)  # (B, R, d)
                    r = r + self.span_in(span)
                ptr = self.ptr_key(c) @ self.ptr_query(r).transpose(1, 2) / c.shape[-1] ** 0.5 + self.ptr_bias
                if self.config.attribute_match:
                    ptr = ptr + self.attribute_logits(cells.float().flatten(1, 2), span)
            w = ptr.sigmoid()
            if oracle is not None:
                w = oracle if oracle_rows is None else torch.where(oracle_rows[:, None, None], oracle, w)
            w = w * (~cpad).unsqueeze(-1).float()
            count = w.sum(1)  # (B, R)
            p = w / (count.unsqueeze(1) + 1e-3)
            if self.config.pointer_pool == "softmax":  # pool by a softmax over the cells; count as before
                soft = ptr.masked_fill(cpad.unsqueeze(-1), float("-inf")).softmax(1)
                if oracle is None:
                    p = soft
                elif oracle_rows is not None:
                    p = torch.where(oracle_rows[:, None, None], p, soft)
            raw = torch.cat(
                [cells.float().flatten(1, 2), self.uv.repeat(cells.shape[1], 1).expand(len(q), -1, -1)], -1
            )
            pooled_raw = p.transpose(1, 2) @ raw  # (B, R, F + 2)
            pooled = torch.cat(
                [
                    pooled_raw,
                    p.transpose(1, 2) @ c,
                    count.unsqueeze(-1).log1p(),
                    count.unsqueeze(-1) / 8,
                ],
                -1,
            )
            objs = self.summary(pooled) + self.role_emb  # (B, R, d)
            if self.config.relations:
                rel = self.relation(relation_features(pooled_raw, count))
                objs = torch.cat([objs, rel.unsqueeze(1)], 1)
            if self.config.motion_token:
                if motion is None:
                    raise ValueError("motion_token: give the stated motions (stated_motions)")
                moved = self.motion_in(motion_features(motion.float(), pooled_raw, count, elevation))
                objs = torch.cat([objs, moved.unsqueeze(1)], 1)
            mem = torch.cat([objs, mem], 1)
            mpad = torch.cat([torch.zeros_like(mpad[:, : objs.shape[1]]), mpad], 1)
        mem, mpad = torch.cat([x, mem], 1), torch.cat([~qmask, mpad], 1)
        y = self.slots[:num_slots].expand(q.shape[0], -1, -1)
        for lay in self.alayers:
            y = lay(y, mem, memory_key_padding_mask=mpad)
        if self.numeric is None:
            return ReaderOutput(self.out(y), ptr, None, roles, elevation)
        v = self.value_query.expand(q.shape[0], -1, -1)
        for lay in self.value_layers:
            v = lay(v, mem, memory_key_padding_mask=mpad)
        return ReaderOutput(self.out(y), ptr, self.numeric(v[:, 0]), roles, elevation)

    def attribute_logits(self, cells: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
        """Module docstring, "Attribute match": log P(the cell's colour and shape are those the role's words
        name, or "any"). Shapes: cells (B, V n, F) (``cell_readouts``), span (B, R, d) -> (B, V n, R)."""
        readouts = cell_readouts(cells)
        out = 0.0
        for probs, lin in ((readouts["shape"], self.shape_words), (readouts["colour"], self.colour_words)):
            k = probs.shape[-1]
            named = lin(span).softmax(-1)  # (B, R, k + 1)
            out = (
                out
                + (probs @ named[..., :k].transpose(1, 2) + named[..., k].unsqueeze(1)).clamp_min(1e-6).log()
            )
        return out


def inputs(d: dict, idx: torch.Tensor, no_image: bool) -> tuple[torch.Tensor, ...]:
    """The network's inputs for records ``idx`` of ``encode_records``' dict
    (gst.model.answer_inputs); zeroed cells and pose when
    ``no_image`` (the stated motion is the question's; None where the dict has none). Shapes: -> q (B, Lq),
    cells (B, V, n, F), shown (B, V), pose (B, POSE_DIMS), motion (B, STATED_DIMS)."""
    cells, pose = d["feats"][d["views"][idx]], d["pose"][idx]
    if no_image:
        cells, pose = torch.zeros_like(cells), torch.zeros_like(pose)
    motion = d["stated_motion"][idx] if "stated_motion" in d else None
    return d["q"][idx], cells, d["shown"][idx], pose, motion


@torch.no_grad()
def answer(
    net: AnswerReader,
    d: dict,
    text: TextTokenizer,
    oracle: Any = None,
) -> list[str]:
    """The answer text of every record of ``d`` (``encode_records``). Closed answers (choices, counts
    0-10): the candidate of highest log-likelihood, its tokens and end summed over the slots (as `gst eval
    qa --closed-answers score`); numbers, points and boxes: the numeric head (when the network has one);
    other open answers: the slots' argmax up to the first end. ``oracle``: a function of record indices
    (B,) to pointer weights (B, V n, R) pooled instead of the pointers' (a ceiling; training only)."""
    was_training = net.training
    net.eval()
    cfg, texts = net.config, []
    for start in range(0, len(d["records"]), 256):
        idx = torch.arange(start, min(start + 256, len(d["records"])))
        out = net(*inputs(d, idx, cfg.no_image), oracle=None if oracle is None else oracle(idx))
        logits, values = out.logits, out.numeric
        logp = logits.float().log_softmax(-1)  # (b, S, vocab + 2)
        for i, row in enumerate(logp.argmax(-1).tolist()):
            rec = d["records"][int(idx[i])]
            candidates = closed_candidates(rec)
            if values is not None and rec.answer.type in NUMERIC_SLICES:
                bins = cfg.number_readout == "bins"
                texts.append(numeric_text(rec.answer, values[i].float().numpy(), bins))
            elif candidates:
                ids = [(text.encode(c) + [text.vocab_size + 1])[:MAX_ANSWER] for c in candidates]
                scores = [float(logp[i, torch.arange(len(t)), torch.tensor(t)].sum()) for t in ids]
                texts.append(candidates[int(np.argmax(scores))])
            else:
                end = next((k for k, t in enumerate(row) if t >= text.vocab_size), len(row))
                texts.append(text.decode(row[:end]))
    net.train(was_training)
    return texts
