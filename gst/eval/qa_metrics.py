"""Spatial QA metrics: pure functions, and their summary per family, kind and phrasing split.

Per answer type (answers parsed from text with ``gst.data.qa_types.parse_like``; an unparseable answer
scores 0 on every metric and is counted, never dropped):

- choice, count: exact match of the parsed value.
- number: MRA, mean relative accuracy as in VSI-Bench (Yang et al. 2024, "Thinking in Space"):
  ``MRA = 1/10 sum_{theta in {0.50, 0.55, ..., 0.95}} 1[|pred - gt| / |gt| < 1 - theta]``. The paper
  writes a strict ``<``; its lmms-eval implementation uses ``<=`` on float thresholds from
  ``np.linspace``: they differ only when the relative error hits a threshold exactly. Here the
  tolerances 1 - theta are the exact decimals 0.50, 0.45, ..., 0.05 and the comparison is strict.
- point: L2 error in metres; its score is MRA applied to the relative error ||pred - gt|| / ||gt||.
- box: 3D IoU; score = Acc@0.25 (IoU >= 0.25), also Acc@0.5 and the mean IoU. ``box_iou_3d`` is exact
  for oriented boxes (convex clipping, below); the QA boxes are camera-axis-aligned (rotation = I).

Overall figures: ``score_micro`` averages the per-question scores, ``score_macro`` the per-family means
(as VSI-Bench averages its tasks).

Glossary: P points.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gst.data.qa_phrasings import FAMILIES, KIND_FAMILY
from gst.data.qa_types import COORD_DECIMALS, UNIT_DECIMALS, Answer, AnswerParseError, QARecord, parse_like

# VSI-Bench confidence thresholds theta = 0.50, 0.55, ..., 0.95, stored as the tolerances 1 - theta.
MRA_TOLERANCES: tuple[float, ...] = tuple(round(0.50 - 0.05 * i, 2) for i in range(10))
IOU_THRESHOLDS: tuple[float, ...] = (0.25, 0.5)
_PLANE_EPS = 1e-9  # metres; vertices this close to a clipping plane count as on it

METRIC_DEFINITIONS = {
    "choice": "exact match of the parsed option",
    "count": "exact match of the parsed integer",
    "number": "MRA (VSI-Bench): mean over theta in 0.50..0.95 step 0.05 of 1[|p - g| / |g| < 1 - theta]",
    "point": "score = MRA of ||p - g|| / ||g||; l2_m = ||p - g|| in metres (parsed answers only)",
    "box": "score = Acc@0.25 (3D IoU >= 0.25, exact convex clipping); also Acc@0.5 and mean IoU",
    "unparseable": "answers the parser rejects score 0 on every metric and are counted",
}


def mean_relative_accuracy(pred: float, gt: float) -> float:
    """VSI-Bench MRA of one numeric answer. Range: [0, 1]. ``gt`` must be non-zero."""
    if gt == 0 or not math.isfinite(gt):
        raise ValueError(f"MRA needs a finite non-zero ground truth, got {gt}")
    if not math.isfinite(pred):
        return 0.0
    return mra_of_relative_error(abs(pred - gt) / abs(gt))


def mra_of_relative_error(rel: float) -> float:
    """The share of the VSI-Bench tolerances 0.50, 0.45, ..., 0.05 that ``rel`` lies strictly below."""
    if not math.isfinite(rel):
        return 0.0
    return sum(rel < tol for tol in MRA_TOLERANCES) / len(MRA_TOLERANCES)


# Number answers decoded by minimum Bayes risk (``mbr_number``) choose from a log-spaced grid per unit:
# (smallest, largest, ratio of neighbours). Rounded to the unit's decimals, neighbours are at most 7 %
# apart from 1 m and 30 deg up, so the nearest candidate is within 3.5 %, under the finest MRA tolerance
# (5 %); the ranges hold every answer `gst data qa` writes.
NUMBER_GRIDS: dict[str, tuple[float, float, float]] = {"m": (0.05, 20.0, 1.04), "deg": (1.0, 180.0, 1.04)}


def number_grid(unit: str) -> list[float]:
    """The candidate values of a number answer in ``unit`` (``NUMBER_GRIDS``), rounded to the unit's
    decimals (``UNIT_DECIMALS``), ascending and distinct."""
    if unit not in NUMBER_GRIDS:
        raise ValueError(f"number_grid: no grid for unit {unit!r}; units with one: {tuple(NUMBER_GRIDS)}")
    lo, hi, ratio = NUMBER_GRIDS[unit]
    steps = int(math.floor(math.log(hi / lo) / math.log(ratio))) + 1
    values = [round(lo * ratio**k, UNIT_DECIMALS[unit]) for k in range(steps)] + [hi]
    return sorted(set(values))


def coordinate_grid() -> list[float]:
    """Candidate values of a signed coordinate (x or y in the camera frame), metres: -5 to 5 in 5 cm steps."""
    return [round(0.05 * k, COORD_DECIMALS) + 0.0 for k in range(-100, 101)]  # + 0.0: no "-0.00"


def grid_belief(values: Sequence[float], log_likelihoods: Sequence[float]) -> np.ndarray:
    """The model's belief over a grid of candidate values, (G,) summing to 1. ``values``: strictly
    ascending; ``log_likelihoods``: of each value's exact answer string. A string stands for the values
    around it, so each candidate's belief is its likelihood times the width of its cell (midpoint to
    midpoint, the end cells mirrored): a log-spaced grid, dense at small values, does not favour them."""
    v = np.asarray(values, dtype=np.float64)  # (G,)
    ll = np.asarray(log_likelihoods, dtype=np.float64)  # (G,)
    if v.ndim != 1 or v.shape != ll.shape or v.size == 0 or not np.all(np.isfinite(ll)):
        raise ValueError(f"need one finite log-likelihood per grid value, got {v.shape} / {ll.shape}")
    if np.any(np.diff(v) <= 0):
        raise ValueError("the grid values must be strictly ascending")
    if v.size == 1:
        return np.ones(1)
    mid = (v[1:] + v[:-1]) / 2
    edges = np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])  # (G + 1,)
    p = np.exp(ll - ll.max()) * np.diff(edges)
    return p / p.sum()


def mbr_number(values: Sequence[float], log_likelihoods: Sequence[float]) -> float:
    """Minimum Bayes risk choice for MRA: the candidate with the highest expected MRA under the model's
    belief over the same candidates (``grid_belief``). A confident model gets its mode; an unsure one a
    central value."""
    v = np.asarray(values, dtype=np.float64)  # (G,)
    if np.any(v <= 0):
        raise ValueError("mbr_number: MRA needs positive values")
    p = grid_belief(v, log_likelihoods)
    rel = np.abs(v[:, None] - v[None, :]) / v[None, :]  # (G candidates, G truths)
    mra = (rel[..., None] < np.asarray(MRA_TOLERANCES)).mean(-1)  # (G, G)
    return float(v[int(np.argmax(mra @ p))])


def token_mbr_number(values: Sequence[float], probs: Sequence[float], decimals: int) -> float:
    """Minimum Bayes risk choice for MRA from a distribution over number tokens (``--numbers tokens``):
    the model's belief is ``probs`` on the tokens' values ``values`` (bin centres; the zero token, on
    which MRA is undefined, is left out and the rest renormalised), and the candidates are those values
    written with ``decimals`` decimals, what the answer will say: the one of highest expected MRA.
    Shapes: values, probs (G,). Range: values >= 0, probs >= 0."""
    v, p = np.asarray(values, dtype=np.float64), np.asarray(probs, dtype=np.float64)  # (G,), (G,)
    if v.ndim != 1 or v.shape != p.shape or np.any(v < 0) or np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError(
            f"need one non-negative probability per non-negative value, got {v.shape} / {p.shape}"
        )
    keep = v > 0
    if not np.any(p[keep] > 0):
        raise ValueError("token_mbr_number: no belief on a positive value")
    v, p = v[keep], p[keep] / p[keep].sum()  # (B,)
    smallest = 10.0**-decimals  # the least positive number the answer can write
    cand = np.unique(np.concatenate([np.round(v, decimals), [smallest]]))
    cand = cand[cand > 0]  # (C,)
    rel = np.abs(cand[:, None] - v[None, :]) / v[None, :]  # (C candidates, B truths)
    mra = (rel[..., None] < np.asarray(MRA_TOLERANCES)).mean(-1)  # (C, B)
    return float(cand[int(np.argmax(mra @ p))])


def signed_token_belief(
    values: Sequence[float], p_number: Sequence[float], p_minus: float, p_after_minus: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The belief over a signed number written as an optional "-" then a number token: ``p_number`` (G,)
    and ``p_minus`` are the probabilities of each token and of "-" first, ``p_after_minus`` (G,) those of
    each token after a "-". Returns (values (2G,), probabilities (2G,) summing to 1): the values, then
    their negatives. ``p_minus = 0`` gives the unsigned belief."""
    v = np.asarray(values, dtype=np.float64)  # (G,)
    first = np.asarray(p_number, dtype=np.float64)  # (G,)
    after = np.asarray(p_after_minus, dtype=np.float64)  # (G,)
    if not (v.shape == first.shape == after.shape) or min(first.min(), after.min(), p_minus) < 0:
        raise ValueError("signed_token_belief: one non-negative probability per value, and p_minus >= 0")
    total = first.sum() + p_minus
    if total <= 0:
        raise ValueError("signed_token_belief: no belief on any number")
    negative = p_minus * after / after.sum() if after.sum() > 0 else np.zeros_like(after)
    probs = np.concatenate([first, negative]) / total  # (2G,)
    return np.concatenate([v, -v]), probs / probs.sum()


