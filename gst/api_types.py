"""What goes in and out of ``gst.api``: image inputs, intrinsics, orbit cameras, and the result types.

Image inputs (``load_image``): paths, PIL images, numpy arrays (H, W[, C]) or tensors ([1,] C, H, W), uint8 /
uint16 or float in [0, 1]; RGBA is composited on white. The default observed camera
(``default_intrinsics``): horizontal field of view ``DEFAULT_FOV_DEG`` = 52.5 degrees (the middle of the
procedural world's 30-75 degree range), square pixels, principal point at the image centre.

Cameras follow ``gst.geometry.conventions``: OpenCV axes, ``w2c`` of a camera in the observed camera's frame
(the observed camera is the identity), K in pixels with pixel (0, 0) at the centre of the top-left pixel.
Motion summaries use the observed camera's up axis (-y) as up (``gst.data.qa_geometry.camera_motion``).

Glossary: S samples, h/w token grid, hc/wc camera token grid, H/W pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from PIL import Image

from gst.data.qa_geometry import CameraMotion, camera_motion, describe_motion
from gst.data.scene import load_rgb
from gst.data.views import CropMode, crop_box
from gst.geometry import camera_centers, intrinsics_matrix

if TYPE_CHECKING:
    from gst.model import GSTModel, SequenceConfig, TokenLayout

DEFAULT_FOV_DEG = 52.5  # horizontal; the middle of the procedural world's 30-75 degree range
DEFAULT_ORBIT_RADIUS_M = 4.5  # orbit pivot distance: the middle of the procedural world's 3-6 m cameras
CAMERA_FORMAT = "gst.camera.v1"  # what PoseEstimate.to_dict writes and read_camera_json reads
CAMERA_UP = (0.0, -1.0, 0.0)  # the observed camera's up axis in its own OpenCV frame

ImageInput = Any  # str | Path | PIL.Image.Image | np.ndarray | torch.Tensor (see load_image)


def load_image(image: ImageInput) -> torch.Tensor:
    """An RGB image from a path, PIL image, numpy array (H, W[, C]) or tensor ([1,] C, H, W).

    uint8 / uint16 are scaled to [0, 1]; floats must already lie in [0, 1]; RGBA is composited on white.
    Shapes: -> (3, H, W) float32. Range: [0, 1].
    """
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        try:
            return load_rgb(path)
        except ValueError as err:
            raise ValueError(f"{path}: not a readable image ({err}); pass a PNG or JPEG file") from None
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
    if isinstance(image, np.ndarray):
        arr = image[..., None] if image.ndim == 2 else image
        if arr.ndim != 3:
            raise ValueError(f"numpy images must be (H, W) or (H, W, C), got shape {image.shape}")
        if arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        image = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)  # (C, H, W); PIL: read-only
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"unsupported image {type(image).__name__}: pass a path, PIL image, array or tensor")
    x = image.detach().cpu()
    x = x[0] if x.ndim == 4 and x.shape[0] == 1 else x
    x = x[None] if x.ndim == 2 else x
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"image tensors must be (3, H, W) (or 1 / 4 channels), got {tuple(image.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ValueError(f"image tensors must be uint8 or float in [0, 1], got {x.dtype}")
    x = x.float()
    if not bool(torch.isfinite(x).all()) or float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3:
        raise ValueError(
            f"float images must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]; "
            "divide uint8 data by 255 (images in [-1, 1]: (x + 1) / 2)"
        )
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 4:
        x = x[:3] * x[3:] + (1.0 - x[3:])  # composite on white, as gst.data.scene.load_rgb does
    return x.clamp(0.0, 1.0).contiguous()


def default_intrinsics(image_hw: tuple[int, int], fov_deg: float = DEFAULT_FOV_DEG) -> torch.Tensor:
    """Pinhole K of a camera with horizontal field of view ``fov_deg``, square pixels, centred principal
    point (pixel-centre convention). Shapes: -> (3, 3) float64."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view must lie in (0, 180) degrees, got {fov_deg}")
    H, W = image_hw
    f = 0.5 * W / math.tan(math.radians(fov_deg) / 2.0)
    return intrinsics_matrix(f, f, (W - 1) / 2.0, (H - 1) / 2.0)


