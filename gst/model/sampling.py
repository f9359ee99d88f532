"""Decoding: KV-cache sampling of camera and image segments, constrained and guided.

- Segment-constrained: inside a camera segment the head covers camera codes only, inside an image
  segment image codes only (``GSTModel.forward(head=HeadKind...)``), so nothing else can be sampled.
- Known segment lengths: structure tokens (``[cam_end] [img_start]`` ...) are forced, never sampled; they
  are fed to the model together with the last sampled code in one forward.
- Classifier-free guidance: conditional rows and unconditional rows (observed image replaced by the
  null segment, as in training) run in one batch; ``logits = u + s * (c - u)`` (s = ``cfg_scale``).
- Many samples per condition: the prefix is run once per condition, then the KV cache is repeated.
- Determinism: every random draw comes from the ``generator`` passed in (on the model's device).

``use_cache=False`` recomputes the full prefix at every step: the reference the KV-cache path is
tested against, and the baseline of the speed benchmark (``gst.model.bench``).

Glossary: B conditions, S samples per condition, R rows (B*S, doubled under guidance), T tokens,
K codes of the segment's kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from gst.model.backbone import GSTModel
from gst.model.config import HeadKind
from gst.model.sequences import TASK_EST, TASK_GEN, SequenceConfig, assemble_pose, pose_offsets


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How one segment is sampled."""

    temperature: float = 1.0  # 0 = greedy (argmax)
    top_k: int = 0  # keep the k most likely codes; 0 = all
    top_p: float = 1.0  # nucleus: the smallest set with probability >= top_p; 1 = all
    cfg_scale: float = 1.0  # classifier-free guidance scale; 1 = no guidance (no unconditional rows)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"SamplingConfig.top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingConfig.top_p must lie in (0, 1], got {self.top_p}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


GREEDY = SamplingConfig(temperature=0.0)


@dataclass
class GenerationOutput:
    """Sampled vocabulary ids. Shapes: camera_ids (B, S, hc*wc), image_ids (B, S, h*w); None where the
    segment was given rather than sampled. ``num_forwards`` counts model calls (prefill included)."""

    camera_ids: torch.Tensor | None = None
    image_ids: torch.Tensor | None = None
    num_forwards: int = 0


