"""The camera tokenizer: a relative camera as a Plücker ray map -> a token grid that matches the image
token grid -> back to an exact ray map and ``(K, w2c)`` through ``gst.geometry``.

Pipeline (GST's camera tokenization, made camera-aware and precise):

1. A pair's target camera in the observed camera's frame, translation divided by ``pose_scale``
   (``gst.geometry.normalized_relative_pose``), with the target's own intrinsics ``K`` (pixels of an
   ``image_hw`` image), as a Plücker ray map at ``ray_hw`` (``gst.geometry.plucker_rays``, channels
   ``RAY_CHANNELS``: direction then moment). ``K`` is first rescaled to the ray map's pixel grid
   (``scale_intrinsics``), so the map holds the rays through the centres of ``ray_hw`` image cells.
2. Encoder: the ray map is inverted analytically (``gst.geometry.cameras_from_rays``, exact to float
   precision) into a 13-number parameter vector ``p`` (``camera_vector``: 6D rotation, translation,
   log focal lengths, principal point; each scaled to O(1)); MLPs turn ``p`` into latents.
3. Residual stages (RVQ across the token grid): the grid's tokens, in raster order, are split into
   ``num_stages`` equal bands (whole rows when ``num_stages`` divides the rows).
   Stage 0 encodes ``p``; stage s encodes the residual ``(p - p_hat_{s-1}) * stage_gain**s`` left by the
   stages before it; each band is quantized (FSQ by default) and decoded by its own MLP, and
   ``p_hat_s = p_hat_{s-1} + decoded_s / stage_gain**s``. Precision therefore grows geometrically with
   the stages: a single-stage code of the same size spends its bits linearly and measured 2.3 degrees
   median rotation error where two stages reach 0.25 (see the notes on the tokenizers).
4. Decoder output: the final ``p_hat`` -> ``CameraParams`` -> the ray map rendered analytically, so
   every decoded map is an exact pinhole camera and ``cameras_from_rays`` inverts it exactly.

Token layout: codes (B, h, w); raster positions ``[s * h * w / S, (s + 1) * h * w / S)`` hold stage s
(for S dividing h: rows ``[s * h / S, (s + 1) * h / S)``), so raster order is coarse to fine, the natural
order for auto-regressive decoding; grids smaller than the image grid (down to 2x2, issue 7) trade the
code's precision for fewer decoding steps. Tokens are a code of the whole camera, not local ray
descriptors: every ray patch determines the camera, so locality buys no precision, and local codes at
this codebook size cannot reach a fraction of a degree (see the notes).

Glossary: B batch, h/w token grid, S stages, C latent channels per token, Hr/Wr ray map size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gst.geometry import (
    cameras_from_rays,
    denormalize_relative_pose,
    matrix_to_rotation_6d,
    nearest_rotation,
    normalized_relative_pose,
    plucker_rays,
    rotation_6d_to_matrix,
)
from gst.tokenizers.config import CameraTokenizerConfig
from gst.tokenizers.quantizer import Quantizer

NUM_PARAMS = 13  # 6D rotation (6), translation (3), log focal / W (2), principal point offset (2)
TRANSLATION_UNIT = 4.0  # p[6:9] = t / 4: translations of up to ~12 normalised units stay O(1)
FOCAL_SLICE = slice(9, 11)  # the log(focal / W) numbers, fx then fy
PRINCIPAL_GAIN = 10.0  # p[11:13] = 10 * (c - centre) / size: offsets of a few percent become O(0.3)


def scale_intrinsics(K: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Intrinsics of the same camera on a resampled pixel grid (pixel-centre convention).

    A pixel-centre coordinate u maps to (u + 0.5) * s - 0.5 with s = to / from per axis.
    Shapes: (..., 3, 3) -> (..., 3, 3).
    """
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


