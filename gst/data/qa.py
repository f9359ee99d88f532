"""Spatial question-answer generation from a scene's objects metadata and cameras (issue 5).

Families and kinds (``gst.data.qa_phrasings.KIND_FAMILY``), answers typed as in ``gst.data.qa_types``:

- counting: ``count`` how many objects / <colour> objects / <shape>s are visible (count);
- attributes: ``attr_color`` / ``attr_shape`` of an object named by its other attribute (when that is
  unique in the scene) or by position (leftmost, rightmost, closest to / farthest from the camera) (choice);
- relative_direction, in the observed camera's frame: ``rel_lr`` is A left or right of B, ``rel_fb`` is
  A in front of (closer to the camera, smaller z) or behind B, ``rel_viewer`` is A on the viewer's left
  (-x) or right (choice);
- distance: ``dist_cam`` camera centre to object centre, ``dist_pair`` object centre to centre (metres);
- size: ``size_larger`` larger bounding-box volume (choice of the two), ``size_height`` height (metres);
- nearest_farthest: ``nf_camera`` / ``nf_object`` the object closest to / farthest from the camera or
  another object (choice among the visible objects);
- camera_motion between two observed views: ``cm_turn_dir`` left/right, ``cm_turn_deg`` heading change
  (degrees), ``cm_move_dist`` distance between the camera centres (metres), ``cm_move_dir`` sideways
  move left/right (definitions in ``gst.data.qa_geometry``);
- motion_visibility: the observed view plus a motion described in words (to the target view, which is
  not shown): ``vis_yesno`` does object A (out of view now) become visible, ``vis_count`` how many
  objects come into view, ``vis_which`` which one, ``vis_stay`` does object A (in view now) stay in view
  (per-view visible fractions of the metadata). Only ``vis_stay`` can be read off the image: where its
  object is in the view decides, with the motion, whether the motion takes it out of the frame
  (``scripts/visibility_evidence.py`` measures this); the other three ask about objects the observed
  view does not show. ``vis_stay`` is generated last (``KIND_FAMILY``), so adding it left every other
  kind's questions and wordings as they were;
- grounding_3d: ``g3d_point`` the object centre in the camera frame, ``g3d_box`` its camera-axis-aligned
  3D box (``gst.data.qa_types``).

Unambiguity rules (defaults in ``QAConfig``; every rejected question is counted by kind and reason):

- visibility: an object's visibility in a view is its metadata ``visible`` fraction (visible over
  unoccluded in-frame pixels: occlusion) times its frame fraction (the share of its projected 3D box
  inside the image: truncation, ``gst.data.qa_geometry.frame_fraction``). It is *in view* when that is
  at least ``visible_min`` (0.5) and at least ``min_visible_pixels`` (16) of its pixels are visible
  (where the metadata counts them); *out of view* when the visibility or the metadata fraction is at or
  below ``hidden_max`` (0.05); *partly visible* otherwise, including boxes straddling the camera
  plane. Questions only name
  objects in view (except ``vis_yesno``, which asks about out-of-view ones). A count is skipped
  when a matching object is partly visible; a superlative (leftmost, closest...) when its winner is
  partly visible, or when it beats a partly or clearly visible runner-up by less than the margin.
- references: a question names an object only when "the <colour> <shape>" is unique among ALL the
  scene's objects (also those out of view). Its wording is drawn among the forms that pick out that one
  object (``gst.data.qa_families.reference_forms``): "the <colour> <shape>"; "the <shape>" / "the
  <colour> object" only when that attribute is unique in the scene; "the leftmost object", "the
  rightmost object", "the object closest to / farthest from the camera" only when the object wins that
  superlative in the question's view under the superlative rule above, and never where the wording
  would give the answer away (left/right questions never say leftmost/rightmost; in-front/behind,
  camera-distance and nearest-to-object questions never say closest to / farthest from the camera).
  Attribute questions name the object by its other attribute or a position (never by the asked one).
- margins: left/right needs |dx_cam| >= ``lr_margin_m`` AND a bearing difference >= ``lr_margin_deg``
  of the same sign (camera-frame x and image position agree); in front/behind |dz_cam| >=
  ``depth_margin_m``; superlatives beat the runner-up by max(``rank_margin_m``, ``rank_margin_frac`` x
  value) (or ``lr_margin_deg`` of bearing); size by a volume ratio >= ``size_ratio``; turns need
  ``min_turn_deg`` <= |turn| <= ``max_turn_deg``; moves >= ``min_move_m``; sideways moves >=
  ``move_lr_margin_m``; two-view questions need one object in view in both views.

Sampling: per scene and kind at most ``max_per_kind`` questions; choice and count questions are drawn
round-robin over their distinct answers (in random order) so no answer dominates by construction;
numeric, point and box questions uniformly. Two-view families use at most ``max_pairs`` ordered view
pairs per scene. Every question instance gets one training and one held-out phrasing (both drawn
always, so the output for one ``--phrasings`` choice does not depend on the other): a template drawn
uniformly among its kind's templates of that split (``gst.data.qa_phrasings``: 24-36 training and 6-26
held-out per kind), and for each object or ``{rel}`` slot one of its forms, drawn uniformly. The
wording has its own random stream (``wording_rng``), so which questions are asked and their answers
never depend on the wording.

Determinism and split: each scene draws its questions from ``random.Random(f"{seed}:{scene name}")``
and their wording from ``random.Random(f"{seed}:{scene name}:wording")``, so a scene's questions do
not depend on which other scenes are generated. The scene split is
``gst.data.pairs.scene_split(scene folder name, val_fraction)`` (a sha256 hash of the name; the same
split as pose and view evaluation).

Glossary: V views, N objects.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gst.data.pairs import scene_split
from gst.data.qa_families import Candidate, SceneContext, all_candidates
from gst.data.qa_geometry import describe_motion, frame_fraction, objects_from_metadata
from gst.data.qa_phrasings import FAMILIES, KIND_FAMILY, phrasing_ids, render
from gst.data.qa_types import QARecord
from gst.data.scene import Scene
from gst.data.synth.scenes import PALETTE, PRIMITIVE_SHAPES

PHRASING_CHOICES = ("train", "heldout", "all")
SPLIT_CHOICES = ("train", "val", "all")


@dataclass(frozen=True, kw_only=True)
class QAConfig:
    """Question generation rules (module docstring). Lengths in metres, angles in degrees."""

    visible_min: float = 0.5  # visible pixel fraction at or above which an object is "in view"
    hidden_max: float = 0.05  # ... at or below which it is "out of view"; partly visible in between
    min_visible_pixels: int = 16  # "in view" also needs this many visible pixels (where counted)
    min_depth_m: float = 0.1  # object centres must lie this far in front of the camera
    lr_margin_m: float = 0.15  # left/right: camera-frame x difference
    lr_margin_deg: float = 3.0  # left/right: bearing difference (image position)
    depth_margin_m: float = 0.3  # in front/behind: camera-frame z difference
    rank_margin_m: float = 0.3  # superlatives: absolute lead over the runner-up...
    rank_margin_frac: float = 0.1  # ... or this fraction of the winner's value, whichever is larger
    size_ratio: float = 1.3  # larger: bounding-box volume ratio
    min_turn_deg: float = 10.0  # turn direction/angle questions need a clear turn...
    max_turn_deg: float = 170.0  # ... that is not a near U-turn (left vs right ambiguous)
    min_move_m: float = 0.2  # move-distance questions need a real move
    move_lr_margin_m: float = 0.3  # sideways component for move-direction questions
    max_per_kind: int = 4  # questions per scene and kind
    max_pairs: int = 600  # ordered view pairs per scene for the two-view families (24 views: all 552)
    val_fraction: float = 0.1  # share of scenes in the val split (gst.data.pairs.scene_split)

    def __post_init__(self) -> None:
        if not 0.0 <= self.hidden_max < self.visible_min <= 1.0:
            raise ValueError(
                "QAConfig: need 0 <= hidden_max < visible_min <= 1, "
                f"got {self.hidden_max}, {self.visible_min}"
            )
        for name in (
            "min_depth_m",
            "lr_margin_m",
            "lr_margin_deg",
            "depth_margin_m",
            "rank_margin_m",
            "rank_margin_frac",
            "min_turn_deg",
            "min_move_m",
            "move_lr_margin_m",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"QAConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.size_ratio < 1.0 or not self.min_turn_deg < self.max_turn_deg <= 180.0:
            raise ValueError("QAConfig: need size_ratio >= 1 and min_turn_deg < max_turn_deg <= 180")
        if self.max_per_kind < 1 or self.max_pairs < 1 or self.min_visible_pixels < 0:
            raise ValueError("QAConfig: max_per_kind, max_pairs must be >= 1 and min_visible_pixels >= 0")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise ValueError(f"QAConfig.val_fraction must be in [0, 1], got {self.val_fraction}")


@dataclass
class QAStats:
    """Counts of a generation run: questions per family / kind, candidates, and skips by reason."""

    scenes: dict[str, int] = field(default_factory=lambda: Counter())  # split -> scenes
    questions: Counter = field(default_factory=Counter)  # kind -> instances kept
    candidates: Counter = field(default_factory=Counter)  # kind -> unambiguous candidates found
    skipped: Counter = field(default_factory=Counter)  # (kind, reason) -> rejected questions
    records: int = 0

    def update(self, other: QAStats) -> None:
        for name in ("scenes", "questions", "candidates", "skipped"):
            getattr(self, name).update(getattr(other, name))
        self.records += other.records

    def to_json(self) -> dict[str, Any]:
        per_family: dict[str, dict[str, Any]] = {f: {"questions": 0, "kinds": {}} for f in FAMILIES}
        for kind, family in KIND_FAMILY.items():
            skips = {r: n for (k, r), n in sorted(self.skipped.items()) if k == kind}
            per_family[family]["kinds"][kind] = {
                "questions": self.questions[kind],
                "candidates": self.candidates[kind],
                "skipped": skips,
            }
            per_family[family]["questions"] += self.questions[kind]
        return {
            "scenes": dict(self.scenes),
            "records": self.records,
            "questions": sum(self.questions.values()),
            "families": per_family,
        }


def scene_rng(seed: int, scene_name: str) -> random.Random:
    """The scene's random stream: independent of the other scenes (string seeds hash with sha512)."""
    return random.Random(f"{seed}:{scene_name}")


