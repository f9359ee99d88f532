"""Typed QA answers: canonical text, parsing back, failure handling, JSONL records (gst.data.qa_types)."""

from __future__ import annotations

import json

import pytest

from gst.data.qa_types import (
    Answer,
    AnswerParseError,
    QARecord,
    box_answer,
    choice_answer,
    count_answer,
    format_answer,
    number_answer,
    parse_answer,
    parse_like,
    point_answer,
    read_jsonl,
    write_jsonl,
)

ANSWERS = [
    choice_answer("in front", ("in front", "behind")),
    choice_answer("red box", ("blue sphere", "red box")),
    count_answer(0),
    count_answer(7),
    number_answer(1.2549, "m"),
    number_answer(-0.001, "m"),
    number_answer(35.4, "deg"),
    point_answer([0.123, -0.3049, 2.456]),
    point_answer([-0.0001, 0.0, 1.0]),
    box_answer([0.1, -0.2, 3.0], [0.5, 0.41, 0.62]),
]


def test_canonical_text() -> None:
    texts = [format_answer(a) for a in ANSWERS]
    assert texts == [
        "in front",
        "red box",
        "0",
        "7",
        "1.25 m",
        "0.00 m",
        "35 deg",
        "(0.12, -0.30, 2.46) m",
        "(0.00, 0.00, 1.00) m",
        "center (0.10, -0.20, 3.00) m, size (0.50, 0.41, 0.62) m",
    ]


@pytest.mark.parametrize("answer", ANSWERS, ids=lambda a: format_answer(a))
def test_parse_format_round_trip(answer: Answer) -> None:
    assert parse_like(format_answer(answer), answer) == answer
    assert Answer.from_json(json.loads(json.dumps(answer.to_json()))) == answer


def test_lenient_parsing_of_model_text() -> None:
    lr = ("left", "right")
    assert parse_answer("The red box is to the LEFT.", "choice", options=lr).value == "left"
    assert parse_answer("in front of it", "choice", options=("in front", "behind")).value == "in front"
    assert parse_answer("the red box", "choice", options=("red box", "blue sphere")).value == "red box"
    assert parse_answer("There are three.", "count").value == 3
    assert parse_answer("about 4 objects", "count").value == 4
    assert parse_answer("roughly 1.5 metres", "number", unit="m").value == 1.5
    assert parse_answer("150 cm", "number", unit="m").value == pytest.approx(1.5)
    assert parse_answer("turned 35 degrees", "number", unit="deg").value == 35.0
    assert parse_answer("2", "number", unit="m").value == 2.0  # no unit: the expected one
    assert parse_answer("x=0.1 y=-0.2 z=3", "point").value == [0.1, -0.2, 3.0]
    box = parse_answer("center (0, 0, 2) size (1, 1, 1)", "box")
    assert box.value == {"center": [0.0, 0.0, 2.0], "size": [1.0, 1.0, 1.0]}


@pytest.mark.parametrize(
    "text, kind, kwargs, reason",
    [
        ("left or right", "choice", {"options": ("left", "right")}, "several options"),
        ("up", "choice", {"options": ("left", "right")}, "no option"),
        ("2 or 3", "count", {}, "several numbers"),
        ("many", "count", {}, "no count"),
        ("2.5", "count", {}, "count not a non-negative integer"),
        ("far", "number", {"unit": "m"}, "no number"),
        ("35 degrees", "number", {"unit": "m"}, "wrong unit (expected m)"),
        ("1 m or 2 m", "number", {"unit": "m"}, "several numbers"),
        ("(1, 2)", "point", {}, "expected 3 numbers, got 2"),
        ("center (0, 0, 2) size (1, -1, 1)", "box", {}, "negative box size"),
    ],
)
def test_unparseable_answers_raise_with_reason(text: str, kind: str, kwargs: dict, reason: str) -> None:
    with pytest.raises(AnswerParseError) as err:
        parse_answer(text, kind, **kwargs)
    assert err.value.reason == reason


def test_invalid_answers_rejected() -> None:
    with pytest.raises(ValueError, match="must be one of its options"):
        choice_answer("up", ("left", "right"))
    with pytest.raises(ValueError, match="non-negative"):
        count_answer(-1)
    with pytest.raises(ValueError, match="unit"):
        number_answer(1.0, "ft")


def test_jsonl_round_trip_and_errors(tmp_path) -> None:
    rec = QARecord(
        id="s/rel_lr/0/t",
        instance="s/rel_lr/0",
        scene="s",
        views=(3,),
        family="relative_direction",
        kind="rel_lr",
        phrasing_id="rel_lr/t1",
        phrasing_split="train",
        split="val",
        question="Is the red box left or right of the blue sphere?",
        answer=choice_answer("left", ("left", "right")),
    )
    path = tmp_path / "qa.jsonl"
    assert write_jsonl([rec], path) == 1
    line = json.loads(path.read_text())
    assert line["answer_text"] == "left" and line["answer"] == {
        "type": "choice",
        "value": "left",
        "options": ["left", "right"],
    }
    assert read_jsonl(path) == [rec]
    bad = dict(line, answer_text="right")
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"qa.jsonl:1: answer_text does not match"):
        read_jsonl(path)
    path.write_text(json.dumps({"id": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"qa.jsonl:1: not a QA record"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="gst data qa"):
        read_jsonl(tmp_path / "missing.jsonl")
