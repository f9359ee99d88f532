"""Fine-tuning: start `gst train gst` from the weights of a trained GST checkpoint (``--init-from``).

``with_initial_weights(run, checkpoint)`` takes the backbone architecture, text tokenizer and vocabulary
padding from the checkpoint (so the model built is the one trained) and records the backbone folder as
``run.init_from``; ``load_initial_model`` then builds the model from those weights after checking that
the run can use them: the same vocabulary layout, the same image and camera tokenizers (by content
hash) and the same token grids as the cache. The optimiser, schedule and step count start fresh;
``--resume`` of a fine-tuning run takes the same ``--init-from`` (it is part of the run's config, and
the checkpoint must still be there to give the architecture), then loads the run's own checkpoint.

``checkpoint`` is anything ``GST.from_pretrained`` reads: a `gst train export` folder (such as
``assets/gst-tiny``), a training export, or a `gst train gst` run folder (its newest checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gst.api_checkpoint import read_backbone_meta, resolve_checkpoint
from gst.model import GSTModel, GSTModelConfig, TokenLayout, load_gst_model

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
    )


def load_initial_model(run: GSTRunConfig, layout: TokenLayout, cache_manifest: dict[str, Any]) -> GSTModel:
    """The backbone at ``run.init_from``, checked against the run's layout, tokenizers and grids."""
    model_dir = Path(str(run.init_from))
    meta = read_backbone_meta(model_dir)
    where = model_dir / "gst_model.json"
    extra = meta["extra"]
    problems = []
    if GSTModelConfig.from_dict(meta["config"]) != run.model:
        problems.append(
            f"its backbone config {meta['config']} differs from the run's {run.model.to_dict()} "
            "(a fine-tuned backbone keeps its architecture: drop the --set model.* overrides)"
        )
    if TokenLayout.from_dict(meta["layout"]) != layout:
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
    return load_gst_model(model_dir)
