"""The answer reader's export: ``model.safetensors`` plus ``answer_reader.json`` in a folder (a checkpoint
folder ships it as ``answer_reader/``), written atomically; read back without unpickling."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from gst.model.answer_reader import (
    ANSWER_READER_DIR,
    ANSWER_READER_FILE,
    ANSWER_READER_FORMAT,
    ANSWER_READER_FORMAT_VERSION,
    AnswerReader,
    AnswerReaderConfig,
)
from gst.model.weights_folder import save_weights_folder


def save_answer_reader(
    net: AnswerReader, vocab: dict[str, int], out_dir: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """``model.safetensors`` + ``answer_reader.json`` (format, config, question words in id order,
    metadata), written to a temporary folder and moved into place. Returns ``out_dir``."""
    ids = sorted(vocab.values())
    if ids != list(range(2, len(vocab) + 2)) or net.config.question_vocab != len(vocab) + 2:
        raise ValueError("vocab: question word ids must be 2 .. len(vocab) + 1 (0 pad, 1 unknown)")
    info = {
        "format": ANSWER_READER_FORMAT,
        "format_version": ANSWER_READER_FORMAT_VERSION,
        "config": asdict(net.config),
        "question_words": sorted(vocab, key=vocab.get),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "metadata": metadata or {},
    }
    return save_weights_folder(net, out_dir, ANSWER_READER_FILE, info)


def load_answer_reader(path: str | Path) -> tuple[AnswerReader, dict[str, int], dict[str, Any]]:
    """An answer reader saved by ``save_answer_reader``: the network (eval mode), its question
    vocabulary and its JSON (config, metadata)."""
    from safetensors.torch import load_model

    path = Path(path)
    meta_path = path / ANSWER_READER_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{path}: no {ANSWER_READER_FILE}; give an answer reader folder (`gst train answer-reader "
            f"--out DIR` writes DIR/{ANSWER_READER_DIR}) or a checkpoint folder that ships one"
        )
    info = json.loads(meta_path.read_text())
    if (
        info.get("format") != ANSWER_READER_FORMAT
        or info.get("format_version") != ANSWER_READER_FORMAT_VERSION
    ):
        raise ValueError(
            f"{meta_path}: format {info.get('format')!r} version {info.get('format_version')!r}, expected "
            f"{ANSWER_READER_FORMAT!r} version {ANSWER_READER_FORMAT_VERSION}"
        )
    unknown = sorted(set(info["config"]) - {f.name for f in fields(AnswerReaderConfig)})
    if unknown:
        raise ValueError(
            f"{meta_path}: config fields {unknown} are not options of this version's answer reader (written "
            "by another version of gst); retrain it, or remove them from the file if they are false"
        )
    config = AnswerReaderConfig(**info["config"])
    vocab = {w: i + 2 for i, w in enumerate(info["question_words"])}
    if config.question_vocab != len(vocab) + 2:
        raise ValueError(
            f"{meta_path}: {len(vocab)} question words, config.question_vocab {config.question_vocab}"
        )
    net = AnswerReader(config)
    load_model(net, str(path / "model.safetensors"))
    return net.eval(), vocab, info
