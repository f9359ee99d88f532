"""Where a `gst train gst` run starts (``initial_model``; ``freeze`` for ``frozen``), and fine-tuning: start
from the weights of a trained GST checkpoint (``--init-from``).

``with_initial_weights(run, checkpoint)`` takes the backbone architecture, text tokenizer and vocabulary
padding from the checkpoint (so the model built is the one trained) and records the backbone folder as
``run.init_from``; ``load_initial_model`` then builds the model from those weights after checking that
the run can use them: the same vocabulary layout, the same image and camera tokenizers (by content
hash) and the same token grids as the cache. The optimiser, schedule and step count start fresh;
``--resume`` of a fine-tuning run takes the same ``--init-from`` (it is part of the run's config, and
the checkpoint must still be there to give the architecture), then loads the run's own checkpoint.

``checkpoint`` is anything ``GST.from_pretrained`` reads: a `gst train export` folder (such as
``assets/gst-tiny``), a training export, or a `gst train gst` run folder (its newest checkpoint).

Number tokens: a checkpoint trained with them keeps them (``number_tokens`` is set from its vocabulary);
``--set number_tokens=true`` on a checkpoint without them adds them (``add_number_rows``): the run's
text segment ends with the 121 number ids, so the special, image and camera rows move up by that many,
and each new row starts as the mean of the checkpoint's rows for the digits of its value written with
2 decimals ("3.84" for the bin of 3.84), plus noise of ``model.new_row_noise`` times the text rows'
std: the model first reads a number token about as it read those digits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gst.api_checkpoint import read_backbone_meta, resolve_checkpoint
from gst.model import GSTModel, GSTModelConfig, TokenLayout, build_gst_model, load_gst_model
from gst.model.config import HeadKind, ReaderConfig
from gst.tokenizers.numbers import NUMBER_BINS, render

if TYPE_CHECKING:
    from gst.training.gst_config import GSTRunConfig


def with_initial_weights(run: GSTRunConfig, checkpoint: str | Path) -> GSTRunConfig:
    """``run`` set up to fine-tune ``checkpoint``'s backbone (module docstring)."""
    files = resolve_checkpoint(checkpoint)
    meta = read_backbone_meta(files.model_dir)
    extra = meta["extra"]
    text = str(extra["text_tokenizer"])
    if text != "byt5" and not Path(text).is_absolute() and (files.root / text).exists():
        text = str((files.root / text).resolve())  # a tokenizer shipped inside the checkpoint folder
    return dataclasses.replace(
        run,
        model=GSTModelConfig.from_dict(meta["config"]),
        text=text,
        pad_vocab_to=int(extra["vocabulary"].get("pad_to_multiple", 1)),
        init_from=str(files.model_dir.resolve()),
        number_tokens=run.number_tokens or extra["vocabulary"].get("numbers") is not None,
    )


def freeze(model: nn.Module, prefixes: Sequence[str]) -> nn.Module:
    """``model`` with the parameters under each name prefix set to not require gradients (``frozen``)."""
    for prefix in prefixes:
        params = [
            p for name, p in model.named_parameters() if name == prefix or name.startswith(prefix + ".")
        ]
        if not params:
            raise ValueError(
                f"frozen: no parameter of the model is named {prefix!r} or below it (names as in "
                "model.named_parameters(), e.g. reader.single)"
            )
        for p in params:
            p.requires_grad_(False)
    return model


