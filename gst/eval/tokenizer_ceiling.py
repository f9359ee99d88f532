"""The tokenizer-reconstruction ceiling for `gst eval nvs --tokenizer DIR`: decode(encode(target)).

No model that emits image codes of a tokenizer can beat what that tokenizer reconstructs from the
true target, so this ceiling is reported beside every view-synthesis number (it looks at the target,
and the report says so).
"""

from __future__ import annotations

from pathlib import Path

from gst.eval.baselines import ReconstructionCeilingView


def load_reconstruction_ceiling(path: str | Path) -> tuple[ReconstructionCeilingView, dict]:
    """A ceiling view predictor from an image-tokenizer checkpoint folder, and its metadata."""
    from gst.eval.report import sha256_of

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--tokenizer {path}: no such folder; train one with `gst train tokenizer`")
    try:
        from gst.tokenizers.image import load_image_tokenizer  # lands with the tokenizer issue (8)
    except ImportError:
        raise RuntimeError(
            f"--tokenizer {path}: gst.tokenizers.image.load_image_tokenizer is not available in this "
            "build (the image tokenizer lands with issue 8); meanwhile score its reconstructions with "
            "--predictions FILE.npz (format in gst/eval/predictors.py)"
        ) from None
    tokenizer = load_image_tokenizer(path)
    ceiling = ReconstructionCeilingView(tokenizer.reconstruct, name="tokenizer_ceiling")
    return ceiling, {"checkpoint": str(path.resolve()), "sha256": sha256_of(path)}
