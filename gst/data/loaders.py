"""Scene loaders: every foreign camera convention is converted here, once, into ``gst.geometry.conventions``.

``load_scene(path, split)`` reads one scene folder (or a scene file directly) and returns a ``Scene``
whose cameras are OpenCV world-to-camera ``w2c`` and pixel-centre ``K`` (float64). Formats:

- **NeRF-synthetic**: ``transforms_<split>.json`` with ``camera_angle_x`` and OpenGL camera-to-world
  ``transform_matrix`` per frame. ``file_path`` without an extension gets ".png" (as the Blender scenes
  store it). ``split=None`` on a folder holding only split files is an error that lists the splits:
  silently mixing train and val views would leak evaluation views into training. ``split="all"``
  concatenates every split file (train, val, test, then others by name); ``metadata["view_splits"]``
  names the split of each view.
- **instant-ngp / nerfstudio / the procedural world** (``gst.data.synth``): ``transforms.json`` with
  global and/or per-frame ``fl_x, fl_y, cx, cy, w, h, camera_angle_x, camera_angle_y`` (a per-frame value
  overrides the global one key by key; ``fl_x`` / ``fl_y`` take precedence over the angles; a missing
  ``fl_y`` and ``camera_angle_y`` means ``fy = fx``; missing ``w, h`` are read from the image header).
  ``cx, cy`` are pixel-corner values: ``K.cx = cx - 0.5``; without them the principal point is the image
  centre ``((W - 1) / 2, (H - 1) / 2)``. Distortion ``k1, k2, p1, p2`` is recorded in
  ``Scene.distortion`` (V, 4) and NOT undistorted (K is the pinhole part of the distorted images);
  non-zero ``k3``/``k4`` and fisheye or equirectangular models are rejected. ``depth_file_path``,
  ``mask_file_path``, ``depth_unit_scale_factor``, ``objects`` and the ``gst`` block are kept
  (``metadata["gst"]``). instant-ngp's ``scale``/``offset``/``aabb_scale`` are training hints of that
  renderer, not part of the cameras: they are kept in ``metadata["extra"]`` and not applied.
- **LLFF** ``poses_bounds.npy``: see ``llff_to_opencv``. No recentring or rescaling is applied (NeRF's
  LLFF loader does both); bounds are kept in ``metadata["near_far"]`` (V, 2).

Every frame's ``transform_matrix`` must be rigid: finite, ``R^T R = I`` and ``det R = +1`` within
``RIGID_TOL``, bottom row ``0 0 0 1``. Every path must stay inside the scene folder after resolving
symlinks; absolute paths are rejected. Errors name the file and the field.

Glossary: V views, H/W pixels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gst.data.scene import DEPTH_UNIT_SCALE, Scene
from gst.geometry.conventions import intrinsics_matrix, invert_rigid, opengl_c2w_to_opencv_w2c

RIGID_TOL = 1e-4  # float32 Blender / COLMAP exports are orthonormal to ~1e-6; scaled matrices fail
NERF_SPLIT_ORDER = ("train", "val", "test")
LLFF_HOLD = 8  # every 8th LLFF view is the test view, as in NeRF's llffhold=8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DIST_KEYS = ("k1", "k2", "p1", "p2")
_CAMERA_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "OPENCV", "SIMPLE_RADIAL", "RADIAL")
# Top-level keys this module interprets; everything else goes to metadata["extra"].
_KNOWN_KEYS = frozenset(
    {
        "frames",
        "camera_model",
        "fl_x",
        "fl_y",
        "cx",
        "cy",
        "w",
        "h",
        "camera_angle_x",
        "camera_angle_y",
        "k1",
        "k2",
        "p1",
        "p2",
        "k3",
        "k4",
        "depth_unit_scale_factor",
        "objects",
        "gst",
    }
)
Background = tuple[float, float, float]


def load_scene(
    path: str | Path,
    split: str | None = None,
    *,
    background: Background = (1.0, 1.0, 1.0),
    llff_factor: int | None = None,
) -> Scene:
    """Load one scene folder (or a ``transforms*.json`` / ``poses_bounds.npy`` file) as a ``Scene``.

    ``split``: None reads ``transforms.json`` (or all LLFF views); "train"/"val"/"test" read
    ``transforms_<split>.json`` (LLFF: the every-8th hold-out, "test", or the rest, "train"); "all"
    concatenates every split file. ``background``: RGB in [0, 1] that RGBA images are composited on
    (white, as NeRF-synthetic is evaluated). ``llff_factor``: read LLFF images from ``images_<factor>``.

    Shapes: Scene.K (V, 3, 3), Scene.w2c (V, 4, 4), float64.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such scene folder or file")
    bg = tuple(float(b) for b in background)
    if len(bg) != 3 or not all(0.0 <= b <= 1.0 for b in bg):
        raise ValueError(f"background must be three numbers in [0, 1], got {background!r}")
    if llff_factor is not None and (
        isinstance(llff_factor, bool) or not isinstance(llff_factor, int) or llff_factor < 1
    ):
        raise ValueError(f"llff_factor must be a positive integer or None, got {llff_factor!r}")
    if path.is_file():
        root = path.parent
        if path.name == "poses_bounds.npy":
            return _load_llff(root, split, bg, llff_factor)
        stem = path.stem.removeprefix("transforms_") if path.name.startswith("transforms_") else None
        if split not in (None, "all", stem):
            raise ValueError(f"{path}: split={split!r} does not match the file given; pass split=None")
        return _load_transforms(root, [(stem, path)], bg, split, llff_factor)
    files = split_files(path)
    single = path / "transforms.json"
    if split not in (None, "all") and split in files:
        return _load_transforms(path, [(split, files[split])], bg, split, llff_factor)
    if files and split == "all":
        return _load_transforms(path, list(files.items()), bg, split, llff_factor)
    if single.is_file() and split in (None, "all"):
        return _load_transforms(path, [(None, single)], bg, split, llff_factor)
    if (path / "poses_bounds.npy").is_file():
        return _load_llff(path, split, bg, llff_factor)
    if files:
        raise ValueError(
            f"{path}: split={split!r} but this scene has splits {list(files)} (transforms_<split>.json); "
            "pass one of them, or split='all' to concatenate them"
        )
    if single.is_file():
        raise ValueError(f"{path}: split={split!r} but the scene has one transforms.json; pass split=None")
    raise FileNotFoundError(
        f"{path}: no transforms.json, transforms_<split>.json or poses_bounds.npy in this folder"
    )


