"""`gst data qa` (generate spatial questions) and `gst eval qa` (score answers to them).

- ``gst data qa --scenes DIR --out FILE.jsonl --seed S [--split train|val|all] [--phrasings
  train|heldout|all]``: questions for every scene folder under DIR (format and rules in gst.data.qa);
  prints the questions per family and writes ``--stats FILE`` (counts and skips by reason) if asked.
- ``gst eval qa --data FILE.jsonl --method most-frequent|oracle [--json] [--out DIR]``: scores a method
  on the ``--eval-split`` (default val) records, per family, kind and phrasing split
  (gst.eval.qa_metrics). ``--predictions FILE`` scores any method's answers; ``--checkpoint DIR``
  (methods ``model`` and ``text-only``) lands with issue 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EVAL_METHODS = ("most-frequent", "oracle", "model", "text-only")


def register_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qa",
        help="generate spatial questions and typed answers from scene metadata (JSONL)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenes", required=True, help="a scene folder, or a folder of scene folders (gst data synth)"
    )
    p.add_argument("--out", required=True, help="output JSONL file, one question per line")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--split",
        choices=("train", "val", "all"),
        default="all",
        help="scenes to use: the hash split of their folder name (default all)",
    )
    p.add_argument(
        "--phrasings",
        choices=("train", "heldout", "all"),
        default="all",
        help="training phrasings, held-out phrasings, or one record of each per question (default)",
    )
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of scenes in val (default 0.1)")
    p.add_argument("--max-per-kind", type=int, default=4, help="questions per scene and kind (default 4)")
    p.add_argument("--max-pairs", type=int, default=600, help="view pairs per scene, two-view questions")
    p.add_argument("--stats", default=None, help="write generation counts and skips (JSON) here")
    p.add_argument("--json", action="store_true", help="print the generation stats JSON on stdout")
    p.set_defaults(func=run_data_qa)


def run_data_qa(args: argparse.Namespace) -> int:
    from gst.data.loaders import load_scene
    from gst.data.pairs import scene_split
    from gst.data.qa import QAConfig, answer_histogram, discover_scene_dirs, generate_qa
    from gst.data.qa_types import write_jsonl

    config = QAConfig(
        val_fraction=args.val_fraction, max_per_kind=args.max_per_kind, max_pairs=args.max_pairs
    )
    dirs = discover_scene_dirs(args.scenes)
    if args.split != "all":  # skip loading the other split's scenes (generate_qa filters them too)
        dirs = [d for d in dirs if scene_split(d.resolve().name, config.val_fraction) == args.split]
    scenes = (load_scene(d) for d in dirs)
    records, stats = generate_qa(
        scenes, config=config, seed=args.seed, split=args.split, phrasings=args.phrasings
    )
    if not records:
        raise ValueError(
            f"--scenes {args.scenes}: no question generated (split {args.split!r}); check the scenes"
        )
    n = write_jsonl(records, args.out)
    summary = stats.to_json()
    summary.update(
        {
            "seed": args.seed,
            "split": args.split,
            "phrasings": args.phrasings,
            "config": vars(config),
            "answers": answer_histogram(records),
        }
    )
    if args.stats:
        Path(args.stats).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stats).write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {n} records ({summary['questions']} questions) from {sum(stats.scenes.values())} scenes "
            f"{dict(stats.scenes)} to {args.out}"
        )
        for fam, f in summary["families"].items():
            kinds = ", ".join(f"{k} {v['questions']}" for k, v in f["kinds"].items())
            print(f"  {fam:<20} {f['questions']:>6}  ({kinds})")
    return 0


def register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "qa",
        help="spatial QA: exact match, MRA, 3D IoU, per family and phrasing split",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="QA JSONL from `gst data qa`")
    p.add_argument(
        "--method",
        choices=EVAL_METHODS,
        default=None,
        help="most-frequent (fitted on the train-split records), oracle (scorer check), model and "
        "text-only (need --checkpoint); default most-frequent unless --predictions is given",
    )
    p.add_argument("--predictions", default=None, help='score answers from JSONL {"id", "answer_text"} lines')
    p.add_argument(
        "--train-data", default=None, help="fit the baseline on this JSONL (default: --data's train split)"
    )
    p.add_argument(
        "--eval-split", choices=("train", "val", "all"), default="val", help="records to score (default val)"
    )
    p.add_argument(
        "--phrasings", choices=("train", "heldout", "all"), default="all", help="phrasings to score"
    )
    p.add_argument("--checkpoint", default=None, help="world-model checkpoint folder (lands with issue 4)")
    p.add_argument(
        "--scenes", default=None, help="scene folders, for the model's input images (with --checkpoint)"
    )
    p.add_argument("--json", action="store_true", help="print the results JSON on stdout")
    p.add_argument("--out", default=None, help="write results.json and report.md here")
    p.set_defaults(func=run_eval_qa)


def _predictor(args: argparse.Namespace, records: list, all_records: list):
    from gst.data.qa_baselines import MostFrequentBaseline, OraclePredictor, PredictionsFile
    from gst.data.qa_types import read_jsonl

    if args.checkpoint is not None or args.method in ("model", "text-only"):
        raise RuntimeError(
            f"--checkpoint {args.checkpoint}: the world model (and its chat function) lands with issue 4; "
            'until then score a model\'s answers with --predictions FILE (JSONL of {"id", "answer_text"}), '
            "or run --method most-frequent"
        )
    if args.predictions is not None:
        if args.method is not None:
            raise ValueError("give either --method or --predictions, not both")
        return PredictionsFile(args.predictions)
    if args.method == "oracle":
        return OraclePredictor()
    train = read_jsonl(args.train_data) if args.train_data else all_records
    train = [r for r in train if r.split == "train" and r.phrasing_split == "train"]
    if not train:
        raise ValueError(
            "most-frequent needs training-split records with training phrasings; "
            f"{args.train_data or args.data} has none: generate with --split all (or pass --train-data FILE)"
        )
    return MostFrequentBaseline(train)


def run_eval_qa(args: argparse.Namespace) -> int:
    from gst.data.qa_types import read_jsonl
    from gst.eval.qa_metrics import METRIC_DEFINITIONS, evaluate_texts, markdown_report

    all_records = read_jsonl(args.data)
    records = [
        r
        for r in all_records
        if args.eval_split in ("all", r.split) and args.phrasings in ("all", r.phrasing_split)
    ]
    if not records:
        raise ValueError(
            f"--data {args.data}: no records with split {args.eval_split!r} and phrasings "
            f"{args.phrasings!r}; regenerate with `gst data qa --split all --phrasings all` "
            "or change --eval-split"
        )
    predictor = _predictor(args, records, all_records)
    texts = predictor.predict(records)
    results = {
        "task": "qa",
        "method": predictor.name,
        "data": {
            "path": str(Path(args.data).resolve()),
            "eval_split": args.eval_split,
            "phrasings": args.phrasings,
            "num_records": len(records),
            "num_scenes": len({r.scene for r in records}),
            "train_data": args.train_data,
        },
        "metrics": evaluate_texts(records, texts),
        "metric_definitions": METRIC_DEFINITIONS,
    }
    if hasattr(predictor, "table"):
        results["baseline_answers"] = predictor.table()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "report.md").write_text(markdown_report(results))
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(markdown_report(results))
    return 0
