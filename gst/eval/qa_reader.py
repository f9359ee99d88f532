"""`gst eval qa --method answer-reader`: the answer reader (gst.model.answer_reader) as a QA predictor.

It reads each record's views from the scene folders, tokenizes them with the checkpoint's image tokenizer
(``GST.prepare``, each view once), takes the cells from the checkpoint's pose reader and answers every
record in batches. The answer reader must have been trained over this checkpoint's pose reader: its
export records the pose reader's weights by hash, checked here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gst.api_checkpoint import resolve_checkpoint
from gst.data.qa_types import QARecord
from gst.hashing import file_sha256
from gst.model.answer_reader import (
    ANSWER_READER_DIR,
    MAX_VIEWS,
    answer,
    encode_records,
    load_answer_reader,
    text_tokenizer,
)


class AnswerReaderPredictor:
    """Answers from an answer reader (default: the checkpoint's ``answer_reader/``) over a checkpoint's
    pose reader, for records whose views are in the scene folders under ``scenes``."""

    name = "answer-reader"

    def __init__(
        self,
        checkpoint: str | Path,
        scenes: str | Path,
        reader_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        from gst.api import GST

        files = resolve_checkpoint(checkpoint)
        reader_dir = Path(reader_dir) if reader_dir is not None else files.root / ANSWER_READER_DIR
        if not reader_dir.is_dir():
            raise FileNotFoundError(
                f"{reader_dir}: no answer reader; train one with `gst train answer-reader --checkpoint "
                f"{checkpoint} --out DIR` and pass --answer-reader DIR/{ANSWER_READER_DIR}"
            )
        self.net, self.vocab, info = load_answer_reader(reader_dir)
        trained_on = (info.get("metadata") or {}).get("pose_reader", {}).get("model_sha256")
        here = file_sha256(files.model_dir / "model.safetensors")
        if trained_on != here:
            raise ValueError(
                f"{reader_dir}: trained over a pose reader with weights {str(trained_on)[:12]}, but "
                f"checkpoint {checkpoint} has {here[:12]}; give the checkpoint it was trained with, or "
                "retrain it"
            )
        self.gst = GST.from_pretrained(checkpoint)
        if self.gst.model.stem_reader is None or self.gst.model.stem_reader.cell_head is None:
            raise ValueError(f"checkpoint {checkpoint}: has no pose reader with cell heads")
        self.scenes, self.progress, self.text = Path(scenes), progress, text_tokenizer()
        self.reader_dir = reader_dir

    def predict(self, records: Sequence[QARecord]) -> list[str]:
        from tqdm.auto import tqdm

        from gst.eval.qa_baselines import scene_image_resolver

        resolve = scene_image_resolver(self.scenes)
        keys = sorted({(r.scene, v) for r in records for v in r.views[:MAX_VIEWS]})
        where = {key: i for i, key in enumerate(keys)}
        grid = tuple(self.gst.sequence.image_grid)
        codes = np.zeros((len(keys), *grid), np.int64)
        for i, (scene, view) in enumerate(tqdm(keys, desc="tokenize views", disable=not self.progress)):
            ids = self.gst.prepare(resolve(scene, view)).ids - self.gst.layout.image_offset
            codes[i] = ids.reshape(grid).cpu().numpy()
        view_rows = [[where[(r.scene, v)] for v in r.views[:MAX_VIEWS]] for r in records]
        d = encode_records(
            records, view_rows, codes, self.gst.model.stem_reader, self.vocab, self.net.config.code_features
        )
        return answer(self.net, d, self.text)
