"""A siamese CNN pose regressor: the discriminative baseline the world model is compared with.

Why it exists (shared/DESIGN.md, "Learning efficiency"): a generative model earns its generality only if
it is not beaten by a plain regressor trained for the same CPU-minutes on the same pairs. Architecture:

1. Each image (shared weights) through ``len(channels)`` stride-2 3x3 convs (GroupNorm, SiLU) to an
   ``image_hw / 2**len(channels)`` feature map (8x8 for 64x64 images).
2. The two maps stacked cell by cell along channels (observed first), ``num_pair_convs`` 3x3 convs:
   comparing the views cell by cell is what learns on a CPU budget (a transformer comparing them
   through attention stayed at chance in the same budget, see DESIGN.md).
3. Average pooling to ``pool_hw``, flattened, an MLP, and two linear heads: the relative pose (6D
   rotation, translation) and the target's intrinsics (log focal lengths, principal point).

Output: the camera tokenizer's 13-number parameter vector (``camera_vector`` below, the same numbers as
``gst.tokenizers.camera.CameraTokenizer.camera_vector``, checked by a test): the target camera in the
observed camera's frame (``w2c_rel``, OpenCV axes), translation divided by ``pose_scale``, and the
target's K in pixels of ``image_hw``. The observed camera's intrinsics are not an input.

Glossary: B batch, C channels, H/W pixels, h/w feature map, P = 13 parameters.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gst.tokenizers.camera import NUM_PARAMS, camera_vector, params_from_vector
from gst.tokenizers.config import config_from_dict, config_to_dict

REGRESSOR_FORMAT = "gst.pose_regressor"
REGRESSOR_FORMAT_VERSION = 1
REGRESSOR_FILE = "regressor.json"  # the export's config; weights in model.safetensors
POSE_SLICE, INTRINSICS_SLICE = slice(0, 9), slice(9, NUM_PARAMS)  # 6D rotation + translation | K


@dataclass(frozen=True, kw_only=True)
class RegressorConfig:
    """Architecture of ``PoseRegressor`` (module docstring). The default is the 1.25M-parameter net."""

    image_hw: tuple[int, int] = (64, 64)  # (H, W) of both inputs; divisible by 2 ** len(channels)
    channels: tuple[int, ...] = (16, 32, 64)  # per stride-2 encoder stage; the last is the map's C
    pair_channels: int = 64  # width of the convs over the stacked maps
    num_pair_convs: int = 2  # 3x3 convs over the stacked maps (the first maps 2 C -> pair_channels)
    pool_hw: tuple[int, int] = (4, 4)  # average pooling of the pair map before the MLP
    hidden: int = 656  # MLP width (1,246,717 parameters in all at the defaults)
    num_hidden: int = 2  # MLP layers before the heads
    pose_scale: float = 1.0  # world units per normalised translation unit (1 m in the procedural world)

    def __post_init__(self) -> None:
        stride = 2 ** len(self.channels)
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"model.channels must be positive widths, got {self.channels}")
        if self.image_hw[0] % stride or self.image_hw[1] % stride:
            raise ValueError(
                f"model.image_hw {self.image_hw} must be divisible by {stride} (2 ** len(model.channels))"
            )
        map_hw = self.map_hw
        if not (1 <= self.pool_hw[0] <= map_hw[0] and 1 <= self.pool_hw[1] <= map_hw[1]):
            raise ValueError(f"model.pool_hw {self.pool_hw} must lie within the {map_hw} feature map")
        if self.pair_channels < 1 or self.num_pair_convs < 1 or self.hidden < 1 or self.num_hidden < 1:
            raise ValueError("model.pair_channels, num_pair_convs, hidden and num_hidden must be >= 1")
        if not self.pose_scale > 0:
            raise ValueError(f"model.pose_scale must be > 0 (world units), got {self.pose_scale}")

    @property
    def map_hw(self) -> tuple[int, int]:
        """(h, w) of each image's feature map."""
        stride = 2 ** len(self.channels)
        return (self.image_hw[0] // stride, self.image_hw[1] // stride)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


def _conv(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), _norm(c_out), nn.SiLU()]


