"""The answer reader (gst.model.answer_reader, gst.training.answer_reader): the pointer targets (cells
that show each role's objects), the network with pointers, the typed numeric readout, the export."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gst.cli import main as cli_main
from gst.data.chat_cache import open_chat_cache, view_elevations
from gst.data.loaders import load_scene
from gst.data.qa_geometry import camera_motion, to_camera
from gst.data.qa_types import box_answer, choice_answer, number_answer, parse_like, point_answer
from gst.model import answer_geometry as geo
from gst.model import answer_inputs as reader_inputs
from gst.model import answer_numbers as numbers
from gst.model import answer_reader as reader
from gst.model import answer_reader_io as reader_io
from gst.training.answer_reader import dropped_words, grown, pointer_targets, training_loss

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "gst-tiny"


def _net(**kw) -> reader.AnswerReader:
    config = {"text_vocab": 10, "question_vocab": 6, "feat": 5, "cells": 4, "width": 16, "layers": 1, **kw}
    return reader.AnswerReader(reader.AnswerReaderConfig(**config))


def _records() -> dict:
    """Two records over three views of four cells: record 0 asks about object 1 (role a) and counts
    objects 0 and 2 in view 0; record 1 shows views 1 and 2 and names object 2 as role b."""
    R, K = len(reader.ROLES), reader.MAX_OBJECTS
    refs = torch.full((2, R, K), -2)
    has_role = torch.zeros(2, R, dtype=torch.bool)
    a, b, counted = (reader.ROLES.index(r) for r in ("a", "b", "counted"))
    refs[0, a, 0], has_role[0, a] = 1, True
    refs[0, counted, :2], has_role[0, counted] = torch.tensor([0, 2]), True
    refs[1, b, 0], has_role[1, b] = 2, True
    return {
        "cell_objects": torch.tensor([[-1, 1, 0, 2], [2, 2, -1, -1], [-1, 0, 2, 1]]),  # (M, n)
        "views": torch.tensor([[0, 0], [1, 2]]),
        "shown": torch.tensor([[True, False], [True, True]]),
        "refs": refs,
        "has_role": has_role,
    }


def _question_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Question ids, zero poses and random cells for the two records of ``_records``."""
    return (
        torch.tensor([[2, 3, 4, 0], [5, 2, 0, 0]]),
        torch.zeros(2, reader.POSE_DIMS),
        torch.randn(2, 2, 4, 5),
    )


def test_pointer_targets_mark_the_cells_of_each_role() -> None:
    d = _records()
    hit, defined = pointer_targets(d, torch.arange(2))
    assert hit.shape == defined.shape == (2, 8, len(reader.ROLES))
    a, b, counted = (reader.ROLES.index(r) for r in ("a", "b", "counted"))
    assert hit[0, :4, a].tolist() == [0, 1, 0, 0]
    assert hit[0, :4, counted].tolist() == [0, 0, 1, 1]
    assert hit[1, :, b].tolist() == [1, 1, 0, 0, 0, 0, 1, 0]  # object 2 in both views
    # defined: the role exists and the view is shown
    assert defined[0, :, a].tolist() == [True] * 4 + [False] * 4
    assert not defined[0, :, b].any() and defined[1, :, b].all() and not defined[1, :, a].any()


def test_answer_net_pools_the_oracle_cells_into_object_tokens() -> None:
    torch.manual_seed(0)
    d = _records()
    net = _net(pointer_layers=1).eval()
    q = torch.tensor([[2, 3, 4, 0], [5, 2, 0, 0]])
    cells = torch.randn(2, 2, 4, 5)
    pose = torch.zeros(2, 13)
    logits, ptr, values, *_ = net(q, cells, d["shown"], pose, num_slots=3)
    assert values is None  # no numeric head
    assert logits.shape == (2, 3, 12) and ptr.shape == (2, 8, len(reader.ROLES))
    hit, _ = pointer_targets(d, torch.arange(2))
    with torch.no_grad():
        oracle_logits, oracle_ptr, *_ = net(q, cells, d["shown"], pose, num_slots=3, oracle=hit)
    assert torch.allclose(oracle_ptr, ptr, atol=1e-5)  # the same pointer logits; only the pooling changes
    assert not torch.allclose(oracle_logits, logits)
    # oracle_rows picks the records that pool the true cells: record 0 as with the oracle, record 1 not
    with torch.no_grad():
        mixed = net(q, cells, d["shown"], pose, None, 3, hit, torch.tensor([True, False]))[0]
    assert torch.allclose(mixed[0], oracle_logits[0], atol=1e-6) and torch.allclose(
        mixed[1], logits[1], atol=1e-6
    )
    # a view not shown never enters the pool: its cells' features do not change the answer
    moved = cells.clone()
    moved[0, 1] += 5.0
    assert torch.allclose(
        net(q, moved, d["shown"], pose, num_slots=3, oracle=hit)[0], oracle_logits, atol=1e-6
    )
    # without pointer layers the network has no pointer output
    plain = _net()
    assert plain(q, cells, d["shown"], pose, num_slots=2)[1] is None


