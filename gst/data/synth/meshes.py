"""Triangle meshes of the procedural world: primitive families and a minimal OBJ reader.

Every mesh is a non-indexed triangle list in its object frame: ``positions`` and ``normals`` of shape
(3 F, 3), float64, metres, bounding box centred at the origin, +z up. Normals point outward (the
renderer lights both sides, so the winding order does not matter).

Glossary: F triangles, S segments around the z axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Mesh:
    """A triangle list. Shapes: positions (3F, 3), normals (3F, 3) float64 (unit normals)."""

    positions: np.ndarray
    normals: np.ndarray
    closed: bool = True  # watertight: the renderer may cull back faces

    @property
    def extent(self) -> np.ndarray:
        """Full bounding-box extents (sx, sy, sz) in metres. Shapes: (3,)."""
        return self.positions.max(axis=0) - self.positions.min(axis=0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _centred(mesh: Mesh) -> Mesh:
    mid = 0.5 * (mesh.positions.max(axis=0) + mesh.positions.min(axis=0))
    return Mesh(mesh.positions - mid, mesh.normals, mesh.closed)


def revolve(profile: np.ndarray, segments: int) -> Mesh:
    """Surface of revolution about the z axis of a profile polyline of rows (r, z, n_r, n_z).

    (n_r, n_z) is the surface normal in the (radial, z) half-plane at each profile point; separate
    calls per smooth segment give crisp edges (cylinder caps vs side).

    Shapes: profile (P, 4) -> Mesh with 6 (P - 1) S vertices.
    """
    theta = np.linspace(0.0, 2.0 * math.pi, segments + 1)  # (S+1,)
    c, s = np.cos(theta), np.sin(theta)
    r, z, nr, nz = (profile[:, k : k + 1] for k in range(4))  # each (P, 1)
    pos = np.stack([r * c, r * s, np.broadcast_to(z, (len(profile), segments + 1))], axis=-1)  # (P, S+1, 3)
    nrm = np.stack([nr * c, nr * s, np.broadcast_to(nz, (len(profile), segments + 1))], axis=-1)
    # Two triangles per quad (i, j), (i+1, j), (i+1, j+1) and (i, j), (i+1, j+1), (i, j+1).
    i, j = np.meshgrid(np.arange(len(profile) - 1), np.arange(segments), indexing="ij")
    i, j = i.ravel(), j.ravel()
    tri_i = np.stack([i, i + 1, i + 1, i, i + 1, i], axis=-1).reshape(-1)  # (6 Q,)
    tri_j = np.stack([j, j, j + 1, j, j + 1, j + 1], axis=-1).reshape(-1)
    return Mesh(pos[tri_i, tri_j], _unit(nrm[tri_i, tri_j]))


def _concat(*meshes: Mesh) -> Mesh:
    positions = np.concatenate([m.positions for m in meshes])
    return Mesh(positions, np.concatenate([m.normals for m in meshes]), all(m.closed for m in meshes))


def _disc(radius: float, z: float, up: bool, segments: int) -> Mesh:
    return revolve(
        np.array([[0.0, z, 0.0, 1.0 if up else -1.0], [radius, z, 0.0, 1.0 if up else -1.0]]), segments
    )


def _arc(radius: float, z0: float, a0: float, a1: float, n: int) -> np.ndarray:
    """Profile rows of a circular arc centred at (0, z0), polar angle from the +r axis in [a0, a1]."""
    a = np.linspace(a0, a1, n)
    return np.stack([radius * np.cos(a), z0 + radius * np.sin(a), np.cos(a), np.sin(a)], axis=-1)


def box(sx: float, sy: float, sz: float) -> Mesh:
    """Axis-aligned box with full extents (sx, sy, sz)."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    corners = corners * np.array([sx, sy, sz])  # (8, 3), index = 4 ix + 2 iy + iz
    faces = {  # outward normal -> quad corner indices
        (1, 0, 0): (4, 6, 7, 5),
        (-1, 0, 0): (0, 1, 3, 2),
        (0, 1, 0): (2, 3, 7, 6),
        (0, -1, 0): (0, 4, 5, 1),
        (0, 0, 1): (1, 5, 7, 3),
        (0, 0, -1): (0, 2, 6, 4),
    }
    pos, nrm = [], []
    for normal, (a, b, c, d) in faces.items():
        pos += [corners[[a, b, c]], corners[[a, c, d]]]
        nrm += [np.tile(np.array(normal, dtype=np.float64), (6, 1))]
    return Mesh(np.concatenate(pos), np.concatenate(nrm))