class PoseRegressor(nn.Module):
    """Siamese CNN: (observed, target) images -> the target camera's 13-number vector."""

    def __init__(self, config: RegressorConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3
        for c in config.channels:
            layers += _conv(c_in, c, 2)
            c_in = c
        self.encoder = nn.Sequential(*layers)
        pair: list[nn.Module] = []
        c_in = 2 * config.channels[-1]
        for _ in range(config.num_pair_convs):
            pair += _conv(c_in, config.pair_channels, 1)
            c_in = config.pair_channels
        self.pair = nn.Sequential(*pair, nn.AdaptiveAvgPool2d(config.pool_hw), nn.Flatten())
        mlp: list[nn.Module] = []
        c_in = config.pair_channels * config.pool_hw[0] * config.pool_hw[1]
        for _ in range(config.num_hidden):
            mlp += [nn.Linear(c_in, config.hidden), nn.SiLU()]
            c_in = config.hidden
        self.mlp = nn.Sequential(*mlp)
        self.pose_head = nn.Linear(c_in, POSE_SLICE.stop - POSE_SLICE.start)  # 6D rotation, translation
        self.intrinsics_head = nn.Linear(c_in, INTRINSICS_SLICE.stop - INTRINSICS_SLICE.start)

    def forward(self, observed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Shapes: observed, target (B, 3, H, W) in [-1, 1] -> (B, 13) ``camera_vector`` numbers."""
        B = observed.shape[0]
        maps = self.encoder(torch.cat([observed, target]))  # (2B, C, h, w): one pass, shared weights
        stacked = torch.cat([maps[:B], maps[B:]], dim=1)  # (B, 2C, h, w) observed channels first
        z = self.mlp(self.pair(stacked))  # (B, hidden)
        return torch.cat([self.pose_head(z), self.intrinsics_head(z)], dim=-1)  # (B, 13)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def predict_cameras(
    model: PoseRegressor, observed: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images -> (K_tgt (B, 3, 3) pixels of image_hw, w2c_rel (B, 4, 4) world units), float64.

    Shapes: observed, target (B, 3, H, W) at ``model.config.image_hw``. Range: [0, 1].
    """
    vector = model(observed * 2.0 - 1.0, target * 2.0 - 1.0).double()  # [0, 1] -> [-1, 1]
    params = params_from_vector(vector, model.config.image_hw)
    w2c = params.w2c()
    w2c[:, :3, 3] = w2c[:, :3, 3] * model.config.pose_scale
    return params.K(), w2c


# ---- export ----


def save_regressor(model: PoseRegressor, out_dir: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """``model.safetensors`` + ``regressor.json`` (format, config, parameter count, metadata)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"))
    info = {
        "format": REGRESSOR_FORMAT,
        "format_version": REGRESSOR_FORMAT_VERSION,
        "config": config_to_dict(model.config),
        "num_parameters": num_parameters(model),
        "output": "gst.training.regressor.camera_vector: 6D rotation, translation / 4 (pose_scale units), "
        "log(focal / W), principal offset * 10 / size; target camera relative to the observed (w2c_rel)",
        "metadata": metadata or {},
    }
    tmp = out_dir / (REGRESSOR_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, out_dir / REGRESSOR_FILE)
    return out_dir


def resolve_regressor_dir(path: str | Path) -> Path:
    """The export folder of an export, a checkpoint folder or a ``gst train regressor`` run folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--regressor {path}: no such folder; train one with `gst train regressor`")
    for candidate in (path, path / "export"):
        if (candidate / REGRESSOR_FILE).is_file():
            return candidate
    pointer = path / "checkpoints" / "latest"
    if pointer.is_file():
        step_dir = path / "checkpoints" / json.loads(pointer.read_text())["dir"]
        if (step_dir / "export" / REGRESSOR_FILE).is_file():
            return step_dir / "export"
    raise FileNotFoundError(
        f"--regressor {path}: no {REGRESSOR_FILE} in it, in {path}/export or in its latest checkpoint; "
        "pass a `gst train regressor` run folder, checkpoint or export"
    )


def load_regressor(path: str | Path, device: str | torch.device = "cpu") -> tuple[PoseRegressor, dict]:
    """(model in eval mode, its ``regressor.json`` with ``training`` = the loop's ``training.json``)."""
    folder = resolve_regressor_dir(path)
    info = json.loads((folder / REGRESSOR_FILE).read_text())
    if info.get("format") != REGRESSOR_FORMAT or info.get("format_version") != REGRESSOR_FORMAT_VERSION:
        raise ValueError(
            f"{folder / REGRESSOR_FILE}: format {info.get('format')!r} version {info.get('format_version')} "
            f"is not {REGRESSOR_FORMAT!r} version {REGRESSOR_FORMAT_VERSION}; retrain with this gst version"
        )
    config = config_from_dict(RegressorConfig, info["config"], f"{folder / REGRESSOR_FILE}: config")
    model = PoseRegressor(config)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device="cpu"), strict=True)
    record = folder / "training.json"  # gst.training.loop.TRAINING_RECORD
    info["training"] = json.loads(record.read_text()) if record.is_file() else None
    info["folder"] = str(folder.resolve())
    return model.to(device).eval(), info


__all__ = [
    "PoseRegressor",
    "RegressorConfig",
    "camera_vector",
    "load_regressor",
    "params_from_vector",
    "predict_cameras",
    "resolve_regressor_dir",
    "save_regressor",
]