def split_files(root: Path) -> dict[str, Path]:
    """``transforms_<split>.json`` files of a folder, keyed by split, in train/val/test order first."""
    found = {p.name[len("transforms_") : -len(".json")]: p for p in Path(root).glob("transforms_*.json")}
    others = sorted(s for s in found if s not in NERF_SPLIT_ORDER)
    order = [s for s in NERF_SPLIT_ORDER if s in found] + others
    return {s: found[s] for s in order}


# ----------------------------------------------------------------------------- validation helpers


def read_json(path: Path) -> dict[str, Any]:
    """Parse a JSON object; malformed files raise ValueError naming the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _positive(value: Any, where: str) -> float:
    x = _number(value, where)
    if x <= 0:
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    return x


def _matrix(value: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    rows_ok = isinstance(value, list) and len(value) == shape[0]
    if not rows_ok or not all(isinstance(r, list) and len(r) == shape[1] for r in value):
        raise ValueError(f"{where}: expected a {shape[0]}x{shape[1]} list of lists of numbers")
    rows = [[_number(x, f"{where}[{i}][{j}]") for j, x in enumerate(r)] for i, r in enumerate(value)]
    return np.array(rows, dtype=np.float64)


def check_rigid(M: np.ndarray, where: str, tol: float = RIGID_TOL) -> None:
    """Raise ValueError unless M (4, 4) is finite and rigid: R^T R = I, det R = +1, bottom row 0 0 0 1."""
    if not np.isfinite(M).all():
        raise ValueError(f"{where}: contains NaN or inf")
    R = M[:3, :3]
    orth = np.abs(R.T @ R - np.eye(3)).max()
    if orth > tol:
        raise ValueError(
            f"{where}: rotation is not orthonormal (max |R^T R - I| = {orth:.3g} > {tol}); the matrix "
            "must be a rigid camera-to-world transform without scale or shear"
        )
    det = np.linalg.det(R)
    if abs(det - 1.0) > tol:
        raise ValueError(f"{where}: rotation has determinant {det:.6g}, expected +1 (a reflection?)")
    if M.shape[0] == 4 and np.abs(M[3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > tol:
        raise ValueError(f"{where}: bottom row is {M[3].tolist()}, expected [0, 0, 0, 1]")


def resolve_inside(root: Path, rel: Any, where: str) -> Path:
    """``root / rel`` with symlinks resolved; raise unless it stays inside ``root``."""
    if not isinstance(rel, str) or not rel:
        raise ValueError(f"{where}: expected a non-empty relative path string, got {rel!r}")
    if Path(rel).is_absolute():
        raise ValueError(f"{where}: absolute path {rel!r}; paths must be relative to the scene folder {root}")
    base = root.resolve()
    full = (base / rel).resolve()
    if not full.is_relative_to(base):
        raise ValueError(f"{where}: path {rel!r} resolves to {full}, outside the scene folder {base}")
    return full


def _existing_file(root: Path, rel: Any, where: str, png_fallback: bool = False) -> Path:
    full = resolve_inside(root, rel, where)
    if not full.is_file() and png_fallback and not Path(rel).suffix:
        alt = resolve_inside(root, rel + ".png", where)
        full = alt if alt.is_file() else full
    if not full.is_file():
        raise FileNotFoundError(f"{where}: file {rel!r} is missing (looked for {full})")
    return full


def image_size(path: Path, where: str) -> tuple[int, int]:
    """(H, W) from an image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            W, H = im.size
    except OSError as err:
        raise ValueError(f"{where}: unreadable image {path} ({err}); re-export or remove the frame") from None
    return H, W


