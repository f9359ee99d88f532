"""The Python API: load a GST checkpoint, estimate poses, synthesize views, sample, chat.

```python
from gst.api import GST, orbit_camera
gst = GST.from_pretrained("assets/gst-tiny")                   # the default checkpoint
a, b = "assets/examples/view_a.png", "assets/examples/view_b.png"
pose = gst.estimate_pose(a, b)                                 # where was b taken, seen from a?
print(pose.summary)                                            # "turned 25 degrees right, moved ..."
view = gst.synthesize_view(a, orbit_camera(30, 10), seed=0)    # what would I see from there?
samples = gst.sample(a, num_samples=4, seed=0)                 # cameras and views, drawn jointly
print(gst.chat("How many objects are there in the image?", images=[a]).text)
```

Inputs: image paths, PIL images, numpy arrays (H, W[, 3|4]) or tensors (3, H, W), of any size, uint8 or
float in [0, 1]. Every image is brought to the tokenizers' resolution ``image_hw`` (e.g. 64x64) by
``gst.data.views.crop_resize``: "center_crop" (default) cuts the largest centred window with the model's
aspect ratio and resizes it; "stretch" resizes the whole image. Intrinsics follow exactly (pixel-centre
convention): per axis ``f' = f s`` and ``c' = (c - offset + 0.5) s - 0.5`` with ``offset`` the crop start
and ``s`` the resize factor. Returned intrinsics are mapped back through the inverse of the same map,
so every ``K`` the API returns is in pixels of the image it describes: the target image as given
(``estimate_pose``), or the model's ``image_hw`` (generated views, samples, chat).

The observed camera's ``K``: given (``K_obs``, pixels of the observed image as given), or assumed: a
pinhole with a horizontal field of view of ``DEFAULT_FOV_DEG`` (52.5 degrees, the middle of the procedural
world's 30-75 degree range), square pixels, principal point at the image centre. The model never sees it
(GST conditions on the observed image alone); it is the default target ``K`` of ``synthesize_view``, the
pixel frame in which a user's target ``K`` is read, and, with ``synthesize_view(warp=...)``, the camera
through which the observed pixels are unprojected at the depth the model reads.

Cameras: OpenCV axes (+x right, +y down, +z forward); ``w2c`` is the target camera in the observed
camera's frame (the observed camera is the identity), translation in world units = the camera
tokenizer's normalised translation times its ``pose_scale`` (1 m for the procedural world), which the
checkpoint stores. Summaries read the motion in the observed camera's level frame, taking its up axis
(-y) as the world's up (``gst.data.qa_geometry.camera_motion``).

Checkpoints: a folder with the backbone and both tokenizers (layout and checks in ``gst.api_checkpoint``;
written by ``gst train export``), or a ``gst train gst`` export / checkpoint / run folder. Every random
draw comes from one ``torch.Generator`` seeded by the ``seed`` argument. Modules: ``gst.api_types`` (inputs,
cameras, results), ``gst.api_checkpoint`` (loading, exporting), ``gst.api_chat`` (chat decoding),
``gst.api_answers`` (numbers, reply scores and coordinates in fixed formats),
``gst.api_predictors`` (the model as a ``gst.eval`` predictor); none of them imports this one.

Glossary: S samples, h/w image token grid, hc/wc camera token grid, H/W pixels, T tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gst.api_answers import AnswerMethods
from gst.api_chat import ChatRouter, ChatSession
from gst.api_checkpoint import (
    CheckpointFiles,
    export_checkpoint,
    load_checkpoint_focal_reader,
    load_components,
    resolve_checkpoint,
    verify_manifest_files,
)
from gst.api_predictors import GSTPosePredictor, GSTViewPredictor
from gst.api_types import (
    CAMERA_FORMAT,
    DEFAULT_FOV_DEG,
    ChatReply,
    ImageInput,
    PoseEstimate,
    PreparedImage,
    SampleResult,
    ViewResult,
    as_matrix,
    as_rigid,
    default_intrinsics,
    describe_camera,
    load_image,
    look_at,
    orbit_camera,
    read_camera_json,
    uncrop_intrinsics,
)
from gst.data.views import CropMode, crop_resize, crop_resize_intrinsics
from gst.geometry import denormalize_relative_pose
from gst.model import (
    GSTModel,
    SamplingConfig,
    SequenceConfig,
    estimate_camera_tokens,
    generate_camera_and_image,
    generate_image_given_camera,
    read_pose_head,
)
from gst.model.focal_reader import with_focal_reading
from gst.model.sampling import GREEDY
from gst.model.warp import check_mix_weight, mix_warped
from gst.tokenizers.camera import symmetric_camera_vector
from gst.tokenizers.image import to_signed, to_unit
from gst.tokenizers.vocab import Vocabulary

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "gst-tiny"
# Views: plain sampling. Greedy image decoding of an auto-regressive model collapses into repeated codes.
DEFAULT_VIEW_SAMPLING = SamplingConfig(temperature=1.0, top_k=0)
DEFAULT_CAMERA_SAMPLING = SamplingConfig(temperature=1.0)  # joint samples: draw from p(camera | obs)
# estimate_pose: decode camera codes, read the pose head, or auto: the head of a model whose pose head sits
# on the convolutional reader's pair stem (where its pose is learnt; docs/results.md), else the codes.
POSE_READOUTS = ("auto", "codes", "head", "head-sym")


class GST(AnswerMethods):
    """A loaded GST world model: backbone, image and camera tokenizers, text tokenizer (module docstring).

    ``crop``: how inputs reach the model's ``image_hw`` ("center_crop" or "stretch", gst.data.views).
    """

    def __init__(
        self,
        *,
        model: GSTModel,
        image_tokenizer: torch.nn.Module,
        camera_tokenizer: torch.nn.Module,
        text_tokenizer: Any,
        vocab: Vocabulary,
        sequence: SequenceConfig,
        checkpoint: Path | None = None,
        crop: CropMode = "center_crop",
        focal_reader: Any = None,
    ) -> None:
        if crop not in ("center_crop", "stretch"):
            raise ValueError(f"crop must be center_crop or stretch, got {crop!r}")
        self.model = model.eval()
        self.image_tokenizer = image_tokenizer.eval()
        self.camera_tokenizer = camera_tokenizer.eval()
        self.text_tokenizer = text_tokenizer
        self.vocab, self.sequence, self.layout = vocab, sequence, model.layout
        self.checkpoint, self.crop = checkpoint, crop
        self.image_hw: tuple[int, int] = tuple(image_tokenizer.config.image_hw)  # type: ignore[assignment]
        self._number_formats: dict[tuple[str, int], Any] = {}  # (unit, decimals) -> NumberFormat
        # gst.model.focal_reader.FocalReader or None: with the pose head, the target's focal length
        self.focal_reader = focal_reader
        if focal_reader is not None and (focal_reader.config.image_size,) * 2 != self.image_hw:
            raise ValueError(
                f"focal reader reads {focal_reader.config.image_size} px views, the model {self.image_hw}"
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path = DEFAULT_CHECKPOINT,
        *,
        device: str | torch.device = "cpu",
        crop: CropMode = "center_crop",
    ) -> GST:
        """Load a checkpoint folder (module docstring), checking versions, hashes, vocabulary offsets and
        token grids. Errors name the missing or damaged file."""
        files = resolve_checkpoint(path)
        verify_manifest_files(files)
        return cls._from_files(files, device, crop)

    @classmethod
    def _from_files(cls, files: CheckpointFiles, device: str | torch.device, crop: CropMode) -> GST:
        parts = load_components(files, device)
        return cls(
            focal_reader=load_checkpoint_focal_reader(files, device),
            model=parts.model,
            image_tokenizer=parts.image_tokenizer,
            camera_tokenizer=parts.camera_tokenizer,
            text_tokenizer=parts.text_tokenizer,
            vocab=parts.vocab,
            sequence=parts.sequence,
            checkpoint=files.root,
            crop=crop,
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return (
            f"GST(checkpoint={str(self.checkpoint)!r}, backbone={self.model.lm.config.model_type} "
            f"{params / 1e6:.1f}M parameters, images {self.image_hw[0]}x{self.image_hw[1]} -> "
            f"{self.sequence.image_grid[0]}x{self.sequence.image_grid[1]} tokens, camera "
            f"{self.sequence.camera_grid[0]}x{self.sequence.camera_grid[1]} tokens, device={self.device})"
        )

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    # ---- encoding and decoding ----
    @torch.no_grad()
    def prepare(self, image: ImageInput, K: Any = None, fov_deg: float | None = None) -> PreparedImage:
        """Load, crop/resize (K follows) and tokenize one image."""
        img = load_image(image)
        hw = (int(img.shape[-2]), int(img.shape[-1]))
        K_in = default_intrinsics(hw, fov_deg or DEFAULT_FOV_DEG) if K is None else as_matrix(K, (3, 3), "K")
        img_m, K_m = crop_resize(img, K_in, self.image_hw, mode=self.crop)  # (3, h_px, w_px), (3, 3)
        img_m = img_m.clamp(0.0, 1.0)
        codes = self.image_tokenizer.encode(to_signed(img_m[None].to(self.device)))  # (1, h, w)
        return PreparedImage(img_m, K_m, K_in, hw, codes.reshape(1, -1) + self.layout.image_offset)

    @torch.no_grad()
    def decode_images(self, image_ids: torch.Tensor) -> torch.Tensor:
        """Image-code ids -> pixels. Shapes: (N, h*w) -> (N, 3, h_px, w_px) float32 on CPU. Range: [0, 1]."""
        codes = (image_ids - self.layout.image_offset).reshape(-1, *self.sequence.image_grid)
        return to_unit(self.image_tokenizer.decode(codes.to(self.device))).float().cpu()

    @torch.no_grad()
    def decode_cameras(
        self, camera_ids: torch.Tensor, target_hw: tuple[int, int] | None = None
    ) -> list[PoseEstimate]:
        """Camera-code ids -> cameras; K mapped to pixels of a ``target_hw`` image (default the model's).
        Shapes: (N, hc*wc) -> N PoseEstimates."""
        codes = (camera_ids.cpu() - self.layout.camera_offset).reshape(-1, *self.sequence.camera_grid)
        K_m, w2c = self.camera_tokenizer.decode_cameras(codes.to(self.device))  # (N, 3, 3), (N, 4, 4) f64
        return [
            self._pose_estimate(K_m[i].cpu(), w2c[i].cpu(), codes[i], target_hw) for i in range(len(codes))
        ]

    def _pose_estimate(
        self, K_model: torch.Tensor, w2c: torch.Tensor, codes: torch.Tensor, target_hw: tuple[int, int] | None
    ) -> PoseEstimate:
        """A camera with K in model pixels, as a PoseEstimate for a ``target_hw`` image (default the
        model's). Shapes: (3, 3), (4, 4), (hc, wc)."""
        K, hw = K_model, self.image_hw
        if target_hw is not None:
            K, hw = uncrop_intrinsics(K, target_hw, self.image_hw, self.crop), tuple(target_hw)
        motion, summary = describe_camera(w2c, K, hw)
        return PoseEstimate(K, w2c, hw, codes, motion, summary)

    @torch.no_grad()
    def encode_camera(self, w2c: torch.Tensor, K_model: torch.Tensor) -> torch.Tensor:
        """A relative camera (K in model pixels) -> camera-code ids. Shapes: (4, 4), (3, 3) -> (1, hc*wc)."""
        eye = torch.eye(4, dtype=torch.float64)
        codes = self.camera_tokenizer.encode_cameras(
            K_model[None].double().to(self.device),
            eye[None].to(self.device),
            w2c[None].double().to(self.device),
        )  # (1, hc, wc)
        return codes.reshape(1, -1) + self.layout.camera_offset

    @torch.no_grad()
    def _head_pose(self, obs: PreparedImage, tgt: PreparedImage, symmetric: bool = False) -> PoseEstimate:
        """The pose head's camera (``read_pose_head``, the camera tokenizer's parameter vector), exact;
        its camera codes are the tokenizer's encoding of it. ``symmetric``: the pair read both ways, the
        backward pose inverted and averaged with the forward one (``symmetric_camera_vector``)."""
        if symmetric:
            both = read_pose_head(
                self.model,
                torch.cat([obs.ids, tgt.ids]),
                torch.cat([tgt.ids, obs.ids]),
                seq_cfg=self.sequence,
            )  # (2, P)
            vector = symmetric_camera_vector(both[:1], both[1:])
        else:
            vector = read_pose_head(self.model, obs.ids, tgt.ids, seq_cfg=self.sequence)  # (1, P)
        if self.focal_reader is not None:  # the target's log focal, with the focal reader's reading
            vector = with_focal_reading(vector, self.focal_reader, tgt.image[None])
        params = self.camera_tokenizer.params_from_vector(vector.to(self.device))
        K_model = params.K()[0].double().cpu()  # (3, 3) model pixels
        scale = self.camera_tokenizer.config.pose_scale
        w2c = denormalize_relative_pose(params.w2c()[0].double().cpu(), scale)  # (4, 4) world units
        codes = self.encode_camera(w2c, K_model) - self.layout.camera_offset  # (1, hc*wc)
        return self._pose_estimate(K_model, w2c, codes.reshape(self.sequence.camera_grid).cpu(), tgt.input_hw)

    @property
    def default_readout(self) -> str:
        """``"head-sym"`` for a model whose pose head reads the convolutional reader's pair stem (its pose is
        learnt there and its camera codes follow it: docs/results.md), else ``"codes"``."""
        return "head-sym" if self.model.reader is not None and self.model.has_pose_head else "codes"

    def resolve_readout(self, readout: str) -> str:
        """``readout`` with ``"auto"`` replaced by ``default_readout``."""
        return self.default_readout if readout == "auto" else readout

    # ---- tasks ----
    def estimate_pose(
        self,
        observed: ImageInput,
        target: ImageInput,
        *,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        readout: str = "auto",
    ) -> PoseEstimate:
        """Where the target image's camera is, relative to the observed one (est layout, greedy by default).

        ``K_tgt`` is in pixels of the target image as given; ``w2c`` in world units (module docstring).
        ``readout="codes"`` decodes camera codes (``sampling``); ``"head"`` reads the auxiliary pose head
        (models trained with ``loss.pose_weight`` > 0) in one forward at ``[cam_start]``: a camera
        regressed directly, with no code sampled (its ``camera_codes`` are its encoding); ``"head-sym"``
        reads the head on (observed, target) and on (target, observed) and averages the first pose with
        the inverse of the second (``gst.tokenizers.camera.symmetric_camera_vector``); ``"auto"``
        (default) is ``default_readout``. With a focal reader (``focal_reader/``, ``self.focal_reader``),
        head readouts give the target the weighted mean of both log focal lengths
        (``gst.model.focal_reader``).
        """
        if readout not in POSE_READOUTS:
            raise ValueError(f"readout must be one of {POSE_READOUTS}, got {readout!r}")
        obs, tgt = self.prepare(observed), self.prepare(target)
        resolved = self.resolve_readout(readout)
        if resolved in ("head", "head-sym"):
            return self._head_pose(obs, tgt, symmetric=resolved == "head-sym")
        out = estimate_camera_tokens(
            self.model,
            obs.ids,
            tgt.ids,
            seq_cfg=self.sequence,
            config=sampling or GREEDY,
            generator=self.generator(seed),
        )
        return self.decode_cameras(out.camera_ids[0], tgt.input_hw)[0]

    def synthesize_view(
        self,
        observed: ImageInput,
        camera: torch.Tensor | PoseEstimate,
        *,
        K: Any = None,
        K_hw: tuple[int, int] | None = None,
        K_obs: Any = None,
        fov_deg: float | None = None,
        sampling: SamplingConfig | None = None,
        num_samples: int = 1,
        seed: int = 0,
        warp: float = 0.0,
    ) -> ViewResult:
        """The view from ``camera`` (a w2c (4, 4) in the observed frame, world units, e.g. ``orbit_camera``,
        or a PoseEstimate), p(image | observed, camera).

        Target intrinsics: ``K`` in pixels of a ``K_hw`` image (default: the observed image's size); a
        PoseEstimate brings its own; default the observed camera's K (``K_obs`` or ``fov_deg``, module
        docstring). Views come out at the model's ``image_hw``. Shapes: -> images (S, 3, h_px, w_px).

        ``warp`` (weight in [0, 1]; True is 1): where the observed pixels land in the new view, moved with
        the depth the model reads for each observed cell (``observed_depth``, ``gst.model.warp.warp_image``),
        each view becomes ``warp * warped + (1 - warp) * generated``: 1 pastes them (sharpest), less
        hedges against depth errors (docs/results.md measures both); the generated view fills the rest.
        ``ViewResult.covered`` is where they land.
        """
        check_mix_weight(warp)
        if isinstance(camera, PoseEstimate):
            K, K_hw, camera = camera.K_tgt, camera.image_hw, camera.w2c
        obs = self.prepare(observed, K_obs, fov_deg)
        w2c = as_rigid(camera, "camera w2c")
        K_model = (
            obs.K_model
            if K is None
            else crop_resize_intrinsics(
                as_matrix(K, (3, 3), "K"), tuple(K_hw or obs.input_hw), self.image_hw, self.crop
            )
        )
        cam_ids = self.encode_camera(w2c, K_model)
        out = generate_image_given_camera(
            self.model,
            obs.ids,
            cam_ids,
            seq_cfg=self.sequence,
            config=sampling or DEFAULT_VIEW_SAMPLING,
            num_samples=num_samples,
            generator=self.generator(seed),
        )
        ids = out.image_ids[0]  # (S, h*w)
        codes = (ids - self.layout.image_offset).reshape(-1, *self.sequence.image_grid).cpu()
        images, covered = self.decode_images(ids), None
        if warp > 0:
            depth, ground = self.observed_depth(obs)
            images, covered = mix_warped(
                images, obs.image, depth, ground, obs.K_model, K_model[None], w2c[None], warp
            )
            covered = covered[0]  # one camera for every sample
        return ViewResult(images, codes, self.decode_cameras(cam_ids)[0], covered)

    @property
    def reads_depth(self) -> bool:
        """Whether the checkpoint reads depth (a reader with cell heads), as ``synthesize_view(warp=...)``
        needs."""
        stem = self.model.stem_reader
        return stem is not None and stem.cell_head is not None

    @torch.no_grad()
    def observed_depth(self, obs: PreparedImage) -> tuple[torch.Tensor, torch.Tensor]:
        """What the pose reader's cell head reads of a prepared image: each cell's z-depth in world
        units and its weight as ground (1 - the probability that an object covers it).
        Shapes: -> (h, w), (h, w) float32 on CPU."""
        stem = self.model.stem_reader
        if not self.reads_depth:
            raise ValueError(
                "this checkpoint reads no depth (no reader with cell heads); synthesize_view(warp=...) "
                "needs one, e.g. the default assets/gst-tiny"
            )
        codes = (obs.ids - self.layout.image_offset).to(self.device)  # (1, h*w)
        depth, objects = stem.cell_geometry(stem.grid_features(codes))  # (1, h, w) each
        return depth[0].cpu(), (1.0 - objects[0]).cpu()

    def sample(
        self,
        observed: ImageInput,
        num_samples: int = 8,
        *,
        camera_sampling: SamplingConfig | None = None,
        image_sampling: SamplingConfig | None = None,
        K_obs: Any = None,
        fov_deg: float | None = None,
        seed: int = 0,
        warp: float = 0.0,
    ) -> SampleResult:
        """Cameras and the views they see, drawn jointly: p(camera, image | observed) (gen layout).
        Cameras' K are in model pixels (``K_obs`` / ``fov_deg`` set the observed K the warp unprojects
        with and the one returned, for plots). ``warp``: as ``synthesize_view``, each view with the
        observed pixels moved to its own sampled camera. Shapes: -> images (S, 3, h_px, w_px)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        check_mix_weight(warp)
        obs = self.prepare(observed, K_obs, fov_deg)
        out = generate_camera_and_image(
            self.model,
            obs.ids,
            seq_cfg=self.sequence,
            config=camera_sampling or DEFAULT_CAMERA_SAMPLING,
            image_config=image_sampling or DEFAULT_VIEW_SAMPLING,
            num_samples=num_samples,
            generator=self.generator(seed),
        )
        cameras, images = self.decode_cameras(out.camera_ids[0]), self.decode_images(out.image_ids[0])
        covered = None
        if warp > 0:
            K = torch.stack([c.K_tgt.to(torch.float64) for c in cameras])  # model pixels (target_hw None)
            w2c = torch.stack([c.w2c.to(torch.float64) for c in cameras])
            depth, ground = self.observed_depth(obs)
            images, covered = mix_warped(images, obs.image, depth, ground, obs.K_model, K, w2c, warp)
        return SampleResult(cameras, images, obs.image, obs.K_model, covered)

    def start_chat(
        self,
        *,
        system: str | None = None,
        max_new_tokens: int = 128,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        allow_segments: bool = True,
        router: ChatRouter | None = None,
    ) -> ChatSession:
        """A multi-turn conversation (``ChatSession.ask``). ``router``: answers the questions it recognises
        instead of the model (``gst.eval.qa_reader.chat_router``: the checkpoint's answer reader)."""
        return ChatSession(
            self,
            system=system,
            max_new_tokens=max_new_tokens,
            sampling=sampling or GREEDY,
            seed=seed,
            allow_segments=allow_segments,
            router=router,
        )

    def chat(self, question: str, images: Sequence[ImageInput] = (), **kwargs: Any) -> ChatReply:
        """One question about some images, in a fresh conversation (keywords as ``start_chat``)."""
        return self.start_chat(**kwargs).ask(question, images)

    def chat_fn(self, max_new_tokens: int = 64) -> Callable[[str, Sequence[Path]], str]:
        """``gst.eval.qa_baselines.ChatFn``: (question, image paths) -> answer text (greedy)."""
        return lambda question, paths: self.chat(
            question, list(paths), max_new_tokens=max_new_tokens, allow_segments=False
        ).text.strip()


__all__ = [
    "CAMERA_FORMAT",
    "DEFAULT_CHECKPOINT",
    "DEFAULT_FOV_DEG",
    "GST",
    "ChatReply",
    "ChatSession",
    "GSTPosePredictor",
    "GSTViewPredictor",
    "ImageInput",
    "PoseEstimate",
    "SampleResult",
    "ViewResult",
    "default_intrinsics",
    "describe_camera",
    "export_checkpoint",
    "load_image",
    "look_at",
    "orbit_camera",
    "read_camera_json",
    "resolve_checkpoint",
    "uncrop_intrinsics",
]