@dataclass
class CameraParams:
    """A batch of pinhole cameras (normalised relative pose).

    Shapes: rotation (B, 3, 3) = R of w2c; translation (B, 3) = t of w2c in units of ``pose_scale``;
    focal (B, 2) = (fx, fy) and principal (B, 2) = (cx, cy) in pixels of ``image_hw``.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor

    def K(self) -> torch.Tensor:
        """Shapes: -> (B, 3, 3)."""
        K = torch.zeros(*self.focal.shape[:-1], 3, 3, dtype=self.focal.dtype, device=self.focal.device)
        K[..., 0, 0], K[..., 1, 1] = self.focal[..., 0], self.focal[..., 1]
        K[..., 0, 2], K[..., 1, 2] = self.principal[..., 0], self.principal[..., 1]
        K[..., 2, 2] = 1.0
        return K

    def w2c(self) -> torch.Tensor:
        """Shapes: -> (B, 4, 4)."""
        R = self.rotation
        w2c = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
        w2c[..., :3, :3] = R
        w2c[..., :3, 3] = self.translation
        w2c[..., 3, 3] = 1.0
        return w2c


@dataclass
class CameraTokenizerOutput:
    """Shapes: rays (B, 6, Hr, Wr) rendered from ``params``; codes (B, h, w) int64; commit_loss scalar;
    target (B, 13) the encoder's exact parameter vector; stage_estimates S tensors (B, 13), the running
    estimate after each stage (the last one gives ``params``)."""

    rays: torch.Tensor
    params: CameraParams
    codes: torch.Tensor
    commit_loss: torch.Tensor
    target: torch.Tensor
    stage_estimates: list[torch.Tensor]


def _mlp(c_in: int, hidden: int, c_out: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(c_in, hidden), nn.GELU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden, hidden), nn.GELU()]
    layers.append(nn.Linear(hidden, c_out))
    return nn.Sequential(*layers)


# ---- the camera parameter vector: what the camera tokenizer quantizes, and what pose heads regress ----


def camera_vector(K: torch.Tensor, w2c_norm: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """6D rotation, translation / TRANSLATION_UNIT, log(focal / W), principal offset * PRINCIPAL_GAIN / size.

    Shapes: K (B, 3, 3) pixels of ``image_hw``; w2c_norm (B, 4, 4) translation in pose_scale units ->
    (B, 13) float32.
    """
    H, W = image_hw
    size = K.new_tensor([W, H])
    focal = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)  # (B, 2)
    principal = torch.stack([K[:, 0, 2], K[:, 1, 2]], dim=-1)  # (B, 2)
    return torch.cat(
        [
            matrix_to_rotation_6d(w2c_norm[:, :3, :3]),
            w2c_norm[:, :3, 3] / TRANSLATION_UNIT,
            torch.log(focal / W),
            (principal - (size - 1) / 2) / size * PRINCIPAL_GAIN,
        ],
        dim=-1,
    ).float()


def params_from_vector(p: torch.Tensor, image_hw: tuple[int, int]) -> CameraParams:
    """Inverse of ``camera_vector``; Gram-Schmidt makes any 6D part a rotation. Shapes: (B, 13) ->."""
    H, W = image_hw
    size = p.new_tensor([W, H])
    return CameraParams(
        rotation=rotation_6d_to_matrix(p[:, :6]),
        translation=p[:, 6:9] * TRANSLATION_UNIT,
        focal=W * torch.exp(p[:, FOCAL_SLICE]),
        principal=(size - 1) / 2 + p[:, 11:13] / PRINCIPAL_GAIN * size,
    )


def symmetric_camera_vector(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """One relative pose from two readings of a pair: ``forward`` of (observed, target), ``backward`` of
    (target, observed), both ``camera_vector`` layouts. The backward pose is inverted (R^T, -R^T t) and
    averaged with the forward one (chordal mean of the rotations, mean of the translations); the
    intrinsics, the target camera's, are the forward reading's. Shapes: (B, 13), (B, 13) -> (B, 13)."""
    R_f, R_b = rotation_6d_to_matrix(forward[:, :6]), rotation_6d_to_matrix(backward[:, :6])  # (B, 3, 3)
    R_inv = R_b.transpose(1, 2)
    t_inv = -(R_inv @ backward[:, 6:9].unsqueeze(-1)).squeeze(-1)  # (B, 3), TRANSLATION_UNIT units
    R = nearest_rotation((R_f + R_inv).double()).to(forward.dtype)
    return torch.cat([matrix_to_rotation_6d(R), (forward[:, 6:9] + t_inv) / 2, forward[:, 9:]], dim=-1)


class CameraTokenizer(nn.Module):
    """Relative cameras <-> a grid of integer codes (see the module docstring).

    ``encode``: rays (B, 6, Hr, Wr) -> codes (B, h, w); ``decode``: codes -> rays (B, 6, Hr, Wr).
    ``encode_cameras`` / ``decode_cameras`` wrap the geometry: (K_tgt, w2c_obs, w2c_tgt) -> codes ->
    (K_tgt, w2c_rel) in world units.
    """

    kind = "camera"

    def __init__(self, config: CameraTokenizerConfig) -> None:
        super().__init__()
        self.config = config
        S, C = config.num_stages, config.quantizer.latent_dim
        h, w = config.grid_hw
        self.stage_tokens = n = h * w // S  # tokens per stage: a contiguous run in raster order
        self.encoders = nn.ModuleList(
            [_mlp(NUM_PARAMS, config.hidden, n * C, config.depth) for _ in range(S)]
        )
        self.decoders = nn.ModuleList(
            [_mlp(n * C, config.hidden, NUM_PARAMS, config.depth) for _ in range(S)]
        )
        self.quantizer = Quantizer(config.quantizer)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.config.grid_hw

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    # ---- geometry ----
    def rays_from_cameras(self, K: torch.Tensor, w2c_rel_norm: torch.Tensor) -> torch.Tensor:
        """Ray map of normalised relative cameras. Shapes: K (B, 3, 3) at image_hw, w2c (B, 4, 4) ->
        (B, 6, Hr, Wr). Range: directions unit; moments in units of ``pose_scale``."""
        K_ray = scale_intrinsics(K, self.config.image_hw, self.config.ray_hw)
        return plucker_rays(K_ray, w2c_rel_norm, self.config.ray_hw)

    def relative_rays(
        self, K_tgt: torch.Tensor, w2c_obs: torch.Tensor, w2c_tgt: torch.Tensor
    ) -> torch.Tensor:
        """Shapes: K_tgt (B, 3, 3), w2c_obs (B, 4, 4), w2c_tgt (B, 4, 4) -> (B, 6, Hr, Wr)."""
        w2c_rel = normalized_relative_pose(w2c_obs, w2c_tgt, self.config.pose_scale)
        return self.rays_from_cameras(K_tgt, w2c_rel)

    def normalized_cameras_from_rays(self, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert a ray map: K at image_hw, normalised w2c. Shapes: (B, 6, Hr, Wr) -> (B, 3, 3), (B, 4, 4)."""
        Hr, Wr = self.config.ray_hw
        if rays.ndim != 4 or rays.shape[1] != 6 or tuple(rays.shape[-2:]) != (Hr, Wr):
            raise ValueError(
                f"rays must be (B, 6, {Hr}, {Wr}) with channels dx dy dz mx my mz, got {tuple(rays.shape)}"
            )
        K_ray, w2c = cameras_from_rays(rays)
        return scale_intrinsics(K_ray, self.config.ray_hw, self.config.image_hw), w2c

    def cameras_from_rays(self, rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert a ray map in world units. Shapes: (B, 6, Hr, Wr) -> K (B, 3, 3) at image_hw,
        w2c_rel (B, 4, 4), float64."""
        K, w2c = self.normalized_cameras_from_rays(rays.double())
        return K, denormalize_relative_pose(w2c, self.config.pose_scale)

    def camera_vector(self, K: torch.Tensor, w2c_norm: torch.Tensor) -> torch.Tensor:
        """The 13-number description the encoder quantizes (``camera_vector`` at this tokenizer's
        ``image_hw``). Shapes: (B, 3, 3), (B, 4, 4) -> (B, 13)."""
        return camera_vector(K, w2c_norm, self.config.image_hw)

    def params_from_vector(self, p: torch.Tensor) -> CameraParams:
        """Inverse of ``camera_vector`` (Gram-Schmidt makes any 6D part a rotation)."""
        return params_from_vector(p, self.config.image_hw)

    def render(self, params: CameraParams) -> torch.Tensor:
        """Ray map of decoded parameters. Shapes: -> (B, 6, Hr, Wr)."""
        return self.rays_from_cameras(params.K(), params.w2c())

    # ---- network ----
    def _band(self, latent: torch.Tensor, s: int) -> torch.Tensor:
        """Stage s's tokens of a latent grid. Shapes: (B, C, h, w) -> (B, C, stage_tokens)."""
        return latent.flatten(-2)[..., s * self.stage_tokens : (s + 1) * self.stage_tokens]

    def _quantize_stages(self, target: torch.Tensor):
        """Run the residual stages on exact vectors. Returns (quantized latent (B, C, h, w), codes
        (B, h, w), commit loss, stage estimates)."""
        C, g = self.config.quantizer.latent_dim, self.config.stage_gain
        estimate = torch.zeros_like(target)
        latents, codes, estimates, commit = [], [], [], target.new_zeros(())
        for s, (encoder, decoder) in enumerate(zip(self.encoders, self.decoders, strict=True)):
            # Later stages see the residual magnified, so every stage's input stays O(1).
            x = target if s == 0 else (target - estimate.detach()) * g**s
            z = encoder(x).reshape(-1, 1, self.stage_tokens, C).permute(0, 3, 1, 2)  # (B, C, 1, n)
            q = self.quantizer(z)
            estimate = estimate + decoder(q.quantized.flatten(1)) / g**s
            latents.append(q.quantized)
            codes.append(q.codes)
            estimates.append(estimate)
            commit = commit + q.commit_loss
        grid = self.config.grid_hw
        latent = torch.cat(latents, dim=-1).reshape(-1, C, *grid)  # (B, C, h, w)
        return latent, torch.cat(codes, dim=-1).reshape(-1, *grid), commit, estimates

    def _decode_vector(self, latent: torch.Tensor) -> torch.Tensor:
        """Quantized latent grid (B, C, h, w) -> the parameter estimate (B, 13)."""
        g = self.config.stage_gain
        estimate = 0.0
        for s, decoder in enumerate(self.decoders):
            estimate = estimate + decoder(self._band(latent, s).flatten(1)) / g**s
        return estimate

    def forward(self, rays: torch.Tensor) -> CameraTokenizerOutput:
        """Encode, quantize, decode, render. Shapes: (B, 6, Hr, Wr) -> CameraTokenizerOutput."""
        with torch.no_grad():  # the analytic inverse has no parameters to train
            target = self.camera_vector(*self.normalized_cameras_from_rays(rays))
        _, codes, commit, estimates = self._quantize_stages(target)
        params = self.params_from_vector(estimates[-1])
        return CameraTokenizerOutput(self.render(params), params, codes, commit, target, estimates)

    @torch.no_grad()
    def encode(self, rays: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 6, Hr, Wr) -> (B, h, w) int64 in [0, K)."""
        target = self.camera_vector(*self.normalized_cameras_from_rays(rays))
        return self._quantize_stages(target)[1]

    @torch.no_grad()
    def decode_params(self, codes: torch.Tensor) -> CameraParams:
        """Codes -> decoded camera parameters (normalised). Shapes: (B, h, w) -> CameraParams."""
        if tuple(codes.shape[-2:]) != tuple(self.config.grid_hw):
            raise ValueError(
                f"codes must be (B, {self.config.grid_hw[0]}, {self.config.grid_hw[1]}), "
                f"got {tuple(codes.shape)}"
            )
        device = next(self.parameters()).device
        return self.decode_latent_params(self.quantizer.codes_to_latent(codes.to(device)))

    @torch.no_grad()
    def decode_latent_params(self, latent: torch.Tensor) -> CameraParams:
        """A latent grid -> decoded camera parameters (normalised): codes' latents (``decode_params``), or
        any point between them, e.g. their expectation under a model's code probabilities.
        Shapes: (B, C, h, w) -> CameraParams."""
        return self.params_from_vector(self._decode_vector(latent))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, h, w) int64 -> (B, 6, Hr, Wr), an exact pinhole ray map."""
        return self.render(self.decode_params(codes))

    @torch.no_grad()
    def encode_cameras(
        self, K_tgt: torch.Tensor, w2c_obs: torch.Tensor, w2c_tgt: torch.Tensor
    ) -> torch.Tensor:
        """A pair's target camera -> codes. Shapes: (B, 3, 3), (B, 4, 4), (B, 4, 4) -> (B, h, w)."""
        return self.encode(self.relative_rays(K_tgt.double(), w2c_obs.double(), w2c_tgt.double()))

    @torch.no_grad()
    def decode_cameras(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes -> rays -> ``cameras_from_rays``: K_tgt at image_hw and the target's w2c relative to the
        observed camera, in world units. Shapes: (B, h, w) -> (B, 3, 3), (B, 4, 4), float64."""
        return self.cameras_from_rays(self.decode(codes))


__all__ = ["CameraParams", "CameraTokenizer", "scale_intrinsics"]