def posterior_mean(values: Sequence[float], log_likelihoods: Sequence[float]) -> float:
    """The mean of the model's belief over a grid (``grid_belief``): the Bayes choice for squared error,
    used coordinate by coordinate for points and boxes."""
    return float(grid_belief(values, log_likelihoods) @ np.asarray(values, dtype=np.float64))


@dataclass(frozen=True)
class OrientedBox:
    """A 3D box: centre (3,), full extents (3,) along its own axes, rotation (3, 3) box-to-frame."""

    center: np.ndarray
    size: np.ndarray
    R: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def volume(self) -> float:
        return float(np.prod(self.size))

    def corners(self) -> np.ndarray:
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
        return self.center + (signs * (0.5 * self.size)) @ self.R.T  # (8, 3)

    def faces(self) -> list[np.ndarray]:
        """The 6 faces as ordered (4, 3) polygons."""
        c = self.corners()  # index = 4 ix + 2 iy + iz
        quads = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
        return [c[list(q)] for q in quads]

    def halfspaces(self) -> list[tuple[np.ndarray, float]]:
        """(n, d) with the box = {x : n . x <= d} for all six."""
        out = []
        for axis in range(3):
            n = self.R[:, axis]
            h = 0.5 * float(self.size[axis])
            c = float(n @ self.center)
            out += [(n, c + h), (-n, -c + h)]
        return out


