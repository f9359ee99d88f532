"""Typed answers and QA records: canonical answer text, its parser, and the JSONL record format.

Answer types and their canonical text (``format_answer``), parsed back exactly by ``parse_answer``:

- ``choice``: one of ``options`` (lower-case words), e.g. ``left``, ``red``, ``the red box`` -> ``red box``.
- ``count``: a non-negative integer, e.g. ``3``.
- ``number``: a value with a unit and a fixed number of decimals per unit (``UNIT_DECIMALS``):
  metres with 2 decimals (``1.25 m``), degrees with none (``35 deg``). The stored value is already
  rounded, so ``parse(format(a)) == a`` exactly. LLMI3D notes that numbers written as text are
  error-prone for language models; fixed decimals and one unit per quantity keep the format simple.
- ``point``: a 3D point in the observed camera's frame (OpenCV: +x right, +y down, +z forward),
  metres, 2 decimals: ``(0.12, -0.30, 2.45) m``.
- ``box``: an axis-aligned box in the observed camera's frame, the tightest one enclosing the
  object's oriented bounding box, given as centre and full extents along the camera axes, metres,
  2 decimals: ``center (0.12, -0.30, 2.45) m, size (0.50, 0.41, 0.62) m``.

Parsing model output (``parse_answer``) is lenient about surrounding words but never guesses:
a choice is accepted when the whole text is one option, or when exactly one option occurs in it as
whole words; a count needs exactly one integer (digits, or a number word up to twenty); a number
exactly one number, with an optional unit that must measure the same quantity (cm converts to m);
a point exactly three numbers, a box exactly six. Anything else raises ``AnswerParseError`` with the
reason; metrics count it as wrong and report how often it happened.

Glossary: P points (3 coordinates).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ANSWER_TYPES: tuple[str, ...] = ("choice", "count", "number", "point", "box")
UNIT_DECIMALS: dict[str, int] = {"m": 2, "deg": 0}
COORD_DECIMALS = 2  # point and box coordinates, metres
# Units a parsed number may carry, as (canonical unit, factor to it).
_UNIT_ALIASES: dict[str, tuple[str, float]] = {
    "m": ("m", 1.0),
    "meter": ("m", 1.0),
    "meters": ("m", 1.0),
    "metre": ("m", 1.0),
    "metres": ("m", 1.0),
    "cm": ("m", 0.01),
    "centimeter": ("m", 0.01),
    "centimeters": ("m", 0.01),
    "centimetre": ("m", 0.01),
    "centimetres": ("m", 0.01),
    "deg": ("deg", 1.0),
    "degree": ("deg", 1.0),
    "degrees": ("deg", 1.0),
    "°": ("deg", 1.0),
}
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty"
).split()
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)")
_UNIT_RE = re.compile(
    r"(?<![a-z])(" + "|".join(sorted(map(re.escape, _UNIT_ALIASES), key=len, reverse=True)) + r")(?![a-z])"
)
RECORD_KEYS: tuple[str, ...] = (
    "id",
    "instance",
    "scene",
    "views",
    "target_view",
    "family",
    "kind",
    "phrasing_id",
    "phrasing_split",
    "split",
    "question",
    "answer",
    "answer_text",
)


class AnswerParseError(ValueError):
    """A text that cannot be read as an answer of the expected type; ``reason`` is a short tag."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(f"{reason}: {text!r:.80}")
        self.reason = reason


def _fixed(x: float, decimals: int) -> float:
    v = round(float(x), decimals)
    return 0.0 if v == 0 else v  # no "-0.00"


@dataclass(frozen=True, kw_only=True)
class Answer:
    """One typed answer. ``value``: str (choice), int (count), float (number), 3 floats (point), or
    ``{"center": 3 floats, "size": 3 floats}`` (box). Values are stored already rounded to the text
    precision. ``options`` lists the valid choices (choice only); ``unit`` is "m" or "deg" (number)."""

    type: str
    value: Any
    unit: str | None = None
    options: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in ANSWER_TYPES:
            raise ValueError(f"Answer.type must be one of {ANSWER_TYPES}, got {self.type!r}")
        if self.type == "choice":
            if not self.options or self.value not in self.options:
                raise ValueError(f"choice answer {self.value!r} must be one of its options {self.options}")
        elif self.options is not None:
            raise ValueError(f"Answer.options is only for choices, got {self.options} for {self.type}")
        if (self.type == "number") != (self.unit is not None) or (
            self.unit is not None and self.unit not in UNIT_DECIMALS
        ):
            raise ValueError(f"Answer.unit: numbers need one of {tuple(UNIT_DECIMALS)}, got {self.unit!r}")
        if self.type == "count" and (not isinstance(self.value, int) or self.value < 0):
            raise ValueError(f"count answers are non-negative integers, got {self.value!r}")

    @property
    def text(self) -> str:
        return format_answer(self)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "value": self.value}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.options is not None:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Answer:
        t = d.get("type")
        value = d.get("value")
        if t == "point":
            value = [float(v) for v in value]
        elif t == "box":
            value = {"center": [float(v) for v in value["center"]], "size": [float(v) for v in value["size"]]}
        options = tuple(d["options"]) if d.get("options") is not None else None
        return cls(type=t, value=value, unit=d.get("unit"), options=options)