def uncrop_intrinsics(
    K: torch.Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int], mode: CropMode = "center_crop"
) -> torch.Tensor:
    """Inverse of ``crop_resize_intrinsics``: K at ``out_hw`` (model pixels) -> K at ``in_hw`` (the image
    as given). Shapes: (..., 3, 3) -> (..., 3, 3)."""
    y0, x0, crop_h, crop_w = crop_box(in_hw, out_hw, mode)
    sy, sx = out_hw[0] / crop_h, out_hw[1] / crop_w
    out = K.clone()
    out[..., 0, 0], out[..., 0, 1] = K[..., 0, 0] / sx, K[..., 0, 1] / sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) / sx - 0.5 + x0
    out[..., 1, 1] = K[..., 1, 1] / sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) / sy - 0.5 + y0
    return out


def look_at(centre: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV w2c of a camera at ``centre`` looking at ``target``, its image rows along the frame's +y
    (the observed camera's down). Shapes: (3,), (3,) -> (4, 4) float64."""
    centre, target = centre.double(), target.double()
    z = target - centre
    z = z / z.norm()
    x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), z)
    if float(x.norm()) < 1e-6:
        raise ValueError("the camera would look straight up or down; its roll is undefined")
    x = x / x.norm()
    R = torch.stack([x, torch.linalg.cross(z, x), z])  # rows: camera axes in the observed frame
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3], w2c[:3, 3] = R, -R @ centre
    return w2c


def orbit_camera(
    azimuth_deg: float, elevation_deg: float = 0.0, *, radius_m: float = DEFAULT_ORBIT_RADIUS_M
) -> torch.Tensor:
    """A camera on a sphere around the pivot ``radius_m`` ahead of the observed camera, looking at it.

    ``azimuth_deg`` > 0 moves the camera to its right around the pivot (so it turns left to keep looking
    at it); ``elevation_deg`` > 0 raises it (it tilts down). (0, 0) is the observed camera.
    Shapes: -> w2c (4, 4) float64 in the observed camera's frame, metres.
    """
    if not -90.0 < elevation_deg < 90.0 or radius_m <= 0:
        raise ValueError(
            f"orbit: elevation must lie in (-90, 90) degrees and radius > 0, got {elevation_deg}, {radius_m}"
        )
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    pivot = torch.tensor([0.0, 0.0, radius_m], dtype=torch.float64)
    offset = torch.tensor(
        [math.sin(az) * math.cos(el), -math.sin(el), -math.cos(az) * math.cos(el)], dtype=torch.float64
    )
    return look_at(pivot + radius_m * offset, pivot)


def as_matrix(value: Any, shape: tuple[int, int], name: str) -> torch.Tensor:
    """A finite float64 matrix of the given shape from any array-like; errors name ``name``."""
    m = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if tuple(m.shape) != shape or not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name} must be a finite {shape[0]}x{shape[1]} matrix, got shape {tuple(m.shape)}")
    return m


def as_rigid(value: Any, name: str = "w2c") -> torch.Tensor:
    """A rigid (4, 4) float64 transform; anything else is a ValueError naming ``name``."""
    w2c = as_matrix(value, (4, 4), name)
    R = w2c[:3, :3]
    eye = torch.eye(3, dtype=torch.float64)
    bottom_ok = w2c[3].tolist() == [0.0, 0.0, 0.0, 1.0]
    if not torch.allclose(R @ R.T, eye, atol=1e-4) or float(torch.det(R)) < 0 or not bottom_ok:
        raise ValueError(f"{name} must be a rigid transform [R | t; 0 0 0 1] with R a rotation")
    return w2c


