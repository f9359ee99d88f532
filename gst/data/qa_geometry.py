"""Geometry for spatial questions: objects in a camera's frame, and camera motion in words.

Cameras follow ``gst.geometry.conventions`` (OpenCV camera frame +x right, +y down, +z forward;
world-to-camera ``w2c``, ``x_cam = R x_world + t``). The procedural world has +z up.

Definitions used by the questions (``gst.data.qa``):

- an object's position is the centre of its bounding box (``box.center``);
- *bearing*: the horizontal angle of the centre seen from the camera, ``atan2(x_cam, z_cam)``, degrees,
  negative = left in the image;
- *distance to the camera*: Euclidean, camera centre to object centre; *between objects*: centre to
  centre;
- *camera motion* from an observed camera to a target camera, with a world up vector ``u``: the *turn* is
  the change of heading (the forward axis projected on the plane normal to ``u``), positive = to the
  left (counter-clockwise seen from above); the *tilt* is the change of the forward axis' elevation,
  positive = up; the *displacement* is the target centre minus the observed centre, expressed along the
  observed camera's level axes (forward = heading, left = u x forward, up = u).

Glossary: V views, N objects.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WORLD_UP = (0.0, 0.0, 1.0)  # the procedural world's up axis
_LEVEL_EPS = 1e-6  # a camera looking straight along the up axis has no heading
_NEAR_M = 1e-3  # box corners closer to the camera plane than this cannot be projected


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a scene's ``objects`` metadata. Shapes: center (3,), size (3,) full extents in the
    object frame, R_obj2world (3, 3), visible (V,) fraction of its pixels visible per view in [0, 1]."""

    index: int
    color: str
    shape: str
    center: np.ndarray
    size: np.ndarray
    R_obj2world: np.ndarray
    visible: tuple[float, ...]
    visible_pixels: tuple[int, ...] | None = None  # (V,) visible pixel counts, where the metadata has them

    @property
    def label(self) -> str:
        """``"<color> <shape>"``: the answer option and, with "the", the referring expression."""
        return f"{self.color} {self.shape}"

    @property
    def volume(self) -> float:
        return float(np.prod(self.size))

    @property
    def height(self) -> float:
        """World-vertical extent (objects are turned about the up axis only)."""
        corners = box_corners(self.center, self.size, self.R_obj2world)
        return float(corners[:, 2].max() - corners[:, 2].min())


def _vec(value: Any, n: int, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,) or not np.isfinite(arr).all():
        raise ValueError(f"{where}: expected {n} finite numbers, got {value!r:.80}")
    return arr


def objects_from_metadata(objects: Sequence[dict[str, Any]], num_views: int, where: str) -> list[ObjectInfo]:
    """Validate a scene's ``objects`` list (format in gst.data.synth) and convert it.

    ``where`` names the scene in errors.
    """
    out = []
    for i, o in enumerate(objects):
        w = f"{where}: objects[{i}]"
        try:
            box = o["box"]
            color, shape = str(o["color"]).strip().lower(), str(o["shape"]).strip().lower()
            center = _vec(box["center"], 3, f"{w}.box.center")
            size = _vec(box["size"], 3, f"{w}.box.size")
            R = np.asarray(box["R_obj2world"], dtype=np.float64)
            visible = tuple(float(v) for v in o["visible"])
            pixels = None if o.get("visible_pixels") is None else tuple(int(p) for p in o["visible_pixels"])
        except KeyError as err:
            raise ValueError(f"{w}: missing field {err}; QA needs color, shape, box and visible") from None
        if R.shape != (3, 3) or not np.allclose(R.T @ R, np.eye(3), atol=1e-4):
            raise ValueError(f"{w}.box.R_obj2world: not a 3x3 rotation")
        if len(visible) != num_views or not all(0.0 <= v <= 1.0 for v in visible):
            raise ValueError(f"{w}.visible: need {num_views} fractions in [0, 1], got {len(visible)} values")
        if not color or not shape or (size < 0).any():
            raise ValueError(f"{w}: empty colour/shape or negative size")
        if pixels is not None and len(pixels) != num_views:
            raise ValueError(f"{w}.visible_pixels: need {num_views} counts, got {len(pixels)}")
        out.append(ObjectInfo(i, color, shape, center, size, R, visible, pixels))
    return out


