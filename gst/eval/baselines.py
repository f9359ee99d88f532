"""Baselines every learned method must beat, behind the same predictor interfaces.

- ``SiftEssentialPose``: classical two-view geometry. SIFT keypoints, Lowe ratio matching, each
  image's points normalised by its own K, essential matrix with RANSAC, cheirality check
  (OpenCV ``findEssentialMat`` + ``recoverPose``). Given both intrinsics; scale-free (unit
  translation). Too few matches or inliers is a failure, scored as such.
- ``PriorPose``: chance level. Returns the relative pose (and focal ratio) of a training pair drawn at
  random, without looking at either image.
- ``MeanPose``: the best constant. The mean training relative pose for every pair.
- ``CopyView``: the observed image as the prediction of the target view.
- ``ReconstructionCeilingView``: decode(encode(target)), the best an image tokenizer lets any model
  do; it looks at the target, so it is reported as a ceiling, not a method.

Glossary: H/W pixels, M training pairs, N matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from gst.data.pairs import Pair, PairConfig, sample_pairs
from gst.data.scene import Scene
from gst.eval.predictors import PosePrediction
from gst.geometry.conventions import relative_w2c


def _gray_u8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W) uint8 grey for OpenCV."""
    rgb = (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _normalise(points: np.ndarray, K: torch.Tensor) -> np.ndarray:
    """Pixels (pixel-centre convention, as OpenCV keypoints) -> normalised image coordinates.

    Shapes: (N, 2) -> (N, 2).
    """
    K_inv = np.linalg.inv(K.double().numpy())
    homog = np.concatenate([points, np.ones((len(points), 1))], axis=1)  # (N, 3)
    x = homog @ K_inv.T
    return x[:, :2] / x[:, 2:]


def _failure(reason: str, K_tgt: torch.Tensor, info: dict) -> PosePrediction:
    return PosePrediction(
        w2c_rel=torch.eye(4, dtype=torch.float64),
        K_tgt=K_tgt.double(),
        failed=True,
        info={**info, "failure": reason},
    )


class SiftEssentialPose:
    """OpenCV SIFT + essential matrix (RANSAC) + recoverPose, given both cameras' intrinsics."""

    name = "sift_essential"
    scale_known = False  # recoverPose returns a unit translation
    uses_target_intrinsics = True

    def __init__(
        self,
        *,
        num_features: int = 0,
        ratio: float = 0.85,
        contrast_threshold: float = 0.01,
        ransac_threshold_px: float = 1.0,
        confidence: float = 0.999,
        min_inliers: int = 8,
        seed: int = 0,
    ):
        if not 0.0 < ratio < 1.0 or ransac_threshold_px <= 0 or min_inliers < 5:
            raise ValueError(
                "SiftEssentialPose: need 0 < ratio < 1, ransac_threshold_px > 0, min_inliers >= 5"
            )
        # ratio and contrast_threshold were chosen by a sweep on TRAINING scenes of the procedural world
        # (BENCHMARKS.md, evaluation): OpenCV's default contrast 0.04 finds few keypoints at 128 px.
        # Lowe (2004) uses ratio 0.8.
        self.num_features = num_features  # 0 = keep all
        self.ratio = ratio
        self.contrast_threshold = contrast_threshold
        self.ransac_threshold_px = ransac_threshold_px
        self.confidence = confidence
        self.min_inliers = min_inliers
        self.seed = seed
        self._sift = cv2.SIFT_create(nfeatures=num_features, contrastThreshold=contrast_threshold)
        self._matcher = cv2.BFMatcher(cv2.NORM_L2)

    def config(self) -> dict:
        return {
            "num_features": self.num_features,
            "ratio": self.ratio,
            "contrast_threshold": self.contrast_threshold,
            "min_inliers": self.min_inliers,
            "ransac_threshold_px": self.ransac_threshold_px,
            "confidence": self.confidence,
            "seed": self.seed,
            "opencv": cv2.__version__,
        }

    def match(self, observed: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Ratio-test SIFT matches. Shapes: -> (N, 2), (N, 2) pixel coordinates in each image."""
        kp1, des1 = self._sift.detectAndCompute(_gray_u8(observed), None)
        kp2, des2 = self._sift.detectAndCompute(_gray_u8(target), None)
        if des1 is None or des2 is None or len(kp1) < 2 or len(kp2) < 2:
            return np.zeros((0, 2)), np.zeros((0, 2))
        good = [m for m, n in self._matcher.knnMatch(des1, des2, k=2) if m.distance < self.ratio * n.distance]
        p1 = np.asarray([kp1[m.queryIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
        p2 = np.asarray([kp2[m.trainIdx].pt for m in good], dtype=np.float64).reshape(-1, 2)
        return p1, p2

    def predict_pose(self, observed, target, K_obs, *, K_tgt=None, pair=None) -> PosePrediction:
        if K_tgt is None:
            raise ValueError("SiftEssentialPose needs the target intrinsics")
        p1, p2 = self.match(observed, target)
        return self.pose_from_matches(p1, p2, K_obs, K_tgt)

    def pose_from_matches(
        self,
        p1: np.ndarray,
        p2: np.ndarray,
        K_obs: torch.Tensor,
        K_tgt: torch.Tensor,
    ) -> PosePrediction:
        """Relative pose from pixel correspondences. Shapes: p1, p2 (N, 2); K (3, 3)."""
        info = {"num_matches": int(len(p1))}
        if len(p1) < self.min_inliers:
            return _failure(f"{len(p1)} matches < {self.min_inliers}", K_tgt, info)
        x1, x2 = _normalise(p1, K_obs), _normalise(p2, K_tgt)
        focal = float(np.mean([K_obs[0, 0], K_obs[1, 1], K_tgt[0, 0], K_tgt[1, 1]]))
        cv2.setRNGSeed(self.seed)  # RANSAC sampling: same pair, same answer, whatever the pair order
        try:
            E, mask = cv2.findEssentialMat(
                x1,
                x2,
                np.eye(3),
                method=cv2.RANSAC,
                prob=self.confidence,
                threshold=self.ransac_threshold_px / focal,
            )
            if E is None or E.shape[0] < 3:
                return _failure("no essential matrix", K_tgt, info)
            # Several solutions may be stacked (3k x 3); the first is the one with most RANSAC inliers.
            n_in, R, t, _ = cv2.recoverPose(E[:3], x1, x2, np.eye(3), mask=mask)
        except cv2.error as err:
            # Degenerate correspondences (e.g. no motion, or all on one line) make OpenCV's five-point
            # solver assert; the pair is then a failure like any other, with OpenCV's reason.
            reason = str(err).strip().splitlines()[-1]
            return _failure(f"OpenCV could not solve the essential matrix: {reason}", K_tgt, info)
        info["num_inliers"] = int(n_in)
        if n_in < self.min_inliers:
            return _failure(f"{n_in} cheirality inliers < {self.min_inliers}", K_tgt, info)
        w2c_rel = torch.eye(4, dtype=torch.float64)
        w2c_rel[:3, :3] = torch.from_numpy(R)
        w2c_rel[:3, 3] = torch.from_numpy(t.reshape(3))  # x_tgt = R x_obs + t, |t| = 1
        return PosePrediction(w2c_rel=w2c_rel, K_tgt=K_tgt.double(), info=info)


def pair_seed(seed: int, pair: Pair | None) -> int:
    """A per-pair seed, stable across runs and pair orders."""
    key = "" if pair is None else f"{pair.scene}:{pair.obs}:{pair.tgt}"
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


class PriorPose:
    """Chance level: the relative pose of a random *training* pair; never looks at the images."""

    name = "prior"
    scale_known = True  # training poses are in the same world units as the evaluated scenes
    uses_target_intrinsics = False

    def __init__(self, w2c_rel: torch.Tensor, focal_ratio: torch.Tensor, seed: int = 0):
        """Shapes: w2c_rel (M, 4, 4) training relative poses; focal_ratio (M,) f_tgt / f_obs."""
        if len(w2c_rel) == 0 or len(w2c_rel) != len(focal_ratio):
            raise ValueError("PriorPose needs at least one training pair")
        self.w2c_rel = w2c_rel.double()
        self.focal_ratio = focal_ratio.double()
        self.seed = seed

    @classmethod
    def from_scenes(
        cls,
        scenes: Sequence[Scene],
        num_samples: int,
        seed: int,
        config: PairConfig | None = None,
    ) -> PriorPose:
        """Collect up to ``num_samples`` training pairs with the evaluation's pair rule."""
        if not scenes:
            raise ValueError("--train-data holds no scenes; the prior needs training scenes")
        pairs = sample_pairs(scenes, num_samples, seed, config, allow_fewer=True)
        by_name = {s.name: s for s in scenes}
        w2c, ratio = [], []
        for p in pairs:
            s = by_name[p.scene]
            w2c.append(relative_w2c(s.w2c[p.obs].double(), s.w2c[p.tgt].double()))
            f_obs, f_tgt = s.K[p.obs, 0, 0], s.K[p.tgt, 0, 0]
            ratio.append(float(f_tgt / f_obs))
        return cls(torch.stack(w2c), torch.tensor(ratio), seed)

    def config(self) -> dict:
        return {"num_training_pairs": int(len(self.w2c_rel)), "seed": self.seed}

    def predict_pose(self, observed, target, K_obs, *, K_tgt=None, pair=None) -> PosePrediction:
        rng = np.random.default_rng(pair_seed(self.seed, pair))
        m = int(rng.integers(len(self.w2c_rel)))
        K = K_obs.double().clone()
        K[0, 0] *= self.focal_ratio[m]
        K[1, 1] *= self.focal_ratio[m]
        return PosePrediction(w2c_rel=self.w2c_rel[m].clone(), K_tgt=K, info={"training_pair": m})


class MeanPose:
    """The best constant: one pose for every pair, the mean of the training pairs' relative poses
    (rotation: the chordal L2 mean, i.e. the mean rotation matrix projected onto SO(3) by SVD;
    translation: the mean; focal ratio: the median). Never looks at the images. Where the sign of a
    turn is a coin flip for a model, this constant scores better median errors than guessing it."""

    name = "mean"
    scale_known = True
    uses_target_intrinsics = False

    def __init__(self, w2c_rel: torch.Tensor, focal_ratio: torch.Tensor):
        """Shapes: w2c_rel (M, 4, 4) training relative poses; focal_ratio (M,) f_tgt / f_obs."""
        if len(w2c_rel) == 0 or len(w2c_rel) != len(focal_ratio):
            raise ValueError("MeanPose needs at least one training pair")
        U, _, Vh = torch.linalg.svd(w2c_rel[:, :3, :3].double().mean(0))
        D = torch.diag(torch.tensor([1.0, 1.0, float(torch.linalg.det(U @ Vh))], dtype=torch.float64))
        w2c = torch.eye(4, dtype=torch.float64)
        w2c[:3, :3] = U @ D @ Vh  # nearest rotation to the mean matrix
        w2c[:3, 3] = w2c_rel[:, :3, 3].double().mean(0)
        self.w2c_rel = w2c
        self.focal_ratio = float(focal_ratio.double().median())
        self.num_training_pairs = len(w2c_rel)

    @classmethod
    def from_prior(cls, prior: PriorPose) -> MeanPose:
        """The mean of the training pairs a ``PriorPose`` draws from."""
        return cls(prior.w2c_rel, prior.focal_ratio)

    def config(self) -> dict:
        return {
            "num_training_pairs": self.num_training_pairs,
            "w2c_rel": self.w2c_rel.tolist(),
            "focal_ratio": self.focal_ratio,
        }

    def predict_pose(self, observed, target, K_obs, *, K_tgt=None, pair=None) -> PosePrediction:
        K = K_obs.double().clone()
        K[0, 0] *= self.focal_ratio
        K[1, 1] *= self.focal_ratio
        return PosePrediction(w2c_rel=self.w2c_rel.clone(), K_tgt=K, info={})


def resize_image(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Area/bilinear resize with antialiasing. Shapes: (3, H, W) -> (3, *hw)."""
    if tuple(image.shape[-2:]) == tuple(hw):
        return image
    return F.interpolate(image[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0].clamp(
        0, 1
    )


class CopyView:
    """The observed image, as is, as the predicted target view."""

    name = "copy_observed"
    uses_target_image = False

    def predict_view(
        self, observed, K_obs, K_tgt, w2c_rel, *, target_hw, target=None, pair=None
    ) -> torch.Tensor:
        return resize_image(observed, target_hw)


class ReconstructionCeilingView:
    """decode(encode(target)): an upper bound for any model that emits this tokenizer's codes.

    A tokenizer works at one resolution (``input_hw``); other targets are resized to it and the
    reconstruction back, so the ceiling then also includes that resampling, as a model would.
    """

    uses_target_image = True

    def __init__(
        self,
        reconstruct: Callable[[torch.Tensor], torch.Tensor],
        name: str = "tokenizer_ceiling",
        input_hw: tuple[int, int] | None = None,
    ):
        """``reconstruct``: (B, 3, h, w) in [0, 1] -> (B, 3, h, w) in [0, 1], (h, w) = ``input_hw``."""
        self.reconstruct = reconstruct
        self.name = name
        self.input_hw = input_hw

    def predict_view(
        self, observed, K_obs, K_tgt, w2c_rel, *, target_hw, target=None, pair=None
    ) -> torch.Tensor:
        if target is None:
            raise ValueError("the reconstruction ceiling needs the target image")
        x = target if self.input_hw is None else resize_image(target, self.input_hw)
        with torch.no_grad():
            out = self.reconstruct(x[None].float())[0]  # (3, h, w)
        return resize_image(out.clamp(0, 1), target_hw)
