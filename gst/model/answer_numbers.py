"""The answer reader's typed numeric readout (``--numeric-head``, gst.model.answer_reader): what it learns
for an answer and the answer text it writes back. Points and boxes regress their values
(``NUMERIC_SLICES``); a number is a regressed log or a distribution over the number-token bins
(``NUMBER_BINS``, decoded to the value of highest expected MRA), one set of bins per unit with
``--unit-bins`` (``UNITS``). Numbers in questions (``--number-words``): ``number_word_values``."""

from __future__ import annotations

import math

import numpy as np
import torch

from gst.data.qa_types import UNIT_DECIMALS, Answer, box_answer, number_answer, point_answer
from gst.eval.qa_metrics import token_mbr_number
from gst.tokenizers.numbers import NUMBER_BINS

NUMBER_WORD_DIMS = 4  # ``number_word_values``

IGNORE = -100  # a target that is not learnt
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


def number_word_values(vocab: dict[str, int], size: int) -> torch.Tensor:
    """Per question word id (``vocab``: word -> id, ``size`` ids), the value features of a number word:
    (1, log1p(v) / 3, v / 100, v / 10); zeros for the other words (padding, unknown, words).
    Shapes: -> (size, NUMBER_WORD_DIMS)."""
    out = torch.zeros(size, NUMBER_WORD_DIMS)
    for word, i in vocab.items():
        if word[0].isdigit():
            v = float(word)
            out[i] = torch.tensor([1.0, math.log1p(v) / 3, v / 100, v / 10])
    return out
