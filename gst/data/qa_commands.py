"""`gst data qa`: generate spatial questions and typed answers (`gst eval qa` lives in gst.eval.qa_commands).

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
from pathlib import Path


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
