"""Image pairs within one scene, and the train/val split of scenes. Used by evaluation and training.

A pair is an ordered (observed, target) choice of two views of the *same* scene. The selection rule:

1. **Baseline angle.** The scene centre ``p`` is the least-squares point closest to the optical axes of
   all the scene's views (object-centric captures, NeRF-synthetic and the procedural world, look at
   it). The baseline angle of views (a, b) is the angle at ``p`` between the two camera centres,
   ``angle(c_a - p, c_b - p)``: how far the camera travelled around what it looks at. Where the axes
   are (near) parallel (forward-facing captures) the centre is ill-defined and the angle between the
   two optical axes is used instead; ``Pair.angle_source`` records which. A pair is kept when
   ``min_baseline_deg <= angle <= max_baseline_deg``.
2. **Overlap.** Where the scene carries object metadata with per-view visible fractions (the
   procedural world), at least ``min_covisible_objects`` objects must be visible, each with at least
   ``min_visible_fraction`` of its pixels, in both views. Scenes without it (NeRF-synthetic) rely on
   the angle range alone, and their pairs record ``num_covisible = None``.
3. **Sampling.** All ordered pairs passing 1-2 are enumerated per scene, shuffled with
   ``numpy.random.default_rng(seed)``, and taken round-robin across scenes (scenes in the given
   order) until ``num_pairs`` are drawn: balanced across scenes, without repeats, and a pure function
   of (scenes, config, seed).

Split: a scene belongs to the validation split when the first 8 bytes of
``sha256(salt + ":" + scene_name)``, read as a big-endian integer over 2**64, fall below
``val_fraction``. It depends on the name only, so adding scenes never moves existing ones.

Glossary: V views, P candidate pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from gst.data.scene import Scene
from gst.geometry.conventions import camera_centers

SPLIT_SALT = "gst-split-v1"  # changing it reshuffles every split; bump the suffix, never reuse one
# Axes closer to parallel than this (smallest eigenvalue of the normal equations, per view) make the
# scene centre ill-defined, so the optical-axis angle is used instead.
_MIN_AXIS_SPREAD = 1e-3


@dataclass(frozen=True, kw_only=True)
class PairConfig:
    """How pairs are selected; see the module docstring for the rule."""

    min_baseline_deg: float = 10.0  # below this the translation direction is ill-conditioned
    max_baseline_deg: float = 90.0  # beyond this little of the observed view stays visible
    min_covisible_objects: int = 1  # only where object visibility metadata exists
    min_visible_fraction: float = 0.2  # an object counts as visible in a view above this fraction

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_baseline_deg <= self.max_baseline_deg <= 180.0:
            raise ValueError(
                f"PairConfig: need 0 <= min_baseline_deg ({self.min_baseline_deg}) <= max_baseline_deg "
                f"({self.max_baseline_deg}) <= 180"
            )
        if self.min_covisible_objects < 0:
            raise ValueError(
                f"PairConfig.min_covisible_objects must be >= 0, got {self.min_covisible_objects}"
            )
        if not 0.0 <= self.min_visible_fraction <= 1.0:
            raise ValueError(
                f"PairConfig.min_visible_fraction must be in [0, 1], got {self.min_visible_fraction}"
            )


@dataclass(frozen=True, kw_only=True)
class Pair:
    """One ordered (observed, target) pair of views of one scene."""

    scene: str  # Scene.name
    scene_index: int  # position in the scene list the pair was drawn from
    obs: int  # observed view index
    tgt: int  # target view index
    baseline_angle_deg: float  # see the module docstring
    angle_source: str  # "scene_centre" or "optical_axes"
    num_covisible: int | None  # objects visible in both views; None without metadata

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.scene, self.obs, self.tgt)

    def to_dict(self) -> dict:
        return asdict(self)


def scene_centre(w2c: torch.Tensor) -> np.ndarray | None:
    """Least-squares point closest to all optical axes, or None where the axes are (near) parallel.

    Shapes: w2c (V, 4, 4) -> (3,).
    """
    c = camera_centers(w2c.double()).numpy()  # (V, 3)
    d = w2c[:, 2, :3].double().numpy()  # (V, 3) optical axes (+z of each camera) in world coordinates
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]  # (V, 3, 3) projectors orthogonal to each axis
    A = proj.sum(0)
    b = (proj @ c[:, :, None]).sum(0)[:, 0]
    if len(w2c) < 2 or np.linalg.eigvalsh(A)[0] < _MIN_AXIS_SPREAD * len(w2c):
        return None
    return np.linalg.solve(A, b)


def baseline_angles(w2c: torch.Tensor) -> tuple[np.ndarray, str]:
    """Baseline angle in degrees between every two views, and which definition was used.

    Shapes: w2c (V, 4, 4) -> (V, V). Range: [0, 180].
    """
    centre = scene_centre(w2c)
    if centre is not None:
        v = camera_centers(w2c.double()).numpy() - centre  # (V, 3)
        source = "scene_centre"
    else:
        v = w2c[:, 2, :3].double().numpy()  # (V, 3) optical axes
        source = "optical_axes"
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cos = np.clip(v @ v.T, -1.0, 1.0)
    return np.degrees(np.arccos(cos)), source


def covisible_counts(scene: Scene, min_visible_fraction: float) -> np.ndarray | None:
    """Number of objects visible in both views, for every two views; None without metadata.

    Shapes: -> (V, V) int64.
    """
    objects = scene.objects
    if not objects or any("visible" not in o for o in objects):
        return None
    vis = np.asarray([o["visible"] for o in objects], dtype=np.float64)  # (num_objects, V)
    if vis.shape[1] != scene.num_views:
        raise ValueError(
            f"{scene.root}: objects[].visible has {vis.shape[1]} entries but the scene has "
            f"{scene.num_views} views; regenerate the scene"
        )
    seen = (vis >= min_visible_fraction).astype(np.int64)  # (num_objects, V)
    return seen.T @ seen


def candidate_pairs(
    scene: Scene, config: PairConfig
) -> tuple[np.ndarray, np.ndarray, str, np.ndarray | None]:
    """All ordered pairs of a scene that pass the selection rule.

    Shapes: -> pairs (P, 2) int64 as (obs, tgt), their angles (P,) degrees, the angle source, and
    their co-visible object counts (P,) or None.
    """
    angles, source = baseline_angles(scene.w2c)
    ok = (angles >= config.min_baseline_deg) & (angles <= config.max_baseline_deg)
    np.fill_diagonal(ok, False)
    covis = covisible_counts(scene, config.min_visible_fraction)
    if covis is not None:
        ok &= covis >= config.min_covisible_objects
    obs, tgt = np.nonzero(ok)
    pairs = np.stack([obs, tgt], axis=1).astype(np.int64)
    return pairs, angles[obs, tgt], source, None if covis is None else covis[obs, tgt]


def sample_pairs(
    scenes: Sequence[Scene],
    num_pairs: int,
    seed: int,
    config: PairConfig | None = None,
    allow_fewer: bool = False,
) -> list[Pair]:
    """Draw ``num_pairs`` distinct pairs, balanced round-robin across scenes (see module docstring).

    Raises ValueError when the scenes hold fewer valid pairs than asked for, unless ``allow_fewer``
    (then all valid pairs are returned, still in round-robin order).
    """
    config = config or PairConfig()
    if num_pairs < 1:
        raise ValueError(f"--num-pairs must be >= 1, got {num_pairs}")
    rng = np.random.default_rng(seed)
    per_scene: list[list[Pair]] = []
    for s, scene in enumerate(scenes):
        pairs, angles, source, covis = candidate_pairs(scene, config)
        order = rng.permutation(len(pairs))
        per_scene.append(
            [
                Pair(
                    scene=scene.name,
                    scene_index=s,
                    obs=int(pairs[k, 0]),
                    tgt=int(pairs[k, 1]),
                    baseline_angle_deg=float(angles[k]),
                    angle_source=source,
                    num_covisible=None if covis is None else int(covis[k]),
                )
                for k in order
            ]
        )
    available = sum(len(p) for p in per_scene)
    if allow_fewer:
        num_pairs = min(num_pairs, available)
    if available < num_pairs or num_pairs == 0:
        raise ValueError(
            f"only {available} pairs in {len(scenes)} scene(s) satisfy {config}; lower --num-pairs, "
            "widen the baseline range (--min-baseline/--max-baseline) or add scenes"
        )
    out: list[Pair] = []
    depth = 0
    while len(out) < num_pairs:
        for scene_pairs in per_scene:
            if depth < len(scene_pairs) and len(out) < num_pairs:
                out.append(scene_pairs[depth])
        depth += 1
    return out


def baseline_histogram(pairs: Sequence[Pair], bin_width_deg: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Histogram of baseline angles. Shapes: -> edges (B + 1,) degrees, counts (B,) int64."""
    angles = np.asarray([p.baseline_angle_deg for p in pairs], dtype=np.float64)
    top = (
        max(bin_width_deg, float(np.ceil(angles.max() / bin_width_deg) * bin_width_deg)) if len(angles) else 0
    )
    edges = np.arange(0.0, top + bin_width_deg / 2, bin_width_deg)
    counts, _ = np.histogram(angles, bins=edges)
    return edges, counts


def format_histogram(edges: np.ndarray, counts: np.ndarray, width: int = 40) -> str:
    """A text histogram, one line per bin: ``[ 10,  20) ####### 12``."""
    peak = max(int(counts.max()), 1) if len(counts) else 1
    lines = []
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        bar = "#" * int(round(width * n / peak))
        lines.append(f"[{lo:5.1f}, {hi:5.1f}) deg {bar:<{width}} {int(n)}")
    return "\n".join(lines)


def scene_split(name: str, val_fraction: float = 0.1, salt: str = SPLIT_SALT) -> str:
    """'train' or 'val' for a scene name: a deterministic hash, independent of other scenes."""
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    digest = hashlib.sha256(f"{salt}:{name}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "val" if u < val_fraction else "train"


def split_scene_names(
    names: Sequence[str],
    val_fraction: float = 0.1,
    salt: str = SPLIT_SALT,
) -> tuple[list[str], list[str]]:
    """Partition scene names into (train, val) with ``scene_split``; order is preserved."""
    train = [n for n in names if scene_split(n, val_fraction, salt) == "train"]
    val = [n for n in names if scene_split(n, val_fraction, salt) == "val"]
    return train, val