def _balanced_sample(cands: list[Candidate], k: int, rng: random.Random) -> list[Candidate]:
    if cands[0].answer.type not in ("choice", "count"):
        return rng.sample(cands, min(k, len(cands)))
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        groups[c.answer.text].append(c)
    keys = sorted(groups)
    rng.shuffle(keys)
    for key in keys:
        rng.shuffle(groups[key])
    chosen: list[Candidate] = []
    while len(chosen) < k and any(groups.values()):
        for key in keys:
            if groups[key] and len(chosen) < k:
                chosen.append(groups[key].pop())
    return chosen


def wording_rng(seed: int, scene_name: str) -> random.Random:
    """The scene's stream for wording (phrasing ids and reference forms), apart from ``scene_rng`` so
    that the questions asked never depend on how many ways there are to say them."""
    return random.Random(f"{seed}:{scene_name}:wording")


# slot -> the ``QARecord.objects`` role whose objects its wording names (``QARecord.references``)
SLOT_ROLES = {"a": "a", "b": "b", "ref": "a", "things": "counted"}


def _phrase(c: Candidate, phrasing_split: str, rng: random.Random) -> tuple[str, str, dict[str, str]]:
    """(phrasing id, question text, role -> the wording that names its objects): a template of
    ``phrasing_split`` and one form per slot, drawn."""
    phrasing_id = rng.choice(phrasing_ids(c.kind, phrasing_split))
    slots = {
        name: rng.choice(c.forms[name]) if name in c.forms else text for name, text in sorted(c.slots.items())
    }
    if c.motion is not None:
        slots["motion"] = describe_motion(c.motion, "camera" if phrasing_split == "train" else "you")
    references = {SLOT_ROLES[name]: text for name, text in slots.items() if name in SLOT_ROLES}
    return phrasing_id, render(phrasing_id, **slots), references