# ----------------------------------------------------------------------------- transforms.json family


def _frame_intrinsics(
    frame: dict, top: dict, image: Path, where: str
) -> tuple[tuple[int, int], np.ndarray, np.ndarray | None]:
    """((H, W), [fx, fy, cx, cy] pixel-centre, distortion (4,) or None) of one frame."""
    get = lambda key: frame.get(key, top.get(key))  # noqa: E731  (per-frame overrides global)
    hw_img = image_size(image, f"{where}.file_path")
    H = int(_positive(get("h"), f"{where}.h")) if get("h") is not None else hw_img[0]
    W = int(_positive(get("w"), f"{where}.w")) if get("w") is not None else hw_img[1]
    if (H, W) != hw_img:
        raise ValueError(
            f"{where}: w, h say {W}x{H} but {image} is {hw_img[1]}x{hw_img[0]}; fix the fields or the image"
        )
    if get("fl_x") is not None:
        fx = _positive(get("fl_x"), f"{where}.fl_x")
    elif get("camera_angle_x") is not None:
        angle = _positive(get("camera_angle_x"), f"{where}.camera_angle_x")
        fx = 0.5 * W / math.tan(0.5 * angle)
    else:
        raise ValueError(f"{where}: no focal length (fl_x or camera_angle_x, per frame or global)")
    if get("fl_y") is not None:
        fy = _positive(get("fl_y"), f"{where}.fl_y")
    elif get("camera_angle_y") is not None:
        fy = 0.5 * H / math.tan(0.5 * _positive(get("camera_angle_y"), f"{where}.camera_angle_y"))
    else:
        fy = fx
    # transforms.json principal points are pixel-corner (image spans [0, W]); ours are pixel-centre.
    cx = _number(get("cx"), f"{where}.cx") - 0.5 if get("cx") is not None else (W - 1) / 2
    cy = _number(get("cy"), f"{where}.cy") - 0.5 if get("cy") is not None else (H - 1) / 2
    for key in ("k3", "k4"):
        if get(key) is not None and _number(get(key), f"{where}.{key}") != 0.0:
            raise ValueError(f"{where}.{key}: only k1, k2, p1, p2 distortion is supported; {key} must be 0")
    dist = None
    if any(get(k) is not None for k in _DIST_KEYS):
        dist = np.array([_number(get(k), f"{where}.{k}") if get(k) is not None else 0.0 for k in _DIST_KEYS])
    return (H, W), np.array([fx, fy, cx, cy]), dist


def _optional_paths(root: Path, frames: list[dict], key: str, where: str) -> tuple[Path, ...] | None:
    has = [key in f for f in frames]
    if not any(has):
        return None
    if not all(has):
        raise ValueError(f"{where}: frame {has.index(False)} has no {key} but others do; give all or none")
    return tuple(_existing_file(root, f[key], f"{where}.frames[{i}].{key}") for i, f in enumerate(frames))


