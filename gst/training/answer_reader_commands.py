"""`gst train answer-reader`: train the answer reader (gst.model.answer_reader) on a chat cache.

The network answers spatial questions over the cells of a checkpoint's pose reader (frozen); this command
trains it on the chat cache's train split with training phrasings and writes ``OUT/answer_reader``
(``save_answer_reader``: copy it into the checkpoint folder to ship it), ``OUT/results.json`` (val
scores against the most frequent answer, pointer IoU) and, with ``--heldout``, ``OUT/answers.jsonl``
(every held-out record's answer, scored by `gst eval qa --predictions`).

- Training: cross-entropy of the answer tokens and end, AdamW, cosine schedule over ``--minutes`` of
  process CPU time (one torch thread: ``OMP_NUM_THREADS=1``). With ``--numeric-head``: a number's bin
  (cross-entropy; ``--number-readout bins``) or its log, a point's coordinates and a box's centre and log
  extents (smooth L1). With ``--cells`` (a token cache over the same scenes with cell labels, `gst data
  cells`) the pointers are supervised: binary cross-entropy against the cells that show each role's
  objects (``--pointer-weight``); ``--oracle-pointer`` pools the true cells instead (a ceiling, val split
  only); ``--teacher-pointer P`` pools them for a fraction P of the training records. With
  ``--word-roles``: binary cross-entropy of each question word's role tags against the words of the
  record's references (``--word-role-weight``; records of `gst data qa` carry them). With
  ``--elevation-head`` (and ``--motion-token``): smooth L1 of the observed camera's elevation against the
  cameras of the chat cache's scenes (``transforms.json`` under its ``scenes_root``;
  ``--elevation-weight``), its val error in ``results.json``.
- ``--no-image``: the same network on the question alone (the text-only row of `gst eval qa`).

    OMP_NUM_THREADS=1 gst train answer-reader --chat data/chat3_world128 --cells data/cache_world128_p64 \\
        --heldout data/chat3_heldout_s1000_10 --minutes 24 --width 64 --batch 32 --pointer-layers 1 \\
        --pointer-match query --numeric-head --out runs/answer_reader
    gst eval qa --data data/qa3_heldout_s1000_10.jsonl --eval-split all \\
        --predictions runs/answer_reader/answers.jsonl --out runs/eval/answer_reader

The training itself is gst.training.answer_reader, imported when the command runs.
"""

from __future__ import annotations

import argparse

ANSWER_READER_DIR = "answer_reader"  # gst.model.answer_reader.ANSWER_READER_DIR


def register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "answer-reader",
        help="train the answer reader (spatial questions over the pose reader's cells) on a chat cache",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=_train)
    p = sub.add_parser(
        "answer-forms",
        help="fit the question-kind classifier that lets `gst chat` route questions to an answer reader",
        description="Fit gst.model.answer_forms (which question kind a free question asks, and so the "
        "answer form the answer reader answers in) on the training phrasings of a QA file, report on its "
        "val records per phrasing split how many it recognises and how often their answer form is right, "
        "and write answer_forms.json into an answer reader folder. Example: gst train answer-forms --qa "
        "data/qa4_world128.jsonl --out assets/gst-tiny/answer_reader",
    )
    p.add_argument("--qa", required=True, help="a QA file of `gst data qa` (its train split is fitted)")
    p.add_argument("--out", required=True, help="the answer reader folder to write answer_forms.json into")
    p.set_defaults(func=_train_forms)


def _train(args: argparse.Namespace) -> int:
    from gst.training.answer_reader import train_answer_reader

    return train_answer_reader(args)