def scene_context(scene: Scene, config: QAConfig, seed: int) -> SceneContext:
    """Validate a scene's metadata and wrap it for the families."""
    if not scene.objects:
        raise ValueError(
            f"scene {scene.root}: no 'objects' metadata in transforms.json; QA needs the procedural world "
            "(`gst data synth`) or a scene with the same objects format"
        )
    objects = objects_from_metadata(scene.objects, scene.num_views, f"scene {scene.root}")
    colors = tuple(sorted(set(PALETTE) | {o.color for o in objects}))
    shapes = tuple(sorted(set(PRIMITIVE_SHAPES) | {o.shape for o in objects}))
    w2c = scene.w2c.detach().cpu().double().numpy()  # (V, 4, 4)
    K = scene.K.detach().cpu().double().numpy()  # (V, 3, 3)
    frame = np.array(
        [[frame_fraction(o, K[v], w2c[v], scene.image_hw) for v in range(len(w2c))] for o in objects]
    )
    visibility = np.array([o.visible for o in objects]) * frame.reshape(len(objects), len(w2c))  # (N, V)
    rng = scene_rng(seed, scene.name)
    return SceneContext(scene.name, objects, w2c, config, rng, colors, shapes, visibility)


def generate_scene_qa(
    scene: Scene,
    *,
    config: QAConfig | None = None,
    seed: int = 0,
    phrasings: str = "train",
) -> tuple[list[QARecord], QAStats]:
    """Questions about one scene. ``phrasings``: "train", "heldout" or "all" (one record per phrasing
    split and instance, sharing ``instance``). Deterministic in (scene, config, seed)."""
    config = QAConfig() if config is None else config
    if phrasings not in PHRASING_CHOICES:
        raise ValueError(f"phrasings must be one of {PHRASING_CHOICES}, got {phrasings!r}")
    ctx = scene_context(scene, config, seed)
    words = wording_rng(seed, scene.name)
    split = scene_split(scene.name, config.val_fraction)
    by_kind: dict[str, list[Candidate]] = defaultdict(list)
    for c in all_candidates(ctx):
        by_kind[c.kind].append(c)
    stats = QAStats(scenes=Counter({split: 1}), skipped=Counter(ctx.skips))
    wanted = ("train", "heldout") if phrasings == "all" else (phrasings,)
    records = []
    for kind in KIND_FAMILY:
        cands = by_kind.get(kind, [])
        stats.candidates[kind] += len(cands)
        if not cands:
            continue
        chosen = _balanced_sample(cands, config.max_per_kind, ctx.rng)
        stats.questions[kind] += len(chosen)
        for k, c in enumerate(chosen):
            phrased = {ps: _phrase(c, ps, words) for ps in ("train", "heldout")}
            instance = f"{scene.name}/{kind}/{k}"
            for ps in wanted:
                records.append(
                    QARecord(
                        id=f"{instance}/{ps[0]}",
                        instance=instance,
                        scene=scene.name,
                        views=c.views,
                        target_view=c.target_view,
                        family=KIND_FAMILY[kind],
                        kind=kind,
                        phrasing_id=phrased[ps][0],
                        phrasing_split=ps,
                        split=split,
                        question=phrased[ps][1],
                        answer=c.answer,
                        objects=c.objects,
                        references=phrased[ps][2],
                    )
                )
    stats.records = len(records)
    return records, stats


