"""Random scenes of the procedural world: objects on a textured ground under one directional light.

World frame: +z up, ground plane z = 0, metres. Every object rests on the ground (its bounding box
bottom at z = 0), is turned by a random yaw about +z, and objects do not overlap: their bounding
circles in the ground plane keep ``min_gap_m`` apart.

All randomness comes from one ``torch.Generator``, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gst.data.synth import meshes as M

# Object colours: names a question can use, with their albedo in linear-ish sRGB [0, 1].
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.13, 0.13),
    "orange": (0.96, 0.52, 0.09),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.18, 0.65, 0.22),
    "cyan": (0.15, 0.78, 0.85),
    "blue": (0.16, 0.30, 0.86),
    "purple": (0.52, 0.22, 0.74),
    "pink": (0.96, 0.55, 0.72),
    "brown": (0.50, 0.30, 0.14),
    "white": (0.93, 0.93, 0.93),
    "black": (0.08, 0.08, 0.08),
}

PRIMITIVE_SHAPES: tuple[str, ...] = ("box", "sphere", "cylinder", "cone", "torus", "capsule", "pyramid")

# Ground texture kinds, in the order of the integer the fragment shader switches on.
GROUND_PATTERNS: tuple[str, ...] = ("checker", "stripes", "noise", "grid")

# Muted ground colours; two are drawn per scene and jittered in brightness.
_GROUND_COLORS = np.array(
    [
        [0.55, 0.55, 0.55],
        [0.30, 0.30, 0.32],
        [0.76, 0.70, 0.55],
        [0.45, 0.33, 0.22],
        [0.34, 0.45, 0.27],
        [0.36, 0.42, 0.52],
        [0.66, 0.42, 0.32],
        [0.85, 0.82, 0.74],
        [0.20, 0.24, 0.20],
        [0.60, 0.58, 0.66],
    ]
)


@dataclass(frozen=True, kw_only=True)
class SceneSamplingConfig:
    """Distribution of scene content. Lengths in metres, angles in degrees."""

    num_objects: tuple[int, int] = (2, 6)  # inclusive range; fewer only if placement fails
    shapes: tuple[str, ...] = PRIMITIVE_SHAPES  # primitive families to draw from
    mesh_probability: float = 0.3  # chance an object is an OBJ mesh, when meshes are given
    mesh_size_m: tuple[float, float] = (0.5, 1.1)  # largest extent of a mesh object
    placement_radius_m: float = 2.0  # object centres lie in this disk around the origin
    min_gap_m: float = 0.1  # clearance between bounding circles of objects
    ground_half_extent_m: float = 25.0  # the ground is the square |x|, |y| <= this
    pattern_period_m: tuple[float, float] = (0.25, 1.5)  # size of one texture cell
    light_elevation_deg: tuple[float, float] = (25.0, 80.0)
    ambient: tuple[float, float] = (0.25, 0.45)
    light_intensity: tuple[float, float] = (0.65, 1.0)

    def __post_init__(self) -> None:
        lo, hi = self.num_objects
        if not 1 <= lo <= hi <= 8:
            raise ValueError(
                f"SceneSamplingConfig.num_objects must satisfy 1 <= low <= high <= 8, got {lo, hi}"
            )
        unknown = set(self.shapes) - set(PRIMITIVE_SHAPES)
        if unknown or not self.shapes:
            raise ValueError(
                f"SceneSamplingConfig.shapes: unknown {sorted(unknown)}; choose from {PRIMITIVE_SHAPES}"
            )
        if not 0.0 <= self.mesh_probability <= 1.0:
            raise ValueError(
                f"SceneSamplingConfig.mesh_probability must be in [0, 1], got {self.mesh_probability}"
            )
        if self.placement_radius_m <= 0.0 or self.ground_half_extent_m <= 2 * self.placement_radius_m:
            raise ValueError("SceneSamplingConfig: need 0 < placement_radius_m < ground_half_extent_m / 2")


@dataclass(frozen=True)
class ObjectSpec:
    """One object. ``size_m`` are full extents in the object frame (before the yaw)."""

    shape: str
    color: str
    mesh: M.Mesh  # in the object frame, centred on its bounding box
    size_m: tuple[float, float, float]
    center: tuple[float, float, float]  # world, metres; z = size_m[2] / 2 (resting on the ground)
    yaw_rad: float

    @property
    def R_obj2world(self) -> np.ndarray:
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class GroundSpec:
    pattern: str  # one of GROUND_PATTERNS
    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    period_m: float
    angle_rad: float  # rotation of the pattern about +z
    half_extent_m: float


@dataclass(frozen=True)
class LightSpec:
    direction: tuple[float, float, float]  # unit vector from the scene toward the light (world)
    color: tuple[float, float, float]  # light colour times intensity
    ambient: float


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    ground: GroundSpec
    light: LightSpec
    background_rgb: tuple[float, float, float]  # sky colour where no surface is hit


class _Draw:
    """Uniform draws from a torch generator as Python numbers (keeps call sites short)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.g = generator

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.g, dtype=torch.float64))

    def integer(self, lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (), generator=self.g))

    def choice(self, items: tuple | list):
        return items[self.integer(0, len(items) - 1)]