@dataclass(frozen=True)
class _Span:
    """A segment to sample: its first index in the row, its length, head kind and sampling config."""

    start: int
    length: int
    kind: HeadKind
    config: SamplingConfig


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k / top-p set to -inf (the most likely code always survives).

    Shapes: (R, K) -> (R, K).
    """
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (R, K)
        probs = sorted_logits.softmax(-1)
        # Drop a code when the codes ranked above it already reach top_p.
        drop_sorted = probs.cumsum(-1) - probs >= top_p  # (R, K)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(
    logits: torch.Tensor, config: SamplingConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """One code per row. Shapes: logits (R, K) -> (R,) long in [0, K)."""
    logits = logits.float()
    if config.temperature == 0.0:
        return logits.argmax(-1)
    logits = filter_logits(logits / config.temperature, config.top_k, config.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


def _guide(logits: torch.Tensor, scale: float, guided_rows: bool) -> torch.Tensor:
    """Combine [cond; uncond] rows. Shapes: (2R, K) -> (R, K), or (R, K) unchanged without guidance."""
    if not guided_rows:
        return logits
    cond, uncond = logits.chunk(2, dim=0)
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def _decode(
    model: GSTModel,
    rows: torch.Tensor,
    grid: torch.Tensor,
    spans: list[_Span],
    num_samples: int,
    generator: torch.Generator | None,
    use_cache: bool,
) -> tuple[torch.Tensor, int]:
    """Fill the spans of template rows by sampling; everything else in the rows is forced.

    Shapes: rows (Rc, T) template ids (Rc = B, or 2B with [cond; uncond] halves under guidance);
    grid (T, 2) -> (Rc * S, T) filled rows, number of forwards.
    """
    with _eval_mode(model):
        return _decode_rows(model, rows, grid, spans, num_samples, generator, use_cache)


def _decode_rows(
    model: GSTModel,
    rows: torch.Tensor,
    grid: torch.Tensor,
    spans: list[_Span],
    num_samples: int,
    generator: torch.Generator | None,
    use_cache: bool,
) -> tuple[torch.Tensor, int]:
    guided = any(s.config.guided for s in spans)
    seq = rows.repeat_interleave(num_samples, dim=0)  # (R, T); a condition's samples are adjacent
    grid = grid.unsqueeze(0)  # (1, T, 2)
    first = spans[0].start
    # The gen warp (model.gen_warp) of whole rows, sliced for each cached forward; recomputed once a
    # sampled camera is complete. Without a cache every forward sees whole rows and computes it itself.
    warp = model.warp_embeddings(rows) if use_cache else None  # (Rc, T, D) or None
    if use_cache:
        out = model(
            rows[:, :first],
            grid[:, :first],
            position_ids=_positions(0, first, rows.device),
            use_cache=True,
            head=spans[0].kind,
            warp_emb=None if warp is None else warp[:, :first],
        )
        cache = out.past_key_values
        if num_samples > 1:
            cache.batch_repeat_interleave(num_samples)
        logits = out.logits.repeat_interleave(num_samples, dim=0)  # (R, K)
        warp = None if warp is None else warp.repeat_interleave(num_samples, dim=0)  # (R, T, D)
    else:
        logits = model(seq[:, :first], grid[:, :first], head=spans[0].kind).logits
    fed, forwards = first, 1
    for k, span in enumerate(spans):
        offset = model.layout.kind_rows(span.kind)[0]
        for i in range(span.length):
            code = sample_logits(_guide(logits, span.config.cfg_scale, guided), span.config, generator)
            seq[:, span.start + i] = (code + offset).repeat(2 if guided else 1)  # same token in both halves
            if i + 1 < span.length:
                stop, kind = span.start + i + 1, span.kind
            elif k + 1 < len(spans):
                stop, kind = spans[k + 1].start, spans[k + 1].kind  # forced structure tokens ride along
                if warp is not None and span.kind == HeadKind.CAMERA:
                    warp = model.warp_embeddings(seq)  # the sampled cameras place the observed cells
            else:
                break
            if use_cache:
                out = model(
                    seq[:, fed:stop],
                    grid[:, fed:stop],
                    position_ids=_positions(fed, stop, seq.device),
                    past_key_values=cache,
                    use_cache=True,
                    head=kind,
                    warp_emb=None if warp is None else warp[:, fed:stop],
                )
            else:
                out = model(seq[:, :stop], grid[:, :stop], head=kind)
            logits, fed, forwards = out.logits, stop, forwards + 1
    return seq, forwards


# cuDNN's SDPA backend builds a new execution plan for every key length, which costs milliseconds of CPU
# per layer per decoding step (measured on an H100 with torch 2.11: 2.6 ms per call, 63 ms per step of
# the base preset); decoding uses the other backends, which have no per-shape set-up.
_DECODE_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@contextlib.contextmanager
def _eval_mode(model: GSTModel) -> Iterator[None]:
    """Decode in eval mode, without cuDNN attention, and give the model back in the mode it came in
    (sampling mid-training)."""
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel(_DECODE_SDPA_BACKENDS, set_priority=True):
            yield
    finally:
        model.train(was_training)


def _positions(start: int, stop: int, device: torch.device) -> torch.Tensor:
    return torch.arange(start, stop, device=device).unsqueeze(0)  # (1, stop - start)


def _template(
    model: GSTModel,
    seq_cfg: SequenceConfig,
    task: int,
    obs_ids: torch.Tensor,
    tgt_ids: torch.Tensor | None,
    cam_ids: torch.Tensor | None,
    guided: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the task layout with placeholder codes where sampling will write, [cond; uncond] when
    guided. Shapes: -> rows (Rc, T), grid (T, 2)."""
    layout = model.layout
    batch = obs_ids.shape[0]
    device = model.device
    obs_ids = obs_ids.to(device)
    if tgt_ids is None:
        tgt_ids = torch.full((batch, seq_cfg.num_image_tokens), layout.image_offset, device=device)
    if cam_ids is None:
        cam_ids = torch.full((batch, seq_cfg.num_camera_tokens), layout.camera_offset, device=device)
    null = torch.zeros(batch, dtype=torch.bool)
    rows, _, grid = assemble_pose(
        layout, seq_cfg, task, obs_ids, tgt_ids.to(device), cam_ids.to(device), null
    )
    if guided:
        uncond, _, _ = assemble_pose(
            layout, seq_cfg, task, obs_ids, tgt_ids.to(device), cam_ids.to(device), ~null
        )
        rows = torch.cat([rows, uncond], dim=0)  # (2B, T)
    return rows, grid.to(device)