@dataclass(frozen=True)
class PoseEstimate:
    """A camera relative to the observed one.

    Shapes: K_tgt (3, 3) float64, pixels of an image of size ``image_hw``; w2c (4, 4) float64, the camera
    in the observed camera's frame (OpenCV, world units); camera_codes (hc, wc) int64, its tokens.
    """

    K_tgt: torch.Tensor
    w2c: torch.Tensor
    image_hw: tuple[int, int]
    camera_codes: torch.Tensor
    motion: CameraMotion | None  # None when the camera looks straight up or down
    summary: str

    @property
    def fov_deg(self) -> float:
        """Horizontal field of view in degrees."""
        return math.degrees(2.0 * math.atan(0.5 * self.image_hw[1] / float(self.K_tgt[0, 0])))

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in the observed frame. Shapes: (3,)."""
        return camera_centers(self.w2c)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, in the format ``read_camera_json`` reads (``gst pose --json``, ``gst nvs --camera``)."""
        return {
            "format": CAMERA_FORMAT,
            "frame": "observed camera (OpenCV: +x right, +y down, +z forward), world units",
            "w2c": self.w2c.tolist(),
            "K": self.K_tgt.tolist(),
            "image_hw": list(self.image_hw),
            "fov_deg": self.fov_deg,
            "center": self.center.tolist(),
            "summary": self.summary,
            "motion": None if self.motion is None else vars(self.motion),
            "camera_codes": self.camera_codes.tolist(),
        }


def describe_camera(
    w2c: torch.Tensor, K: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[CameraMotion | None, str]:
    """Motion and a readable summary: "turned 35 degrees left, moved 0.8 m forward; field of view 50 deg"."""
    fov = math.degrees(2.0 * math.atan(0.5 * image_hw[1] / float(K[0, 0])))
    try:
        motion = camera_motion(np.eye(4), w2c.numpy(), up=CAMERA_UP)
        words = describe_motion(motion, "readout")
    except ValueError:  # looks straight along the up axis: no heading
        motion = None
        angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(torch.trace(w2c[:3, :3])) - 1) / 2))))
        words = f"rotated {angle:.0f} degrees, moved {float(camera_centers(w2c).norm()):.1f} m"
    return motion, f"{words}; field of view {fov:.0f} deg"


