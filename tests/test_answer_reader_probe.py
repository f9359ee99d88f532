"""scripts/answer_reader_probe.py: the pointer targets (cells that show each role's objects), the
answer network with pointers, and the typed numeric readout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from gst.data.qa_types import box_answer, choice_answer, number_answer, parse_like, point_answer

SPEC = importlib.util.spec_from_file_location(
    "answer_reader_probe", Path(__file__).resolve().parents[1] / "scripts" / "answer_reader_probe.py"
)
probe = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(probe)


def _records() -> dict:
    """Two records over three views of four cells: record 0 asks about object 1 (role a) and counts
    objects 0 and 2 in view 0; record 1 shows views 1 and 2 and names object 2 as role b."""
    R, K = len(probe.ROLES), probe.MAX_OBJECTS
    refs = torch.full((2, R, K), -2)
    has_role = torch.zeros(2, R, dtype=torch.bool)
    a, b, counted = (probe.ROLES.index(r) for r in ("a", "b", "counted"))
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


def test_pointer_targets_mark_the_cells_of_each_role() -> None:
    d = _records()
    hit, defined = probe.pointer_targets(d, torch.arange(2))
    assert hit.shape == defined.shape == (2, 8, len(probe.ROLES))
    a, b, counted = (probe.ROLES.index(r) for r in ("a", "b", "counted"))
    assert hit[0, :4, a].tolist() == [0, 1, 0, 0]
    assert hit[0, :4, counted].tolist() == [0, 0, 1, 1]
    assert hit[1, :, b].tolist() == [1, 1, 0, 0, 0, 0, 1, 0]  # object 2 in both views
    # defined: the role exists and the view is shown
    assert defined[0, :, a].tolist() == [True] * 4 + [False] * 4
    assert not defined[0, :, b].any() and defined[1, :, b].all() and not defined[1, :, a].any()


def test_answer_net_pools_the_oracle_cells_into_object_tokens() -> None:
    torch.manual_seed(0)
    d = _records()
    net = probe.AnswerNet(vocab=10, question_vocab=6, feat=5, n=4, d=16, layers=1, pointer_layers=1).eval()
    q = torch.tensor([[2, 3, 4, 0], [5, 2, 0, 0]])
    cells = torch.randn(2, 2, 4, 5)
    pose = torch.zeros(2, 13)
    logits, ptr, values = net(q, cells, d["shown"], pose, num_slots=3)
    assert values is None  # no numeric head
    assert logits.shape == (2, 3, 12) and ptr.shape == (2, 8, len(probe.ROLES))
    hit, _ = probe.pointer_targets(d, torch.arange(2))
    with torch.no_grad():
        oracle_logits, oracle_ptr, _ = net(q, cells, d["shown"], pose, num_slots=3, oracle=hit)
    assert torch.allclose(oracle_ptr, ptr, atol=1e-5)  # the same pointer logits; only the pooling changes
    assert not torch.allclose(oracle_logits, logits)
    # oracle_rows picks the records that pool the true cells: record 0 as with the oracle, record 1 not
    with torch.no_grad():
        mixed = net(q, cells, d["shown"], pose, 3, hit, torch.tensor([True, False]))[0]
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
    plain = probe.AnswerNet(vocab=10, question_vocab=6, feat=5, n=4, d=16, layers=1)
    assert plain(q, cells, d["shown"], pose, num_slots=2)[1] is None


def test_query_pointers_and_numeric_head_shapes() -> None:
    torch.manual_seed(0)
    d = _records()
    net = probe.AnswerNet(
        vocab=10,
        question_vocab=6,
        feat=5,
        n=4,
        d=16,
        layers=1,
        pointer_layers=1,
        pointer_match="query",
        numeric_head=True,
    ).eval()
    q = torch.tensor([[2, 3, 4, 0], [5, 2, 0, 0]])
    logits, ptr, values = net(q, torch.randn(2, 2, 4, 5), d["shown"], torch.zeros(2, 13), num_slots=3)
    assert logits.shape == (2, 3, 12) and ptr.shape == (2, 8, len(probe.ROLES))
    assert values.shape == (2, probe.NUMERIC_DIMS + probe.NUMBER_BINS.num_tokens)
    # a role's logits differ between the two questions: the role queries read the question
    assert not torch.allclose(ptr[0, :4], ptr[1, :4])


def test_numeric_targets_round_trip_to_answer_text() -> None:
    G = probe.NUMBER_BINS.num_tokens
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
        target, defined, token = probe.numeric_target(answer)
        assert np.allclose(target[where], values, atol=1e-6)
        assert defined[where].all() and defined.sum() == len(values) and not target[~defined].any()
        out = np.concatenate([target, np.zeros(G, np.float32)])
        text = probe.numeric_text(answer, out)  # a number from its regressed log
        assert text == answer.text and parse_like(text, answer) == answer
        if answer.type == "number":
            assert token == probe.NUMBER_BINS.token(answer.value) and 1 <= token < G
            out[probe.NUMERIC_DIMS + token] = 20.0  # the bins, all belief on the answer's bin
            value = parse_like(probe.numeric_text(answer, out, bins=True), answer).value
            assert abs(value - answer.value) / answer.value < 0.05  # within the bins' worst relative error
        else:
            assert token == probe.IGNORE
    # --unit-bins: one set of bins per unit; a distance reads the metre set, whatever the degree set says
    answer = number_answer(2.0, "m")
    token = probe.NUMBER_BINS.token(2.0)
    out = np.zeros(probe.NUMERIC_DIMS + len(probe.UNITS) * G, np.float32)
    out[probe.NUMERIC_DIMS + probe.UNITS.index("deg") * G + probe.NUMBER_BINS.token(50.0)] = 30.0
    out[probe.NUMERIC_DIMS + probe.UNITS.index("m") * G + token] = 20.0
    value = parse_like(probe.numeric_text(answer, out, bins=True), answer).value
    assert abs(value - 2.0) / 2.0 < 0.05
    target, defined, token = probe.numeric_target(choice_answer("left", ["left", "right"]))
    assert not defined.any() and not target.any() and token == probe.IGNORE