def initial_model(
    run: GSTRunConfig, vocab: Any, cache_manifest: dict[str, Any], camera_tokenizer: Callable[[], nn.Module]
) -> GSTModel:
    """The model a `gst train gst` run starts from: ``run.init_from``'s weights (``load_initial_model``), or
    a new model whose code rows and reader code features start as ``run.code_init`` says, from the
    cache's tokenizers (``camera_tokenizer`` gives the camera one)."""
    layout = TokenLayout.from_vocab(vocab)
    if run.init_from is not None:
        return load_initial_model(run, layout, cache_manifest)
    from gst.tokenizers.io import load_tokenizer
    from gst.training import code_init

    model = build_gst_model(run.model, vocab)
    if run.code_init == "random" and model.reader is None:
        return model
    image = load_tokenizer(cache_manifest["tokenizers"]["image"]["path"])
    emb = model.lm.get_input_embeddings().weight
    start, stop = layout.kind_rows(HeadKind.IMAGE)
    random_image_rows = emb[start:stop].detach().clone()
    if run.code_init != "random":
        code_init.init_code_embeddings(model, image, camera_tokenizer(), seed=run.model.seed)
    if run.code_init == "decoder":  # image rows: the decoder's features replace the VQ vectors'
        with torch.no_grad():
            emb[start:stop] = random_image_rows
        code_init.init_code_embeddings_from_decoder(model, image, seed=run.model.seed)
    if model.reader is not None:
        code_init.init_reader_codes(model, image)
    return model


def load_initial_model(run: GSTRunConfig, layout: TokenLayout, cache_manifest: dict[str, Any]) -> GSTModel:
    """The backbone at ``run.init_from``, checked against the run's layout, tokenizers and grids."""
    model_dir = Path(str(run.init_from))
    meta = read_backbone_meta(model_dir)
    where = model_dir / "gst_model.json"
    extra = meta["extra"]
    problems = []
    old_config = GSTModelConfig.from_dict(meta["config"])
    grows_reader = old_config != run.model and reader_growth(old_config, run.model)
    if old_config != run.model and not grows_reader:
        problems.append(
            f"its backbone config {meta['config']} differs from the run's {run.model.to_dict()} "
            "(a fine-tuned backbone keeps its architecture: drop the --set model.* overrides; only "
            "model.reader.corr_dim, model.reader.cell_heads, model.pose_reader and model.gen_warp may be "
            "switched on)"
        )
    old_layout = TokenLayout.from_dict(meta["layout"])
    adds_numbers = (
        run.number_tokens
        and extra["vocabulary"].get("numbers") is None
        and dataclasses.replace(old_layout, num_text=old_layout.num_text + NUMBER_BINS.num_tokens) == layout
    )
    if old_layout != layout and not adds_numbers:
        problems.append(f"its token layout {meta['layout']} differs from the run's {layout.to_dict()}")
    for kind, entry in cache_manifest["tokenizers"].items():
        want = (extra["tokenizers"].get(kind) or {}).get("sha256")
        if want != entry["sha256"]:
            problems.append(
                f"it was trained with another {kind} tokenizer (sha256 {str(want)[:12]}) than the "
                f"cache's ({entry['sha256'][:12]}): build the cache with the checkpoint's tokenizers"
            )
    seq = extra["sequence"]
    grids = (tuple(seq.get("image_grid") or ()), tuple(seq.get("camera_grid") or ()))
    if grids != (tuple(run.sequence.image_grid), tuple(run.sequence.camera_grid)):
        problems.append(
            f"it was trained on image/camera grids {grids[0]}/{grids[1]}, the cache holds "
            f"{run.sequence.image_grid}/{run.sequence.camera_grid}"
        )
    if problems:
        raise ValueError(f"--init-from {where}: cannot fine-tune it here: " + "; ".join(problems))
    model = load_gst_model(model_dir)
    if grows_reader:
        model = grow_reader(model, run.model)
    if adds_numbers:
        from gst.training.gst_config import load_text_tokenizer

        model = add_number_rows(model, layout, load_text_tokenizer(run.text), seed=run.model.seed)
    return model


def _grows(old: ReaderConfig, new: ReaderConfig) -> bool:
    """Whether reader ``new`` is ``old`` with the pair stem's correspondence (``corr_dim`` from 0) or the
    cell heads switched on."""
    same_rest = dataclasses.replace(old, corr_dim=new.corr_dim, cell_heads=new.cell_heads)
    return same_rest == new and old.corr_dim in (0, new.corr_dim) and new.cell_heads >= old.cell_heads