def sphere(diameter: float, segments: int = 20) -> Mesh:
    return revolve(_arc(diameter / 2, 0.0, -math.pi / 2, math.pi / 2, segments // 2 + 1), segments)


def cylinder(diameter: float, height: float, segments: int = 20) -> Mesh:
    r, h = diameter / 2, height / 2
    side = revolve(np.array([[r, -h, 1.0, 0.0], [r, h, 1.0, 0.0]]), segments)
    return _concat(side, _disc(r, h, True, segments), _disc(r, -h, False, segments))


def cone(diameter: float, height: float, segments: int = 20) -> Mesh:
    r, h = diameter / 2, height
    n = np.array([h, r]) / math.hypot(h, r)  # side normal in the (r, z) plane
    side = revolve(np.array([[r, 0.0, n[0], n[1]], [0.0, h, n[0], n[1]]]), segments)
    return _centred(_concat(side, _disc(r, 0.0, False, segments)))


def torus(major_radius: float, tube_radius: float, segments: int = 24, tube_segments: int = 12) -> Mesh:
    """Torus lying flat on its side (axis = z): extents (2(R + r), 2(R + r), 2 r)."""
    a = np.linspace(-math.pi, math.pi, tube_segments + 1)
    profile = np.stack(
        [major_radius + tube_radius * np.cos(a), tube_radius * np.sin(a), np.cos(a), np.sin(a)], -1
    )
    return revolve(profile, segments)


def capsule(diameter: float, height: float, segments: int = 20) -> Mesh:
    """Upright capsule of total height ``height`` >= ``diameter``: a cylinder with hemispherical ends."""
    r = diameter / 2
    h = max(height / 2 - r, 0.0)  # half length of the straight part
    n_cap = segments // 4 + 1
    bottom = _arc(r, -h, -math.pi / 2, 0.0, n_cap)
    top = _arc(r, h, 0.0, math.pi / 2, n_cap)
    return revolve(np.concatenate([bottom, top]), segments)


def pyramid(base: float, height: float) -> Mesh:
    """Square pyramid with base side ``base`` and apex height ``height``, centred on its bounding box."""
    b = base / 2
    base_pts = np.array([[-b, -b, 0.0], [b, -b, 0.0], [b, b, 0.0], [-b, b, 0.0]])
    apex = np.array([0.0, 0.0, height])
    pos, nrm = [base_pts[[0, 2, 1]], base_pts[[0, 3, 2]]], [np.tile([0.0, 0.0, -1.0], (6, 1))]
    for k in range(4):
        p0, p1 = base_pts[k], base_pts[(k + 1) % 4]
        n = _unit(np.cross(p1 - p0, apex - p0))
        pos.append(np.stack([p0, p1, apex]))
        nrm.append(np.tile(n, (3, 1)))
    return _centred(Mesh(np.concatenate(pos), np.concatenate(nrm)))


def transform(mesh: Mesh, R_obj2world: np.ndarray, center: np.ndarray, scale: float = 1.0) -> Mesh:
    """Scale uniformly, rotate and translate a mesh into the world. Shapes: R (3, 3), center (3,)."""
    return Mesh(scale * mesh.positions @ R_obj2world.T + center, mesh.normals @ R_obj2world.T, mesh.closed)


# --- OBJ meshes -------------------------------------------------------------------------------------


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an OBJ file (``v`` and ``f`` lines; polygons are fan-triangulated).

    Shapes: -> vertices (N, 3) float64, faces (F, 3) int64 (0-based).
    """
    vertices: list[list[float]] = []
    faces: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, 1):
            if line.startswith("v "):
                vertices.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) for tok in line.split()[1:]]
                idx = [i - 1 if i > 0 else len(vertices) + i for i in idx]  # OBJ: 1-based or negative
                if len(idx) < 3:
                    raise ValueError(f"{path}:{line_no}: face with fewer than 3 vertices")
                faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
    if not vertices or not faces:
        raise ValueError(f"{path}: no 'v' or 'f' lines; is this a triangle-mesh OBJ file?")
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"{path}: face index out of range (file has {len(v)} vertices)")
    return v, f


@lru_cache(maxsize=64)
def load_obj_mesh(path: str) -> Mesh:
    """An OBJ file as a smooth-shaded unit mesh: largest bounding-box extent 1, centred, +z up.

    OBJ files conventionally have +y up, so (x, y, z) -> (x, -z, y). Cached per path.
    """
    v, f = read_obj(Path(path))
    v = v @ np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]).T  # y-up -> z-up
    v = v - 0.5 * (v.max(axis=0) + v.min(axis=0))
    extent = float((v.max(axis=0) - v.min(axis=0)).max())
    if extent <= 0.0:
        raise ValueError(f"{path}: degenerate mesh (all vertices coincide)")
    v = v / extent
    tri = v[f]  # (F, 3, 3)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3), length = 2 area
    vert_n = np.zeros_like(v)
    for k in range(3):  # area-weighted vertex normals
        np.add.at(vert_n, f[:, k], face_n)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, uses = np.unique(edges, axis=0, return_counts=True)
    closed = bool((uses == 2).all())  # every edge shared by exactly two triangles: no holes to see into
    return Mesh(tri.reshape(-1, 3), _unit(vert_n[f].reshape(-1, 3)), closed)


def find_obj_meshes(folder: Path) -> dict[str, Path]:
    """Meshes of a folder, one per sub-folder: ``{subfolder name: first .obj file in it}``, sorted.

    A ``.obj`` directly in ``folder`` is named after its file stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: mesh folder not found; pass a folder of OBJ files or sub-folders")
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            objs = sorted(entry.glob("*.obj"))
            if objs:
                found[entry.name] = objs[0]
        elif entry.suffix.lower() == ".obj":
            found[entry.stem] = entry
    if not found:
        raise FileNotFoundError(f"{folder}: no .obj files found (looked in the folder and its sub-folders)")
    return found