def _clip_polygon(poly: np.ndarray, n: np.ndarray, d: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sutherland-Hodgman: the part of ``poly`` (k, 3) with n . x <= d, and the points on the plane."""
    out, on_plane = [], []
    s = poly @ n - d  # (k,)
    for i in range(len(poly)):
        p, q, sp, sq = poly[i], poly[(i + 1) % len(poly)], s[i], s[(i + 1) % len(poly)]
        if sp <= _PLANE_EPS:
            out.append(p)
            if sp >= -_PLANE_EPS:
                on_plane.append(p)
        if (sp < -_PLANE_EPS and sq > _PLANE_EPS) or (sp > _PLANE_EPS and sq < -_PLANE_EPS):
            x = p + (sp / (sp - sq)) * (q - p)
            out.append(x)
            on_plane.append(x)
    return np.array(out).reshape(-1, 3), on_plane


def _cap(points: list[np.ndarray], n: np.ndarray) -> np.ndarray | None:
    """The convex polygon on the clipping plane, its vertices ordered by angle about their mean."""
    if len(points) < 3:
        return None
    pts = np.unique(np.round(np.array(points), 12), axis=0)
    if len(pts) < 3:
        return None
    centre = pts.mean(axis=0)
    u = pts[0] - centre
    if np.linalg.norm(u) < _PLANE_EPS:
        u = pts[1] - centre
    u = u / np.linalg.norm(u)
    v = np.cross(n, u)
    angles = np.arctan2((pts - centre) @ v, (pts - centre) @ u)
    return pts[np.argsort(angles)]


def _polyhedron_volume(faces: list[np.ndarray]) -> float:
    """Volume of a convex polyhedron from its ordered face polygons: sum of pyramids on each face with
    apex at the mean vertex (inside a convex body)."""
    if not faces:
        return 0.0
    apex = np.concatenate(faces).mean(axis=0)
    vol = 0.0
    for f in faces:
        if len(f) < 3:
            continue
        area_vec = 0.5 * np.cross(f[1:-1] - f[0], f[2:] - f[0]).sum(axis=0)
        area = float(np.linalg.norm(area_vec))
        if area > 0.0:
            vol += area * abs(float((area_vec / area) @ (f[0] - apex))) / 3.0
    return vol


def intersection_volume(a: OrientedBox, b: OrientedBox) -> float:
    """Exact volume of the intersection of two oriented boxes: clip a's faces by b's six half-spaces."""
    faces = a.faces()
    for n, d in b.halfspaces():
        clipped, on_plane, coplanar = [], [], False
        for f in faces:
            g, on = _clip_polygon(f, n, d)
            on_plane += on
            coplanar |= bool(np.all(np.abs(f @ n - d) <= _PLANE_EPS))
            if len(g) >= 3:
                clipped.append(g)
        # a face lying on the plane already is the cap; adding it twice would double its pyramid
        cap = None if coplanar else _cap(on_plane, n)
        faces = clipped + ([cap] if cap is not None else [])
        if not faces:
            return 0.0
    return _polyhedron_volume(faces)


def box_iou_3d(a: OrientedBox, b: OrientedBox) -> float:
    """3D IoU of two oriented boxes. Range: [0, 1]; 0 when either box is empty."""
    va, vb = a.volume, b.volume
    if va <= 0.0 or vb <= 0.0:
        return 0.0
    inter = min(intersection_volume(a, b), va, vb)
    return inter / (va + vb - inter)


def _box(value: dict[str, Any]) -> OrientedBox:
    return OrientedBox(
        np.asarray(value["center"], dtype=np.float64), np.asarray(value["size"], dtype=np.float64)
    )


@dataclass(frozen=True)
class AnswerScore:
    """One scored answer: ``score`` in [0, 1] (the type's primary metric), ``metrics`` by name."""

    score: float
    parsed: bool
    reason: str | None = None  # why parsing failed
    metrics: dict[str, float] = field(default_factory=dict)


def score_answer(text: str, truth: Answer) -> AnswerScore:
    """Score an answer text against a typed ground truth (module docstring)."""
    try:
        pred = parse_like(text, truth)
    except AnswerParseError as err:
        zero = {"box": {"iou": 0.0, "acc@0.25": 0.0, "acc@0.5": 0.0}}.get(truth.type, {})
        return AnswerScore(0.0, False, err.reason, zero)
    if truth.type in ("choice", "count"):
        return AnswerScore(float(pred.value == truth.value), True)
    if truth.type == "number":
        p, g = float(pred.value), float(truth.value)
        return AnswerScore(mean_relative_accuracy(p, g), True, metrics={"abs_err": abs(p - g)})
    if truth.type == "point":
        p, g = np.asarray(pred.value, dtype=np.float64), np.asarray(truth.value, dtype=np.float64)
        l2 = float(np.linalg.norm(p - g))
        norm = float(np.linalg.norm(g))
        score = mra_of_relative_error(l2 / norm) if norm > 0 else float(l2 == 0)
        return AnswerScore(score, True, metrics={"l2_m": l2})
    iou = box_iou_3d(_box(pred.value), _box(truth.value))
    acc = {f"acc@{t}": float(iou >= t) for t in IOU_THRESHOLDS}
    return AnswerScore(acc["acc@0.25"], True, metrics={"iou": iou, **acc})


def _group(records: Sequence[QARecord], scores: Sequence[AnswerScore]) -> dict[str, Any]:
    n = len(scores)
    out: dict[str, Any] = {
        "n": n,
        "score": float(np.mean([s.score for s in scores])) if n else None,
        "unparseable": sum(not s.parsed for s in scores),
    }
    names = sorted({k for s in scores for k in s.metrics})
    for name in names:
        vals = [s.metrics[name] for s in scores if name in s.metrics]
        out[f"mean_{name}"] = float(np.mean(vals))
        if name in ("l2_m", "abs_err"):
            out[f"median_{name}"] = float(np.median(vals))
    return out


def summarize(records: Sequence[QARecord], scores: Sequence[AnswerScore]) -> dict[str, Any]:
    """Per kind, per family, per phrasing split, and overall (micro and macro over families)."""
    if len(records) != len(scores):
        raise ValueError(f"summarize: {len(records)} records but {len(scores)} scores")

    def block(idx: list[int]) -> dict[str, Any]:
        fam_idx: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            fam_idx[records[i].family].append(i)
        families = {}
        for fam in [f for f in FAMILIES if f in fam_idx] + sorted(set(fam_idx) - set(FAMILIES)):
            kinds: dict[str, list[int]] = defaultdict(list)
            for i in fam_idx[fam]:
                kinds[records[i].kind].append(i)
            order = [k for k in KIND_FAMILY if k in kinds] + sorted(set(kinds) - set(KIND_FAMILY))
            families[fam] = _group([records[i] for i in fam_idx[fam]], [scores[i] for i in fam_idx[fam]])
            families[fam]["kinds"] = {
                k: _group([records[i] for i in kinds[k]], [scores[i] for i in kinds[k]]) for k in order
            }
        micro = _group([records[i] for i in idx], [scores[i] for i in idx])
        fam_scores = [f["score"] for f in families.values()]
        overall = {
            "n": micro["n"],
            "score_micro": micro["score"],
            "unparseable": micro["unparseable"],
            "score_macro": float(np.mean(fam_scores)) if fam_scores else None,
        }
        return {"overall": overall, "families": families}

    everything = list(range(len(records)))
    out = block(everything)
    out["phrasing_splits"] = {}
    for ps in ("train", "heldout"):
        idx = [i for i in everything if records[i].phrasing_split == ps]
        if idx:
            out["phrasing_splits"][ps] = block(idx)
    return out


def score_texts(records: Sequence[QARecord], texts: Sequence[str]) -> list[AnswerScore]:
    """Score predicted answer texts, aligned with ``records``, one ``AnswerScore`` each."""
    if len(records) != len(texts):
        raise ValueError(f"evaluate_texts: {len(records)} records but {len(texts)} predictions")
    return [score_answer(t, r.answer) for r, t in zip(records, texts, strict=True)]


def evaluate_texts(records: Sequence[QARecord], texts: Sequence[str]) -> dict[str, Any]:
    """Score predicted answer texts (aligned with ``records``) and summarize them."""
    return summarize(records, score_texts(records, texts))


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown_report(results: dict[str, Any]) -> str:
    """A per-family and per-kind table of one ``gst eval qa`` run (scores in [0, 1])."""
    m = results["metrics"]
    ps = m.get("phrasing_splits", {})
    data = results.get("data", {})
    lines = [
        f"# QA evaluation: {results.get('method')}",
        "",
        f"data {data.get('path')}, split {data.get('eval_split')}, phrasings {data.get('phrasings')}, "
        f"{data.get('num_records')} records from {data.get('num_scenes')} scenes.",
        "",
        "| family / kind | n | score | train phrasings | held-out phrasings | unparseable | other |",
        "|---|---|---|---|---|---|---|",
    ]

    def split_score(name: str, fam: str, kind: str | None) -> float | None:
        f = ps.get(name, {}).get("families", {}).get(fam)
        if f is None:
            return None
        return f["score"] if kind is None else f["kinds"].get(kind, {}).get("score")

    for fam, f in m["families"].items():
        lines.append(
            f"| **{fam}** | {f['n']} | {_fmt(f['score'])} | {_fmt(split_score('train', fam, None))} | "
            f"{_fmt(split_score('heldout', fam, None))} | {f['unparseable']} | |"
        )
        for kind, k in f["kinds"].items():
            other = ", ".join(f"{n} {v:.3f}" for n, v in k.items() if n.startswith(("mean_", "median_")))
            lines.append(
                f"| {kind} | {k['n']} | {_fmt(k['score'])} | {_fmt(split_score('train', fam, kind))} | "
                f"{_fmt(split_score('heldout', fam, kind))} | {k['unparseable']} | {other} |"
            )
    o = m["overall"]
    lines += [
        "",
        f"overall: micro {_fmt(o['score_micro'])}, macro over families {_fmt(o['score_macro'])}, "
        f"{o['unparseable']} unparseable of {o['n']}.",
        "",
    ]
    return "\n".join(lines)
