"""Candidate questions per family, computed from a scene's objects metadata and cameras.

Every function takes a ``SceneContext`` and returns ``Candidate``s; the rules that make a question
unambiguous (visibility, unique references, margins) are stated in ``gst.data.qa`` and applied here.
A rejected question is counted in ``ctx.skips[(kind, reason)]``.

Glossary: V views, N objects.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from gst.data.qa_geometry import (
    CameraMotion,
    ObjectInfo,
    bearing_deg,
    camera_aabb,
    camera_center,
    camera_motion,
    to_camera,
)
from gst.data.qa_types import (
    Answer,
    box_answer,
    choice_answer,
    count_answer,
    number_answer,
    point_answer,
)
from gst.data.qa_wording import REL_FORMS

IN, OUT, PARTIAL = "in", "out", "partial"
LEFT_RIGHT = ("left", "right")
FRONT_BEHIND = ("in front", "behind")
YES_NO = ("yes", "no")


@dataclass(frozen=True)
class Candidate:
    kind: str
    answer: Answer
    views: tuple[int, ...]
    slots: dict[str, str] = field(default_factory=dict)  # canonical wording ("the red box")
    motion: CameraMotion | None = None  # rendered into the {motion} slot in the phrasing's style
    target_view: int | None = None
    # slot -> every unambiguous wording of it, ``slots[name]`` first (``reference_forms``, ``REL_FORMS``);
    # the question draws one per phrasing
    forms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # role -> the objects (indices into the scene's objects) the question is about (``QARecord.objects``)
    objects: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class SceneContext:
    """Everything the families read. ``w2c`` (V, 4, 4) float64; ``config`` is a ``gst.data.qa.QAConfig``."""

    name: str
    objects: list[ObjectInfo]
    w2c: np.ndarray
    config: Any
    rng: random.Random
    colors: tuple[str, ...]  # answer options for colour questions
    shapes: tuple[str, ...]  # answer options for shape questions
    visibility: np.ndarray  # (N, V) visible fraction x frame fraction; NaN = undecidable
    skips: Counter = field(default_factory=Counter)
    _positions: dict[int, list[tuple[str, ObjectInfo | str]]] = field(default_factory=dict, repr=False)

    @property
    def num_views(self) -> int:
        return int(self.w2c.shape[0])

    def status(self, o: ObjectInfo, view: int) -> str:
        """IN, OUT or PARTIAL (rules in gst.data.qa)."""
        cfg = self.config
        v = float(self.visibility[o.index, view])
        if o.visible[view] <= cfg.hidden_max or v <= cfg.hidden_max:
            return OUT
        pixels_ok = o.visible_pixels is None or o.visible_pixels[view] >= cfg.min_visible_pixels
        return IN if v >= cfg.visible_min and pixels_ok else PARTIAL  # NaN compares False: PARTIAL

    def in_view(self, view: int) -> list[ObjectInfo]:
        """Objects clearly visible in ``view`` whose centre lies in front of the camera."""
        return [
            o
            for o in self.objects
            if self.status(o, view) == IN and self.p(o, view)[2] > self.config.min_depth_m
        ]

    def seen(self, view: int) -> list[ObjectInfo]:
        """Objects visible at all (clearly or partly): the ones a superlative must beat."""
        return [o for o in self.objects if self.status(o, view) != OUT]

    def p(self, o: ObjectInfo, view: int) -> np.ndarray:
        """Object centre in the camera frame of ``view``. Shapes: (3,)."""
        return to_camera(self.w2c[view], o.center)

    def unique(self, o: ObjectInfo) -> bool:
        return sum(x.label == o.label for x in self.objects) == 1

    def skip(self, kind: str, reason: str) -> None:
        self.skips[(kind, reason)] += 1


def _ref(o: ObjectInfo) -> str:
    return f"the {o.label}"


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def counting(ctx: SceneContext) -> list[Candidate]:
    queries: list[tuple[str, Callable[[ObjectInfo], bool]]] = [("objects", lambda o: True)]
    for c in sorted({o.color for o in ctx.objects}):
        queries.append((f"{c} objects", lambda o, c=c: o.color == c))
    for s in sorted({o.shape for o in ctx.objects}):
        queries.append((_plural(s), lambda o, s=s: o.shape == s))
    out = []
    for v in range(ctx.num_views):
        for things, match in queries:
            objs = [o for o in ctx.objects if match(o)]
            if any(ctx.status(o, v) == PARTIAL for o in objs):
                ctx.skip("count", "partly_visible")
                continue
            counted = tuple(o.index for o in objs if ctx.status(o, v) == IN)
            if things == "objects" and not counted:
                ctx.skip("count", "empty_view")
                continue
            out.append(
                Candidate(
                    "count",
                    count_answer(len(counted)),
                    (v,),
                    {"things": things},
                    objects={"counted": counted},
                )
            )
    return out


def _superlative(
    ctx: SceneContext,
    view: int,
    key: Callable[[ObjectInfo], float],
    margin: Callable[[float], float],
    pool: list[ObjectInfo],
) -> ObjectInfo | str:
    """The object of ``pool`` with the smallest ``key`` if it is clearly visible and beats the runner-up
    by ``margin(best)``; else a skip reason."""
    if len(pool) < 2:
        return "too_few_objects"
    ranked = sorted(pool, key=key)
    best, second = ranked[0], ranked[1]
    if key(second) - key(best) < margin(key(best)):
        return "below_margin"
    if ctx.status(best, view) != IN or not ctx.unique(best):
        return "partly_visible" if ctx.status(best, view) != IN else "ambiguous_reference"
    return best


POSITIONAL_REFS = (
    "the leftmost object",
    "the rightmost object",
    "the object closest to the camera",
    "the object farthest from the camera",
)
# Positional wordings a kind never uses for {a} / {b}: they would give the answer away ("is the leftmost
# object left or right of ...") or read as a riddle ("how far from the camera is the object closest to it").
_NO_POSITIONAL: dict[str, tuple[str, ...]] = {
    "rel_lr": POSITIONAL_REFS[:2],
    "rel_viewer": POSITIONAL_REFS[:2],
    "rel_fb": POSITIONAL_REFS[2:],
    "dist_cam": POSITIONAL_REFS[2:],
    "nf_object": POSITIONAL_REFS[2:],
    "vis_stay": POSITIONAL_REFS[:2],  # "will the leftmost object stay in view" after a turn left
}


def _positions(ctx: SceneContext, view: int) -> list[tuple[str, ObjectInfo | str]]:
    """(positional reference, its object or the skip reason) in ``view``, in ``POSITIONAL_REFS`` order."""
    if view in ctx._positions:
        return ctx._positions[view]
    cfg = ctx.config
    seen = [o for o in ctx.seen(view) if ctx.p(o, view)[2] > cfg.min_depth_m]
    dist = {o.index: float(np.linalg.norm(ctx.p(o, view))) for o in seen}
    bear = {o.index: bearing_deg(ctx.p(o, view)) for o in seen}
    rank_margin = lambda d: max(cfg.rank_margin_m, cfg.rank_margin_frac * abs(d))  # noqa: E731
    specs = (
        (lambda o: bear[o.index], lambda _: cfg.lr_margin_deg),
        (lambda o: -bear[o.index], lambda _: cfg.lr_margin_deg),
        (lambda o: dist[o.index], rank_margin),
        (lambda o: -dist[o.index], rank_margin),
    )
    out = [
        (text, _superlative(ctx, view, key, margin, seen))
        for text, (key, margin) in zip(POSITIONAL_REFS, specs, strict=True)
    ]
    ctx._positions[view] = out
    return out


def _positional_refs(ctx: SceneContext, view: int, kind: str) -> list[tuple[str, ObjectInfo]]:
    refs = []
    for text, best in _positions(ctx, view):
        if isinstance(best, str):
            ctx.skip(kind, best)
        else:
            refs.append((text, best))
    return refs


def reference_forms(ctx: SceneContext, o: ObjectInfo, view: int, kind: str) -> tuple[str, ...]:
    """Every unambiguous wording of a uniquely labelled object in ``view`` (rules in gst.data.qa):
    "the <colour> <shape>"; "the <shape>" / "the <colour> object" when that attribute is unique among
    all the scene's objects; a positional reference when ``o`` wins that superlative by the margins
    (except those ``_NO_POSITIONAL`` bars for ``kind``)."""
    forms = [_ref(o)]
    if sum(x.shape == o.shape for x in ctx.objects) == 1:
        forms.append(f"the {o.shape}")
    if sum(x.color == o.color for x in ctx.objects) == 1:
        forms.append(f"the {o.color} object")
    barred = _NO_POSITIONAL.get(kind, ())
    for text, best in _positions(ctx, view):
        if not isinstance(best, str) and best.index == o.index and text not in barred:
            forms.append(text)
    return tuple(forms)


def _object_slots(ctx: SceneContext, view: int, kind: str, **objs: ObjectInfo) -> dict[str, Any]:
    """``slots``, ``forms`` and ``objects`` keyword arguments of a Candidate naming ``objs`` (slot name ->
    object; the slot name is the object's role)."""
    return {
        "slots": {name: _ref(o) for name, o in objs.items()},
        "forms": {name: reference_forms(ctx, o, view, kind) for name, o in objs.items()},
        "objects": {name: (o.index,) for name, o in objs.items()},
    }


def attributes(ctx: SceneContext) -> list[Candidate]:
    out = []
    for kind, attr, other, options in (
        ("attr_color", "color", "shape", ctx.colors),
        ("attr_shape", "shape", "color", ctx.shapes),
    ):
        for v in range(ctx.num_views):
            refs = _positional_refs(ctx, v, kind)
            for o in ctx.in_view(v):
                if sum(getattr(x, other) == getattr(o, other) for x in ctx.objects) != 1:
                    ctx.skip(kind, "ambiguous_reference")
                    continue
                refs.append((f"the {o.shape}" if other == "shape" else f"the {o.color} object", o))
            for text, o in refs:
                ans = choice_answer(getattr(o, attr), options)
                out.append(Candidate(kind, ans, (v,), {"ref": text}, objects={"a": (o.index,)}))
    return out


def _ordered_pairs(
    ctx: SceneContext, objs: list[ObjectInfo], kind: str
) -> list[tuple[ObjectInfo, ObjectInfo]]:
    """Unordered pairs of uniquely named objects, each in a random order (one question per pair)."""
    pairs = []
    for a, b in combinations(objs, 2):
        if not (ctx.unique(a) and ctx.unique(b)):
            ctx.skip(kind, "ambiguous_reference")
            continue
        pairs.append((a, b) if ctx.rng.random() < 0.5 else (b, a))
    return pairs


def relative_direction(ctx: SceneContext) -> list[Candidate]:
    cfg = ctx.config
    out = []
    for v in range(ctx.num_views):
        objs = ctx.in_view(v)
        for a, b in _ordered_pairs(ctx, objs, "rel_lr"):
            pa, pb = ctx.p(a, v), ctx.p(b, v)
            dx, dbear = pa[0] - pb[0], bearing_deg(pa) - bearing_deg(pb)
            # camera-frame x and image position must agree, both by a margin
            if abs(dx) < cfg.lr_margin_m or abs(dbear) < cfg.lr_margin_deg or (dx > 0) != (dbear > 0):
                ctx.skip("rel_lr", "below_margin")
            else:
                ans = choice_answer("left" if dx < 0 else "right", LEFT_RIGHT)
                out.append(Candidate("rel_lr", ans, (v,), **_object_slots(ctx, v, "rel_lr", a=a, b=b)))
        for a, b in _ordered_pairs(ctx, objs, "rel_fb"):
            dz = ctx.p(a, v)[2] - ctx.p(b, v)[2]
            if abs(dz) < cfg.depth_margin_m:
                ctx.skip("rel_fb", "below_margin")
            else:
                ans = choice_answer("in front" if dz < 0 else "behind", FRONT_BEHIND)
                out.append(Candidate("rel_fb", ans, (v,), **_object_slots(ctx, v, "rel_fb", a=a, b=b)))
        for a in objs:
            pa = ctx.p(a, v)
            if not ctx.unique(a):
                ctx.skip("rel_viewer", "ambiguous_reference")
            elif abs(pa[0]) < cfg.lr_margin_m or abs(bearing_deg(pa)) < cfg.lr_margin_deg:
                ctx.skip("rel_viewer", "below_margin")
            else:
                ans = choice_answer("left" if pa[0] < 0 else "right", LEFT_RIGHT)
                out.append(Candidate("rel_viewer", ans, (v,), **_object_slots(ctx, v, "rel_viewer", a=a)))
    return out


def _unique_in_view(ctx: SceneContext, v: int, kind: str) -> list[ObjectInfo]:
    objs = []
    for o in ctx.in_view(v):
        if ctx.unique(o):
            objs.append(o)
        else:
            ctx.skip(kind, "ambiguous_reference")
    return objs


def distance(ctx: SceneContext) -> list[Candidate]:
    out = []
    for v in range(ctx.num_views):
        for a in _unique_in_view(ctx, v, "dist_cam"):
            d = float(np.linalg.norm(ctx.p(a, v)))
            out.append(
                Candidate("dist_cam", number_answer(d, "m"), (v,), **_object_slots(ctx, v, "dist_cam", a=a))
            )
        for a, b in _ordered_pairs(ctx, ctx.in_view(v), "dist_pair"):
            d = float(np.linalg.norm(a.center - b.center))
            slots = _object_slots(ctx, v, "dist_pair", a=a, b=b)
            out.append(Candidate("dist_pair", number_answer(d, "m"), (v,), **slots))
    return out


def size(ctx: SceneContext) -> list[Candidate]:
    out = []
    for v in range(ctx.num_views):
        for a, b in _ordered_pairs(ctx, ctx.in_view(v), "size_larger"):
            big, small = (a, b) if a.volume >= b.volume else (b, a)
            if big.volume < ctx.config.size_ratio * small.volume:
                ctx.skip("size_larger", "below_margin")
                continue
            ans = choice_answer(big.label, (a.label, b.label))
            out.append(Candidate("size_larger", ans, (v,), **_object_slots(ctx, v, "size_larger", a=a, b=b)))
        for a in _unique_in_view(ctx, v, "size_height"):
            slots = _object_slots(ctx, v, "size_height", a=a)
            out.append(Candidate("size_height", number_answer(a.height, "m"), (v,), **slots))
    return out


def nearest_farthest(ctx: SceneContext) -> list[Candidate]:
    cfg = ctx.config
    margin = lambda d: max(cfg.rank_margin_m, cfg.rank_margin_frac * abs(d))  # noqa: E731
    out = []
    for v in range(ctx.num_views):
        seen = ctx.seen(v)
        visible = ctx.in_view(v)
        for anchor in [None, *_unique_in_view(ctx, v, "nf_object")]:
            kind = "nf_camera" if anchor is None else "nf_object"
            if anchor is None:
                dist = {o.index: float(np.linalg.norm(ctx.p(o, v))) for o in seen}
            else:
                dist = {
                    o.index: float(np.linalg.norm(o.center - anchor.center)) for o in seen if o is not anchor
                }
            pool = [o for o in seen if o.index in dist]
            options = [o.label for o in visible if o is not anchor]
            if len(options) < 2 or len(set(options)) != len(options):
                ctx.skip(kind, "too_few_objects" if len(options) < 2 else "ambiguous_reference")
                continue
            for rel, sign in (("closest to", 1.0), ("farthest from", -1.0)):
                best = _superlative(ctx, v, lambda o, s=sign, d=dist: s * d[o.index], margin, pool)
                if isinstance(best, str) or best.label not in options:
                    ctx.skip(kind, best if isinstance(best, str) else "partly_visible")
                    continue
                named = {} if anchor is None else _object_slots(ctx, v, kind, a=anchor)
                slots = {"rel": rel, **named.get("slots", {})}
                forms = {"rel": REL_FORMS[rel], **named.get("forms", {})}
                objects = {**named.get("objects", {}), "answer": (best.index,)}
                ans = choice_answer(best.label, sorted(options))
                out.append(Candidate(kind, ans, (v,), slots, forms=forms, objects=objects))
    return out


def view_pairs(ctx: SceneContext) -> list[tuple[int, int]]:
    """Ordered view pairs for the two-view families: all of them, or ``max_pairs`` drawn at random."""
    pairs = [(i, j) for i in range(ctx.num_views) for j in range(ctx.num_views) if i != j]
    if len(pairs) > ctx.config.max_pairs:
        pairs = sorted(ctx.rng.sample(pairs, ctx.config.max_pairs))
    return pairs


def camera_motion_family(ctx: SceneContext, pairs: list[tuple[int, int]]) -> list[Candidate]:
    cfg = ctx.config
    out = []
    for i, j in pairs:
        if not any(ctx.status(o, i) == IN and ctx.status(o, j) == IN for o in ctx.objects):
            for kind in ("cm_turn_dir", "cm_turn_deg", "cm_move_dist", "cm_move_dir"):
                ctx.skip(kind, "no_covisible_object")
            continue
        m = camera_motion(ctx.w2c[i], ctx.w2c[j])
        turn = abs(m.turn_left_deg)
        if cfg.min_turn_deg <= turn <= cfg.max_turn_deg:
            side = "left" if m.turn_left_deg > 0 else "right"
            out.append(Candidate("cm_turn_dir", choice_answer(side, LEFT_RIGHT), (i, j)))
            out.append(Candidate("cm_turn_deg", number_answer(turn, "deg"), (i, j)))
        else:
            ctx.skip("cm_turn_dir", "below_margin")
            ctx.skip("cm_turn_deg", "below_margin")
        moved = float(np.linalg.norm(camera_center(ctx.w2c[j]) - camera_center(ctx.w2c[i])))
        if moved >= cfg.min_move_m:
            out.append(Candidate("cm_move_dist", number_answer(moved, "m"), (i, j)))
        else:
            ctx.skip("cm_move_dist", "below_margin")
        if abs(m.left_m) >= cfg.move_lr_margin_m:
            side = "left" if m.left_m > 0 else "right"
            out.append(Candidate("cm_move_dir", choice_answer(side, LEFT_RIGHT), (i, j)))
        else:
            ctx.skip("cm_move_dir", "below_margin")
    return out


def motion_visibility(ctx: SceneContext, pairs: list[tuple[int, int]]) -> list[Candidate]:
    out = []
    for i, j in pairs:
        m = camera_motion(ctx.w2c[i], ctx.w2c[j])
        status = [(ctx.status(o, i), ctx.status(o, j)) for o in ctx.objects]
        new = [o for o, s in zip(ctx.objects, status, strict=True) if s == (OUT, IN)]
        # "partly" on either side (or partly -> in) could be counted either way: no count/which question
        unclear = [
            o
            for o, (si, sj) in zip(ctx.objects, status, strict=True)
            if si != IN and sj != OUT and (si, sj) != (OUT, IN)
        ]
        base = dict(views=(i,), motion=m, target_view=j)
        for o, (si, sj) in zip(ctx.objects, status, strict=True):
            # vis_yesno asks about an object out of view now, vis_stay about one in view (the image shows
            # where it is, so the answer can be read off the image and the motion)
            kind = {OUT: "vis_yesno", IN: "vis_stay"}.get(si)
            if kind is None:
                continue
            if sj == PARTIAL or not ctx.unique(o):
                ctx.skip(kind, "partly_visible" if sj == PARTIAL else "ambiguous_reference")
                continue
            ans = choice_answer("yes" if sj == IN else "no", YES_NO)
            out.append(Candidate(kind, ans, **_object_slots(ctx, i, kind, a=o), **base))
        if unclear:
            ctx.skip("vis_count", "partly_visible")
            ctx.skip("vis_which", "partly_visible")
            continue
        counted = {"counted": tuple(o.index for o in new)}
        out.append(Candidate("vis_count", count_answer(len(new)), objects=counted, **base))
        options = [o.label for o, (si, _) in zip(ctx.objects, status, strict=True) if si != IN]
        if len(new) != 1 or len(options) < 2 or len(set(options)) != len(options):
            ctx.skip("vis_which", "not_exactly_one_new" if len(new) != 1 else "too_few_objects")
            continue
        ans = choice_answer(new[0].label, sorted(options))
        out.append(Candidate("vis_which", ans, objects={"answer": (new[0].index,)}, **base))
    return out


def grounding_3d(ctx: SceneContext) -> list[Candidate]:
    out = []
    for v in range(ctx.num_views):
        for a in _unique_in_view(ctx, v, "g3d_point"):
            point = point_answer(ctx.p(a, v).tolist())
            out.append(Candidate("g3d_point", point, (v,), **_object_slots(ctx, v, "g3d_point", a=a)))
            center, extent = camera_aabb(a, ctx.w2c[v])
            box = box_answer(center.tolist(), extent.tolist())
            out.append(Candidate("g3d_box", box, (v,), **_object_slots(ctx, v, "g3d_box", a=a)))
    return out


def all_candidates(ctx: SceneContext) -> list[Candidate]:
    """Every candidate question of the scene, families in ``KIND_FAMILY`` order."""
    pairs = view_pairs(ctx)
    out = []
    for fn in (counting, attributes, relative_direction, distance, size, nearest_farthest):
        out += fn(ctx)
    out += camera_motion_family(ctx, pairs)
    out += motion_visibility(ctx, pairs)
    out += grounding_3d(ctx)
    if not all(math.isfinite(float(c.answer.value)) for c in out if c.answer.type == "number"):
        raise ValueError(f"scene {ctx.name}: a numeric answer is not finite; check its cameras and objects")
    return out
