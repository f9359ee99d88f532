"""What the evaluator asks of a method: the pose and view predictor interfaces, and prediction files.

Baselines implement these now; the world model implements them later (issue 4). Every method sees
the same pairs and is scored by the same code.

Relative pose convention (``gst.geometry.conventions.relative_w2c``): the observed camera is the
identity; ``w2c_rel`` maps points from the observed camera frame to the target camera frame, OpenCV
axes. Its translation is in the scene's world units when the method says ``scale_known``; otherwise
only its direction is used (the evaluator rescales it to the true baseline length, see pose_eval).

Prediction files (``--predictions FILE``) let any method be scored without code here:

- Pose, JSON: ``{"format": "gst.pose_predictions.v1", "method": str, "scale_known": bool,
  "predictions": [{"scene": str, "obs": int, "tgt": int, "w2c_rel": 4x4, "K_tgt": 3x3 (optional),
  "failed": bool (optional)}]}``.
- Pose, NPZ: arrays ``scene`` (N,) str, ``obs`` (N,) int, ``tgt`` (N,) int, ``w2c_rel`` (N, 4, 4),
  optional ``K_tgt`` (N, 3, 3) and ``failed`` (N,) bool; scalars ``method`` and ``scale_known``.
- Views, NPZ: ``scene``, ``obs``, ``tgt`` as above, ``images`` (N, H, W, 3) uint8 or float in [0, 1];
  scalar ``method``.

(scene, obs, tgt) is the pair key printed in every results JSON row. A pair the file does not cover
is scored as a failure (pose: 180 degrees; view: a uniform grey image) and flagged, never skipped.

Glossary: H/W pixels, N predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gst.data.pairs import Pair

POSE_FORMAT = "gst.pose_predictions.v1"
FAILED_VIEW_VALUE = 0.5  # a missing view prediction is scored as this uniform grey image


@dataclass(frozen=True, kw_only=True)
class PosePrediction:
    """A predicted target camera. Shapes: K_tgt (3, 3) pixels or None; w2c_rel (4, 4) float64."""

    w2c_rel: torch.Tensor
    K_tgt: torch.Tensor | None
    failed: bool = False  # scored as 180 degrees errors, counted in num_failed
    info: dict[str, Any] = field(default_factory=dict)  # method diagnostics, e.g. inlier counts

    @staticmethod
    def failure(reason: str, K_tgt: torch.Tensor | None = None) -> PosePrediction:
        return PosePrediction(
            w2c_rel=torch.eye(4, dtype=torch.float64), K_tgt=K_tgt, failed=True, info={"failure": reason}
        )


class PosePredictor(Protocol):
    """Predicts where the target camera is, relative to the observed one."""

    name: str
    scale_known: bool  # True: w2c_rel translation is in world units; False: direction only
    uses_target_intrinsics: bool  # True: receives the true K_tgt (focal error is then "given")

    def predict_pose(
        self,
        observed: torch.Tensor,
        target: torch.Tensor,
        K_obs: torch.Tensor,
        *,
        K_tgt: torch.Tensor | None = None,
        pair: Pair | None = None,
    ) -> PosePrediction:
        """Shapes: observed, target (3, H, W) in [0, 1]; K_obs, K_tgt (3, 3) pixels."""
        ...


class ViewPredictor(Protocol):
    """Predicts the image the target camera sees."""

    name: str
    uses_target_image: bool  # True only for ceilings such as decode(encode(target)); reported as such

    def predict_view(
        self,
        observed: torch.Tensor,
        K_obs: torch.Tensor,
        K_tgt: torch.Tensor,
        w2c_rel: torch.Tensor,
        *,
        target_hw: tuple[int, int],
        target: torch.Tensor | None = None,
        pair: Pair | None = None,
    ) -> torch.Tensor | None:
        """Shapes: observed (3, H, W) in [0, 1]; K (3, 3); w2c_rel (4, 4) -> (3, *target_hw) in [0, 1].

        None means the method failed on this pair; it is scored as ``failed_view`` and flagged.
        """
        ...


def _key(scene: Any, obs: Any, tgt: Any) -> tuple[str, int, int]:
    return (str(scene), int(obs), int(tgt))


def _pose_entries_from_json(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    if data.get("format") != POSE_FORMAT:
        raise ValueError(f"{path}: 'format' must be {POSE_FORMAT!r}, got {data.get('format')!r}")
    if not isinstance(data.get("predictions"), list):
        raise ValueError(f"{path}: 'predictions' must be a list of per-pair objects")
    return data, data["predictions"]


def _pose_entries_from_npz(path: Path) -> tuple[dict, list[dict]]:
    with np.load(path, allow_pickle=False) as z:
        for name in ("scene", "obs", "tgt", "w2c_rel"):
            if name not in z:
                raise ValueError(f"{path}: missing array {name!r} (see gst.eval.predictors)")
        n = len(z["obs"])
        entries = [
            {
                "scene": z["scene"][i],
                "obs": z["obs"][i],
                "tgt": z["tgt"][i],
                "w2c_rel": z["w2c_rel"][i],
                "K_tgt": z["K_tgt"][i] if "K_tgt" in z else None,
                "failed": bool(z["failed"][i]) if "failed" in z else False,
            }
            for i in range(n)
        ]
        meta = {
            "method": str(z["method"]) if "method" in z else path.stem,
            "scale_known": bool(z["scale_known"]) if "scale_known" in z else False,
        }
    return meta, entries


class FilePosePredictor:
    """Replays per-pair pose predictions from a JSON or NPZ file (format in the module docstring)."""

    uses_target_intrinsics = False

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--predictions {path}: no such file")
        meta, entries = (_pose_entries_from_npz if path.suffix == ".npz" else _pose_entries_from_json)(path)
        self.path = path
        self.name = str(meta.get("method") or path.stem)
        self.scale_known = bool(meta.get("scale_known", False))
        self._by_key: dict[tuple[str, int, int], PosePrediction] = {}
        for i, e in enumerate(entries):
            try:
                w2c = torch.as_tensor(np.asarray(e["w2c_rel"], dtype=np.float64))
                K = (
                    None
                    if e.get("K_tgt") is None
                    else torch.as_tensor(np.asarray(e["K_tgt"], dtype=np.float64))
                )
                key = _key(e["scene"], e["obs"], e["tgt"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{path}: prediction {i} is malformed ({err}); see gst.eval.predictors"
                ) from None
            if w2c.shape != (4, 4) or (K is not None and K.shape != (3, 3)):
                raise ValueError(f"{path}: prediction {i} needs w2c_rel 4x4 and K_tgt 3x3")
            self._by_key[key] = PosePrediction(w2c_rel=w2c, K_tgt=K, failed=bool(e.get("failed", False)))

    def predict_pose(self, observed, target, K_obs, *, K_tgt=None, pair=None) -> PosePrediction:
        if pair is None:
            raise ValueError("FilePosePredictor needs the pair key")
        found = self._by_key.get(pair.key)
        return found if found is not None else PosePrediction.failure(f"pair {pair.key} not in {self.path}")


def write_pose_predictions(
    path: str | Path,
    method: str,
    scale_known: bool,
    pairs: list[Pair],
    predictions: list[PosePrediction],
) -> None:
    """Write predictions in the JSON pose format, so any run can be re-scored with --predictions."""
    rows = []
    for p, pred in zip(pairs, predictions, strict=True):
        rows.append(
            {
                "scene": p.scene,
                "obs": p.obs,
                "tgt": p.tgt,
                "w2c_rel": pred.w2c_rel.tolist(),
                "K_tgt": None if pred.K_tgt is None else pred.K_tgt.tolist(),
                "failed": pred.failed,
            }
        )
    doc = {"format": POSE_FORMAT, "method": method, "scale_known": scale_known, "predictions": rows}
    Path(path).write_text(json.dumps(doc))


class FileViewPredictor:
    """Replays per-pair view predictions from an NPZ file (format in the module docstring)."""

    uses_target_image = False

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--predictions {path}: no such file")
        with np.load(path, allow_pickle=False) as z:
            for name in ("scene", "obs", "tgt", "images"):
                if name not in z:
                    raise ValueError(f"{path}: missing array {name!r} (see gst.eval.predictors)")
            images = z["images"]
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"{path}: 'images' must be (N, H, W, 3), got {images.shape}")
            scale = 255.0 if images.dtype == np.uint8 else 1.0
            self._by_key = {
                _key(s, o, t): torch.from_numpy(images[i].astype(np.float32) / scale).permute(2, 0, 1)
                for i, (s, o, t) in enumerate(zip(z["scene"], z["obs"], z["tgt"], strict=True))
            }
            self.name = str(z["method"]) if "method" in z else path.stem
        self.path = path

    def predict_view(
        self,
        observed,
        K_obs,
        K_tgt,
        w2c_rel,
        *,
        target_hw,
        target=None,
        pair=None,
    ) -> torch.Tensor | None:
        if pair is None:
            raise ValueError("FileViewPredictor needs the pair key")
        img = self._by_key.get(pair.key)
        if img is None:
            return None
        if tuple(img.shape[-2:]) != tuple(target_hw):
            raise ValueError(
                f"{self.path}: image for pair {pair.key} is {tuple(img.shape[-2:])}, the target "
                f"is {tuple(target_hw)}; predict at the evaluated resolution (--resolution)"
            )
        return img.clamp(0.0, 1.0)


def failed_view(target_hw: tuple[int, int]) -> torch.Tensor:
    """The image a missing view prediction is scored as. Shapes: -> (3, H, W). Range: 0.5."""
    return torch.full((3, *target_hw), FAILED_VIEW_VALUE, dtype=torch.float32)