def box_corners(center: np.ndarray, size: np.ndarray, R: np.ndarray) -> np.ndarray:
    """The 8 corners of an oriented box. Shapes: (3,), (3,), (3, 3) -> (8, 3)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    return center + (signs * (0.5 * size)) @ R.T  # (8, 3)


def to_camera(w2c: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points into the camera frame. Shapes: (4, 4), (..., 3) -> (..., 3)."""
    return points @ w2c[:3, :3].T + w2c[:3, 3]


def camera_center(w2c: np.ndarray) -> np.ndarray:
    """Shapes: (4, 4) -> (3,)."""
    return -w2c[:3, :3].T @ w2c[:3, 3]


def bearing_deg(p_cam: np.ndarray) -> float:
    """Horizontal angle of a camera-frame point, degrees; negative = left of the optical axis."""
    return math.degrees(math.atan2(float(p_cam[0]), float(p_cam[2])))


def camera_aabb(obj: ObjectInfo, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tightest camera-axis-aligned box around the object's oriented box: (centre (3,), size (3,))."""
    corners = to_camera(w2c, box_corners(obj.center, obj.size, obj.R_obj2world))  # (8, 3)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return 0.5 * (lo + hi), hi - lo


def frame_fraction(obj: ObjectInfo, K: np.ndarray, w2c: np.ndarray, image_hw: tuple[int, int]) -> float:
    """Share of the object's projected box (the 2D bounding rectangle of its 8 projected corners) that
    lies inside the image, which spans [-0.5, W - 0.5] x [-0.5, H - 0.5] (pixel-centre K).

    The procedural world's ``visible`` fraction counts occlusion inside the frame only (visible /
    unoccluded in-frame pixels); this adds truncation by the image border. Range: [0, 1]; 0 when the
    box lies behind the camera, NaN when it straddles the camera plane (undecidable: partly visible).
    Shapes: K (3, 3), w2c (4, 4).
    """
    corners = to_camera(w2c, box_corners(obj.center, obj.size, obj.R_obj2world))  # (8, 3)
    z = corners[:, 2]
    if (z <= _NEAR_M).all():
        return 0.0
    if (z <= _NEAR_M).any():
        return float("nan")
    uv = (corners / z[:, None]) @ K.T  # (8, 3)
    lo, hi = uv[:, :2].min(axis=0), uv[:, :2].max(axis=0)
    H, W = image_hw
    inside = np.clip(np.minimum(hi, [W - 0.5, H - 0.5]) - np.maximum(lo, [-0.5, -0.5]), 0.0, None)
    area = float(np.prod(hi - lo))
    return float(np.prod(inside)) / area if area > 0 else 0.0


@dataclass(frozen=True)
class CameraMotion:
    """Camera motion in level terms (module docstring). Degrees and metres."""

    turn_left_deg: float  # heading change, (-180, 180], > 0 = turned left
    tilt_up_deg: float  # elevation change of the forward axis, > 0 = tilted up
    forward_m: float
    left_m: float
    up_m: float

    @property
    def distance_m(self) -> float:
        return math.sqrt(self.forward_m**2 + self.left_m**2 + self.up_m**2)


def _level_frame(w2c: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    forward = w2c[2, :3]  # camera +z in world coordinates (row 2 of R)
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, float(forward @ up)))))
    flat = forward - (forward @ up) * up
    norm = float(np.linalg.norm(flat))
    if norm < _LEVEL_EPS:
        raise ValueError("camera looks straight along the up axis; its heading is undefined")
    f = flat / norm
    return f, np.cross(up, f), elevation  # forward, left, elevation