def _take(seq: torch.Tensor, batch: int, num_samples: int, start: int, length: int) -> torch.Tensor:
    """The sampled segment of the conditional rows. Shapes: (R, T) -> (B, S, length)."""
    return seq[: batch * num_samples, start : start + length].reshape(batch, num_samples, length)


def estimate_camera_tokens(
    model: GSTModel,
    obs_ids: torch.Tensor,
    tgt_ids: torch.Tensor,
    *,
    seq_cfg: SequenceConfig,
    config: SamplingConfig = GREEDY,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> GenerationOutput:
    """Sample the camera of ``tgt`` relative to ``obs`` (est layout): p(camera | obs, tgt).

    Shapes: obs_ids, tgt_ids (B, h*w) image ids -> camera_ids (B, S, hc*wc) camera ids.
    """
    rows, grid = _template(model, seq_cfg, TASK_EST, obs_ids, tgt_ids, None, config.guided)
    off = pose_offsets(seq_cfg, TASK_EST)
    spans = [_Span(off.cam, seq_cfg.num_camera_tokens, HeadKind.CAMERA, config)]
    seq, forwards = _decode(model, rows, grid, spans, num_samples, generator, use_cache)
    cam = _take(seq, obs_ids.shape[0], num_samples, off.cam, seq_cfg.num_camera_tokens)
    return GenerationOutput(camera_ids=cam, num_forwards=forwards)


@torch.no_grad()
def read_pose_head(
    model: GSTModel, obs_ids: torch.Tensor, tgt_ids: torch.Tensor, *, seq_cfg: SequenceConfig
) -> torch.Tensor:
    """The auxiliary pose readout (``GSTModelConfig.pose_head_dim``) at the est row's [cam_start]: one
    forward of the prefix, no camera code sampled. Shapes: obs_ids, tgt_ids (B, h*w) -> (B, P) float32."""
    if not model.has_pose_head:
        raise ValueError("this model has no pose head (pose_head_dim=0); read its pose from the camera codes")
    rows, grid = _template(model, seq_cfg, TASK_EST, obs_ids, tgt_ids, None, guided=False)
    prefix = pose_offsets(seq_cfg, TASK_EST).cam  # tokens up to and including [cam_start]
    rows, grid = rows[:, :prefix], grid[:prefix].expand(rows.shape[0], -1, -1)  # (B, Tp), (B, Tp, 2)
    at_end = torch.zeros_like(rows, dtype=torch.bool)
    at_end[:, -1] = True
    return model(rows, grid, pose_positions=at_end).pose.float()  # (B, P)


def generate_camera_and_image(
    model: GSTModel,
    obs_ids: torch.Tensor,
    *,
    seq_cfg: SequenceConfig,
    config: SamplingConfig = GREEDY,
    image_config: SamplingConfig | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> GenerationOutput:
    """Jointly sample a camera and the view it sees (gen layout): p(camera, image | obs).

    ``config`` samples the camera, ``image_config`` (default: ``config``) the image.
    Shapes: obs_ids (B, h*w) -> camera_ids (B, S, hc*wc), image_ids (B, S, h*w).
    """
    image_config = image_config or config
    rows, grid = _template(
        model, seq_cfg, TASK_GEN, obs_ids, None, None, config.guided or image_config.guided
    )
    off = pose_offsets(seq_cfg, TASK_GEN)
    spans = [
        _Span(off.cam, seq_cfg.num_camera_tokens, HeadKind.CAMERA, config),
        _Span(off.tgt, seq_cfg.num_image_tokens, HeadKind.IMAGE, image_config),
    ]
    seq, forwards = _decode(model, rows, grid, spans, num_samples, generator, use_cache)
    batch = obs_ids.shape[0]
    return GenerationOutput(
        camera_ids=_take(seq, batch, num_samples, off.cam, seq_cfg.num_camera_tokens),
        image_ids=_take(seq, batch, num_samples, off.tgt, seq_cfg.num_image_tokens),
        num_forwards=forwards,
    )


def generate_image_given_camera(
    model: GSTModel,
    obs_ids: torch.Tensor,
    cam_ids: torch.Tensor,
    *,
    seq_cfg: SequenceConfig,
    config: SamplingConfig = GREEDY,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> GenerationOutput:
    """Sample the view seen from a given camera (gen layout, camera teacher-forced): p(image | obs, camera).

    Shapes: obs_ids (B, h*w) image ids, cam_ids (B, hc*wc) camera ids -> image_ids (B, S, h*w).
    """
    rows, grid = _template(model, seq_cfg, TASK_GEN, obs_ids, None, cam_ids, config.guided)
    off = pose_offsets(seq_cfg, TASK_GEN)
    spans = [_Span(off.tgt, seq_cfg.num_image_tokens, HeadKind.IMAGE, config)]
    seq, forwards = _decode(model, rows, grid, spans, num_samples, generator, use_cache)
    img = _take(seq, obs_ids.shape[0], num_samples, off.tgt, seq_cfg.num_image_tokens)
    return GenerationOutput(image_ids=img, num_forwards=forwards)


@torch.no_grad()
def generate_text(
    model: GSTModel,
    prompt_ids: torch.Tensor,
    prompt_grid: torch.Tensor,
    *,
    max_new_tokens: int,
    config: SamplingConfig = GREEDY,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Continue one chat prompt (``build_chat_example(..., add_generation_prompt=True)``) with text and
    special tokens until ``<|end|>`` (included) or ``max_new_tokens``. Image and camera codes cannot be
    sampled outside their segments. Guidance is not used here.

    Shapes: prompt_ids (T,), prompt_grid (T, 2) -> (N,) new ids, N <= max_new_tokens.
    """
    with _eval_mode(model):
        return _text_loop(model, prompt_ids, prompt_grid, max_new_tokens, config, generator)


def _text_loop(
    model: GSTModel,
    prompt_ids: torch.Tensor,
    prompt_grid: torch.Tensor,
    max_new_tokens: int,
    config: SamplingConfig,
    generator: torch.Generator | None,
) -> torch.Tensor:
    layout, device = model.layout, model.device
    end_id = layout.special_id("<|end|>")
    ids = prompt_ids.to(device).unsqueeze(0)  # (1, T)
    grid = prompt_grid.to(device).unsqueeze(0)  # (1, T, 2)
    no_grid = torch.full((1, 1, 2), -1.0, device=device)
    out = model(ids, grid, use_cache=True, head=HeadKind.FULL)
    new: list[int] = []
    pos = ids.shape[1]
    for _ in range(max_new_tokens):
        logits = out.logits[:, : layout.image_offset]  # (1, text + special): codes need their segments
        token = int(sample_logits(logits, config, generator)[0])
        new.append(token)
        if token == end_id:
            break
        out = model(
            torch.tensor([[token]], device=device),
            no_grid,
            position_ids=_positions(pos, pos + 1, device),
            past_key_values=out.past_key_values,
            use_cache=True,
            head=HeadKind.FULL,
        )
        pos += 1
    return torch.tensor(new, dtype=torch.long)
