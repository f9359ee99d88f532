"""Spatial QA generation (gst.data.qa): answers on a hand-built scene, rules, determinism, split, CLI."""

from __future__ import annotations

import json
import math
import string
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gst.cli import main as gst_main
from gst.data.pairs import scene_split
from gst.data.qa import QAConfig, generate_qa, generate_scene_qa, scene_context
from gst.data.qa_families import all_candidates
from gst.data.qa_geometry import (
    CameraMotion,
    camera_motion,
    describe_motion,
    frame_fraction,
    parse_motion,
    to_camera,
)
from gst.data.qa_phrasings import FAMILIES, KIND_FAMILY, TEMPLATES, phrasing_ids, render
from gst.data.qa_types import QARecord, parse_like, read_jsonl
from gst.data.scene import Scene
from gst.geometry.conventions import opencv_w2c_to_opengl_c2w

W = H = 128
FX = 100.0


def level_w2c(centre, heading_deg: float) -> np.ndarray:
    """OpenCV w2c of a level camera at ``centre`` looking along the world heading (0 deg = +x, CCW)."""
    h = math.radians(heading_deg)
    forward = np.array([math.cos(h), math.sin(h), 0.0])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows = camera axes in world
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ np.asarray(centre, dtype=np.float64)
    return w2c


def obj(color: str, shape: str, center, size, visible, yaw_deg: float = 0.0) -> dict:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    R = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    return {
        "name": f"{color} {shape}",
        "shape": shape,
        "color": color,
        "size_m": list(size),
        "center": list(center),
        "box": {"center": list(center), "size": list(size), "R_obj2world": R},
        "visible": list(visible),
    }


# View 0: level camera at (0, 1, 1) looking along +y. View 1: 1 m to the right of view 0 (world +x),
# turned 30 degrees to the left. The green cone only shows in view 1; the yellow torus in neither.
OBJECTS = [
    obj("red", "box", (-1.0, 4.0, 0.25), (0.5, 0.5, 0.5), (1.0, 1.0)),
    obj("blue", "sphere", (0.5, 6.0, 0.4), (0.8, 0.8, 0.8), (1.0, 1.0)),
    obj("green", "cone", (-2.7, 4.0, 0.3), (0.6, 0.6, 0.6), (0.0, 1.0)),
    obj("yellow", "torus", (0.0, -3.0, 0.2), (0.6, 0.6, 0.2), (0.0, 0.0)),
]


