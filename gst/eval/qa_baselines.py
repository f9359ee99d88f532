"""Answer predictors for spatial QA, scored by ``gst.eval.qa_metrics``: baselines and the model hook.

A predictor maps QA records to answer texts (``QAPredictor.predict``). Implementations:

- ``MostFrequentBaseline``: a constant answer per question kind, fitted on the TRAIN split and applied
  to val. "Most frequent" per kind rather than per family because one family mixes answer types (the
  camera_motion family asks for a direction, an angle and a distance). Discrete answers (choice,
  count) use the mode; for a choice it is the most frequent training answer among the question's own
  options (ties: alphabetical), so the baseline never answers outside the options. Continuous answers
  use the median (per coordinate for points and boxes): the constant that a mode cannot give for
  real-valued answers. A kind without training answers gets an empty answer (scored unparseable).
- ``OraclePredictor``: the ground-truth text (checks the scorer: every metric is perfect).
- ``ChatPredictor``: any chat function ``(question, image paths) -> answer`` (the world model once its
  checkpoint loads, issue 4), given the record's observed views; with ``text_only=True`` it receives
  no images: the "model with the image tokens removed" baseline. Given a score function
  ``(question, image paths, candidates) -> log-likelihoods`` it answers questions with a closed answer
  set by the candidate the model finds most likely (multiple choice by likelihood, as
  lm-evaluation-harness scores it): choices among their options, counts among ``COUNT_CANDIDATES``;
  it generates every other answer. Given a number function ``(question, image paths, unit, decimals)
  -> answer`` it answers number questions with it (the model's greedy number under the answer format,
  ``GST.answer_number``) instead of free decoding.
- ``NumberTokenReader``: number, point and box answers read off the model's distribution over its
  number tokens (``gst.tokenizers.numbers``; `gst eval qa --numbers tokens`): a number is the bin value
  of highest expected MRA (``token_mbr_number``), each coordinate the mean of its signed belief.
- ``PredictionsFile``: answers from a JSONL file of ``{"id": record id, "answer_text": str}`` lines.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gst.data.qa_types import (
    COORD_DECIMALS,
    UNIT_DECIMALS,
    Answer,
    QARecord,
    box_answer,
    format_answer,
    number_answer,
    point_answer,
)
from gst.eval.qa_metrics import signed_token_belief, token_mbr_number
from gst.tokenizers.numbers import find_quantities

ChatFn = Callable[[str, Sequence[Path]], str]  # (question, observed image paths) -> answer text
# (question, observed image paths, candidate answers) -> one log-likelihood per candidate
ScoreFn = Callable[[str, Sequence[Path], Sequence[str]], Sequence[float]]
# (question, observed image paths, unit, decimals) -> an answer written as one number in that unit
NumberFn = Callable[[str, Sequence[Path], str, int], str]
# (question, observed image paths, "point" or "box") -> answer text in that type's format
CoordinatesFn = Callable[[str, Sequence[Path], str], str]
COUNT_CANDIDATES = tuple(str(n) for n in range(11))  # scenes hold 2-6 objects; counts of a kind fewer


class QAPredictor(Protocol):
    name: str

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        """One answer text per record, in order."""
        ...


def closed_candidates(r: QARecord) -> list[str]:
    """The closed answer set of a record (empty for open answers: numbers, points, boxes)."""
    if r.answer.type == "choice":
        return list(r.answer.options or ())
    return list(COUNT_CANDIDATES) if r.answer.type == "count" else []


class MostFrequentBaseline:
    """See the module docstring. ``constants``: kind -> the constant answer text (counts, numbers,
    points, boxes); ``counts``: kind -> training answer counts of choice kinds (the answer depends on
    each question's options)."""

    name = "most-frequent"

    def __init__(self, train_records: Sequence[QARecord]) -> None:
        if not train_records:
            raise ValueError("most-frequent baseline: no training records to fit on (need split == 'train')")
        self.counts: dict[str, Counter] = defaultdict(Counter)  # kind -> choice answer -> count
        discrete: dict[str, Counter] = defaultdict(Counter)
        values: dict[str, list[Answer]] = defaultdict(list)
        for r in train_records:
            if r.answer.type == "choice":
                self.counts[r.kind][r.answer_text] += 1
            elif r.answer.type == "count":
                discrete[r.kind][r.answer_text] += 1
            else:
                values[r.kind].append(r.answer)
        self.constants: dict[str, str] = {
            kind: format_answer(_median_answer(a)) for kind, a in values.items()
        }
        for kind, counter in discrete.items():
            self.constants[kind] = min(counter, key=lambda t: (-counter[t], t))  # mode; ties alphabetical

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        out = []
        for r in records:
            if r.answer.type == "choice":
                counter = self.counts.get(r.kind, Counter())
                options = sorted(r.answer.options or ())
                out.append(min(options, key=lambda o: (-counter[o], o)) if counter else "")
            else:
                out.append(self.constants.get(r.kind, ""))
        return out

    def table(self) -> dict[str, object]:
        """kind -> constant answer, or the training answer counts for choices (for reports)."""
        out: dict[str, object] = dict(self.constants)
        for kind, counter in self.counts.items():
            if kind not in out:
                out[kind] = dict(counter.most_common())
        return dict(sorted(out.items()))


def _median_answer(answers: Sequence[Answer]) -> Answer:
    first = answers[0]
    if first.type == "number":
        return number_answer(float(np.median([a.value for a in answers])), first.unit)
    if first.type == "point":
        return point_answer(np.median(np.array([a.value for a in answers]), axis=0).tolist())
    if first.type == "box":
        centers = np.median(np.array([a.value["center"] for a in answers]), axis=0)
        sizes = np.median(np.array([a.value["size"] for a in answers]), axis=0)
        return box_answer(centers.tolist(), sizes.tolist())
    raise ValueError(f"no median for {first.type} answers")


class OraclePredictor:
    name = "oracle"

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        return [r.answer_text for r in records]


class ChatPredictor:
    """Ask a chat function each record's question with the record's observed views.

    ``image_paths(scene, view)`` resolves a view to its image file (for scenes on disk:
    ``scene_image_resolver(root)``). ``text_only=True`` passes no images. ``score``: answer choice and
    count questions with the most likely candidate (ties: the first) instead of generating; ``number``:
    answer number questions in their unit's fixed format (``UNIT_DECIMALS``) instead of free decoding;
    ``coordinates``: answer point and box questions in their format.
    """

    def __init__(
        self,
        chat: ChatFn,
        image_paths: Callable[[str, int], Path] | None,
        *,
        text_only: bool,
        name: str = "model",
        score: ScoreFn | None = None,
        number: NumberFn | None = None,
        coordinates: CoordinatesFn | None = None,
    ) -> None:
        if not text_only and image_paths is None:
            raise ValueError("ChatPredictor: the model with images needs an image resolver (--scenes DIR)")
        self.chat, self.image_paths, self.text_only, self.score = chat, image_paths, text_only, score
        self.number, self.coordinates = number, coordinates
        self.name = f"{name}-text-only" if text_only else name

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        out = []
        for r in records:
            images = [] if self.text_only else [self.image_paths(r.scene, v) for v in r.views]
            candidates = closed_candidates(r)
            if self.score is not None and candidates:
                scores = list(self.score(r.question, images, candidates))
                out.append(candidates[max(range(len(candidates)), key=lambda i: (scores[i], -i))])
            elif self.number is not None and r.answer.type == "number":
                unit = str(r.answer.unit)
                out.append(str(self.number(r.question, images, unit, UNIT_DECIMALS[unit])))
            elif self.coordinates is not None and r.answer.type in ("point", "box"):
                out.append(str(self.coordinates(r.question, images, r.answer.type)))
            else:
                out.append(str(self.chat(r.question, images)))
        return out


class NumberTokenReader:
    """Answers read off the model's distribution over its number tokens, one forward per number
    (``ChatSession.next_logprobs``), never a digit string: ``number`` is a ``NumberFn`` and
    ``coordinates`` a ``CoordinatesFn`` (module docstring). ``host`` is a ``gst.api.GST`` whose text
    tokenizer has number tokens (a model trained with ``--set number_tokens=true``).

    A number answer is "v unit", v the bin value of highest expected MRA under the model's distribution
    over the tokens at the answer's first position (``token_mbr_number``). A point or box is written in
    its ``gst.data.qa_types`` format one coordinate at a time, after the coordinates chosen so far (as
    number tokens, as training wrote them): the belief over "-" then a token, or a token
    (``signed_token_belief``; box sizes are not signed), and its mean, the Bayes choice for squared
    error, with 2 decimals."""

    def __init__(self, host: Any) -> None:
        tok = host.text_tokenizer
        if getattr(tok, "numbers", None) is None:
            raise ValueError(
                "--numbers tokens: this model's vocabulary has no number tokens (train with --set "
                "number_tokens=true); use --numbers mbr for a model that writes digits"
            )
        minus = tok.encode("-")
        if len(minus) != 1:
            raise ValueError(f"--numbers tokens: the text tokenizer writes '-' as {len(minus)} ids, not one")
        self.host, self.tok, self.minus = host, tok, minus[0]
        self.values = np.asarray(tok.numbers.values, dtype=np.float64)  # (G,)
        self.rows = slice(tok.number_offset, tok.vocab_size)  # the number tokens' rows

    def number(self, question: str, images: Sequence[Any], unit: str, decimals: int) -> str:
        session = self.host.start_chat(allow_segments=False)
        logp = session.next_logprobs(question, images, [])[0]  # (V',) the answer's first token
        probs = logp[self.rows].softmax(-1).double().cpu().numpy()  # (G,) given that it is a number
        return f"{token_mbr_number(self.values, probs, decimals):.{decimals}f} {unit}"

    def coordinates(self, question: str, images: Sequence[Any], kind: str) -> str:
        if kind not in ("point", "box"):
            raise ValueError(f"NumberTokenReader.coordinates: kind must be 'point' or 'box', got {kind!r}")
        template = format_answer(point_answer([1, 1, 1]) if kind == "point" else box_answer([1] * 3, [1] * 3))
        spans = find_quantities(template)  # where its numbers stand: the text around them is fixed
        pieces = [
            template[a:b]
            for a, b in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [None], strict=True)
        ]
        images = [self.host.prepare(img) for img in images]  # tokenized once for every coordinate
        session = self.host.start_chat(allow_segments=False)
        ids: list[int] = []
        text = ""
        for k, piece in enumerate(pieces[:-1]):
            ids += self.tok.encode(piece)
            rows = session.next_logprobs(question, images, [*ids, self.minus])  # (L + 2, V')
            here, after = rows[len(ids)].double(), rows[len(ids) + 1].double()  # (V',) each
            signed = not (kind == "box" and k >= 3)  # box sizes are extents
            p_minus = float(here[self.minus].exp()) if signed else 0.0
            values, probs = signed_token_belief(
                self.values,
                here[self.rows].exp().cpu().numpy(),
                p_minus,
                after[self.rows].exp().cpu().numpy(),
            )
            v = round(float(values @ probs), COORD_DECIMALS) + 0.0  # + 0.0: no "-0.00"
            ids += ([self.minus] if v < 0 else []) + [self.tok.number_id(abs(v))]
            text += f"{piece}{v:.{COORD_DECIMALS}f}"
        return text + pieces[-1]