def choice_answer(value: str, options: Iterable[str]) -> Answer:
    return Answer(type="choice", value=value, options=tuple(options))


def count_answer(n: int) -> Answer:
    return Answer(type="count", value=int(n))


def number_answer(x: float, unit: str) -> Answer:
    if unit not in UNIT_DECIMALS:
        raise ValueError(f"unit must be one of {tuple(UNIT_DECIMALS)}, got {unit!r}")
    return Answer(type="number", value=_fixed(x, UNIT_DECIMALS[unit]), unit=unit)


def point_answer(xyz: Sequence[float]) -> Answer:
    if len(xyz) != 3:
        raise ValueError(f"a point has 3 coordinates, got {len(xyz)}")
    return Answer(type="point", value=[_fixed(v, COORD_DECIMALS) for v in xyz])


def box_answer(center: Sequence[float], size: Sequence[float]) -> Answer:
    if len(center) != 3 or len(size) != 3 or min(size) < 0:
        raise ValueError(f"a box has a 3D centre and 3 non-negative extents, got {center}, {size}")
    return Answer(
        type="box",
        value={
            "center": [_fixed(v, COORD_DECIMALS) for v in center],
            "size": [_fixed(v, COORD_DECIMALS) for v in size],
        },
    )


def _coords(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.{COORD_DECIMALS}f}" for v in values) + ")"


def format_answer(answer: Answer) -> str:
    """The canonical answer text (see the module docstring)."""
    if answer.type == "choice":
        return str(answer.value)
    if answer.type == "count":
        return str(answer.value)
    if answer.type == "number":
        return (
            f"{_fixed(answer.value, UNIT_DECIMALS[answer.unit]):.{UNIT_DECIMALS[answer.unit]}f} {answer.unit}"
        )
    if answer.type == "point":
        return f"{_coords(answer.value)} m"
    return f"center {_coords(answer.value['center'])} m, size {_coords(answer.value['size'])} m"


def _normalise(text: str) -> str:
    text = text.strip().lower().replace("\u2212", "-")
    text = re.sub(r"\s+", " ", text)
    return text.strip(" .!?;:\"'")


def _parse_choice(text: str, options: Sequence[str]) -> str:
    t = _normalise(text)
    for prefix in ("the ", "a ", "an "):
        t_stripped = t.removeprefix(prefix)
        if t_stripped in options:
            return t_stripped
    found = [o for o in options if re.search(r"(?<![a-z])" + re.escape(o) + r"(?![a-z])", t)]
    # "in front" also contains "front": keep only options not contained in another found option
    found = [o for o in found if not any(o != p and o in p for p in found)]
    if len(found) == 1:
        return found[0]
    raise AnswerParseError("no option" if not found else "several options", text)


def _numbers(text: str) -> list[float]:
    return [float(m) for m in _NUMBER_RE.findall(text.replace(",", ", "))]


def _parse_count(text: str) -> int:
    t = _normalise(text)
    nums = _NUMBER_RE.findall(t)
    words = [w for w in re.findall(r"[a-z]+", t) if w in _NUMBER_WORDS]
    if len(nums) + len(words) != 1:
        raise AnswerParseError("no count" if not nums and not words else "several numbers", text)
    if words:
        return _NUMBER_WORDS.index(words[0])
    x = float(nums[0])
    if x < 0 or x != int(x):
        raise AnswerParseError("count not a non-negative integer", text)
    return int(x)


def _parse_number(text: str, unit: str) -> float:
    t = _normalise(text)
    nums = _numbers(t)
    if len(nums) != 1:
        raise AnswerParseError("no number" if not nums else "several numbers", text)
    units = {_UNIT_ALIASES[u] for u in _UNIT_RE.findall(t)}
    if len(units) > 1:
        raise AnswerParseError("several units", text)
    factor = 1.0
    if units:
        ((canonical, factor),) = units
        if canonical != unit:
            raise AnswerParseError(f"wrong unit (expected {unit})", text)
    return nums[0] * factor


