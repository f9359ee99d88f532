"""Question wording (gst.data.qa_wording, gst.data.qa_phrasings, reference forms in gst.data.qa_families):
pattern expansion, the held-out rule, counts, slots, determinism, and that wording never changes which
questions are asked or their answers."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from collections import Counter

import pytest
from test_qa_generator import OBJECTS, hand_scene, obj  # tests/ is on sys.path (pytest rootdir import)

import gst.data.qa as qa
from gst.data.qa import QAConfig, generate_scene_qa, scene_context
from gst.data.qa_families import POSITIONAL_REFS, all_candidates, reference_forms
from gst.data.qa_phrasings import KIND_FAMILY, PATTERNS, PHRASINGS, TEMPLATES, phrasing_ids, render
from gst.data.qa_wording import REL_FORMS, Phrasing, expand, expand_all, words

# kind -> (training, held-out) templates; docs/data.md quotes these counts
COUNTS = {
    "count": (36, 26),
    "attr_color": (28, 11),
    "attr_shape": (24, 8),
    "rel_lr": (24, 16),
    "rel_fb": (25, 11),
    "rel_viewer": (26, 12),
    "dist_cam": (24, 10),
    "dist_pair": (25, 6),
    "size_larger": (28, 6),
    "size_height": (24, 7),
    "nf_camera": (26, 7),
    "nf_object": (25, 7),
    "cm_turn_dir": (24, 9),
    "cm_turn_deg": (26, 6),
    "cm_move_dist": (24, 6),
    "cm_move_dir": (27, 6),
    "vis_yesno": (25, 7),
    "vis_count": (25, 6),
    "vis_which": (26, 8),
    "g3d_point": (25, 11),
    "g3d_box": (24, 16),
    "vis_stay": (34, 8),
}
# kind -> the slots every one of its templates must use (a template without {b} could not be answered)
SLOTS = {
    "count": {"things"},
    "attr_color": {"ref"},
    "attr_shape": {"ref"},
    "rel_lr": {"a", "b"},
    "rel_fb": {"a", "b"},
    "rel_viewer": {"a"},
    "dist_cam": {"a"},
    "dist_pair": {"a", "b"},
    "size_larger": {"a", "b"},
    "size_height": {"a"},
    "nf_camera": {"rel"},
    "nf_object": {"rel", "a"},
    "cm_turn_dir": set(),
    "cm_turn_deg": set(),
    "cm_move_dist": set(),
    "cm_move_dir": set(),
    "vis_yesno": {"motion", "a"},
    "vis_count": {"motion"},
    "vis_which": {"motion"},
    "g3d_point": {"a"},
    "g3d_box": {"a"},
    "vis_stay": {"motion", "a"},
}
FILL = {
    "a": "the red box",
    "b": "the leftmost object",
    "ref": "the box",
    "things": "boxes",
    "rel": "nearest to",
    "motion": "The camera turns 30 degrees to the left.",
}


def test_expand_marks_held_out_parts_and_tidies() -> None:
    got = expand("[How many|!What number of] {things} [are there|] in view?")
    assert got == [
        Phrasing("How many {things} are there in view?", ()),
        Phrasing("How many {things} in view?", ()),
        Phrasing("What number of {things} are there in view?", ("What number of",)),
        Phrasing("What number of {things} in view?", ("What number of",)),
    ]
    # an empty opener leaves the sentence's own first word, capitalised; no space before punctuation
    assert [p.text for p in expand("[|Looking at it, ]is {a} left[| ]?")] == [
        "Is {a} left?",
        "Is {a} left?",
        "Looking at it, is {a} left?",
        "Looking at it, is {a} left?",
    ]
    train, held = expand_all(["[|Looking at it, ]is {a} left[| ]?", "[!Say] {a}."])
    assert [p.text for p in train] == ["Is {a} left?", "Looking at it, is {a} left?"]  # deduplicated
    assert held == (Phrasing("Say {a}.", ("Say",)),)
    with pytest.raises(ValueError, match="both a training and a held-out"):
        expand_all(["[Name|!Give] {a}.", "Give {a}."])
    with pytest.raises(ValueError, match="unbalanced"):
        expand("[Name|Give {a}.")
    with pytest.raises(ValueError, match="outside a group"):
        expand("Name {a}!")
    assert words("Is {a} to the viewer's left, in 3D?") == ["is", "to", "the", "viewer's", "left", "in", "3d"]


def test_counts_per_kind() -> None:
    assert tuple(PATTERNS) == tuple(KIND_FAMILY) == tuple(TEMPLATES) == tuple(COUNTS)
    assert {k: (len(t), len(h)) for k, (t, h) in TEMPLATES.items()} == COUNTS
    assert min(t for t, _ in COUNTS.values()) >= 24 and min(h for _, h in COUNTS.values()) >= 6
    assert sum(t for t, _ in COUNTS.values()) == 575 and sum(h for _, h in COUNTS.values()) == 210


def test_held_out_phrasings_stay_held_out() -> None:
    train_vocab = {w for train, _ in TEMPLATES.values() for text in train for w in words(text)}
    every_train = {text for train, _ in TEMPLATES.values() for text in train}
    for kind, (train, held) in PHRASINGS.items():
        train_texts = [p.text.lower() for p in train]
        assert all(not p.held_out_parts for p in train), kind
        assert not {p.text for p in held} & every_train, kind  # disjoint, also across kinds
        for p in held:
            # at least one part no training phrasing of the kind contains, even as a substring ...
            assert p.held_out_parts, p.text
            for part in p.held_out_parts:
                assert not any(part.lower() in t for t in train_texts), (kind, part)
            # ... in words the training phrasings of the kinds do contain
            assert set(words(p.text)) <= train_vocab, (p.text, set(words(p.text)) - train_vocab)
    # the held-out motion wording ("Suppose you turn ...") is separate (gst.data.qa_geometry)
    assert "photo" in train_vocab and "Relative to {b}" in TEMPLATES["rel_lr"][0][18]
    assert TEMPLATES["rel_fb"][1][7] == "Relative to {b}, is {a} in front or behind?"


def test_every_phrasing_renders_with_its_slots() -> None:
    for kind, (train, held) in TEMPLATES.items():
        for text in train + held:
            used = {name for _, name, _, _ in string.Formatter().parse(text) if name}
            assert used == SLOTS[kind], (kind, text)
        for pid in phrasing_ids(kind, "train") + phrasing_ids(kind, "heldout"):
            q = render(pid, **FILL)
            assert "{" not in q and "[" not in q and "!" not in q and "  " not in q, pid
            assert q[0] in string.ascii_uppercase and q[-1] in "?.)", pid
    assert render("count/t0", things="objects") == "How many objects are there in the image?"
    assert (
        render("rel_fb/h7", a="the box", b="the cone")
        == "Relative to the cone, is the box in front or behind?"
    )
    with pytest.raises(ValueError, match="unknown phrasing id"):
        render("count/t36", things="objects")


def test_phrasing_ids_are_deterministic() -> None:
    for kind in KIND_FAMILY:
        assert phrasing_ids(kind, "train") == phrasing_ids(kind, "train")
        assert phrasing_ids(kind, "heldout")[-1] == f"{kind}/h{COUNTS[kind][1] - 1}"
        assert expand_all(PATTERNS[kind]) == PHRASINGS[kind]
    # no set or hash order anywhere: other hash seeds give the same templates, id for id
    code = "import json; from gst.data.qa_phrasings import TEMPLATES; print(json.dumps(dict(TEMPLATES)))"
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outs[0] == outs[1] and json.loads(outs[0]) == json.loads(json.dumps(dict(TEMPLATES)))


def test_reference_forms_follow_the_unambiguity_rules() -> None:
    ctx = scene_context(hand_scene(), QAConfig(), seed=0)
    red, blue, green = ctx.objects[:3]
    # view 0: the red box is the leftmost and the closest object, the blue sphere the other two
    assert reference_forms(ctx, red, 0, "g3d_point") == (
        "the red box",
        "the box",
        "the red object",
        "the leftmost object",
        "the object closest to the camera",
    )
    # no wording that gives the answer away
    assert reference_forms(ctx, red, 0, "rel_lr")[3:] == ("the object closest to the camera",)
    assert reference_forms(ctx, blue, 0, "rel_fb")[3:] == ("the rightmost object",)
    assert reference_forms(ctx, blue, 0, "dist_cam")[3:] == ("the rightmost object",)
    assert reference_forms(ctx, green, 0, "vis_yesno") == ("the green cone", "the cone", "the green object")
    cands = all_candidates(ctx)
    for c in cands:
        for name, forms in c.forms.items():
            assert forms[0] == c.slots[name] and len(set(forms)) == len(forms), c
        if c.kind in ("rel_lr", "rel_viewer"):
            assert not {*c.forms["a"], *c.forms.get("b", ())} & set(POSITIONAL_REFS[:2]), c
        if c.kind in ("rel_fb", "dist_cam", "nf_object"):
            assert not {*c.forms["a"], *c.forms.get("b", ())} & set(POSITIONAL_REFS[2:]), c
    assert {c.forms["rel"] for c in cands if c.kind.startswith("nf_")} == set(REL_FORMS.values())
    # a second red object and a second cone: no "the red object", no "the cone" anywhere
    objects = [*OBJECTS, obj("red", "cone", (0.8, 4.5, 0.25), (0.5, 0.5, 0.5), (1.0, 1.0))]
    ctx = scene_context(hand_scene(objects=objects), QAConfig(), seed=0)
    forms = {f for c in all_candidates(ctx) for fs in c.forms.values() for f in fs}
    assert "the box" in forms and "the blue object" in forms
    assert not forms & {"the red object", "the cone"}


def test_wording_never_changes_the_questions_or_answers(monkeypatch) -> None:
    def without_wording(records):
        return [
            {k: v for k, v in r.to_json().items() if k not in ("question", "phrasing_id", "references")}
            for r in records
        ]

    records, _ = generate_scene_qa(hand_scene(), seed=3, phrasings="all")
    monkeypatch.setattr(qa, "phrasing_ids", lambda kind, ps: (f"{kind}/{ps[0]}0",))
    fixed, _ = generate_scene_qa(hand_scene(), seed=3, phrasings="all")
    assert without_wording(fixed) == without_wording(records)
    # each record names the wording of every object slot it filled, found in its question, for a role
    # whose objects it lists (the answer reader's word-role targets)
    for r in records:
        assert set(r.references) <= set(r.objects)
        assert all(text.lower() in r.question.lower() for text in r.references.values())
    named = Counter(role for r in records for role in r.references)
    assert named["a"] > 0 and named["b"] > 0 and named["counted"] > 0
    assert {r.phrasing_id[-3:] for r in fixed} == {"/t0", "/h0"}
    # the records of the hand scene, seed 3, with their drawn wording
    got = {r.id: (r.phrasing_id, r.question, r.answer_text) for r in records}
    assert len(records) == 144 and sum(r.phrasing_split == "heldout" for r in records) == 72
    assert got["hand_scene/rel_lr/1/t"] == (
        "rel_lr/t20",
        "Relative to the blue object, is the object closest to the camera on the left or the right?",
        "left",
    )
    assert got["hand_scene/rel_lr/1/h"] == (
        "rel_lr/h13",
        "Does the red box lie right or left of the blue sphere?",
        "left",
    )
    assert got["hand_scene/nf_object/1/t"] == (
        "nf_object/t23",
        "Which object sits nearest to the rightmost object?",
        "red box",
    )
    assert got["hand_scene/vis_which/0/h"] == (
        "vis_which/h1",
        "Suppose you turn 30 degrees left and then step 1.0 m right. "
        "Name the object that appears afterwards.",
        "green cone",
    )
    assert got["hand_scene/vis_stay/0/h"] == (
        "vis_stay/h7",
        "Suppose you turn 30 degrees right and then step 0.5 m ahead and 0.9 m left. "
        "Will you still see the green cone afterwards?",
        "no",
    )
    for r in records:  # every question is one of its kind's templates of its split
        table = TEMPLATES[r.kind][0 if r.phrasing_split == "train" else 1]
        assert r.phrasing_id.startswith(f"{r.kind}/{r.phrasing_split[0]}")
        assert int(r.phrasing_id.split("/")[1][1:]) < len(table)
