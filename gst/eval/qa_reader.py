"""`gst eval qa --method answer-reader`: the answer reader (gst.model.answer_reader) as a QA predictor.

It reads each record's views from the scene folders, tokenizes them with the checkpoint's image tokenizer
(``GST.prepare``, each view once), takes the cells from the checkpoint's pose reader and answers every
record in batches. The answer reader must have been trained over this checkpoint's pose reader: its
export records the pose reader's weights by hash, checked here.

``chat_router``: `gst chat` routes a question to the answer reader when the reader folder has answer forms
(gst.model.answer_forms, `gst train answer-forms`) that recognise its kind (``AnswerForms.route``) and the
turn has that kind's number of images; the reader then answers in that kind's answer form.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gst.api_checkpoint import resolve_checkpoint
from gst.data.qa_types import ANSWER_TYPES, Answer, QARecord
from gst.hashing import file_sha256
from gst.model.answer_forms import ANSWER_FORMS_FILE, AnswerForms
from gst.model.answer_inputs import encode_records, text_tokenizer
from gst.model.answer_reader import ANSWER_READER_DIR, MAX_VIEWS, answer, words
from gst.model.answer_reader_io import load_answer_reader


class AnswerReaderPredictor:
    """Answers from an answer reader (default: the checkpoint's ``answer_reader/``) over a checkpoint's
    pose reader: ``predict`` for records whose views are in the scene folders under ``scenes``, ``ask``
    for one question about given images. ``gst``: the checkpoint already loaded (``GST``)."""

    name = "answer-reader"

    def __init__(
        self,
        checkpoint: str | Path,
        scenes: str | Path | None = None,
        reader_dir: str | Path | None = None,
        progress: bool = True,
        gst: Any = None,
    ) -> None:
        from gst.api import GST

        files = resolve_checkpoint(checkpoint)
        reader_dir = Path(reader_dir) if reader_dir is not None else files.root / ANSWER_READER_DIR
        if not reader_dir.is_dir():
            raise FileNotFoundError(
                f"{reader_dir}: no answer reader; train one with `gst train answer-reader --checkpoint "
                f"{checkpoint} --out DIR` and pass --answer-reader DIR/{ANSWER_READER_DIR}"
            )
        self.net, self.vocab, info = load_answer_reader(reader_dir)
        trained_on = (info.get("metadata") or {}).get("pose_reader", {}).get("model_sha256")
        here = file_sha256(files.model_dir / "model.safetensors")
        if trained_on != here:
            raise ValueError(
                f"{reader_dir}: trained over a pose reader with weights {str(trained_on)[:12]}, but "
                f"checkpoint {checkpoint} has {here[:12]}; give the checkpoint it was trained with, or "
                "retrain it"
            )
        self.gst = gst if gst is not None else GST.from_pretrained(checkpoint)
        if self.gst.model.stem_reader is None or self.gst.model.stem_reader.cell_head is None:
            raise ValueError(f"checkpoint {checkpoint}: has no pose reader with cell heads")
        self.scenes = None if scenes is None else Path(scenes)
        self.progress, self.text = progress, text_tokenizer()
        self.reader_dir = reader_dir

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        from gst.eval.qa_baselines import scene_image_resolver

        if self.scenes is None:
            raise ValueError(
                "the answer reader needs --scenes DIR (the scene folders the questions were made from)"
            )
        resolve = scene_image_resolver(self.scenes)
        keys = sorted({(r.scene, v) for r in records for v in r.views[:MAX_VIEWS]})
        where = {key: i for i, key in enumerate(keys)}
        codes = self._codes([resolve(scene, view) for scene, view in keys])
        return self._answer(
            records, [[where[(r.scene, v)] for v in r.views[:MAX_VIEWS]] for r in records], codes
        )

    def ask(self, question: str, images: Sequence[Any], answer_type: str, unit: str | None = None,
            options: Sequence[str] | None = None) -> str:  # fmt: skip
        """The answer text to one question about one or two ``images`` (paths, arrays or tensors, as
        ``GST.prepare`` reads them), given the answer's type (``gst.data.qa_types.ANSWER_TYPES``) and,
        for numbers and choices, its unit or options: the reader answers in that form."""
        if not words(question):
            raise ValueError("the question has no words")
        if not 1 <= len(images) <= MAX_VIEWS:
            raise ValueError(f"the answer reader reads 1 to {MAX_VIEWS} images, got {len(images)}")
        forms = {"choice": (options or [None])[0], "count": 0, "number": 1.0, "point": [0.0] * 3,
                 "box": {"center": [0.0] * 3, "size": [1.0] * 3}}  # fmt: skip
        if answer_type not in forms:
            raise ValueError(f"answer type {answer_type!r}: choose from {ANSWER_TYPES}")
        options = None if options is None else tuple(options)
        form = Answer(type=answer_type, value=forms[answer_type], unit=unit, options=options)  # its form only
        record = QARecord(
            id="question", instance="question", scene="", views=tuple(range(len(images))), family="", kind="",
            phrasing_id="", phrasing_split="", split="", question=question, answer=form,
        )  # fmt: skip
        return self._answer([record], [list(range(len(images)))], self._codes(images))[0]

    def _codes(self, images: Sequence[Any]) -> np.ndarray:
        """Each image's code grid under the checkpoint's image tokenizer. Shapes: -> (M, h, w) int64."""
        from tqdm.auto import tqdm

        grid = tuple(self.gst.sequence.image_grid)
        codes = np.zeros((len(images), *grid), np.int64)
        progress = self.progress and len(images) > 1
        for i, image in enumerate(tqdm(images, desc="tokenize views", disable=not progress)):
            prepared = image if hasattr(image, "ids") else self.gst.prepare(image)  # a PreparedImage as is
            ids = prepared.ids - self.gst.layout.image_offset
            codes[i] = ids.reshape(grid).cpu().numpy()
        return codes

    def _answer(
        self, records: Sequence[QARecord], view_rows: list[list[int]], codes: np.ndarray
    ) -> list[str]:
        reader = self.gst.model.stem_reader
        d = encode_records(records, view_rows, codes, reader, self.vocab, self.net.config.code_features)
        return answer(self.net, d, self.text)


class ChatRouter:
    """A ``gst.api_chat.ChatRouter``: the answer reader's answer to a chat question whose kind the answer
    forms recognise (``AnswerForms.route``) and whose turn has that kind's number of images; None (the
    model replies) otherwise. A choice is among the kind's options, or among those the question names
    where it names at least two."""

    def __init__(self, predictor: AnswerReaderPredictor, forms: AnswerForms):
        self.predictor, self.forms = predictor, forms

    def __call__(self, question: str, images: Sequence[Any]) -> str | None:
        kind = self.forms.route(question) if words(question) else None
        if kind is None or len(images) != self.forms.forms[kind].views:
            return None
        form = self.forms.forms[kind]
        # a choice between objects the question names ("Which is larger, the red box or the blue cone?")
        named = [o for o in form.options if re.search(rf"\b{re.escape(o)}\b", question.lower())]
        options = tuple(named) if len(named) >= 2 else form.options
        return self.predictor.ask(question, images, form.type, form.unit, options or None)


def chat_router(gst: Any) -> ChatRouter | None:
    """The router of a loaded checkpoint (``GST``): None when its answer reader folder has no answer forms
    (or it has no answer reader)."""
    if gst.checkpoint is None:
        return None
    folder = resolve_checkpoint(gst.checkpoint).root / ANSWER_READER_DIR
    if not (folder / ANSWER_FORMS_FILE).is_file():
        return None
    predictor = AnswerReaderPredictor(gst.checkpoint, gst=gst, progress=False)
    return ChatRouter(predictor, AnswerForms.load(folder))