def camera_motion(w2c_obs: np.ndarray, w2c_tgt: np.ndarray, up: Sequence[float] = WORLD_UP) -> CameraMotion:
    """The motion from the observed camera to the target camera (module docstring).

    ``up``: the world up axis in the cameras' world frame; for a relative pose (``w2c_obs`` the identity)
    of a roughly level camera, pass the camera's up, (0, -1, 0). Shapes: (4, 4), (4, 4).
    """
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    f_obs, l_obs, el_obs = _level_frame(w2c_obs, u)
    f_tgt, _, el_tgt = _level_frame(w2c_tgt, u)
    turn = math.degrees(math.atan2(float(f_tgt @ l_obs), float(f_tgt @ f_obs)))
    d = camera_center(w2c_tgt) - camera_center(w2c_obs)
    return CameraMotion(
        turn_left_deg=turn,
        tilt_up_deg=el_tgt - el_obs,
        forward_m=float(d @ f_obs),
        left_m=float(d @ l_obs),
        up_m=float(d @ u),
    )


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_motion(motion: CameraMotion, style: str = "camera") -> str:
    """Camera motion in words, angles rounded to whole degrees and lengths to 0.1 m.

    Styles: "camera" (training questions: "The camera turns 35 degrees to the left and moves 0.8 m
    forward."), "you" (held-out questions: "Suppose you turn 35 degrees left, then step 0.8 m ahead."),
    "readout" (chat: "turned 35 degrees left, moved 0.8 m forward"). Components that round to zero are
    left out.
    """
    if style not in ("camera", "you", "readout"):
        raise ValueError(f"describe_motion style must be camera, you or readout, got {style!r}")
    turn, tilt = round(motion.turn_left_deg), round(motion.tilt_up_deg)
    rot = []
    if turn:
        side = "left" if turn > 0 else "right"
        rot.append(
            f"turns {abs(turn)} degrees to the {side}"
            if style == "camera"
            else f"turn {abs(turn)} degrees {side}"
        )
    if tilt:
        rot.append(
            f"{'tilts' if style == 'camera' else 'tilt'} {abs(tilt)} degrees {'up' if tilt > 0 else 'down'}"
        )
    words = {"camera": ("forward", "back"), "you": ("ahead", "back"), "readout": ("forward", "back")}[style]
    move = []
    for value, pos, neg in (
        (motion.forward_m, *words),
        (motion.left_m, "left", "right"),
        (motion.up_m, "up", "down"),
    ):
        v = round(value, 1)
        if v:
            move.append(f"{abs(v):.1f} m {pos if v > 0 else neg}")
    if style == "readout":
        parts = [p.replace("turn ", "turned ").replace("tilt ", "tilted ") for p in rot]
        if move:
            parts.append("moved " + _join(move))
        return ", ".join(parts) if parts else "did not move"
    if style == "camera":
        if move:
            rot.append("moves " + _join(move))
        return "The camera " + (_join(rot) if rot else "stays where it is") + "."
    if move:
        rot.append("then step " + _join(move) if rot else "step " + _join(move))
    return "Suppose you " + (_join(rot) if rot else "stay where you are") + "."


_TURN = re.compile(r"\bturn(?:s|ed)?\s+(\d+(?:\.\d+)?)\s*degrees?\s+(?:to\s+the\s+)?(left|right)\b")
_TILT = re.compile(r"\btilt(?:s|ed)?\s+(\d+(?:\.\d+)?)\s*degrees?\s+(up|down)\b")
_MOVE = re.compile(r"(\d+(?:\.\d+)?)\s*m\s+(forward|ahead|backwards?|back|left|right|up|down)\b")
_STILL = re.compile(r"\b(?:stays? where|did not move|does not move|stands? still)\b")
_MOVE_AXES = {"forward": (2, 1), "ahead": (2, 1), "back": (2, -1), "backward": (2, -1), "backwards": (2, -1),
              "left": (3, 1), "right": (3, -1), "up": (4, 1), "down": (4, -1)}  # fmt: skip


def parse_motion(text: str) -> CameraMotion | None:
    """The camera motion a text states in ``describe_motion``'s wordings (any style: "turns 35 degrees to
    the left", "turn 35 degrees left", "tilted 10 degrees up", "0.8 m forward" / "ahead" / "back" /
    "left" / "right" / "up" / "down"; "stays where it is" / "did not move" for none), or None when it
    states none. A component stated twice counts once (the first)."""
    low, values, found = text.lower(), [0.0] * 5, False
    for pattern, index, positive in ((_TURN, 0, "left"), (_TILT, 1, "up")):
        if m := pattern.search(low):
            values[index], found = float(m.group(1)) * (1 if m.group(2) == positive else -1), True
    seen = set()
    for m in _MOVE.finditer(low):
        index, sign = _MOVE_AXES[m.group(2)]
        if index not in seen:
            values[index], found = sign * float(m.group(1)), True
            seen.add(index)
    if not found and not _STILL.search(low):
        return None
    return CameraMotion(*values)
