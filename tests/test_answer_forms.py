"""The answer forms that route chat questions to the answer reader (gst.model.answer_forms,
gst.eval.qa_reader.ChatRouter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gst.data.qa_types import QARecord, choice_answer, count_answer, number_answer
from gst.eval.qa_reader import ChatRouter
from gst.model.answer_forms import ANSWER_FORMS_FILE, AnswerForm, AnswerForms, question_words


def _record(i: int, kind: str, question: str, answer, views=(0,), phrasing_split="train", target_view=None):
    return QARecord(
        id=f"r{i}", instance=f"r{i}", scene="s", views=views, family="f", kind=kind, phrasing_id=f"{kind}/t0",
        phrasing_split=phrasing_split, split="train", question=question, answer=answer,
        target_view=target_view,
    )  # fmt: skip


def _records() -> list[QARecord]:
    lr = choice_answer("left", ("left", "right"))
    colours = [choice_answer(c, ("blue", "green", "red")) for c in ("red", "green")]  # one option set
    near = [
        choice_answer("red box", ("blue cone", "red box")),
        choice_answer("red cone", ("red box", "red cone")),
    ]
    move = number_answer(1.2, "m")
    return [
        _record(0, "count", "How many objects are there?", count_answer(3)),
        _record(1, "count", "How many red objects can you see?", count_answer(1)),
        _record(2, "attr_color", "What colour is the box?", colours[0]),
        _record(3, "attr_color", "What is the colour of the sphere?", colours[1]),
        _record(4, "cm_move_dist", "How far did the camera move between the two images?", move, views=(0, 1)),
        _record(5, "rel_lr", "Is the box to the left or the right of the sphere?", lr),
        _record(6, "rel_lr", "Is the cone left or right of the box?", lr, phrasing_split="heldout"),  # unfit
        # which object: the options are the labels of the objects of each record's scene
        _record(7, "nf_camera", "Which object is nearest to the camera?", near[0]),
        _record(8, "nf_camera", "Which object is closest to the camera?", near[1]),
        _record(9, "vis_which", "The camera turns left. What appears?", near[0], target_view=1),
        _record(10, "vis_which", "The camera turns right. What appears?", near[1], target_view=1),
    ]  # fmt: skip


def test_answer_forms_name_the_kind_and_its_form(tmp_path) -> None:
    assert question_words("Turn 35 degrees, then 0.8 m?") == [
        "turn",
        "0",
        "degrees",
        ",",
        "then",
        "0",
        "m",
        "?",
    ]
    forms = AnswerForms.fit(_records())
    assert forms.forms["count"] == AnswerForm("count", None, 1)
    assert forms.forms["attr_color"] == AnswerForm("choice", None, 1, ("blue", "green", "red"))  # all, sorted
    assert forms.forms["cm_move_dist"] == AnswerForm("number", "m", 2)
    assert forms.forms["nf_camera"] == AnswerForm("choice", None, 1, ("blue cone", "red box", "red cone"))
    kind, prob, evidence = forms.classify("How many boxes are there?")
    assert kind == "count" and 0.5 < prob <= 1.0 and evidence > 0
    assert forms.classify("What colour is the cone?")[0] == "attr_color"
    # words every kind uses alike are no evidence: not routed; neither is a question of no known word
    assert forms.classify("the ?")[2] < 1.0 and forms.route("the ?") is None
    assert forms.route("Hello there!") is None
    # saved as JSON in a folder and read back the same
    path = forms.save(tmp_path)
    assert path == tmp_path / ANSWER_FORMS_FILE
    loaded = AnswerForms.load(tmp_path)
    assert loaded.forms == forms.forms
    assert loaded.classify("How far did the camera move?") == forms.classify("How far did the camera move?")
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "format_version": 99}))
    with pytest.raises(ValueError, match="answer_forms.json.*gst train answer-forms"):
        AnswerForms.load(path)
    with pytest.raises(ValueError, match="no records in training phrasings"):
        AnswerForms.fit([r for r in _records() if r.phrasing_split == "heldout"])


def test_chat_router_asks_the_reader_in_the_recognised_form() -> None:
    class Reader:  # the answer reader's ``ask``, recorded
        def __init__(self):
            self.calls = []

        def ask(self, question, images, answer_type, unit=None, options=None):
            self.calls.append((answer_type, unit, options, len(images)))
            return "ok"

    forms, reader = AnswerForms.fit(_records()), Reader()
    forms.min_evidence = 1.0  # seven training questions give little evidence (``ROUTE_MIN_EVIDENCE``: 4 nats)
    route = ChatRouter(reader, forms)
    assert route("How many objects are there?", ["a.png"]) == "ok"
    assert route("What colour is the box?", ["a.png"]) == "ok"
    # a two-view kind with one image, a one-view kind with two, an unrecognised question: the model answers
    assert route("How far did the camera move between the two images?", ["a.png"]) is None
    assert route("How many objects are there?", ["a.png", "b.png"]) is None
    assert route("Hello there!", ["a.png"]) is None
    # which object: every label its training records offer (a chat knows no scene's objects), or the two
    # the question names
    assert route("Which object is nearest to the camera?", ["a.png"]) == "ok"
    assert route("Which object, the red cone or the blue cone, is nearest to the camera?", ["a.png"]) == "ok"
    assert reader.calls == [
        ("count", None, None, 1),
        ("choice", None, ("blue", "green", "red"), 1),
        ("choice", None, ("blue cone", "red box", "red cone"), 1),
        ("choice", None, ("blue cone", "red cone"), 1),
    ]


def test_shipped_chat_routes_spatial_questions_to_the_answer_reader() -> None:
    from gst.api import GST
    from gst.eval.qa_reader import chat_router

    root = Path(__file__).resolve().parents[1] / "assets"
    gst = GST.from_pretrained(root / "gst-tiny")
    session = gst.start_chat(max_new_tokens=4, router=chat_router(gst))
    count = session.ask("How many objects are there in the image?", [root / "examples" / "view_a.png"])
    assert count.answered_by == "answer-reader" and count.text.isdigit()
    colour = session.ask("What colour is the box?")  # the same image, from the history
    assert (
        colour.answered_by == "answer-reader"
        and colour.text in AnswerForms.load(root / "gst-tiny" / "answer_reader").forms["attr_color"].options
    )
    assert session.ask("Describe the scene.").answered_by == "model"