def parse_answer(
    text: str, answer_type: str, *, unit: str | None = None, options: Sequence[str] | None = None
) -> Answer:
    """Read ``text`` as an answer of ``answer_type`` (with the ground truth's ``unit`` / ``options``).

    Raises ``AnswerParseError`` (a ValueError with a ``reason`` tag) when the text is unparseable.
    Numbers keep the precision written (not re-rounded), so a model's extra decimals are scored.
    """
    if not isinstance(text, str):
        raise AnswerParseError("not a string", repr(text))
    if answer_type == "choice":
        if not options:
            raise ValueError("parse_answer: choices need the options")
        return choice_answer(_parse_choice(text, options), options)
    if answer_type == "count":
        return count_answer(_parse_count(text))
    if answer_type == "number":
        if unit not in UNIT_DECIMALS:
            raise ValueError(f"parse_answer: numbers need a unit in {tuple(UNIT_DECIMALS)}, got {unit!r}")
        return Answer(type="number", value=_parse_number(text, unit), unit=unit)
    if answer_type in ("point", "box"):
        nums = _numbers(_normalise(text))
        need = 3 if answer_type == "point" else 6
        if len(nums) != need:
            raise AnswerParseError(f"expected {need} numbers, got {len(nums)}", text)
        if not all(math.isfinite(v) for v in nums):
            raise AnswerParseError("non-finite number", text)
        if answer_type == "point":
            return Answer(type="point", value=nums)
        if min(nums[3:]) < 0:
            raise AnswerParseError("negative box size", text)
        return Answer(type="box", value={"center": nums[:3], "size": nums[3:]})
    raise ValueError(f"parse_answer: unknown answer type {answer_type!r}; choose from {ANSWER_TYPES}")


def parse_like(text: str, truth: Answer) -> Answer:
    """``parse_answer`` with the type, unit and options of a ground-truth answer."""
    return parse_answer(text, truth.type, unit=truth.unit, options=truth.options)


@dataclass(frozen=True, kw_only=True)
class QARecord:
    """One question about one scene. ``views``: the view indices the model observes (one, or two for
    camera motion); ``target_view``: the view a described motion leads to (visibility questions, where
    it is NOT shown), else None. ``instance`` is shared by the train- and held-out-phrased copies of one
    question; ``id`` is unique per record. ``split``: the scene's train/val split."""

    id: str
    instance: str
    scene: str
    views: tuple[int, ...]
    family: str
    kind: str
    phrasing_id: str
    phrasing_split: str  # "train" or "heldout"
    split: str  # "train" or "val"
    question: str
    answer: Answer
    target_view: int | None = None
    # role -> the objects the question is about, as indices into the scene's objects metadata (the ids of
    # its instance masks minus one): "a" / "b" the objects it names, "counted" the objects a count
    # counts, "answer" the object a which-object answer names; {} for questions about the camera alone.
    # Training targets (gst.data.cell_labels gives the cells that show each object); optional when read.
    objects: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # role -> the words of the question that name its objects ("the red box"; "red objects" for a count):
    # which question words refer to which object, a training target; optional when read.
    references: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # not serialised; generator diagnostics

    @property
    def answer_text(self) -> str:
        return format_answer(self.answer)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instance": self.instance,
            "scene": self.scene,
            "views": list(self.views),
            "target_view": self.target_view,
            "family": self.family,
            "kind": self.kind,
            "phrasing_id": self.phrasing_id,
            "phrasing_split": self.phrasing_split,
            "split": self.split,
            "question": self.question,
            "answer": self.answer.to_json(),
            "answer_text": self.answer_text,
            "objects": {role: list(idx) for role, idx in self.objects.items()},
            "references": dict(self.references),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QARecord:
        missing = [k for k in RECORD_KEYS if k not in d]
        if missing:
            raise ValueError(f"QA record lacks the field(s) {missing}")
        return cls(
            id=str(d["id"]),
            instance=str(d["instance"]),
            scene=str(d["scene"]),
            views=tuple(int(v) for v in d["views"]),
            target_view=None if d["target_view"] is None else int(d["target_view"]),
            family=str(d["family"]),
            kind=str(d["kind"]),
            phrasing_id=str(d["phrasing_id"]),
            phrasing_split=str(d["phrasing_split"]),
            split=str(d["split"]),
            question=str(d["question"]),
            answer=Answer.from_json(d["answer"]),
            objects={str(role): tuple(int(i) for i in idx) for role, idx in d.get("objects", {}).items()},
            references={str(role): str(text) for role, text in d.get("references", {}).items()},
        )


def write_jsonl(records: Iterable[QARecord], path: str | Path) -> int:
    """Write records one JSON object per line; returns the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[QARecord]:
    """Read a QA JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such QA file (make one with `gst data qa`)")
    records = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = QARecord.from_json(json.loads(line))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{i}: not a QA record ({err})") from None
            if rec.answer_text != json.loads(line).get("answer_text"):
                raise ValueError(f"{path}:{i}: answer_text does not match the typed answer; regenerate")
            records.append(rec)
    return records