def test_query_pointers_and_numeric_head_shapes() -> None:
    torch.manual_seed(0)
    d = _records()
    net = _net(pointer_layers=1, pointer_match="query", numeric_head=True).eval()
    q = torch.tensor([[2, 3, 4, 0], [5, 2, 0, 0]])
    logits, ptr, values, *_ = net(q, torch.randn(2, 2, 4, 5), d["shown"], torch.zeros(2, 13), num_slots=3)
    assert logits.shape == (2, 3, 12) and ptr.shape == (2, 8, len(reader.ROLES))
    assert values.shape == (2, numbers.NUMERIC_DIMS + reader.NUMBER_BINS.num_tokens)
    # a role's logits differ between the two questions: the role queries read the question
    assert not torch.allclose(ptr[0, :4], ptr[1, :4])


def test_numeric_targets_round_trip_to_answer_text() -> None:
    G = reader.NUMBER_BINS.num_tokens
    cases = [
        (number_answer(4.54, "m"), [np.log(4.54)], slice(0, 1)),
        (number_answer(79, "deg"), [np.log(79.0)], slice(0, 1)),
        (point_answer([-1.06, 0.49, 3.24]), [-1.06, 0.49, 3.24], slice(1, 4)),
        (
            box_answer([0.3, -0.77, 3.98], [0.37, 0.78, 0.97]),
            [0.3, -0.77, 3.98, *np.log([0.37, 0.78, 0.97])],
            slice(4, 10),
        ),
    ]
    for answer, values, where in cases:
        target, defined, token = numbers.numeric_target(answer)
        assert np.allclose(target[where], values, atol=1e-6)
        assert defined[where].all() and defined.sum() == len(values) and not target[~defined].any()
        out = np.concatenate([target, np.zeros(G, np.float32)])
        text = numbers.numeric_text(answer, out)  # a number from its regressed log
        assert text == answer.text and parse_like(text, answer) == answer
        if answer.type == "number":
            assert token == reader.NUMBER_BINS.token(answer.value) and 1 <= token < G
            out[numbers.NUMERIC_DIMS + token] = 20.0  # the bins, all belief on the answer's bin
            value = parse_like(numbers.numeric_text(answer, out, bins=True), answer).value
            assert abs(value - answer.value) / answer.value < 0.05  # within the bins' worst relative error
        else:
            assert token == numbers.IGNORE
    # --unit-bins: one set of bins per unit; a distance reads the metre set, whatever the degree set says
    answer = number_answer(2.0, "m")
    token = reader.NUMBER_BINS.token(2.0)
    out = np.zeros(numbers.NUMERIC_DIMS + len(numbers.UNITS) * G, np.float32)
    out[numbers.NUMERIC_DIMS + numbers.UNITS.index("deg") * G + reader.NUMBER_BINS.token(50.0)] = 30.0
    out[numbers.NUMERIC_DIMS + numbers.UNITS.index("m") * G + token] = 20.0
    value = parse_like(numbers.numeric_text(answer, out, bins=True), answer).value
    assert abs(value - 2.0) / 2.0 < 0.05
    target, defined, token = numbers.numeric_target(choice_answer("left", ["left", "right"]))
    assert not defined.any() and not target.any() and token == numbers.IGNORE


def _record(question: str, answer) -> object:
    from gst.data.qa_types import QARecord

    return QARecord(
        id="r", instance="i", scene="s", views=(0,), family="f", kind="k", phrasing_id="p",
        phrasing_split="train", split="val", question=question, answer=answer,
    )  # fmt: skip


