"""The tokenizer-reconstruction ceiling for `gst eval nvs --tokenizer DIR`: decode(encode(target)).

No model that emits image codes of a tokenizer can beat what that tokenizer reconstructs from the
true target, so this ceiling is reported beside every view-synthesis number (it looks at the target,
and the report says so).
"""

from __future__ import annotations

from pathlib import Path

from gst.eval.baselines import ReconstructionCeilingView


def load_reconstruction_ceiling(path: str | Path) -> tuple[ReconstructionCeilingView, dict]:
    """A ceiling view predictor from an image-tokenizer export / checkpoint, and its metadata."""
    from gst.eval.report import sha256_of

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--tokenizer {path}: no such file or folder; train an image tokenizer first")
    from gst.tokenizers.io import load_image_tokenizer

    tokenizer = load_image_tokenizer(path).eval()
    hw = tuple(tokenizer.config.image_hw)
    ceiling = ReconstructionCeilingView(tokenizer.reconstruct, name="tokenizer_ceiling", input_hw=hw)
    meta = {
        "checkpoint": str(path.resolve()),
        "sha256": sha256_of(path),
        "tokenizer_image_hw": list(hw),
        "num_codes": int(tokenizer.num_codes),
        "grid_hw": list(tokenizer.grid_hw),
    }
    return ceiling, meta