def discover_scene_dirs(root: str | Path) -> list[Path]:
    """``root`` itself when it holds a transforms.json, else its sub-folders that do (sorted by name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"--scenes {root}: no such folder; make scenes with `gst data synth --out DIR`"
        )
    if (root / "transforms.json").is_file():
        return [root]
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and (d / "transforms.json").is_file())
    if not dirs:
        raise FileNotFoundError(
            f"--scenes {root}: no transforms.json in it or its sub-folders; make scenes with `gst data synth`"
        )
    return dirs


def generate_qa(
    scenes: Iterable[Scene],
    *,
    config: QAConfig | None = None,
    seed: int = 0,
    split: str = "all",
    phrasings: str = "train",
) -> tuple[list[QARecord], QAStats]:
    """Questions for many scenes, keeping the scenes of ``split`` ("train", "val" or "all")."""
    config = QAConfig() if config is None else config
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    records: list[QARecord] = []
    total = QAStats()
    for scene in scenes:
        if split != "all" and scene_split(scene.name, config.val_fraction) != split:
            continue
        recs, stats = generate_scene_qa(scene, config=config, seed=seed, phrasings=phrasings)
        records += recs
        total.update(stats)
    return records, total


def answer_histogram(records: Sequence[QARecord]) -> dict[str, dict[str, int]]:
    """kind -> answer text -> count, for choice and count answers (how balanced the data is)."""
    out: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        if r.answer.type in ("choice", "count"):
            out[r.kind][r.answer_text] += 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def numeric_summary(records: Sequence[QARecord]) -> dict[str, dict[str, float]]:
    """kind -> min / median / max of numeric answers."""
    vals: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.answer.type == "number":
            vals[r.kind].append(float(r.answer.value))
    return {k: {"min": min(v), "median": float(np.median(v)), "max": max(v)} for k, v in vals.items()}