class _Reader(torch.nn.Module):
    """A stand-in pose reader: per-cell features of a code grid are the code's one-hot (5 codes, 4 cells)
    and its pair readout the sum of both grids' codes in every pose slot."""

    def grid_features(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(codes, 5).float().transpose(1, 2).reshape(len(codes), 5, 2, 2)

    def cell_predictions(self, grid: torch.Tensor) -> dict:
        n = grid.shape[-1] * grid.shape[-2]
        zeros = torch.zeros(len(grid), n)
        return {"object": zeros, "shape": zeros[..., None], "colour": zeros[..., None],
                "centre": zeros[..., None].expand(-1, -1, 3), "log_depth": zeros}  # fmt: skip

    def read_pairs(self, obs: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        return (obs + tgt).sum(1, keepdim=True).float().expand(-1, reader.POSE_DIMS)


def _look(yaw: float, pitch: float, eye: list[float]) -> np.ndarray:
    """A world-to-camera matrix (OpenCV) at ``eye`` with heading ``yaw`` and elevation ``pitch`` (radians,
    world +z up). Shapes: -> (4, 4)."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rot = np.stack([right, np.cross(f, right), f])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = rot, -rot @ np.array(eye)
    return w2c


def test_motion_token_moves_the_pooled_object_into_the_camera_after_the_motion() -> None:
    """--motion-token: the stated motion parsed from the question; role a's pooled centre moved by it is
    where the target camera sees the object when the cameras are level."""
    motion = geo.stated_motions(["The camera turns 90 degrees to the left and moves 1.0 m forward.", "Hi?"])
    assert motion.tolist() == [[1.0, 90.0, 0.0, 1.0, 0.0, 0.0], [0.0] * geo.STATED_DIMS]
    # an object 2 m ahead: after stepping 1 m forward and turning left by 90 degrees it is 1 m to the right
    raw = torch.zeros(2, len(reader.ROLES), 7)
    a = reader.ROLES.index("a")
    raw[:, a, 1:4] = torch.tensor([0.0, 0.0, 2.0])
    feats = geo.motion_features(motion, raw, torch.ones(2, len(reader.ROLES)))
    assert feats.shape == (2, geo.MOTION_DIMS)
    assert torch.allclose(feats[0, 8:11], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # x right, in the plane
    assert feats[0, 13] == 0 and feats[1, 13] == 1  # behind / still in front
    assert torch.allclose(feats[1, 8:11], torch.tensor([0.0, 0.0, 2.0]))  # no motion stated: where it was
    # a level camera turned, tilted and moved: the moved centre is the object in the target camera's frame
    yaw0 = 0.3
    cams = [_look(yaw0, 0.0, [0.0, 0.0, 1.0]), _look(1.2, 0.2, [1.0, -0.5, 1.5])]
    m = camera_motion(cams[0], cams[1])
    point = np.array([[2.0, 1.0, 0.5]])
    raw[0, a, 1:4] = torch.tensor(to_camera(cams[0], point)[0], dtype=torch.float32)
    stated = torch.tensor([[1.0, m.turn_left_deg, m.tilt_up_deg, m.forward_m, m.left_m, m.up_m]])
    moved = geo.motion_features(stated, raw[:1], torch.ones(1, len(reader.ROLES)))[0, 8:11]
    assert torch.allclose(moved, torch.tensor(to_camera(cams[1], point)[0], dtype=torch.float32), atol=1e-5)
    # a camera looking 30 degrees down: exact given its elevation (--elevation-head), off taken as level
    cams[0] = _look(yaw0, -np.pi / 6, [0.0, 0.0, 1.0])
    m = camera_motion(cams[0], cams[1])
    raw[0, a, 1:4] = torch.tensor(to_camera(cams[0], point)[0], dtype=torch.float32)
    stated = torch.tensor([[1.0, m.turn_left_deg, m.tilt_up_deg, m.forward_m, m.left_m, m.up_m]])
    target = torch.tensor(to_camera(cams[1], point)[0], dtype=torch.float32)
    ones = torch.ones(1, len(reader.ROLES))
    moved = geo.motion_features(stated, raw[:1], ones, torch.tensor([-30.0]))[0, 8:11]
    assert torch.allclose(moved, target, atol=1e-5)
    assert not torch.allclose(geo.motion_features(stated, raw[:1], ones)[0, 8:11], target, atol=0.1)
    # the network reads the token; grown from a reader without it, every weight is kept and its last
    # layer starts at zero; it needs the stated motions
    torch.manual_seed(0)
    d = _records()
    net = _net(pointer_layers=1, pointer_match="query", motion_token=True).eval()
    q, pose, cells = _question_inputs()
    with torch.no_grad():
        logits = net(q, cells, d["shown"], pose, motion, num_slots=3).logits
        assert not torch.allclose(net(q, cells, d["shown"], pose, motion * 2, num_slots=3).logits, logits)
    with pytest.raises(ValueError, match="stated motions"):
        net(q, cells, d["shown"], pose, num_slots=3)
    with pytest.raises(ValueError, match="motion_token"):
        _net(motion_token=True)
    plain = _net(pointer_layers=1, pointer_match="query")
    more = grown(plain, replace(plain.config, motion_token=True))
    kept = more.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in plain.state_dict().items())
    assert not more.motion_in[-1].weight.any() and not more.motion_in[-1].bias.any()
    # the elevation head, grown, starts at 0 degrees: the camera taken as level, the token as before
    tilted = grown(more, replace(more.config, elevation_head=True)).eval()
    with torch.no_grad():
        out, before = (
            tilted(q, cells, d["shown"], pose, motion, num_slots=3),
            more.eval()(q, cells, d["shown"], pose, motion, num_slots=3),
        )
    assert out.elevation.tolist() == [0.0, 0.0] and torch.allclose(out.logits, before.logits)
    with pytest.raises(ValueError, match="elevation_head"):
        _net(pointer_layers=1, pointer_match="query", elevation_head=True)


def test_encode_records_reads_questions_views_and_pairs() -> None:
    vocab = {"how": 2, "far": 3, "?": 4}
    q = reader_inputs.encode_questions(["How far away?", "far"], vocab)
    assert q.shape == (2, reader.MAX_QUESTION)
    assert q[0, :5].tolist() == [2, 3, 1, 4, 0] and q[1, :2].tolist() == [3, 0]  # "away": unknown (1)
    codes = np.array([[[0, 1], [2, 3]], [[4, 4], [0, 0]], [[1, 1], [1, 1]]], np.uint16)  # (M=3, 2, 2)
    records = [_record("how far ?", number_answer(2.0, "m"))] * 2
    d = reader_inputs.encode_records(records, [[2], [0, 1]], codes, _Reader(), vocab)
    assert d["views"].tolist() == [[2, 0], [0, 1]] and d["shown"].tolist() == [[True, False], [True, True]]
    assert d["pose"][0].abs().sum() == 0 and d["pose"][1].tolist() == [14.0] * reader.POSE_DIMS
    # features: 5 one-hot channels + object + shape + colour + centre (3) + log depth
    assert d["feats"].shape == (3, 4, 5 + 1 + 1 + 1 + 3 + 1)
    assert d["feats"][0, :, :5].argmax(-1).tolist() == [0, 1, 2, 3]


def test_answer_reader_saves_and_loads(tmp_path) -> None:
    torch.manual_seed(0)
    net = _net(pointer_layers=1, pointer_match="query", numeric_head=True, unit_bins=True).eval()
    vocab = {"how": 2, "far": 3, "?": 4, "left": 5}
    out = reader_io.save_answer_reader(net, vocab, tmp_path / "ar", {"note": "test"})
    loaded, vocab2, info = reader_io.load_answer_reader(out)
    assert vocab2 == vocab and info["metadata"] == {"note": "test"} and loaded.config == net.config
    q = torch.tensor([[2, 3, 4, 0]])
    args = (q, torch.randn(1, 2, 4, 5), torch.tensor([[True, True]]), torch.randn(1, reader.POSE_DIMS))
    for a, b in zip(net(*args), loaded(*args), strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert not (tmp_path / "ar.tmp").exists()
    with pytest.raises(ValueError, match="question word ids"):
        reader_io.save_answer_reader(net, {"how": 2}, tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="answer_reader.json"):
        reader_io.load_answer_reader(tmp_path)
    meta = out / reader.ANSWER_READER_FILE
    meta.write_text(meta.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(ValueError, match="version 99"):
        reader_io.load_answer_reader(out)
    body = json.loads(meta.read_text().replace('"format_version": 99', '"format_version": 1'))
    meta.write_text(json.dumps({**body, "config": {**body["config"], "retired_option": False}}))
    with pytest.raises(ValueError, match=r"\['retired_option'\] are not options"):
        reader_io.load_answer_reader(out)


def test_answer_picks_candidates_and_reads_numbers() -> None:
    torch.manual_seed(0)
    text = reader_inputs.text_tokenizer()
    config = reader.AnswerReaderConfig(
        text_vocab=text.vocab_size, question_vocab=6, feat=12, cells=4, width=16, layers=1, numeric_head=True
    )
    net = reader.AnswerReader(config)
    records = [
        _record("how far ?", number_answer(2.0, "m")),
        _record("left or right ?", choice_answer("left", ["left", "right"])),
        _record("where ?", point_answer([0.5, -0.25, 3.0])),
    ]
    d = reader_inputs.encode_records(
        records, [[0]] * 3, np.zeros((1, 2, 2), np.uint16), _Reader(), {"how": 2, "far": 3, "?": 4, "left": 5}
    )
    texts = reader.answer(net, d, text)
    assert texts[1] in ("left", "right")
    assert parse_like(texts[0], records[0].answer).unit == "m"  # a number in the question's unit
    assert parse_like(texts[2], records[2].answer).type == "point"
    # the candidate whose tokens the slots favour is the answer: bias the output towards "right"
    right = text.encode("right") + [text.vocab_size + 1]
    with torch.no_grad():
        net.out[1].bias[right[0]] += 50.0
    assert reader.answer(net, d, text)[1] == "right"


def test_softmax_pool_ignores_hidden_views_and_code_features_widen_cells() -> None:
    torch.manual_seed(0)
    d = _records()
    net = _net(pointer_layers=1, pointer_match="query", pointer_pool="softmax").eval()
    q, pose = torch.tensor([[2, 3, 4, 0], [5, 2, 0, 0]]), torch.zeros(2, reader.POSE_DIMS)
    cells = torch.randn(2, 2, 4, 5)
    with torch.no_grad():
        logits, ptr, *_ = net(q, cells, d["shown"], pose, num_slots=3)
        moved = cells.clone()
        moved[0, 1] += 5.0  # record 0 shows one view: its second view's cells never enter the pool
        assert torch.allclose(net(q, moved, d["shown"], pose, num_slots=3)[0], logits, atol=1e-6)
        moved[1, 1, 2] += 5.0  # record 1 shows both: a cell of its second view changes its answer
        assert not torch.allclose(net(q, moved, d["shown"], pose, num_slots=3)[0][1], logits[1])
    with pytest.raises(ValueError, match="pointer_pool"):
        _net(pointer_pool="max")

    class WithCodes(_Reader):
        code_feats = torch.nn.Embedding(5, 3)

    codes = np.array([[[0, 1], [2, 3]]], np.uint16)
    plain, coded = (
        reader_inputs.view_features(_Reader(), codes),
        reader_inputs.view_features(WithCodes(), codes, True),
    )
    assert coded.shape == (1, 4, plain.shape[-1] + 3) and torch.equal(coded[..., : plain.shape[-1]], plain)
    assert torch.allclose(coded[0, 2, -3:].float(), WithCodes.code_feats.weight[2].half().float())


def test_relation_features_measure_the_pooled_objects() -> None:
    # two records' pooled cells (features: 1 other, centre xyz, log depth; then grid uv) for the 4 roles
    raw = torch.zeros(2, len(reader.ROLES), 7)
    a, b = reader.ROLES.index("a"), reader.ROLES.index("b")
    raw[0, a, 1:4], raw[0, b, 1:4] = torch.tensor([1.0, 0.0, 4.0]), torch.tensor([-2.0, 0.0, 0.0])
    raw[0, a, 5:], raw[0, b, 5:] = torch.tensor([0.5, 0.0]), torch.tensor([-0.5, 0.25])
    count = torch.ones(2, len(reader.ROLES))
    count[0, b] = 3.0
    rel = geo.relation_features(raw, count)
    assert rel.shape == (2, geo.RELATION_DIMS)
    assert torch.allclose(rel[0, 6:9], torch.tensor([3.0, 0.0, 4.0]))  # a - b
    assert torch.allclose(rel[0, 9:12].exp() - 1e-2, torch.tensor([5.0, 17**0.5, 2.0]), atol=1e-5)
    assert torch.allclose(rel[0, 12:14], torch.tensor([1.0, -0.25]))
    assert rel[0, 14] == pytest.approx(float(np.log(1.01) - np.log(3.01)))
    # the network reads the relation token: changing the token changes the answers; the option needs
    # pointers and the cell-head layout
    torch.manual_seed(0)
    d = _records()
    net = _net(pointer_layers=1, pointer_match="query", relations=True).eval()
    q, pose, cells = _question_inputs()
    with torch.no_grad():
        logits = net(q, cells, d["shown"], pose, num_slots=3).logits
        assert logits.shape == (2, 3, 12) and torch.isfinite(logits).all()
        net.relation[-1].bias += 1.0
        assert not torch.allclose(net(q, cells, d["shown"], pose, num_slots=3)[0], logits)
    with pytest.raises(ValueError, match="relations"):
        _net(relations=True)
    # --init-from with --relations grows a reader without the token: every weight kept, the token's
    # last layer zero
    plain = _net(pointer_layers=1, pointer_match="query")
    more = grown(plain, replace(plain.config, relations=True))
    assert grown(plain, plain.config) is plain and more.config.relations
    kept = more.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in plain.state_dict().items())
    assert not more.relation[-1].weight.any() and not more.relation[-1].bias.any()


def test_word_roles_tag_the_words_that_name_each_role() -> None:
    a, b, counted = (reader.ROLES.index(r) for r in ("a", "b", "counted"))
    question = "Is the red box to the left of the blue sphere?"  # words: is the red box to the left of ...
    tags, defined = reader_inputs.word_role_targets(question, {"a": "the red box", "b": "the blue sphere"})
    assert tags.shape == (reader.MAX_QUESTION, len(reader.ROLES)) and defined.tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert np.nonzero(tags[:, a])[0].tolist() == [1, 2, 3] and np.nonzero(tags[:, b])[0].tolist() == [
        8,
        9,
        10,
    ]
    tags, defined = reader_inputs.word_role_targets(
        "How many red objects are there?", {"counted": "red objects"}
    )
    assert np.nonzero(tags[:, counted])[0].tolist() == [2, 3] and defined[counted] and tags[:, a].sum() == 0
    with pytest.raises(ValueError, match="the green cone"):
        reader_inputs.word_role_targets(question, {"a": "the green cone"})
    with pytest.raises(ValueError, match="word_roles"):
        _net(pointer_layers=1, word_roles=True)  # needs the query pointers
    # the network tags each question word per role; grown from a reader without them (--init-from
    # --word-roles) it answers exactly as that reader until the tagged words' projection learns
    torch.manual_seed(0)
    d = _records()
    q, pose, cells = _question_inputs()
    plain = _net(pointer_layers=1, pointer_match="query").eval()
    more = grown(plain, replace(plain.config, word_roles=True)).eval()
    with torch.no_grad():
        before, after = (
            plain(q, cells, d["shown"], pose, num_slots=3),
            more(q, cells, d["shown"], pose, num_slots=3),
        )
        assert before.word_roles is None and after.word_roles.shape == (2, 3, len(reader.ROLES))
        assert torch.allclose(before.logits, after.logits, atol=1e-6)
        assert torch.allclose(before.pointers, after.pointers, atol=1e-6)
        more.span_in[-1].bias += 1.0
        assert not torch.allclose(more(q, cells, d["shown"], pose, num_slots=3).pointers, before.pointers)
    # the training loss adds the tags' binary cross-entropy over the words of the records' references
    tr = {**d, "q": q, "feats": torch.randn(3, 4, 5), "pose": pose, "a": torch.tensor([[3, 11], [4, 11]]),
          "num_defined": torch.zeros(2, numbers.NUMERIC_DIMS, dtype=torch.bool),
          "word_roles": torch.zeros(2, reader.MAX_QUESTION, len(reader.ROLES)),
          "word_roles_defined": torch.tensor([[True, False, False, False], [False] * 4])}  # fmt: skip
    tr["word_roles"][0, 1, a] = 1.0
    args = argparse.Namespace(cells=None, oracle_pointer=False, teacher_pointer=0.0, no_image=False,
                              word_dropout=0.0, number_readout="bins", unit_bins=False, pointer_weight=0.0,
                              word_role_weight=1.0, construction_dropout=0.0, keep_motion=False)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    with_tags = training_loss(more, tr, torch.arange(2), args, g)
    args.word_role_weight = 0.0
    without = training_loss(more, tr, torch.arange(2), args, g)
    roles = more(q, tr["feats"][tr["views"]], d["shown"], pose, num_slots=2).word_roles
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        roles[0, :3, a], torch.tensor([0.0, 1.0, 0.0])
    )
    assert float((with_tags - without).detach()) == pytest.approx(float(expected.detach()), rel=1e-4)
    # --construction-dropout: in a record with references, the words outside them read as unknown
    args.construction_dropout = 1.0
    tr["q"] = torch.tensor([[2, 3, 4, 5], [5, 2, 0, 0]])
    tr["word_roles"][0, 2, b] = 1.0
    q = dropped_words(tr["q"], tr, torch.arange(2), args, g)
    assert q.tolist() == [[1, 3, 4, 1], [5, 2, 0, 0]]  # record 1 names no object: kept
    # --keep-motion: a question that states a camera motion keeps every word
    tr["motion"] = torch.tensor([True, False])
    assert dropped_words(tr["q"], tr, torch.arange(2), args, g).tolist() == [[1, 3, 4, 1], [5, 2, 0, 0]]
    args.keep_motion = True
    assert dropped_words(tr["q"], tr, torch.arange(2), args, g).tolist() == [[2, 3, 4, 5], [5, 2, 0, 0]]


@pytest.fixture(scope="module")
def qa_world(tmp_path_factory) -> Path:
    """Four procedural scenes at the shipped model's 64 px, their questions (half the scenes in val) and
    their chat cache under the shipped model's tokenizers."""
    root = tmp_path_factory.mktemp("qa_world")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    synth = ["data", "synth", "--out", str(root / "scenes"), "--num-scenes", "4", "--views-per-scene", "6",
             "--resolution", "64", "--seed", "5", "--quiet"]  # fmt: skip
    # a subprocess keeps the rasterizer's EGL context out of this process (tests/test_eval_cli.py)
    assert subprocess.run([sys.executable, "-m", "gst.cli", *synth], env=env, check=False).returncode == 0
    qa = ["data", "qa", "--scenes", str(root / "scenes"), "--out", str(root / "qa.jsonl"), "--seed", "0",
          "--val-fraction", "0.5", "--max-per-kind", "2"]  # fmt: skip
    assert cli_main(qa) == 0
    cache = ["data", "chat-cache", "--qa", str(root / "qa.jsonl"), "--scenes", str(root / "scenes"),
             "--tokenizers", str(SHIPPED / "tokenizers"), "--out", str(root / "chat")]  # fmt: skip
    assert cli_main(cache) == 0
    return root


def test_train_and_eval_answer_reader_agree(qa_world, tmp_path, capsys) -> None:
    """`gst train answer-reader` answers the held-out cache; `gst eval qa --method answer-reader` answers
    the same records from the scene images through the shipped checkpoint: the same answers."""
    run = tmp_path / "run"
    train = ["train", "answer-reader", "--chat", str(qa_world / "chat"), "--heldout", str(qa_world / "chat"),
             "--checkpoint", str(SHIPPED), "--minutes", "0.02", "--width", "16", "--layers", "1",
             "--numeric-head", "--code-features", "--out", str(run)]  # fmt: skip
    assert cli_main(train) == 0
    info = json.loads((run / "answer_reader" / reader.ANSWER_READER_FILE).read_text())
    assert info["config"]["code_features"] and info["metadata"]["training"]["updates"] > 0
    # --init-from continues it: its shape (not --width here), its words, the CPU-minutes summed
    more = [*train[: train.index("--width")], "--width", "32", "--init-from", str(run / "answer_reader"),
            "--out", str(tmp_path / "run2")]  # fmt: skip
    assert cli_main(more) == 0
    info2 = json.loads((tmp_path / "run2" / "answer_reader" / reader.ANSWER_READER_FILE).read_text())
    assert info2["config"] == info["config"] and info2["question_words"] == info["question_words"]
    done = info["metadata"]["training"]["updates"]
    assert info2["metadata"]["training"]["total_updates"] == done + info2["metadata"]["training"]["updates"]
    assert info2["metadata"]["training"]["total_cpu_minutes"] == 0.04
    # a growable flag adds its modules: --number-words sets the number words' values from the words
    grow = [*more[: more.index("--out")], "--number-words", "--out", str(tmp_path / "run3")]
    assert cli_main(grow) == 0
    net3, vocab3, info3 = reader_io.load_answer_reader(tmp_path / "run3" / "answer_reader")
    assert info3["config"] == {**info["config"], "number_words": True}
    assert torch.equal(net3.word_values, numbers.number_word_values(vocab3, len(vocab3) + 2))
    assert net3.word_values[:, 0].sum() == sum(w[0].isdigit() for w in vocab3) > 0
    # --motion-token --elevation-head: the elevation target is each record's first camera
    tilt = ["train", "answer-reader", "--chat", str(qa_world / "chat"), "--checkpoint", str(SHIPPED),
            "--minutes", "0.02", "--width", "16", "--layers", "1", "--pointer-layers", "1", "--pointer-match",
            "query", "--pointer-weight", "0", "--motion-token", "--elevation-head",
            "--out", str(tmp_path / "run4")]  # fmt: skip
    assert cli_main(tilt) == 0
    result4 = json.loads((tmp_path / "run4" / "results.json").read_text())
    assert set(result4["val_elevation_error_deg"]) == {"median", "mean"}
    split = open_chat_cache(qa_world / "chat").split("val")
    elevations = view_elevations(split, qa_world / "scenes")
    rec = split.records[0]
    w2c = load_scene(qa_world / "scenes" / rec["scene"]).w2c[rec["views"][0]].numpy()
    assert elevations[rec["image_rows"][0]] == pytest.approx(np.degrees(np.arcsin(w2c[2, 2])), abs=1e-3)
    assert np.isfinite(elevations).all() and (elevations < 0).all()  # the world's cameras look down
    trained = {(d := json.loads(line))["id"]: d["answer_text"] for line in open(run / "answers.jsonl")}
    evaluate = ["eval", "qa", "--data", str(qa_world / "qa.jsonl"), "--eval-split", "all", "--method",
                "answer-reader", "--checkpoint", str(SHIPPED), "--answer-reader", str(run / "answer_reader"),
                "--scenes", str(qa_world / "scenes"), "--json", "--out", str(tmp_path / "eval")]  # fmt: skip
    capsys.readouterr()
    assert cli_main(evaluate) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["method"] == "answer-reader" and results["data"]["num_records"] == len(trained)
    lines = [json.loads(line) for line in open(tmp_path / "eval" / "predictions.jsonl")]
    assert {d["id"]: d["answer_text"] for d in lines} == trained
    # shipped in a checkpoint folder (hashed in its manifest), it is that checkpoint's default reader
    ck = tmp_path / "ck"
    export = ["train", "export", str(SHIPPED), "--out", str(ck), "--backbone-dtype", "float16",
              "--answer-reader", str(run / "answer_reader")]  # fmt: skip
    assert cli_main(export) == 0
    assert "answer_reader/model.safetensors" in json.loads((ck / "gst_checkpoint.json").read_text())["files"]
    own = [a if a != str(SHIPPED) else str(ck) for a in evaluate if a != str(run / "answer_reader")]
    own.remove("--answer-reader")
    capsys.readouterr()
    assert cli_main([*own[:-1], str(tmp_path / "eval_own")]) == 0
    lines = [json.loads(line) for line in open(tmp_path / "eval_own" / "predictions.jsonl")]
    assert {d["id"]: d["answer_text"] for d in lines} == trained
    # one question at a time about given images (as `gst demo` asks), in the record's answer form
    from gst.data.qa_types import read_jsonl
    from gst.eval.qa_baselines import scene_image_resolver
    from gst.eval.qa_reader import AnswerReaderPredictor

    resolve, asker = scene_image_resolver(qa_world / "scenes"), AnswerReaderPredictor(ck, progress=False)
    for rec in read_jsonl(qa_world / "qa.jsonl")[:12]:
        a = rec.answer
        reply = asker.ask(rec.question, [resolve(rec.scene, v) for v in rec.views], a.type, a.unit, a.options)
        assert reply == trained[rec.id]
    with pytest.raises(ValueError, match="answer type"):
        asker.ask("how many?", [resolve(rec.scene, rec.views[0])], "colour")
    # bfloat16 changes the pose reader's weights: the reader does not fit them
    bf16 = [*export[:4], str(tmp_path / "ck_bf16"), "--backbone-dtype", "bfloat16", *export[7:]]
    assert cli_main(bf16) == 1
    assert "trained over other pose-reader weights" in capsys.readouterr().err
    # without --scenes, and over a checkpoint whose pose reader it was not trained with: clear errors
    assert cli_main(evaluate[: evaluate.index("--scenes")]) == 1
    assert "--scenes DIR" in capsys.readouterr().err
    meta = run / "answer_reader" / reader.ANSWER_READER_FILE
    meta.write_text(meta.read_text().replace(info["metadata"]["pose_reader"]["model_sha256"], "0" * 64))
    assert cli_main(evaluate) == 1
    assert "trained over a pose reader with weights 000000000000" in capsys.readouterr().err


def test_attribute_match_adds_the_named_colour_and_shape_of_each_cell() -> None:
    S, C = len(reader.SHAPE_CLASSES), len(reader.COLOUR_CLASSES)
    F = 5 + 1 + S + C + 4  # view_features' layout: features, object, shape, colour, centre, log depth
    config = {"feat": F, "pointer_layers": 1, "pointer_match": "query", "word_roles": True}
    net = _net(**config, attribute_match=True).eval()
    cells = torch.zeros(1, 3, F)  # three cells: a red box, a red sphere, a blue box (one-hot readouts)
    box, sphere = reader.SHAPE_CLASSES.index("box"), reader.SHAPE_CLASSES.index("sphere")
    red, blue = reader.COLOUR_CLASSES.index("red"), reader.COLOUR_CLASSES.index("blue")
    for i, (shape, colour) in enumerate(((box, red), (sphere, red), (box, blue))):
        cells[0, i, 6 + shape], cells[0, i, 6 + S + colour] = 1.0, 1.0
    span = torch.zeros(1, len(reader.ROLES), 16)
    with torch.no_grad():
        # built near "any": the same small shift for every cell
        start = net.attribute_logits(cells, span)
        assert torch.allclose(start, start[:, :1]) and float(start.abs().max()) < 0.5
        # role 0's words name "red", role 1's "box" (their "any" class off): the cells that match score 0
        net.colour_words.bias[:] = torch.tensor([0.0] * C + [4.0])
        net.shape_words.bias[:] = torch.tensor([0.0] * S + [4.0])
        span[0, 0, 0], span[0, 1, 1] = 1.0, 1.0
        net.colour_words.weight[red, 0], net.colour_words.weight[C, 0] = 50.0, -50.0
        net.shape_words.weight[box, 1], net.shape_words.weight[S, 1] = 50.0, -50.0
        logits = net.attribute_logits(cells, span)  # (1, 3, R)
    assert logits.shape == (1, 3, len(reader.ROLES))
    red_role, box_role = logits[0, :, 0], logits[0, :, 1]
    assert abs(float(red_role[0] - red_role[1])) < 1e-5 and float(red_role[0] - red_role[2]) > 10
    assert abs(float(box_role[0] - box_role[2])) < 1e-5 and float(box_role[0] - box_role[1]) > 10
    with pytest.raises(ValueError, match="attribute_match"):
        _net(pointer_layers=1, pointer_match="query", attribute_match=True)  # needs the word roles


def test_number_words_add_each_number_word_value(tmp_path) -> None:
    """--number-words: a number word's value features; grown from a reader without them it answers as that
    reader; saved and loaded with the values."""
    import math

    vocab = {"turns": 2, "59": 3, "1.8": 4, "degrees": 5}
    values = numbers.number_word_values(vocab, 6)
    assert values.shape == (6, numbers.NUMBER_WORD_DIMS)
    assert values[[0, 1, 2, 5]].abs().sum() == 0  # padding, unknown and the other words
    assert torch.allclose(values[3], torch.tensor([1.0, math.log1p(59) / 3, 0.59, 5.9]))
    assert torch.allclose(values[4], torch.tensor([1.0, math.log1p(1.8) / 3, 0.018, 0.18]))
    torch.manual_seed(0)
    plain = _net(numeric_head=True).eval()
    more = grown(plain, replace(plain.config, number_words=True)).eval()
    more.word_values.copy_(values)
    q = torch.tensor([[2, 3, 5, 0], [2, 4, 0, 0]])
    args = (q, torch.randn(2, 2, 4, 5), torch.tensor([[True, False], [True, True]]), torch.zeros(2, 13))
    with torch.no_grad():
        assert torch.allclose(plain(*args).numeric, more(*args).numeric, atol=1e-6)  # starts adding nothing
        more.number_in[-1].weight.normal_()
        changed = more(*args).numeric
        assert not torch.allclose(plain(*args).numeric, changed, atol=1e-3)
    out = reader_io.save_answer_reader(more, vocab, tmp_path / "ar")
    loaded, _, info = reader_io.load_answer_reader(out)
    assert info["config"]["number_words"] and torch.equal(loaded.word_values, values)
    with torch.no_grad():
        assert torch.equal(loaded(*args).numeric, changed)


def test_new_question_words_grow_as_the_unknown_word() -> None:
    """--init-from on data with words the reader never read: their embeddings start as the unknown word's
    (id 1, how it read them), so the grown reader answers as before; a smaller vocabulary is refused."""
    torch.manual_seed(0)
    plain = _net(numeric_head=True, number_words=True).eval()
    more = grown(plain, replace(plain.config, question_vocab=8)).eval()
    assert more.tok.weight.shape[0] == 8 and torch.equal(more.tok.weight[6:], plain.tok.weight[[1, 1]])
    assert more.word_values.shape[0] == 8
    cells, shown, pose = (
        torch.randn(2, 2, 4, 5),
        torch.tensor([[True, False], [True, True]]),
        torch.zeros(2, 13),
    )
    old_ids, new_ids = torch.tensor([[2, 1, 5, 1], [1, 3, 0, 0]]), torch.tensor([[2, 6, 5, 7], [7, 3, 0, 0]])
    with torch.no_grad():
        before, after = (
            plain(old_ids, cells, shown, pose, num_slots=2),
            more(new_ids, cells, shown, pose, num_slots=2),
        )
        assert torch.allclose(before.logits, after.logits, atol=1e-6)
        assert torch.allclose(before.numeric, after.numeric, atol=1e-6)
    with pytest.raises(ValueError, match="cannot grow"):
        grown(more, plain.config)
