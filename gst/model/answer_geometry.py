"""Explicit geometry the answer reader reads beside its learned tokens (gst.model.answer_reader, module
docstring): the cell-head readouts by name (``cell_readouts``), the relation of the objects that two
pointers pool (``relation_features``), the camera motion a question states (``stated_motions``) and role
a's object moved into the camera after it (``motion_features``).

Conventions: camera frames are OpenCV (x right, y down, z forward), centres in metres; angles in degrees
where stated, turn positive to the left and tilt positive upwards (gst.data.qa_geometry ``CameraMotion``).

Glossary: B batch, R roles (``ROLES``), F cell features (``view_features`` of gst.model.answer_inputs),
S shape classes, C colour classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gst.data.cell_labels import COLOUR_CLASSES, SHAPE_CLASSES
from gst.data.qa_geometry import parse_motion

ROLES = ("a", "b", "counted", "answer")  # QARecord.objects roles, one pointer each
RELATION_DIMS = 15  # ``relation_features``
STATED_DIMS = 6  # ``stated_motions``: whether stated, turn and tilt (degrees), forward, left, up (metres)
MOTION_DIMS = 15  # ``motion_features``


def cell_readouts(cells: torch.Tensor) -> dict[str, torch.Tensor]:
    """The cell-head readouts at the end of ``view_features``' layout (without code features), by name:
    object logit, shape and colour probabilities (``SHAPE_CLASSES``, ``COLOUR_CLASSES``), centre in the
    camera frame, log depth. Shapes: (..., F) -> (...,), (..., S), (..., C), (..., 3), (...,)."""
    S, C = len(SHAPE_CLASSES), len(COLOUR_CLASSES)
    tail = cells[..., -(1 + S + C + 3 + 1) :]
    return {
        "object": tail[..., 0],
        "shape": tail[..., 1 : 1 + S],
        "colour": tail[..., 1 + S : 1 + S + C],
        "centre": tail[..., -4:-1],
        "log_depth": tail[..., -1],
    }


def relation_features(raw: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Explicit geometry of the objects that the pointers of roles a and b pool (``relations``): both
    centres in the camera frame (the pooled cell-head readouts), their difference, the log of its length
    and of each centre's distance from the camera, their offset in the image grid and the log ratio of the
    two pointers' mass (an apparent size ratio).
    ``raw`` (B, R, F + 2): each role's pooled cells (``cell_readouts``) and grid position; ``count`` (B, R)
    the pointers' mass. Shapes: -> (B, RELATION_DIMS)."""
    a, b = ROLES.index("a"), ROLES.index("b")
    centre, uv = cell_readouts(raw[..., :-2])["centre"], raw[..., -2:]  # (B, R, 3), (B, R, 2)
    diff = centre[:, a] - centre[:, b]
    lengths = torch.stack([diff.norm(dim=-1), centre[:, a].norm(dim=-1), centre[:, b].norm(dim=-1)], -1)
    ratio = (count[:, a] + 1e-2).log() - (count[:, b] + 1e-2).log()
    return torch.cat(
        [centre[:, a], centre[:, b], diff, (lengths + 1e-2).log(), uv[:, a] - uv[:, b], ratio[:, None]], -1
    )


def stated_motions(questions: Sequence[str]) -> torch.Tensor:
    """The camera motion each question states (``parse_motion``): 1 and its turn left and tilt up
    (degrees), forward, left and up (metres), or zeros when it states none. Shapes: -> (B, STATED_DIMS)."""
    out = torch.zeros(len(questions), STATED_DIMS)
    for i, question in enumerate(questions):
        m = parse_motion(question)
        if m is not None:
            out[i] = torch.tensor([1.0, m.turn_left_deg, m.tilt_up_deg, m.forward_m, m.left_m, m.up_m])
    return out


def motion_features(
    motion: torch.Tensor, raw: torch.Tensor, count: torch.Tensor, elevation: torch.Tensor | None = None
) -> torch.Tensor:
    """The motion token's input (``motion_token``): the stated motion (``stated_motions``; angles as
    their sine and cosine, metres as they are) and explicit geometry of the object that role a's pointer
    pools: its centre (camera frame, OpenCV) moved into the camera after the motion: untilted by the
    observed camera's ``elevation`` (degrees; None: the camera taken as level) into the level frame
    (forward, left, up), the displacement subtracted, then turned about the up axis and tilted to the
    target camera's elevation; that point, its image-plane ratios x/z and y/z (z at least 0.1 m, clamped to
    +-4), whether it is in front, and the log of role a's pointer mass (whether the pointer found the
    object at all). Shapes: motion (B, STATED_DIMS), raw (B, R, F + 2), count (B, R), elevation (B,) ->
    (B, MOTION_DIMS)."""
    a = ROLES.index("a")
    centre = cell_readouts(raw[:, a, :-2])["centre"]  # (B, 3)
    tilt = motion[:, 2]
    if elevation is not None:  # the centre in the level frame; the target camera tilted from the level
        e = torch.deg2rad(elevation)
        y0, z0 = (
            centre[:, 1] * e.cos() - centre[:, 2] * e.sin(),
            centre[:, 1] * e.sin() + centre[:, 2] * e.cos(),
        )
        centre = torch.stack([centre[:, 0], y0, z0], -1)
        tilt = tilt + elevation
    turn, tilt = torch.deg2rad(motion[:, 1]), torch.deg2rad(tilt)
    shift = torch.stack([-motion[:, 4], -motion[:, 5], motion[:, 3]], -1)  # (forward, left, up) in x, y, z
    p = centre - shift
    ct, st, cp, sp = turn.cos(), turn.sin(), tilt.cos(), tilt.sin()
    # after the turn: right (ct, 0, st), down (0, 1, 0), forward (-st, 0, ct); the tilt then rotates
    # forward towards up (0, -1, 0)
    x = p[:, 0] * ct + p[:, 2] * st
    z_turned = -p[:, 0] * st + p[:, 2] * ct
    z = z_turned * cp - p[:, 1] * sp
    y = p[:, 1] * cp + z_turned * sp
    depth = z.clamp_min(0.1)
    ratios = torch.stack([x / depth, y / depth], -1).clamp(-4, 4)
    return torch.cat(
        [
            motion[:, :1],
            torch.stack([st, ct, sp, cp], -1),
            motion[:, 3:],
            torch.stack([x, y, z], -1),
            ratios,
            (z > 0).float()[:, None],
            (count[:, a : a + 1] + 1e-2).log(),
        ],
        -1,
    )