def _primitive(shape: str, d: _Draw) -> M.Mesh:
    """A primitive of family ``shape`` with random proportions (metres)."""
    if shape == "box":
        return M.box(d.uniform(0.25, 1.0), d.uniform(0.25, 1.0), d.uniform(0.25, 1.0))
    if shape == "sphere":
        return M.sphere(d.uniform(0.3, 1.0))
    if shape == "cylinder":
        return M.cylinder(d.uniform(0.25, 0.9), d.uniform(0.25, 1.2))
    if shape == "cone":
        return M.cone(d.uniform(0.3, 0.9), d.uniform(0.35, 1.2))
    if shape == "torus":
        major = d.uniform(0.2, 0.45)
        return M.torus(major, major * d.uniform(0.2, 0.5))
    if shape == "capsule":
        diameter = d.uniform(0.2, 0.6)
        return M.capsule(diameter, d.uniform(diameter + 0.1, 1.2))
    if shape == "pyramid":
        return M.pyramid(d.uniform(0.3, 1.0), d.uniform(0.3, 1.0))
    raise ValueError(f"unknown primitive shape {shape!r}; choose from {PRIMITIVE_SHAPES}")


def _place(radius_xy: float, placed: list[tuple[float, float, float]], cfg: SceneSamplingConfig, d: _Draw):
    """A centre (x, y) in the placement disk whose bounding circle clears ``placed``, or None."""
    for _ in range(100):
        rho = cfg.placement_radius_m * math.sqrt(d.uniform(0.0, 1.0))  # uniform over the disk area
        phi = d.uniform(0.0, 2.0 * math.pi)
        x, y = rho * math.cos(phi), rho * math.sin(phi)
        if all(math.hypot(x - px, y - py) >= radius_xy + pr + cfg.min_gap_m for px, py, pr in placed):
            return x, y
    return None


def _sample_objects(
    d: _Draw, cfg: SceneSamplingConfig, mesh_paths: dict[str, Path]
) -> tuple[ObjectSpec, ...]:
    count = d.integer(*cfg.num_objects)
    objects: list[ObjectSpec] = []
    placed: list[tuple[float, float, float]] = []
    used_names: set[str] = set()
    colors = tuple(PALETTE)
    for _ in range(count):
        use_mesh = bool(mesh_paths) and d.uniform(0.0, 1.0) < cfg.mesh_probability
        if use_mesh:
            shape = d.choice(tuple(mesh_paths))
            mesh = M.load_obj_mesh(str(mesh_paths[shape]))
            mesh = M.Mesh(mesh.positions * d.uniform(*cfg.mesh_size_m), mesh.normals, mesh.closed)
        else:
            shape = d.choice(cfg.shapes)
            mesh = _primitive(shape, d)
        color = d.choice(colors)
        while f"{color} {shape}" in used_names:  # names stay unique so questions can refer to them
            color = d.choice(colors)
        size = mesh.extent
        radius_xy = 0.5 * math.hypot(size[0], size[1])  # bounding circle for any yaw
        xy = _place(radius_xy, placed, cfg, d)
        yaw = d.uniform(0.0, 2.0 * math.pi)
        if xy is None:
            continue  # crowded: keep the objects already placed
        placed.append((xy[0], xy[1], radius_xy))
        used_names.add(f"{color} {shape}")
        center = (xy[0], xy[1], float(size[2]) / 2)
        objects.append(ObjectSpec(shape, color, mesh, tuple(float(s) for s in size), center, yaw))
    return tuple(objects)


def _sample_ground(d: _Draw, cfg: SceneSamplingConfig) -> GroundSpec:
    ia = d.integer(0, len(_GROUND_COLORS) - 1)
    ib = (ia + d.integer(1, len(_GROUND_COLORS) - 1)) % len(_GROUND_COLORS)  # a different colour
    jitter = np.array([d.uniform(0.85, 1.15), d.uniform(0.85, 1.15)])
    ca = np.clip(_GROUND_COLORS[ia] * jitter[0], 0.0, 1.0)
    cb = np.clip(_GROUND_COLORS[ib] * jitter[1], 0.0, 1.0)
    lo, hi = cfg.pattern_period_m
    period = math.exp(d.uniform(math.log(lo), math.log(hi)))  # log-uniform: fine and coarse equally often
    return GroundSpec(
        pattern=d.choice(GROUND_PATTERNS),
        color_a=tuple(ca.tolist()),
        color_b=tuple(cb.tolist()),
        period_m=period,
        angle_rad=d.uniform(0.0, math.pi),
        half_extent_m=cfg.ground_half_extent_m,
    )


def _sample_light(d: _Draw, cfg: SceneSamplingConfig) -> LightSpec:
    el = math.radians(d.uniform(*cfg.light_elevation_deg))
    az = d.uniform(0.0, 2.0 * math.pi)
    direction = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    warmth = d.uniform(-0.1, 0.1)  # warm (> 0) or cool (< 0) tint
    intensity = d.uniform(*cfg.light_intensity)
    color = tuple(intensity * c for c in (1.0 + warmth, 1.0, 1.0 - warmth))
    return LightSpec(direction=direction, color=color, ambient=d.uniform(*cfg.ambient))


def sample_scene(
    generator: torch.Generator,
    *,
    config: SceneSamplingConfig | None = None,
    mesh_paths: dict[str, Path] | None = None,
) -> SceneSpec:
    """Draw one scene: objects (primitives, or OBJ meshes named after ``mesh_paths`` keys), ground, light.

    Deterministic given the generator's state and ``mesh_paths``.
    """
    cfg = SceneSamplingConfig() if config is None else config
    d = _Draw(generator)
    objects = _sample_objects(d, cfg, dict(mesh_paths or {}))
    ground = _sample_ground(d, cfg)
    light = _sample_light(d, cfg)
    sky = (d.uniform(0.55, 0.8), d.uniform(0.7, 0.88), d.uniform(0.85, 1.0))
    return SceneSpec(objects=objects, ground=ground, light=light, background_rgb=sky)
