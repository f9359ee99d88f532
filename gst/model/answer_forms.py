"""Answer forms for free questions: which kind of question a chat turn asks, and so in which form the
answer reader (gst.model.answer_reader) answers it.

The answer reader answers a record in its answer's form: a choice among options, a count, a number with
a unit, a point or a box (``QARecord.answer``). A question typed in `gst chat` comes without one. This is
a multinomial naive Bayes classifier over a question's words (``answer_reader.words``, every number
read as one word) that names the question kind of `gst data qa` it most likely is, fitted on the training
phrasings of a QA file, and per kind the answer form its records have: the answer type, the unit, the
number of views, and for choices every option its training records offer (sorted; the answer reader
scores them all, so which-object questions may name any object label it has seen).
Saved as ``answer_forms.json`` inside an answer reader folder (`gst train answer-forms`), read by
``gst.eval.qa_reader.chat_router`` so that `gst chat` routes the questions it recognises (``route``) to
the answer reader.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gst.data.qa_types import QARecord
from gst.model.answer_reader import words

ANSWER_FORMS_FILE = "answer_forms.json"
ANSWER_FORMS_FORMAT, ANSWER_FORMS_FORMAT_VERSION = "gst-answer-forms", 1
SMOOTHING = 1.0  # add-one smoothing of the word counts per kind
# ``route``: a question is taken to be of its most likely kind when the kind's posterior probability and
# the evidence for it (``classify``) reach these; on the val questions of `gst data qa` (2026-12-07, with
# ``vis_stay``) 99.8 % of training phrasings and 80 % of held-out phrasings pass, the kind's answer form
# right for 99.8 % and 96 % of them; "Describe the scene." (2.9 nats) and "Where is the camera?" (2.8) do not
ROUTE_MIN_PROB, ROUTE_MIN_EVIDENCE = 0.5, 4.0


def question_words(question: str) -> list[str]:
    """The classifier's words: ``words`` with every number read as "0" (the numbers of a camera motion
    say nothing of the question's kind)."""
    return ["0" if w[0].isdigit() else w for w in words(question)]


@dataclass(frozen=True)
class AnswerForm:
    """The answer of one question kind: ``type`` (``gst.data.qa_types.ANSWER_TYPES``), ``unit`` (numbers),
    ``views`` (images the question reads) and ``options`` (choices; empty otherwise)."""

    type: str
    unit: str | None
    views: int
    options: tuple[str, ...] = ()


class AnswerForms:
    """The kind classifier and each kind's answer form (module docstring)."""

    def __init__(
        self,
        prior: dict[str, float],
        likelihood: dict[str, dict[str, float]],
        background: dict[str, float],
        forms: dict[str, AnswerForm],
    ) -> None:
        self.prior, self.likelihood, self.background, self.forms = prior, likelihood, background, forms
        self.min_prob, self.min_evidence = ROUTE_MIN_PROB, ROUTE_MIN_EVIDENCE  # ``route``

    @classmethod
    def fit(cls, records: Sequence[QARecord]) -> AnswerForms:
        """From the records in training phrasings (``phrasing_split == "train"``; the others are left out so
        that held-out phrasings can measure it)."""
        records = [r for r in records if r.phrasing_split == "train"]
        if not records:
            raise ValueError("answer forms: no records in training phrasings to fit on")
        kinds = Counter(r.kind for r in records)
        counts: dict[str, Counter] = defaultdict(Counter)
        options: dict[str, Counter] = defaultdict(Counter)
        shapes: dict[str, Counter] = defaultdict(Counter)
        for r in records:
            counts[r.kind].update(question_words(r.question))
            options[r.kind].update(r.answer.options or ())
            shapes[r.kind][(r.answer.type, r.answer.unit, len(r.views))] += 1
        vocab = sorted({w for c in counts.values() for w in c})
        pooled = Counter(w for c in counts.values() for w in c.elements())
        total = sum(pooled.values()) + SMOOTHING * len(vocab)
        background = {w: round(math.log((pooled[w] + SMOOTHING) / total), 4) for w in vocab}
        prior, likelihood, forms = {}, {}, {}
        for kind in sorted(kinds):
            total = sum(counts[kind].values()) + SMOOTHING * len(vocab)
            prior[kind] = math.log(kinds[kind] / len(records))
            likelihood[kind] = {w: round(math.log((counts[kind][w] + SMOOTHING) / total), 4) for w in vocab}
            (type_, unit, views), _ = shapes[kind].most_common(1)[0]
            forms[kind] = AnswerForm(type_, unit, views, tuple(sorted(options[kind])))
        return cls(prior, likelihood, background, forms)

    def classify(self, question: str) -> tuple[str, float, float]:
        """The most likely kind of ``question``, its posterior probability, and the evidence that the
        question is of that kind at all: the log-likelihood ratio (nats) of its words under the kind
        against all training questions pooled (near 0 for a question whose words every kind uses alike,
        "Describe the scene."). Words no training phrasing has are left out."""
        seen = [w for w in question_words(question) if w in self.background]
        scores = {k: p + sum(self.likelihood[k][w] for w in seen) for k, p in self.prior.items()}
        best = max(scores, key=scores.get)
        norm = math.log(sum(math.exp(s - scores[best]) for s in scores.values()))
        evidence = sum(self.likelihood[best][w] - self.background[w] for w in seen)
        return best, math.exp(-norm), evidence

    def route(self, question: str) -> str | None:
        """The kind ``question`` is taken to be (``min_prob``, ``min_evidence``: ``ROUTE_MIN_PROB``,
        ``ROUTE_MIN_EVIDENCE``), or None."""
        kind, prob, evidence = self.classify(question)
        return kind if prob >= self.min_prob and evidence >= self.min_evidence else None

    def save(self, path: str | Path) -> Path:
        """Write JSON (the folder must exist); returns the file's path."""
        path = Path(path)
        if path.is_dir():
            path = path / ANSWER_FORMS_FILE
        body = {
            "format": ANSWER_FORMS_FORMAT,
            "format_version": ANSWER_FORMS_FORMAT_VERSION,
            "prior": self.prior,
            "forms": {k: {**f.__dict__, "options": list(f.options)} for k, f in self.forms.items()},
            "likelihood": self.likelihood,
            "background": self.background,
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(body) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnswerForms:
        path = Path(path)
        if path.is_dir():
            path = path / ANSWER_FORMS_FILE
        body = json.loads(path.read_text())
        version = (body.get("format"), body.get("format_version"))
        if version != (ANSWER_FORMS_FORMAT, ANSWER_FORMS_FORMAT_VERSION):
            raise ValueError(
                f"{path}: not answer forms of format {ANSWER_FORMS_FORMAT} v{ANSWER_FORMS_FORMAT_VERSION}; "
                "write it again with `gst train answer-forms`"
            )
        forms = {
            k: AnswerForm(f["type"], f["unit"], f["views"], tuple(f["options"]))
            for k, f in body["forms"].items()
        }
        return cls(body["prior"], body["likelihood"], body["background"], forms)
