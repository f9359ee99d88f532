"""Spatial QA metrics and baselines (gst.eval.qa_metrics, gst.eval.qa_baselines), and `gst eval qa`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gst.cli import main as gst_main
from gst.data.qa_types import (
    QARecord,
    box_answer,
    choice_answer,
    count_answer,
    number_answer,
    point_answer,
    write_jsonl,
)
from gst.eval.qa_baselines import (
    COUNT_CANDIDATES,
    ChatPredictor,
    MostFrequentBaseline,
    OraclePredictor,
    PredictionsFile,
)
from gst.eval.qa_metrics import (
    MRA_TOLERANCES,
    OrientedBox,
    box_iou_3d,
    coordinate_grid,
    evaluate_texts,
    mbr_number,
    mean_relative_accuracy,
    number_grid,
    posterior_mean,
    score_answer,
)


def rot(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def monte_carlo_iou(a: OrientedBox, b: OrientedBox, num: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    pts = np.concatenate([a.corners(), b.corners()])
    x = rng.uniform(pts.min(0), pts.max(0), size=(num, 3))

    def inside(box: OrientedBox) -> np.ndarray:
        return np.all(np.abs((x - box.center) @ box.R) <= box.size / 2, axis=1)

    ia, ib = inside(a), inside(b)
    return float((ia & ib).sum() / (ia | ib).sum())


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (1.0, 1.0, 1.0),
        (1.12, 1.0, 0.8),  # 0.12 is below the tolerances 0.50 .. 0.15 (8 of 10)
        (0.7, 1.0, 0.4),  # 0.30 < 0.50, 0.45, 0.40, 0.35
        (1.5, 1.0, 0.0),  # 0.50 is not strictly below 0.50
        (2.049, 2.0, 1.0),  # relative error 0.0245 < 0.05
        (-3.3, -3.0, 0.9),  # |gt| in the denominator; 0.1 is not strictly below 0.10
        (float("nan"), 2.0, 0.0),
    ],
)
def test_mean_relative_accuracy(pred: float, gt: float, expected: float) -> None:
    assert mean_relative_accuracy(pred, gt) == pytest.approx(expected)


def test_mra_thresholds_are_vsi_bench() -> None:
    assert MRA_TOLERANCES == (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)
    with pytest.raises(ValueError, match="non-zero"):
        mean_relative_accuracy(1.0, 0.0)


def test_box_iou_known_values() -> None:
    unit = OrientedBox(np.zeros(3), np.ones(3))
    assert box_iou_3d(unit, unit) == pytest.approx(1.0, abs=1e-12)
    assert box_iou_3d(unit, OrientedBox(np.array([0.5, 0, 0]), np.ones(3))) == pytest.approx(1 / 3)
    assert box_iou_3d(unit, OrientedBox(np.array([0.5, 0.5, 0.5]), np.ones(3))) == pytest.approx(1 / 15)
    assert box_iou_3d(unit, OrientedBox(np.array([2.0, 0, 0]), np.ones(3))) == 0.0
    assert box_iou_3d(unit, OrientedBox(np.zeros(3), np.full(3, 0.5))) == pytest.approx(0.125)
    # a cube turned 45 degrees about z: the overlap is a regular octagon prism, area 2 (sqrt 2 - 1)
    turned = OrientedBox(np.zeros(3), np.ones(3), rot(np.array([0.0, 0, 1]), math.pi / 4))
    inter = 2 * (math.sqrt(2) - 1)
    assert box_iou_3d(unit, turned) == pytest.approx(inter / (2 - inter), abs=1e-9)
    assert box_iou_3d(unit, OrientedBox(np.zeros(3), np.array([1.0, 0.0, 1.0]))) == 0.0


def test_box_iou_matches_monte_carlo_for_general_rotations() -> None:
    rng = np.random.default_rng(0)
    for _ in range(4):
        a = OrientedBox(
            rng.normal(size=3) * 0.3, rng.uniform(0.5, 1.5, 3), rot(rng.normal(size=3), rng.uniform(0, 3))
        )
        b = OrientedBox(
            rng.normal(size=3) * 0.3, rng.uniform(0.5, 1.5, 3), rot(rng.normal(size=3), rng.uniform(0, 3))
        )
        exact = box_iou_3d(a, b)
        assert box_iou_3d(b, a) == pytest.approx(exact, abs=1e-9)
        # 200k samples: the standard error of the estimate is below 0.002 here
        assert exact == pytest.approx(monte_carlo_iou(a, b, 200_000, seed=1), abs=0.01)


def test_number_grid_covers_the_answers_at_the_units_decimals() -> None:
    metres, degrees = number_grid("m"), number_grid("deg")
    assert metres[0] == 0.05 and metres[-1] == 20.0 and degrees[0] == 1.0 and degrees[-1] == 180.0
    for grid, decimals in ((metres, 2), (degrees, 0)):
        assert grid == sorted(set(grid)) and all(round(v, decimals) == v for v in grid)
    # From 1 m and 30 deg up, neighbours are under 7 % apart: half a step is under the 5 % tolerance.
    for grid, start in ((metres, 1.0), (degrees, 30.0)):
        upper = [v for v in grid if v >= start]
        assert max(b / a for a, b in zip(upper, upper[1:], strict=False)) < 1.07
    with pytest.raises(ValueError, match="no grid for unit 'ft'"):
        number_grid("ft")


def test_mbr_number_maximises_expected_mra_under_cell_weighted_likelihoods() -> None:
    values, ll = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0], [0.0, -1.0, -0.5, -2.0, 0.0, -3.0]
    # Reference: each value's belief is its likelihood times its cell (midpoint to midpoint; the end
    # cells mirrored): widths 1, 1, 1.5, 2.5, 4, 5 here; then the scalar MRA, candidate by candidate.
    belief = [w * math.exp(x) for w, x in zip([1.0, 1.0, 1.5, 2.5, 4.0, 5.0], ll, strict=True)]
    pairs = list(zip(belief, values, strict=True))
    expected = [sum(b * mean_relative_accuracy(c, v) for b, v in pairs) for c in values]
    assert mbr_number(values, ll) == values[int(np.argmax(expected))] == 8.0
    assert mbr_number(values, [-40.0, 0.0, -40.0, -40.0, -40.0, -40.0]) == 2.0  # a confident model: its mode
    # Equal string likelihoods on a log grid are a flat belief in value, not in log value.
    assert mbr_number(number_grid("m"), [0.0] * len(number_grid("m"))) > 10.0
    assert mbr_number([4.0], [-3.0]) == 4.0
    with pytest.raises(ValueError, match="strictly ascending"):
        mbr_number([2.0, 1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="finite log-likelihood"):
        mbr_number([1.0, 2.0], [0.0, float("nan")])
    with pytest.raises(ValueError, match="positive values"):
        mbr_number([0.0, 2.0], [0.0, 0.0])


def test_posterior_mean_and_coordinate_grid() -> None:
    grid = coordinate_grid()
    assert len(grid) == 201 and grid[0] == -5.0 and grid[100] == 0.0 and grid[-1] == 5.0
    assert all(f"{v:.2f}" != "-0.00" for v in grid) and grid == sorted(set(grid))
    # Cells 1, 1.5, 2 wide (ends mirrored): equal likelihoods give the cell-weighted mean.
    assert posterior_mean([0.0, 1.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx((0 * 1 + 1 * 1.5 + 3 * 2) / 4.5)
    assert posterior_mean([-1.0, 0.0, 1.0], [0.0, -50.0, 0.0]) == pytest.approx(0.0, abs=1e-12)
    assert posterior_mean(grid, [-((v - 1.2) ** 2) * 50 for v in grid]) == pytest.approx(1.2, abs=1e-6)


def test_score_answer_per_type() -> None:
    lr = choice_answer("left", ("left", "right"))
    assert score_answer("Left.", lr).score == 1.0 and score_answer("right", lr).score == 0.0
    bad = score_answer("left or right", lr)
    assert (bad.score, bad.parsed, bad.reason) == (0.0, False, "several options")
    assert score_answer("three", count_answer(3)).score == 1.0
    num = score_answer("1.12 m", number_answer(1.0, "m"))
    assert num.score == pytest.approx(0.8) and num.metrics["abs_err"] == pytest.approx(0.12)
    pt = score_answer("(0.3, 0.0, 4.0)", point_answer([0.0, 0.0, 4.0]))
    assert pt.metrics["l2_m"] == pytest.approx(0.3) and pt.score == pytest.approx(0.9)  # 0.075 relative
    box = box_answer([0.0, 0.0, 3.0], [1.0, 1.0, 1.0])
    shifted = score_answer("center (0.5, 0, 3) m, size (1, 1, 1) m", box)
    assert shifted.metrics["iou"] == pytest.approx(1 / 3) and shifted.metrics["acc@0.5"] == 0.0
    assert shifted.score == 1.0  # Acc@0.25
    nobox = score_answer("somewhere", box)
    assert nobox.parsed is False and nobox.metrics == {"iou": 0.0, "acc@0.25": 0.0, "acc@0.5": 0.0}


def rec(i: int, kind: str, family: str, answer, split: str = "val", ps: str = "train") -> QARecord:
    return QARecord(
        id=f"s{i}/{kind}/{ps[0]}",
        instance=f"s{i}/{kind}",
        scene=f"s{i}",
        views=(0,),
        family=family,
        kind=kind,
        phrasing_id=f"{kind}/{ps[0]}0",
        phrasing_split=ps,
        split=split,
        question="q?",
        answer=answer,
    )


LR = ("left", "right")
RECORDS = [
    rec(0, "rel_lr", "relative_direction", choice_answer("left", LR), "train"),
    rec(1, "rel_lr", "relative_direction", choice_answer("left", LR), "train"),
    rec(2, "rel_lr", "relative_direction", choice_answer("right", LR), "train"),
    rec(3, "count", "counting", count_answer(2), "train"),
    rec(4, "dist_cam", "distance", number_answer(2.0, "m"), "train"),
    rec(5, "dist_cam", "distance", number_answer(4.0, "m"), "train"),
    rec(6, "dist_cam", "distance", number_answer(9.0, "m"), "train"),
    rec(7, "g3d_point", "grounding_3d", point_answer([0.0, 0.0, 2.0]), "train"),
    rec(8, "g3d_point", "grounding_3d", point_answer([1.0, 0.0, 4.0]), "train"),
    rec(9, "rel_lr", "relative_direction", choice_answer("left", LR)),
    rec(10, "rel_lr", "relative_direction", choice_answer("right", LR), ps="heldout"),
    rec(11, "count", "counting", count_answer(3)),
    rec(12, "dist_cam", "distance", number_answer(4.4, "m")),
    rec(13, "g3d_point", "grounding_3d", point_answer([0.5, 0.0, 3.0])),
]


def test_most_frequent_baseline_and_summary() -> None:
    base = MostFrequentBaseline([r for r in RECORDS if r.split == "train"])
    val = [r for r in RECORDS if r.split == "val"]
    texts = base.predict(val)
    assert texts == ["left", "left", "2", "4.00 m", "(0.50, 0.00, 3.00) m"]  # medians for numbers and points
    summary = evaluate_texts(val, texts)
    fam = summary["families"]
    assert fam["relative_direction"]["score"] == 0.5 and fam["counting"]["score"] == 0.0
    assert fam["distance"]["score"] == pytest.approx(0.9)  # |4 - 4.4| / 4.4 = 0.091
    assert fam["grounding_3d"]["score"] == 1.0 and fam["grounding_3d"]["mean_l2_m"] == 0.0
    assert summary["overall"]["score_micro"] == pytest.approx((1 + 0 + 0 + 0.9 + 1) / 5)
    assert summary["overall"]["score_macro"] == pytest.approx((0.5 + 0 + 0.9 + 1) / 4)
    held = summary["phrasing_splits"]["heldout"]
    assert held["overall"]["n"] == 1 and held["families"]["relative_direction"]["score"] == 0.0
    assert evaluate_texts(val, OraclePredictor().predict(val))["overall"]["score_micro"] == 1.0
    junk = evaluate_texts(val, ["?"] * len(val))["overall"]
    assert junk["unparseable"] == 5 and junk["score_micro"] == 0.0


def test_chat_predictor_text_only_hook() -> None:
    seen = []

    def chat(question, images):
        seen.append(list(images))
        return "left"

    val = [r for r in RECORDS if r.split == "val"][:2]
    assert ChatPredictor(chat, None, text_only=True).predict(val) == ["left", "left"]
    assert seen == [[], []]
    with_images = ChatPredictor(chat, lambda scene, v: f"/{scene}/{v}.png", text_only=False)
    with_images.predict(val[:1])
    assert seen[-1] == ["/s9/0.png"] and with_images.name == "model"
    with pytest.raises(ValueError, match="image resolver"):
        ChatPredictor(chat, None, text_only=False)


def test_chat_predictor_scores_choice_options() -> None:
    asked, scored = [], []

    def chat(question, images):
        asked.append(question)
        return "7"

    def score(question, images, options):
        scored.append(tuple(options))
        return [-float(len(o)) for o in options]  # prefers the shortest option; ties: the first

    val = [r for r in RECORDS if r.split == "val"]
    texts = ChatPredictor(chat, None, text_only=True, score=score).predict(val)
    closed = [r for r in val if r.answer.type in ("choice", "count")]
    assert {r.answer.type for r in closed} == {"choice", "count"}
    assert scored == [tuple(r.answer.options or COUNT_CANDIDATES) for r in closed]
    assert len(asked) == len(val) - len(closed)
    assert COUNT_CANDIDATES == tuple(str(n) for n in range(11))
    for r, text in zip(val, texts, strict=True):
        if r.answer.type == "choice":
            assert text == min(r.answer.options, key=len)  # min keeps the first of equal lengths
        else:
            assert text == ("0" if r.answer.type == "count" else "7")


def test_chat_predictor_answers_numbers_in_their_format() -> None:
    numbered = []

    def number(question, images, unit, decimals):
        numbered.append((unit, decimals))
        return f"{1:.{decimals}f} {unit}"

    val = [r for r in RECORDS if r.split == "val"]
    texts = ChatPredictor(lambda q, i: "free text", None, text_only=True, number=number).predict(val)
    numbers = [r for r in val if r.answer.type == "number"]
    assert numbers and numbered == [(r.answer.unit, {"m": 2, "deg": 0}[r.answer.unit]) for r in numbers]
    for r, text in zip(val, texts, strict=True):
        want = f"1{'.00' if r.answer.unit == 'm' else ''} {r.answer.unit}" if r in numbers else "free text"
        assert text == want


def test_cli_eval_qa(tmp_path, capsys) -> None:
    data = tmp_path / "qa.jsonl"
    write_jsonl(RECORDS, data)
    out = tmp_path / "eval"
    assert (
        gst_main(
            ["eval", "qa", "--data", str(data), "--method", "most-frequent", "--json", "--out", str(out)]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert results["method"] == "most-frequent" and results["data"]["num_records"] == 5
    assert results["metrics"]["families"]["distance"]["score"] == pytest.approx(0.9)
    assert json.loads((out / "results.json").read_text()) == results
    assert "| **distance** | 1 | 0.900 |" in (out / "report.md").read_text()
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    val = [r for r in RECORDS if r.split == "val"]
    assert [d["id"] for d in lines] == [r.id for r in val]
    assert [d["truth"] for d in lines] == [r.answer_text for r in val]
    dist = [d for d in lines if d["family"] == "distance"]
    assert len(dist) == 1 and dist[0]["score"] == pytest.approx(0.9) and dist[0]["parsed"]
    # the file reads back as --predictions and scores the same
    assert (
        gst_main(
            ["eval", "qa", "--data", str(data), "--predictions", str(out / "predictions.jsonl"), "--json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["metrics"] == results["metrics"]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"id": r.id, "answer_text": r.answer_text}) + "\n" for r in RECORDS))
    assert gst_main(["eval", "qa", "--data", str(data), "--predictions", str(preds), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["overall"]["score_micro"] == 1.0
    preds.write_text(json.dumps({"id": RECORDS[9].id, "answer_text": "left"}) + "\n")
    with pytest.raises(ValueError, match="no answer for 4 of 5 records"):
        PredictionsFile(preds).predict([r for r in RECORDS if r.split == "val"])
    assert gst_main(["eval", "qa", "--data", str(data), "--checkpoint", str(tmp_path)]) == 1
    assert "--method model or --method text-only" in capsys.readouterr().err
    assert gst_main(["eval", "qa", "--data", str(data), "--method", "text-only"]) == 1
    assert "--checkpoint" in capsys.readouterr().err
    write_jsonl([r for r in RECORDS if r.split == "val"], data)
    assert gst_main(["eval", "qa", "--data", str(data)]) == 1
    assert "needs training-split records" in capsys.readouterr().err


def test_qa_compare_script(tmp_path) -> None:
    """scripts/qa_compare.py: per-family means of predictions.jsonl files and the paired interval of the
    first method's lead, marked where it lies above 0."""
    import subprocess
    import sys
    from pathlib import Path

    def write(name: str, scores: list[float]) -> Path:
        path = tmp_path / name / "predictions.jsonl"
        path.parent.mkdir()
        fams = ["counting"] * 20 + ["distance"] * 20
        lines = [
            {
                "id": f"q{i}",
                "family": f,
                "kind": f,
                "phrasing_split": "train" if i % 2 else "heldout",
                "score": s,
            }
            for i, (f, s) in enumerate(zip(fams[: len(scores)], scores, strict=True))
        ]
        path.write_text("".join(json.dumps(d) + "\n" for d in lines))
        return path

    # counting: model right on 15 of 20, baseline on 5 (a clear lead); distance: both 0.5 everywhere
    model = write("model", [1.0] * 15 + [0.0] * 5 + [0.5] * 20)
    base = write("base", [0.0] * 15 + [1.0] * 5 + [0.5] * 20)
    script = Path(__file__).resolve().parents[1] / "scripts" / "qa_compare.py"
    out = subprocess.run(
        [sys.executable, str(script), str(model), str(base)], capture_output=True, text=True, check=True
    ).stdout
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in out.splitlines() if "|" in line
    }
    assert rows["counting"][:3] == ["20", "0.750", "0.250"] and rows["counting"][3].endswith("* |")
    assert rows["counting"][3].startswith("+0.500 [")
    assert (
        rows["distance"][:3] == ["20", "0.500", "0.500"]
        and rows["distance"][3] == "+0.000 [+0.000, +0.000] |"
    )
    assert rows["overall"][:3] == ["40", "0.625", "0.375"]
    assert rows["overall, heldout phrasings"][0] == "20"
    only = subprocess.run(
        [sys.executable, str(script), str(model), str(base), "--phrasings", "heldout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| overall | 20 | 0.650 | 0.350 |" in only and "train phrasings" not in only
    other = write("other", [1.0] * 39)  # one question fewer: refused
    bad = subprocess.run(
        [sys.executable, str(script), str(model), str(other)], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "not the same questions" in bad.stderr


def test_qa_compare_phrasing_gap(tmp_path) -> None:
    """scripts/qa_compare.py: each method's phrasing gap pairs a question's two phrasings ("<instance>/t",
    "<instance>/h") and gives the mean of training minus held-out score."""
    import subprocess
    import sys
    from pathlib import Path

    # 10 questions: the training phrasing right on all, the held-out one on 7 -> gap 0.3
    lines = []
    for i in range(10):
        for split, score in (("train", 1.0), ("heldout", float(i < 7))):
            qid = f"s/count/{i}/{split[0]}"
            lines.append(
                {"id": qid, "family": "counting", "kind": "count", "phrasing_split": split, "score": score}
            )
    path = tmp_path / "model" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    script = Path(__file__).resolve().parents[1] / "scripts" / "qa_compare.py"
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, check=True)
    gap = [line for line in out.stdout.splitlines() if line.startswith("- model:")]
    assert gap and gap[0].startswith("- model: +0.300 [") and gap[0].endswith("], 10 questions")


def test_qa_compare_by_scene(tmp_path) -> None:
    """scripts/qa_compare.py --by-scene resamples scenes: two scenes of ten questions, the model right on
    every question of one and level with the baseline on the other, lead beyond the noise of 20 questions
    but not of two scenes (resamples of two scenes: means 1, 0.5 or 0)."""
    import subprocess
    import sys
    from pathlib import Path

    def write(name: str, score) -> Path:
        lines = [
            {"id": f"{scene}/count/{i}/t", "family": "counting", "kind": "count", "phrasing_split": "train",
             "score": score(scene)}
            for scene in ("scene_a", "scene_b") for i in range(10)
        ]  # fmt: skip
        path = tmp_path / name / "predictions.jsonl"
        path.parent.mkdir()
        path.write_text("".join(json.dumps(d) + "\n" for d in lines))
        return path

    model, base = write("model", lambda s: float(s == "scene_a")), write("base", lambda s: 0.0)
    script = Path(__file__).resolve().parents[1] / "scripts" / "qa_compare.py"

    def counting_row(*extra: str) -> str:
        out = subprocess.run(
            [sys.executable, str(script), str(model), str(base), *extra],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return next(line for line in out.splitlines() if line.startswith("| counting |"))

    assert counting_row().endswith("* |") and "+0.500 [" in counting_row()
    assert counting_row("--by-scene").endswith("| +0.500 [+0.000, +1.000] |")