def hand_scene(name: str = "hand_scene", objects=OBJECTS) -> Scene:
    w2c = torch.from_numpy(np.stack([level_w2c((0, 1, 1), 90.0), level_w2c((1, 1, 1), 120.0)]))
    K = torch.tensor([[FX, 0.0, (W - 1) / 2], [0.0, FX, (H - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return Scene(
        root=Path("/nonexistent") / name,
        name=name,
        image_paths=(Path("0.png"), Path("1.png")),
        K=K.expand(2, 3, 3),
        w2c=w2c,
        image_hw=(H, W),
        objects=[dict(o) for o in objects],
    )


@pytest.fixture(scope="module")
def candidates():
    ctx = scene_context(hand_scene(), QAConfig(), seed=0)
    return all_candidates(ctx)


def find(cands, kind: str, views=None, **slots):
    out = [
        c
        for c in cands
        if c.kind == kind
        and (views is None or c.views == views)
        and all(c.slots.get(k) == v for k, v in slots.items())
    ]
    return out


def test_scene_setup_matches_hand_geometry() -> None:
    scene = hand_scene()
    w2c = scene.w2c.numpy()
    np.testing.assert_allclose(to_camera(w2c[0], np.array([-1.0, 4.0, 0.25])), [-1.0, 0.75, 3.0], atol=1e-12)
    ctx = scene_context(scene, QAConfig(), seed=0)
    status = {o.label: (ctx.status(o, 0), ctx.status(o, 1)) for o in ctx.objects}
    assert status == {
        "red box": ("in", "in"),
        "blue sphere": ("in", "in"),
        "green cone": ("out", "in"),
        "yellow torus": ("out", "out"),
    }


def test_counting(candidates) -> None:
    answers = {(c.views[0], c.slots["things"]): c.answer.value for c in find(candidates, "count")}
    assert answers[(0, "objects")] == 2 and answers[(1, "objects")] == 3
    assert answers[(0, "green objects")] == 0 and answers[(1, "green objects")] == 1
    assert answers[(0, "boxes")] == 1 and answers[(0, "toruses")] == 0


def test_relative_direction_and_distance(candidates) -> None:
    lr = find(candidates, "rel_lr", (0,))
    assert len(lr) == 1
    a = lr[0].slots["a"]
    assert lr[0].answer.value == ("left" if a == "the red box" else "right")
    fb = find(candidates, "rel_fb", (0,))[0]
    assert fb.answer.value == ("in front" if fb.slots["a"] == "the red box" else "behind")
    viewer = {c.slots["a"]: c.answer.value for c in find(candidates, "rel_viewer", (0,))}
    assert viewer == {"the red box": "left", "the blue sphere": "right"}
    assert find(candidates, "dist_cam", (0,), a="the red box")[0].answer.value == 3.25  # sqrt(1 + 0.75^2 + 9)
    pair = find(candidates, "dist_pair", (0,))[0]
    assert pair.answer.value == round(math.sqrt(1.5**2 + 2**2 + 0.15**2), 2) == 2.50


def test_size_superlatives_attributes_grounding(candidates) -> None:
    assert find(candidates, "size_larger", (0,))[0].answer.value == "blue sphere"
    assert {c.slots["a"]: c.answer.value for c in find(candidates, "size_height", (0,))} == {
        "the red box": 0.5,
        "the blue sphere": 0.8,
    }
    nf = {c.slots["rel"]: c.answer.value for c in find(candidates, "nf_camera", (0,))}
    assert nf == {"closest to": "red box", "farthest from": "blue sphere"}
    colors = {c.slots["ref"]: c.answer.value for c in find(candidates, "attr_color", (0,))}
    assert colors["the box"] == "red" and colors["the leftmost object"] == "red"
    assert colors["the object farthest from the camera"] == "blue"
    shapes = {c.slots["ref"]: c.answer.value for c in find(candidates, "attr_shape", (0,))}
    assert shapes["the blue object"] == "sphere" and shapes["the rightmost object"] == "sphere"
    assert find(candidates, "g3d_point", (0,), a="the red box")[0].answer.value == [-1.0, 0.75, 3.0]
    box = find(candidates, "g3d_box", (0,), a="the red box")[0].answer.value
    assert box == {"center": [-1.0, 0.75, 3.0], "size": [0.5, 0.5, 0.5]}


def test_camera_motion_answers(candidates) -> None:
    motion = {c.kind: c.answer.value for c in candidates if c.kind.startswith("cm_") and c.views == (0, 1)}
    assert motion == {"cm_turn_dir": "left", "cm_turn_deg": 30.0, "cm_move_dist": 1.0, "cm_move_dir": "right"}
    back = {c.kind: c.answer.value for c in candidates if c.kind.startswith("cm_") and c.views == (1, 0)}
    assert back["cm_turn_dir"] == "right" and back["cm_turn_deg"] == 30.0
    m = camera_motion(hand_scene().w2c[0].numpy(), hand_scene().w2c[1].numpy())
    assert m.turn_left_deg == pytest.approx(30.0) and m.left_m == pytest.approx(-1.0)
    assert m.forward_m == pytest.approx(0.0, abs=1e-12) and m.tilt_up_deg == pytest.approx(0.0, abs=1e-9)
    assert describe_motion(m, "camera") == "The camera turns 30 degrees to the left and moves 1.0 m right."
    assert describe_motion(m, "you") == "Suppose you turn 30 degrees left and then step 1.0 m right."
    assert describe_motion(m, "readout") == "turned 30 degrees left, moved 1.0 m right"


def test_parse_motion_reads_every_wording_back() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        values = [rng.uniform(-120, 120), rng.uniform(-40, 40), *rng.uniform(-3, 3, 3)]
        m = CameraMotion(*[v if rng.random() < 0.7 else 0.0 for v in values])
        rounded = (round(m.turn_left_deg), round(m.tilt_up_deg), *(round(v, 1) for v in astuple(m)[2:]))
        for style in ("camera", "you", "readout"):
            got = parse_motion(describe_motion(m, style))
            assert astuple(got) == pytest.approx(rounded), (style, m)
    assert parse_motion("The camera stays where it is. Is the red box visible?") == CameraMotion(
        0, 0, 0, 0, 0
    )
    assert parse_motion("How far is the red box from the camera?") is None
    assert parse_motion("Suppose you tilt 5 degrees down, then step 2.5 m back.") == CameraMotion(
        0, -5, -2.5, 0, 0
    )


def test_motion_visibility(candidates) -> None:
    yesno = {c.slots["a"]: c.answer.value for c in find(candidates, "vis_yesno", (0,))}
    assert yesno == {"the green cone": "yes", "the yellow torus": "no"}
    assert find(candidates, "vis_count", (0,))[0].answer.value == 1
    which = find(candidates, "vis_which", (0,))[0]
    assert which.answer.value == "green cone" and which.answer.options == ("green cone", "yellow torus")
    assert which.target_view == 1 and which.motion is not None
    # going back from view 1 to view 0 nothing new appears
    assert find(candidates, "vis_count", (1,))[0].answer.value == 0
    # vis_stay asks about the objects in view now: turning back from view 1 loses the green cone
    stay = {(c.views[0], c.slots["a"]): c.answer.value for c in find(candidates, "vis_stay")}
    assert stay == {
        (0, "the red box"): "yes",
        (0, "the blue sphere"): "yes",
        (1, "the red box"): "yes",
        (1, "the blue sphere"): "yes",
        (1, "the green cone"): "no",
    }
    red = find(candidates, "vis_stay", (0,), a="the red box")[0]
    assert red.target_view == 1 and red.objects == {"a": (0,)}
    # no left/right superlative names its object (it would tell which way it leaves the frame)
    assert (
        "the leftmost object" not in red.forms["a"] and "the object closest to the camera" in red.forms["a"]
    )


def test_objects_name_the_roles_a_question_is_about(candidates) -> None:
    # OBJECTS order: 0 red box, 1 blue sphere, 2 green cone, 3 yellow torus
    counts = {(c.views[0], c.slots["things"]): c.objects for c in find(candidates, "count")}
    assert counts[(0, "objects")] == {"counted": (0, 1)} and counts[(1, "green objects")] == {"counted": (2,)}
    assert counts[(0, "toruses")] == {"counted": ()}
    colors = {c.slots["ref"]: c.objects for c in find(candidates, "attr_color", (0,))}
    assert colors["the box"] == {"a": (0,)} and colors["the object farthest from the camera"] == {"a": (1,)}
    lr = find(candidates, "rel_lr", (0,))[0]
    assert lr.objects == (
        {"a": (0,), "b": (1,)} if lr.slots["a"] == "the red box" else {"a": (1,), "b": (0,)}
    )
    nf = {c.slots["rel"]: c.objects for c in find(candidates, "nf_camera", (0,))}
    assert nf == {"closest to": {"answer": (0,)}, "farthest from": {"answer": (1,)}}
    assert find(candidates, "vis_which", (0,))[0].objects == {"answer": (2,)}
    assert find(candidates, "vis_count", (0,))[0].objects == {"counted": (2,)}
    assert all(c.objects == {} for c in candidates if c.kind.startswith("cm_"))
    # the records carry them through JSON; a file without the field reads as {}
    records, _ = generate_scene_qa(hand_scene(), seed=0)
    for r in records:
        assert QARecord.from_json(r.to_json()) == r
    assert any(r.objects for r in records)
    legacy = {k: v for k, v in records[0].to_json().items() if k != "objects"}
    assert QARecord.from_json(legacy).objects == {}


def test_ambiguity_rules_skip_and_count() -> None:
    # a second red box makes "the red box" ambiguous; a partly visible blue sphere voids view-0 counts
    objects = [*OBJECTS, obj("red", "box", (0.8, 4.5, 0.25), (0.5, 0.5, 0.5), (1.0, 1.0))]
    objects[1] = obj("blue", "sphere", (0.5, 6.0, 0.4), (0.8, 0.8, 0.8), (0.3, 1.0))
    ctx = scene_context(hand_scene(objects=objects), QAConfig(), seed=0)
    cands = all_candidates(ctx)
    assert not [c for c in cands if "the red box" in c.slots.values()]
    assert not find(cands, "count", (0,), things="objects") and find(cands, "count", (1,), things="objects")
    assert ctx.skips[("dist_cam", "ambiguous_reference")] == 4  # two red boxes, two views
    assert ctx.skips[("count", "partly_visible")] >= 1


def test_frame_fraction_truncation() -> None:
    scene = hand_scene()
    ctx = scene_context(scene, QAConfig(), seed=0)
    K, w2c = scene.K[0].numpy(), scene.w2c[0].numpy()
    assert frame_fraction(ctx.objects[0], K, w2c, (H, W)) == 1.0
    assert frame_fraction(ctx.objects[2], K, w2c, (H, W)) == 0.0  # left of the image
    assert frame_fraction(ctx.objects[3], K, w2c, (H, W)) == 0.0  # behind the camera
    # a cube straddling the right image border (u = W - 0.5 at x / z = 0.64): expected share by hand
    edge = obj("white", "box", (0.64 * 3.0, 4.0, 1.0), (0.5, 0.5, 0.5), (1.0, 1.0))
    o = scene_context(hand_scene(objects=[*OBJECTS, edge]), QAConfig(), seed=0).objects[-1]
    xs = [0.64 * 3.0 + dx for dx in (-0.25, 0.25)]
    zs = [3.0 + dz for dz in (-0.25, 0.25)]
    us = [FX * x / z + (W - 1) / 2 for x in xs for z in zs]
    expected = (W - 0.5 - min(us)) / (max(us) - min(us))  # vertical extent lies fully inside
    assert frame_fraction(o, K, w2c, (H, W)) == pytest.approx(expected, rel=1e-12)
    assert 0.4 < expected < 0.5


def test_phrasings_cover_every_kind() -> None:
    assert set(KIND_FAMILY.values()) == set(FAMILIES) and len(FAMILIES) == 9
    slots = {
        "a": "the red box",
        "b": "the blue sphere",
        "ref": "the box",
        "things": "boxes",
        "rel": "closest to",
        "motion": "The camera turns 30 degrees to the left.",
    }
    for kind, (train, heldout) in TEMPLATES.items():
        assert len(train) >= 4 and len(heldout) >= 2, kind
        assert not set(train) & set(heldout), kind
        for pid in phrasing_ids(kind, "train") + phrasing_ids(kind, "heldout"):
            text = render(pid, **slots)
            assert "{" not in text and text[0] in string.ascii_uppercase, pid


def test_generation_is_deterministic_and_split_by_scene() -> None:
    a, stats = generate_scene_qa(hand_scene(), seed=3, phrasings="all")
    b, _ = generate_scene_qa(hand_scene(), seed=3, phrasings="all")
    assert [r.to_json() for r in a] == [r.to_json() for r in b]
    # the same scene among others yields the same records (per-scene random streams)
    many, total = generate_qa([hand_scene("other_scene"), hand_scene()], seed=3, phrasings="all")
    assert [r.to_json() for r in many if r.scene == "hand_scene"] == [r.to_json() for r in a]
    assert total.records == len(many) and sum(total.scenes.values()) == 2
    # held-out phrasings: same instances and answers, only held-out templates
    held, _ = generate_scene_qa(hand_scene(), seed=3, phrasings="heldout")
    assert [r.to_json() for r in held] == [r.to_json() for r in a if r.phrasing_split == "heldout"]
    assert all("/h" in r.phrasing_id for r in held)
    for r in a:
        assert r.split == scene_split("hand_scene", 0.1)
        assert parse_like(r.answer_text, r.answer) == r.answer
    assert {r.family for r in a} == set(FAMILIES)
    c, _ = generate_scene_qa(hand_scene(), seed=4, phrasings="all")
    assert [r.question for r in c] != [r.question for r in a]
    val = [n for n in (f"s{i}" for i in range(40)) if scene_split(n, 0.5) == "val"]
    only_val, _ = generate_qa(
        [hand_scene(n) for n in ("s0", "s1", "s2", "s3")], config=QAConfig(val_fraction=0.5), split="val"
    )
    assert {r.scene for r in only_val} == {n for n in ("s0", "s1", "s2", "s3") if n in val}


def test_scene_without_objects_is_a_clear_error() -> None:
    scene = hand_scene()
    bare = Scene(
        root=scene.root,
        name="bare",
        image_paths=scene.image_paths,
        K=scene.K,
        w2c=scene.w2c,
        image_hw=scene.image_hw,
    )
    with pytest.raises(ValueError, match="no 'objects' metadata"):
        generate_scene_qa(bare)
    broken = [dict(OBJECTS[0], visible=[1.0])]
    with pytest.raises(ValueError, match=r"objects\[0\]\.visible: need 2 fractions"):
        generate_scene_qa(hand_scene(objects=broken))


def write_scene_folder(root: Path) -> None:
    """The hand-built scene as a transforms.json scene folder (tiny grey PNGs)."""
    scene = hand_scene()
    c2w = opencv_w2c_to_opengl_c2w(scene.w2c).numpy()
    (root / "images").mkdir(parents=True)
    frames = []
    for v in range(2):
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / "images" / f"{v:04d}.png")
        frames.append(
            {
                "file_path": f"images/{v:04d}.png",
                "transform_matrix": c2w[v].tolist(),
                "fl_x": FX,
                "fl_y": FX,
                "cx": W / 2,
                "cy": H / 2,
                "w": W,
                "h": H,
            }
        )
    (root / "transforms.json").write_text(
        json.dumps({"camera_model": "PINHOLE", "w": W, "h": H, "frames": frames, "objects": OBJECTS})
    )


def test_cli_data_qa(tmp_path, capsys) -> None:
    write_scene_folder(tmp_path / "scenes" / "hand_scene")
    out = tmp_path / "qa.jsonl"
    args = [
        "data",
        "qa",
        "--scenes",
        str(tmp_path / "scenes"),
        "--out",
        str(out),
        "--seed",
        "3",
        "--stats",
        str(tmp_path / "stats.json"),
    ]
    assert gst_main(args) == 0
    records = read_jsonl(out)
    expected, _ = generate_scene_qa(hand_scene(), seed=3, phrasings="all")
    assert [r.to_json() for r in records] == [r.to_json() for r in expected]  # loader round trip is exact
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["questions"] == len(records) // 2
    assert "counting" in capsys.readouterr().out
    assert gst_main(["data", "qa", "--scenes", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert "no such folder" in capsys.readouterr().err