def reader_growth(old: GSTModelConfig, new: GSTModelConfig) -> bool:
    """Whether ``new`` is ``old`` with reader parts switched on that ``grow_reader`` can add: the pair
    stem's correspondence (``corr_dim`` from 0), the cell heads, a pose reader (``pose_reader``),
    which starts as a copy of the reader (plus any of those parts), and the gen warp (``gen_warp``)."""
    if old.reader is None or new.reader is None:
        return False
    values = old.gen_warp_values if old.gen_warp else new.gen_warp_values  # what a new warp carries
    parts = dict(
        reader=new.reader, pose_reader=new.pose_reader, gen_warp=new.gen_warp, gen_warp_values=values
    )
    if dataclasses.replace(old, **parts) != new:
        return False
    if old.gen_warp and not new.gen_warp:
        return False
    if not _grows(old.reader, new.reader):
        return False
    if new.pose_reader is None:
        return old.pose_reader is None
    return _grows(old.pose_reader or new.reader, new.pose_reader)


def grow_reader(model: GSTModel, config: GSTModelConfig) -> GSTModel:
    """``model`` with its readers grown to ``config`` (``reader_growth``), computing what it did: the new
    parts start from ``config.seed``'s initialisation, the pair stems' input weights for new
    correspondence channels start at zero, and a new pose reader starts as the reader with its pose head,
    so until they train every output is what it was."""
    if not reader_growth(model.config, config):
        raise ValueError(
            f"grow_reader: {config.reader} / {config.pose_reader} is not a growth of "
            f"{model.config.reader} / {model.config.pose_reader}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        grown = GSTModel(model.lm, model.layout, config)
    state = model.state_dict()
    if config.pose_reader is not None and model.config.pose_reader is None:
        state.update(_as_pose_reader(state, "reader."))
        for key in [k for k in state if k.startswith("reader.pose_head.")]:
            del state[key]  # the pose head moved to the pose reader
    new_state = grown.state_dict()
    for prefix in ("reader.", "pose_reader."):
        key = prefix + "pair.0.weight"  # the pair stem's first (1x1) conv: (C, 2C [+ 2n], 1, 1)
        if key in state and state[key].shape != new_state[key].shape:
            old_in = state[key].shape[1]
            with torch.no_grad():
                weight = new_state[key].clone()
                weight[:, :old_in] = state[key]
                weight[:, old_in:] = 0.0
            state[key] = weight
    missing, unexpected = grown.load_state_dict(state, strict=False)
    allowed = ("gen_warp.",) + tuple(
        f"{r}.{part}." for r in ("reader", "pose_reader") for part in ("corr_proj", "cell_head")
    )
    if unexpected or any(not k.startswith(allowed) for k in missing):
        raise ValueError(f"grow_reader: weights that do not fit: {unexpected or missing}")
    return grown


def _as_pose_reader(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The weights of the reader under ``prefix`` in ``state``, renamed for the pose reader (copies); its
    projections into the model width (``to_*``) stay behind: a pose reader has none."""
    return {
        "pose_reader." + key.removeprefix(prefix): value.clone()
        for key, value in state.items()
        if key.startswith(prefix) and not key.startswith(prefix + "to_")
    }


def graft_pose_reader(model: GSTModel, donor: GSTModel) -> GSTModel:
    """``model`` with ``donor``'s reader (its code features, stems, pose head, cell heads) as its pose
    reader (``GSTModelConfig.pose_reader``): the pose of a reader trained alone (e.g. from scratch on
    reader-only pairs) served beside a backbone whose inputs stay exactly as they were. Both must share
    the token layout. Any pose reader of ``model`` is replaced."""
    if donor.config.reader is None or donor.stem_reader.pose_head is None:
        raise ValueError("graft_pose_reader: the donor has no reader with a pose head")
    if model.config.reader is None or model.config.pose_head_dim != donor.config.pose_head_dim:
        raise ValueError(
            "graft_pose_reader: the model needs a reader and the donor's pose_head_dim "
            f"({donor.config.pose_head_dim}), it has {model.config.reader} / {model.config.pose_head_dim}"
        )
    if model.layout != donor.layout:
        raise ValueError("graft_pose_reader: the donor has another token layout (vocabulary)")
    config = dataclasses.replace(model.config, pose_reader=donor.config.stem_reader)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        grafted = GSTModel(model.lm, model.layout, config)
    state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("pose_reader.", "reader.pose_head."))
    }
    prefix = "pose_reader." if donor.pose_reader is not None else "reader."
    state.update(_as_pose_reader(donor.state_dict(), prefix))
    grafted.load_state_dict(state, strict=True)
    return grafted


def add_number_rows(model: GSTModel, layout: TokenLayout, text_tokenizer: Any, *, seed: int) -> GSTModel:
    """``model`` with ``NUMBER_BINS``' number rows inserted at the end of its text rows (module
    docstring): ``layout`` is its layout with ``num_text`` grown by their count. The language model is
    resized in place; the returned model wraps it with ``layout`` and the same other weights."""
    old, n = model.layout, NUMBER_BINS.num_tokens
    if dataclasses.replace(old, num_text=old.num_text + n) != layout:
        raise ValueError(f"add_number_rows: {layout} is not {old} with {n} more text ids")
    if text_tokenizer.vocab_size != old.num_text:
        raise ValueError(
            f"add_number_rows: the text tokenizer has {text_tokenizer.vocab_size} ids, not {old.num_text}"
        )
    digits = [text_tokenizer.encode(render(v, 2)) for v in NUMBER_BINS.values]  # "0.00", "0.01", ...
    generator = torch.Generator().manual_seed(seed)
    noise = model.config.new_row_noise
    lm = model.lm
    emb = lm.get_input_embeddings()
    head = lm.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != emb.weight.data_ptr()
    old_rows = [emb.weight.detach().clone()] + ([head.weight.detach().clone()] if untied else [])  # (V, D)
    old_bias = head.bias.detach().clone() if untied and getattr(head, "bias", None) is not None else None
    lm.resize_token_embeddings(layout.size, mean_resizing=False)
    targets = [lm.get_input_embeddings().weight] + ([lm.get_output_embeddings().weight] if untied else [])
    with torch.no_grad():
        for weight, rows in zip(targets, old_rows, strict=True):
            weight.copy_(_moved_rows(rows, old, layout, digits, noise, generator))
        if old_bias is not None:
            bias = lm.get_output_embeddings().bias
            bias.copy_(_moved_rows(old_bias[:, None], old, layout, digits, 0.0, generator)[:, 0])
    with torch.random.fork_rng(devices=[]):  # the new wrapper's own layers are replaced just below
        grown = GSTModel(lm, layout, model.config)
    others = {k: v for k, v in model.state_dict().items() if not k.startswith("lm.")}
    missing, unexpected = grown.load_state_dict(others, strict=False)
    if unexpected or any(not k.startswith("lm.") for k in missing):
        raise ValueError(f"add_number_rows: weights that do not fit: {unexpected or missing}")
    return grown


def _moved_rows(
    rows: torch.Tensor,
    old: TokenLayout,
    new: TokenLayout,
    digits: list[list[int]],
    noise: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Rows of the old layout placed in the new one, with the number rows made from ``digits``.
    Shapes: rows (old.size, D) -> (new.size, D)."""
    start, n = old.num_text, new.num_text - old.num_text
    out = rows.new_empty(new.size, rows.shape[1])  # (V', D)
    out[:start] = rows[:start]  # text
    out[new.num_text : new.num_used] = rows[start : old.num_used]  # special, image, camera: up by n
    text = rows[:start].double()  # (T, D)
    out[new.num_used :] = text.mean(0).to(rows.dtype)  # padding rows, never produced
    eps = torch.randn(n, rows.shape[1], generator=generator, dtype=torch.float64)  # (n, D)
    means = torch.stack([text[ids].mean(0) for ids in digits])  # (n, D)
    out[start : new.num_text] = (means + noise * text.std(0) * eps).to(rows.dtype)
    return out