def _parse_transforms(root: Path, file: Path) -> dict[str, Any]:
    """Validated per-frame cameras and paths of one transforms file (cameras still in file units)."""
    top = read_json(file)
    where = str(file)
    model = top.get("camera_model")
    if model is not None and model not in _CAMERA_MODELS:
        raise ValueError(
            f"{where}.camera_model: {model!r} is not supported; supported: {list(_CAMERA_MODELS)}"
        )
    frames = top.get("frames")
    if not isinstance(frames, list) or not frames:
        raise ValueError(f"{where}: 'frames' must be a non-empty list of frame objects, got {frames!r:.60}")
    out: dict[str, list] = {"images": [], "hw": [], "intr": [], "dist": [], "c2w": []}
    for i, frame in enumerate(frames):
        fw = f"{where}: frames[{i}]"
        if not isinstance(frame, dict):
            raise ValueError(f"{fw}: expected an object, got {type(frame).__name__}")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise ValueError(f"{fw}: missing key {key!r}")
        image = _existing_file(root, frame["file_path"], f"{fw}.file_path", png_fallback=True)
        c2w = _matrix(frame["transform_matrix"], (4, 4), f"{fw}.transform_matrix")
        check_rigid(c2w, f"{fw}.transform_matrix")
        hw, intr, dist = _frame_intrinsics(frame, top, image, fw)
        for key, value in zip(out, (image, hw, intr, dist, c2w), strict=True):
            out[key].append(value)
    out["depth"] = _optional_paths(root, frames, "depth_file_path", where)
    out["mask"] = _optional_paths(root, frames, "mask_file_path", where)
    out["top"] = top
    return out


def _load_transforms(
    root: Path,
    files: list[tuple[str | None, Path]],
    background: Background,
    split: str | None,
    llff_factor: int | None = None,
) -> Scene:
    if llff_factor is not None:
        raise ValueError(f"{files[0][1]}: llff_factor applies to LLFF scenes only; pass llff_factor=None")
    parts = [(name, file, _parse_transforms(root, file)) for name, file in files]
    frames = [(name, file, i) for name, file, p in parts for i in range(len(p["images"]))]
    hws = [hw for _, _, p in parts for hw in p["hw"]]
    for (_, file, i), hw in zip(frames, hws, strict=True):
        if hw != hws[0]:
            raise ValueError(
                f"{file}: frames[{i}] is {hw[1]}x{hw[0]} but the first frame is {hws[0][1]}x{hws[0][0]}; "
                "a Scene needs one image size (resize the images or split the scene)"
            )
    cat = lambda key: [x for _, _, p in parts for x in p[key]]  # noqa: E731
    intr = torch.tensor(np.stack(cat("intr")), dtype=torch.float64)  # (V, 4)
    c2w = torch.tensor(np.stack(cat("c2w")), dtype=torch.float64)  # (V, 4, 4) OpenGL
    dists = cat("dist")
    distortion = None
    if any(d is not None for d in dists):
        distortion = torch.tensor(np.stack([np.zeros(4) if d is None else d for d in dists]))  # (V, 4)
    optional = {}
    for key in ("depth", "mask"):
        got = [p[key] for _, _, p in parts]
        if any(g is not None for g in got) and not all(g is not None for g in got):
            raise ValueError(f"{root}: some split files give {key} paths and others do not")
        optional[key] = None if got[0] is None else tuple(x for g in got for x in g)
    top = parts[0][2]["top"]
    scale = top.get("depth_unit_scale_factor", DEPTH_UNIT_SCALE)
    depth_scale = _positive(scale, f"{parts[0][1]}: depth_unit_scale_factor")
    objects = top.get("objects")
    if objects is not None and not (isinstance(objects, list) and all(isinstance(o, dict) for o in objects)):
        raise ValueError(f"{parts[0][1]}: 'objects' must be a list of objects, got {objects!r:.60}")
    gst_block = top.get("gst")
    if gst_block is not None and not isinstance(gst_block, dict):
        raise ValueError(f"{parts[0][1]}: 'gst' must be an object, got {gst_block!r:.60}")
    is_split = files[0][0] is not None
    metadata = {
        "format": "nerf_synthetic" if is_split else "transforms",
        "split": split,
        "source_files": [str(f) for _, f in files],
        "view_splits": [name for name, _, _ in frames] if is_split else None,
        "camera_model": top.get("camera_model"),
        "gst": gst_block,
        "extra": {k: v for k, v in top.items() if k not in _KNOWN_KEYS},
    }
    return Scene(
        root=root,
        name=root.resolve().name,
        image_paths=tuple(cat("images")),
        K=intrinsics_matrix(intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3]),
        w2c=opengl_c2w_to_opencv_w2c(c2w),
        image_hw=hws[0],
        background=background,
        depth_paths=optional["depth"],
        mask_paths=optional["mask"],
        distortion=distortion,
        objects=objects,
        metadata=metadata,
        depth_scale=depth_scale,
    )


# ----------------------------------------------------------------------------- LLFF


