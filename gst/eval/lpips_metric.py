"""LPIPS (Zhang et al. 2018, the ``lpips`` package, AlexNet trunk, v0.1 linear heads) without downloads.

``lpips.LPIPS(net="alex", pretrained=True)`` asks torchvision for ImageNet AlexNet weights, which it
downloads when they are not cached; with no network that fails, and ``pnet_rand=True`` would silently
score with a random trunk. So the trunk is always built random (no download is ever attempted), and the
ImageNet weights are loaded explicitly from the first of:

1. the path given as ``--lpips-weights`` / ``weights_path``;
2. ``$GST_LPIPS_WEIGHTS``;
3. the torch hub cache, ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` (respects
   ``$TORCH_HOME``), where torchvision itself would have cached them.

Where none exists, LPIPS is reported as unavailable with this recipe, never as a number. The linear
heads (``lpips/weights/v0.1/alex.pth``) ship inside the ``lpips`` wheel.

Glossary: B batch, H/W pixels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gst.hashing import file_sha256

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision AlexNet_Weights.IMAGENET1K_V1
ALEXNET_URL = "https://download.pytorch.org/models/" + ALEXNET_FILE
ALEXNET_SHA256_PREFIX = "7be5be79"  # torch.hub convention: the file name carries the sha256 prefix
ENV_VAR = "GST_LPIPS_WEIGHTS"
# lpips' AlexNet slices keep the torchvision layer indices: conv layer i lives in slice k as "k.i".
_ALEX_SLICE_OF_LAYER = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}

HOW_TO_PROVIDE = (
    f"download {ALEXNET_URL} on a machine with network access and either pass it with "
    f"--lpips-weights PATH, set ${ENV_VAR}=PATH, or copy it to "
    f"$TORCH_HOME/hub/checkpoints/{ALEXNET_FILE} (default TORCH_HOME: ~/.cache/torch)"
)

ImageScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B,3,H,W) x2 in [0, 1] -> (B,)


@dataclass(frozen=True)
class LpipsStatus:
    """An LPIPS scorer, or the reason there is none. Exactly one of ``scorer`` / ``reason`` is set."""

    scorer: ImageScorer | None
    description: str  # what produced the numbers (or "LPIPS unavailable: <why>. <how to fix>")
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.scorer is not None


def hub_cache_path() -> Path:
    """Where torchvision caches the AlexNet weights (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def find_alexnet_weights(weights_path: str | os.PathLike | None = None) -> Path | None:
    """The first existing AlexNet weights file among the documented places, or None. Never downloads.

    Raises FileNotFoundError when an explicitly given path does not exist.
    """
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"--lpips-weights {path}: no such file; {HOW_TO_PROVIDE}")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"${ENV_VAR}={env}: no such file; {HOW_TO_PROVIDE}")
        return Path(env)
    cached = hub_cache_path()
    return cached if cached.is_file() else None


def build_lpips(alexnet_path: Path, verify_hash: bool = True) -> torch.nn.Module:
    """``lpips.LPIPS`` (alex, v0.1) with its trunk loaded from ``alexnet_path``; no download."""
    import lpips

    if verify_hash and not file_sha256(alexnet_path).startswith(ALEXNET_SHA256_PREFIX):
        raise ValueError(
            f"{alexnet_path}: sha256 does not start with {ALEXNET_SHA256_PREFIX}, so it is not torchvision's "
            f"{ALEXNET_FILE}; {HOW_TO_PROVIDE}"
        )
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(alexnet_path, map_location="cpu", weights_only=True)
    trunk = {}
    for layer, k in _ALEX_SLICE_OF_LAYER.items():
        for p in ("weight", "bias"):
            key = f"features.{layer}.{p}"
            if key not in state:
                raise ValueError(
                    f"{alexnet_path}: missing {key}; expected torchvision AlexNet weights. {HOW_TO_PROVIDE}"
                )
            trunk[f"slice{k}.{layer}.{p}"] = state[key]
    model.net.load_state_dict(trunk, strict=True)
    return model.eval()


def load_lpips(weights_path: str | os.PathLike | None = None, verify_hash: bool = True) -> LpipsStatus:
    """An LPIPS scorer over images in [0, 1], or the reason LPIPS is unavailable."""
    found = find_alexnet_weights(weights_path)
    if found is None:
        reason = f"ImageNet AlexNet weights not found (looked for ${ENV_VAR} and {hub_cache_path()})"
        return LpipsStatus(None, f"LPIPS unavailable: {reason}. To enable it, {HOW_TO_PROVIDE}.", reason)
    model = build_lpips(found, verify_hash=verify_hash)
    from importlib.metadata import version

    def scorer(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pred.float(), target.float(), normalize=True).reshape(-1)  # normalize: [0,1]->[-1,1]

    description = f"lpips {version('lpips')} LPIPS(net='alex', version='0.1'), trunk weights {found}"
    return LpipsStatus(scorer, description)


def injected_lpips(scorer: ImageScorer, description: str) -> LpipsStatus:
    """Wrap a caller-supplied scorer (tests inject a small network this way)."""
    return LpipsStatus(scorer, description)