def _train_forms(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gst.data.qa_types import read_jsonl
    from gst.model.answer_forms import AnswerForms

    out = Path(args.out)
    if not out.is_dir():
        raise FileNotFoundError(
            f"--out {out}: no such folder (an answer reader folder, e.g. DIR/answer_reader)"
        )
    records = read_jsonl(args.qa)
    forms = AnswerForms.fit([r for r in records if r.split == "train"])
    print(f"{len(forms.forms)} kinds from {args.qa}; its val records:")
    for split in ("train", "heldout"):
        val = [r for r in records if r.split == "val" and r.phrasing_split == split]
        routed = [(kind, r) for r in val if (kind := forms.route(r.question)) is not None]
        right = sum(forms.forms[kind] == forms.forms[r.kind] for kind, r in routed)
        print(f"  {split} phrasings: {len(val)}, {len(routed) / max(len(val), 1):.3f} recognised (routed in "
              f"`gst chat`), their answer form right for {right / max(len(routed), 1):.3f}")  # fmt: skip
    print(f"answer forms -> {forms.save(out)}")
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of `gst train answer-reader` (module docstring)."""
    ap.add_argument("--chat", required=True, help="training chat cache (`gst data chat-cache`)")
    ap.add_argument("--heldout", default=None, help="chat cache of held-out scenes: every record answered")
    ap.add_argument(
        "--checkpoint", default="assets/gst-tiny", help="a model with a pose reader with cell heads"
    )
    ap.add_argument("--minutes", type=float, default=10, help="training budget, process CPU-minutes")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--no-image", action="store_true", help="the question alone (cells and pose zeroed)")
    ap.add_argument(
        "--cells",
        default=None,
        help="a token cache over the chat's scenes with cell labels (`gst data cells`): pointer targets",
    )
    ap.add_argument("--pointer-layers", type=int, default=0, help="cell layers of the pointers (0: none)")
    ap.add_argument(
        "--pointer-match",
        choices=("cell", "query"),
        default="cell",
        help="a pointer logit: a linear readout of each cell (cell) or the dot product of the cell with "
        "a query per role that reads the question (query)",
    )
    ap.add_argument(
        "--numeric-head",
        action="store_true",
        help="answer numbers, points and boxes with a typed readout (--number-readout; points and boxes "
        "regressed) written back as text",
    )
    ap.add_argument(
        "--number-readout",
        choices=("bins", "log"),
        default="bins",
        help="with --numeric-head, a number is a softmax over the number-token bins, decoded for the "
        "highest expected MRA (bins), or a regressed log (log)",
    )
    ap.add_argument(
        "--unit-bins",
        action="store_true",
        help="with --number-readout bins: one set of bins per unit (metres, degrees), one softmax over all; "
        "an answer reads its unit's set",
    )
    ap.add_argument(
        "--pointer-pool",
        choices=("sigmoid", "softmax"),
        default="sigmoid",
        help="a role's object token pools its cells weighted by their sigmoid (sigmoid) or by a softmax over "
        "the cells (softmax; the count feature stays the sigmoid sum)",
    )
    ap.add_argument(
        "--code-features",
        action="store_true",
        help="each cell also carries its code's feature (the pose reader's input embedding)",
    )
    ap.add_argument(
        "--relations",
        action="store_true",
        help="the answer slots also read one token of explicit geometry between the objects the pointers "
        "of roles a and b pool (centres, their difference and distances, image offset, size ratio)",
    )
    ap.add_argument(
        "--word-roles",
        action="store_true",
        help="tag the question words that name each role's objects (learnt from the records' references; "
        "needs --pointer-match query); each role's pointer query reads its tagged words",
    )
    ap.add_argument(
        "--number-words",
        action="store_true",
        help="a question word that is a number also adds an embedding of its value (log and linear scales)",
    )
    ap.add_argument(
        "--motion-token",
        action="store_true",
        help="the answer slots also read one token of the camera motion the question states (parsed from "
        "its words) and of role a's object moved into the camera after that motion (explicit geometry)",
    )
    ap.add_argument(
        "--elevation-head",
        action="store_true",
        help="with --motion-token: read the observed camera's elevation from its cells (trained on the "
        "scenes' cameras) and untilt role a's object by it before moving it",
    )
    ap.add_argument(
        "--elevation-weight",
        type=float,
        default=1.0,
        help="weight of the elevation head's loss (0: no target; it then learns only through the answers)",
    )
    ap.add_argument(
        "--attribute-match",
        action="store_true",
        help="with --word-roles: each role's words name a colour and a shape class (or any); a cell's "
        "pointer logit adds the log-probability that its cell heads' colour and shape are those",
    )
    ap.add_argument("--word-role-weight", type=float, default=1.0, help="weight of the word-role loss")
    ap.add_argument("--pointer-weight", type=float, default=1.0, help="weight of the pointers' cell loss")
    ap.add_argument(
        "--oracle-pointer", action="store_true", help="pool the true cells of each role (val only; a ceiling)"
    )
    ap.add_argument(
        "--word-dropout",
        type=float,
        default=0.0,
        help="rate at which training question words read as unknown",
    )
    ap.add_argument(
        "--construction-dropout",
        type=float,
        default=0.0,
        help="rate at which the words of a training question outside its object references (the records' "
        "references) read as unknown: the answer must also follow from which objects the question names",
    )
    ap.add_argument(
        "--keep-motion",
        action="store_true",
        help="--construction-dropout spares the questions that state a camera motion (motion visibility: "
        "the motion's words decide the answer)",
    )
    ap.add_argument(
        "--teacher-pointer",
        type=float,
        default=0.0,
        help="in training, the fraction of records whose answer slots pool the true cells (the pointers "
        "still learn from every record); answers always pool the pointers'",
    )
    ap.add_argument(
        "--init-from",
        default=None,
        help="continue an answer reader (an answer_reader folder): its weights, question words and shape "
        "(its shape replaces --width, --layers, the pointer and numeric flags, --no-image; --relations, "
        "--word-roles and --attribute-match may add what they name to a reader without it); a fresh "
        "optimiser and schedule over --minutes",
    )
    ap.add_argument("--num-val", type=int, default=4000, help="val records scored (all phrasings)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        default=None,
        help=f"write {ANSWER_READER_DIR}/ (the trained network), results.json and, with --heldout, "
        "answers.jsonl here",
    )