def scene_image_resolver(root: str | Path) -> Callable[[str, int], Path]:
    """(scene name, view) -> image path for scene folders under ``root`` (loaded once per scene)."""
    from gst.data.loaders import load_scene

    root = Path(root)
    cache: dict[str, tuple[Path, ...]] = {}

    def resolve(scene: str, view: int) -> Path:
        if scene not in cache:
            folder = root / scene if (root / scene).is_dir() else root
            cache[scene] = load_scene(folder).image_paths
        return cache[scene][view]

    return resolve


class PredictionsFile:
    """Answers read from JSONL ``{"id": ..., "answer_text": ...}``; every record must have one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"predictions:{self.path.name}"
        if not self.path.is_file():
            raise FileNotFoundError(f"--predictions {self.path}: no such file")
        self.answers: dict[str, str] = {}
        with self.path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    self.answers[str(d["id"])] = str(d["answer_text"])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f'{self.path}:{i}: expected {{"id": ..., "answer_text": ...}}') from None

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        missing = [r.id for r in records if r.id not in self.answers]
        if missing:
            raise ValueError(
                f"--predictions {self.path}: no answer for {len(missing)} of {len(records)} records "
                f"(first: {missing[0]!r}); write one line per record id"
            )
        return [self.answers[r.id] for r in records]