def llff_to_opencv(poses: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """LLFF poses (N, 3, 5) -> (OpenCV w2c (N, 4, 4), hwf (N, 3)) in float64.

    LLFF stores camera-to-world ``[R | t | hwf]`` whose rotation columns are the camera's
    [down, right, back] axes in world coordinates (the camera looks along -back), ``t`` the centre
    and ``hwf = (H, W, focal)`` in pixels of the full-resolution images. OpenCV camera axes are
    [right, down, forward] = [col 1, col 0, -col 2]: one swap and one negation, so det stays +1.
    """
    R_llff = poses[:, :, :3]  # (N, 3, 3) columns: down, right, back
    R_cv = np.stack([R_llff[:, :, 1], R_llff[:, :, 0], -R_llff[:, :, 2]], axis=-1)  # right, down, fwd
    c2w = np.zeros((len(poses), 4, 4))
    c2w[:, :3, :3], c2w[:, :3, 3], c2w[:, 3, 3] = R_cv, poses[:, :, 3], 1.0
    return invert_rigid(torch.from_numpy(c2w)), torch.from_numpy(poses[:, :, 4].astype(np.float64))


def _read_poses_bounds(file: Path) -> np.ndarray:
    try:
        arr = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{file}: unreadable .npy file ({err})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or arr.shape[0] == 0 or not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"{file}: expected a float (N, 17) array (3x5 pose + near, far), got {arr.dtype} {arr.shape}"
        )
    arr = arr.astype(np.float64)
    for i, row in enumerate(arr):
        if not np.isfinite(row).all():
            raise ValueError(f"{file}: row {i} contains NaN or inf")
        pose = row[:15].reshape(3, 5)
        check_rigid(pose[:, :4], f"{file}: row {i} pose")
        if (pose[:, 4] <= 0).any() or (row[15:] <= 0).any():
            raise ValueError(
                f"{file}: row {i}: hwf {pose[:, 4].tolist()} and bounds {row[15:].tolist()} must be > 0"
            )
    return arr


def _load_llff(root: Path, split: str | None, background: Background, factor: int | None) -> Scene:
    """LLFF scene; K is scaled from the poses' hwf to the size of the images actually read.

    The principal point is the image centre ((W - 1) / 2, (H - 1) / 2): LLFF keeps only COLMAP's focal.
    With ``factor`` the images come from ``images_<factor>`` (LLFF's minified copies); the scale is
    measured per axis from the image size (W_img / W_hwf, H_img / H_hwf), not assumed to be 1 / factor.
    """
    file = root / "poses_bounds.npy"
    arr = _read_poses_bounds(file)
    w2c, hwf = llff_to_opencv(arr[:, :15].reshape(-1, 3, 5))
    folder = root / ("images" if factor is None else f"images_{factor}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder missing (make it, or pass another llff_factor)")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(images) != len(arr):
        raise ValueError(f"{folder}: {len(images)} images but {file} has {len(arr)} poses; they must match")
    for p in images:
        resolve_inside(root, str(p.relative_to(root)), f"{folder}")
    hws = [image_size(p, str(p)) for p in images]
    H, W = hws[0]
    for p, hw in zip(images, hws, strict=True):
        if hw != (H, W):
            raise ValueError(f"{p}: image is {hw[1]}x{hw[0]} but {images[0].name} is {W}x{H}")
    sy, sx = H / hwf[:, 0], W / hwf[:, 1]  # (V,)
    if ((sx - sy).abs() * max(H, W) > 1.0).any():
        raise ValueError(f"{folder}: image aspect {W}x{H} does not match the poses' hwf {hwf[0].tolist()}")
    K = intrinsics_matrix(hwf[:, 2] * sx, hwf[:, 2] * sy, (W - 1) / 2, (H - 1) / 2)
    keep = np.arange(len(arr))
    if split == "test":
        keep = keep[::LLFF_HOLD]
    elif split == "train":
        keep = keep[keep % LLFF_HOLD != 0]
    elif split not in (None, "all"):
        raise ValueError(
            f"{root}: LLFF scenes have splits 'train' and 'test' (every {LLFF_HOLD}th view), got {split!r}"
        )
    idx = torch.from_numpy(keep)
    metadata = {
        "format": "llff",
        "split": split,
        "source_files": [str(file)],
        "view_indices": keep.tolist(),
        "near_far": torch.from_numpy(arr[keep, 15:17]),
        "llff_factor": factor,
    }
    return Scene(
        root=root,
        name=root.resolve().name,
        image_paths=tuple(images[i] for i in keep),
        K=K[idx],
        w2c=w2c[idx],
        image_hw=(H, W),
        background=background,
        metadata=metadata,
    )