def read_camera_json(path: str | Path) -> dict[str, Any]:
    """A camera file: {"w2c": 4x4 (target in the observed camera's frame, world units), optional "K": 3x3
    and "image_hw": [H, W] (the pixels K refers to; default the observed image's size)}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--camera {path}: no such file")
    try:
        data = json.loads(path.read_text())
        out = {"w2c": as_rigid(data["w2c"], f"{path}: w2c")}
        if data.get("K") is not None:
            out["K"] = as_matrix(data["K"], (3, 3), f"{path}: K")
        if data.get("image_hw") is not None:
            out["K_hw"] = tuple(int(v) for v in data["image_hw"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f'{path}: not a camera file ({err!r}); expected {{"w2c": 4x4, "K": 3x3, '
            '"image_hw": [H, W]}} (as `gst pose --json` writes)'
        ) from None
    return out


@dataclass(frozen=True)
class ViewResult:
    """Generated views. Shapes: images (S, 3, h, w) float32 in [0, 1]; image_codes (S, h, w).
    ``camera``: the camera as the model received it, decoded back from its tokens (quantized).
    ``covered`` (h, w) bool: with ``warp`` > 0, the pixels where the warped observed image lands (mixed
    into the generated view there; ``image_codes`` are the generated view's); None without."""

    images: torch.Tensor
    image_codes: torch.Tensor
    camera: PoseEstimate
    covered: torch.Tensor | None = None

    @property
    def image(self) -> torch.Tensor:
        """The first view. Shapes: (3, h, w)."""
        return self.images[0]

    @property
    def warped_fraction(self) -> float | None:
        """The share of the view's pixels that are warped observed pixels (None without ``warp``)."""
        return None if self.covered is None else float(self.covered.float().mean())


@dataclass(frozen=True)
class SampleResult:
    """Cameras and views drawn jointly from p(camera, image | observed).

    Shapes: images (S, 3, h, w) in [0, 1]; observed (3, h, w), the observed image as the model saw it;
    K_obs (3, 3), the observed camera's K (given or assumed) in the same model pixels as the cameras' K.
    ``covered`` (S, h, w) bool: with ``warp`` > 0, where each view's warped observed pixels land; else None.
    """

    cameras: list[PoseEstimate]
    images: torch.Tensor
    observed: torch.Tensor
    K_obs: torch.Tensor
    covered: torch.Tensor | None = None

    @property
    def warped_fractions(self) -> list[float] | None:
        """Per sample, the share of its pixels that are warped observed pixels (None without ``warp``)."""
        return None if self.covered is None else [float(c.float().mean()) for c in self.covered]


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn: text pieces, decoded cameras (PoseEstimate) and images ((3, h, w) tensors) in
    the order the model wrote them. ``finished``: it closed with <|end|> (else max_new_tokens cut it).
    ``answered_by``: "model" (the backbone wrote it) or "answer-reader" (a chat ``router`` answered)."""

    parts: list[Any]
    ids: torch.Tensor
    finished: bool
    answered_by: str = "model"

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def cameras(self) -> list[PoseEstimate]:
        return [p for p in self.parts if isinstance(p, PoseEstimate)]

    @property
    def images(self) -> list[torch.Tensor]:
        return [p for p in self.parts if isinstance(p, torch.Tensor)]

    def render(self, save_image: Callable[[torch.Tensor], str] | None = None) -> str:
        """The reply as text: cameras as "[camera: <summary>]", images as "[image: <save_image(img)>]"."""
        out = []
        for p in self.parts:
            if isinstance(p, PoseEstimate):
                out.append(f"[camera: {p.summary}]")
            elif isinstance(p, torch.Tensor):
                out.append(f"[image: {save_image(p) if save_image else 'not saved'}]")
            else:
                out.append(p)
        return "".join(out) + ("" if self.finished else " [cut at the token limit]")


@dataclass(frozen=True)
class PreparedImage:
    """An input image at the model's resolution (``GST.prepare``). Shapes: image (3, h_px, w_px) in [0, 1];
    K_model, K_input (3, 3) float64; ids (1, h*w) image-code vocabulary ids on the model's device."""

    image: torch.Tensor
    K_model: torch.Tensor
    K_input: torch.Tensor
    input_hw: tuple[int, int]
    ids: torch.Tensor


class ChatHost(Protocol):
    """What a ``gst.api_chat.ChatSession`` reads from the model it talks to (``gst.api.GST`` is one).

    Declared here so that ``api_chat`` needs nothing from ``api``: ``api`` imports ``api_chat``, never
    the other way round (tests/test_layering.py)."""

    model: GSTModel
    sequence: SequenceConfig
    layout: TokenLayout
    text_tokenizer: Any

    def generator(self, seed: int) -> torch.Generator: ...

    def prepare(self, image: ImageInput, K: Any = None, fov_deg: float | None = None) -> PreparedImage: ...

    def decode_images(self, image_ids: torch.Tensor) -> torch.Tensor: ...

    def decode_cameras(self, camera_ids: torch.Tensor) -> list[PoseEstimate]: ...


__all__ = [
    "CAMERA_FORMAT",
    "CAMERA_UP",
    "DEFAULT_FOV_DEG",
    "DEFAULT_ORBIT_RADIUS_M",
    "ChatHost",
    "ChatReply",
    "ImageInput",
    "PoseEstimate",
    "PreparedImage",
    "SampleResult",
    "ViewResult",
    "as_matrix",
    "as_rigid",
    "default_intrinsics",
    "describe_camera",
    "load_image",
    "look_at",
    "orbit_camera",
    "read_camera_json",
    "uncrop_intrinsics",
]
