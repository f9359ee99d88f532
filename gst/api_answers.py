"""The answer formats of ``gst.api.GST`` (a mixin): a number in a fixed format, likelihoods of given
replies, 3D points and boxes written one coordinate at a time. Each question is asked in a fresh
conversation (``GST.start_chat``); the ``gst.eval.qa_baselines`` function types they implement are
named in each docstring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gst.api_types import ImageInput

# The text around each coordinate of a point or box answer (gst.data.qa_types formats), and whether
# each coordinate is positive (depth, sizes: the metre number grid) or signed (x, y).
_COORDINATE_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[bool, ...]]] = {
    "point": (("(", ", ", ", ", ") m"), (False, False, True)),
    "box": (
        ("center (", ", ", ", ", ") m, size (", ", ", ", ", ") m"),
        (False, False, True, True, True, True),
    ),
}


class AnswerMethods:
    """``GST``'s answer formats; the host provides ``start_chat``, ``prepare`` and ``_number_formats``."""

    _number_formats: dict[tuple[str, int], Any]
    text_tokenizer: Any
    layout: Any

    def answer_number(
        self,
        question: str,
        images: Sequence[ImageInput],
        unit: str,
        decimals: int,
        max_new_tokens: int = 16,
        *,
        decoding: str = "greedy",
    ) -> str:
        """Answer one question with one number in the fixed format of ``gst.api_chat.NumberFormat`` (e.g.
        "3.85 m"), in a fresh conversation; ``gst.eval.qa_baselines.NumberFn``. ``decoding="greedy"``:
        greedy decoding within the format. ``"mbr"``: every value of the unit's log-spaced grid
        (``gst.eval.qa_metrics.number_grid``) is scored as a reply and the one with the highest expected
        MRA under those likelihoods is answered (minimum Bayes risk; the grid's values have the unit's
        decimals, so ``decimals`` must be those)."""
        from gst.api_chat import NumberFormat

        if decoding == "mbr":
            from gst.data.qa_types import UNIT_DECIMALS
            from gst.eval.qa_metrics import mbr_number, number_grid

            if UNIT_DECIMALS.get(unit) != decimals:
                wanted = UNIT_DECIMALS.get(unit)
                raise ValueError(f"answer_number: mbr writes {unit!r} with {wanted} decimals, not {decimals}")
            values = number_grid(unit)
            texts = [f"{v:.{decimals}f} {unit}" for v in values]
            return texts[values.index(mbr_number(values, self.score_replies(question, images, texts)))]
        if decoding != "greedy":
            raise ValueError(f"answer_number: decoding must be 'greedy' or 'mbr', got {decoding!r}")
        key = (unit, decimals)
        if key not in self._number_formats:  # decodes every text id once: reused across questions
            self._number_formats[key] = NumberFormat(self.text_tokenizer, self.layout, unit, decimals)
        session = self.start_chat(max_new_tokens=max_new_tokens, allow_segments=False)
        return session.ask(question, images, constraint=self._number_formats[key]).text.strip()

    def score_replies(
        self, question: str, images: Sequence[ImageInput], candidates: Sequence[str], *, complete: bool = True
    ) -> list[float]:
        """Log-likelihood of each candidate answer (or, ``complete=False``, answer start) to one question,
        in a fresh conversation (``ChatSession.score``); ``gst.eval.qa_baselines.ScoreFn``."""
        return self.start_chat(allow_segments=False).score(question, images, candidates, complete=complete)

    def answer_coordinates(self, question: str, images: Sequence[ImageInput], kind: str) -> str:
        """Answer a 3D point or box question (``kind`` "point" or "box") in the format of
        ``gst.data.qa_types`` ("(x, y, z) m"; "center (x, y, z) m, size (w, h, d) m"), one coordinate
        at a time: every value of the coordinate's grid (x, y: ``coordinate_grid``; depth and sizes: the
        metre ``number_grid``) is scored after the coordinates chosen so far, and the mean of the
        model's belief (``posterior_mean``, the Bayes choice for squared error) is written, to 2
        decimals. Numbers written freely are error-prone (LLMI3D); this never writes a malformed one.
        ``gst.eval.qa_baselines.CoordinatesFn``."""
        from gst.eval.qa_metrics import coordinate_grid, number_grid, posterior_mean

        if kind not in _COORDINATE_TEMPLATES:
            raise ValueError(f"answer_coordinates: kind must be 'point' or 'box', got {kind!r}")
        pieces, positive = _COORDINATE_TEMPLATES[kind]
        grids = {False: coordinate_grid(), True: number_grid("m")}
        images = [self.prepare(img) for img in images]  # tokenized once, read by every coordinate's scoring
        text = ""
        for k, is_positive in enumerate(positive):
            values, last = grids[is_positive], k == len(positive) - 1
            texts = [f"{text}{pieces[k]}{v:.2f}{pieces[k + 1]}" for v in values]
            scores = self.score_replies(question, images, texts, complete=last)
            text += f"{pieces[k]}{round(posterior_mean(values, scores), 2) + 0.0:.2f}"
        return text + pieces[-1]
