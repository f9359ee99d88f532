"""Per-family spatial QA scores of several methods on the same questions, with paired bootstrap
intervals of each method's lead over the others: does a method beat a baseline by more than the noise of
a few hundred questions?

    python scripts/qa_compare.py A/predictions.jsonl B/predictions.jsonl ... [--kinds]
        [--phrasings train|heldout|all] [--by-scene] [--resamples 2000]

Each file is the ``predictions.jsonl`` that ``gst eval qa --out DIR`` writes (one line per question:
id, family, kind, phrasing split, answer, truth, score). The first file is the method under test; the
table gives every method's mean score per family (and kind, with ``--kinds``), overall and per
phrasing split, then the 95 % interval of (first - other) over resamples of the questions (the same
question ids in both, resampled within the family) and marks where the interval lies above 0; then each
method's phrasing gap (a question's training-phrasing score minus its held-out-phrasing score) with its
interval. ``--by-scene`` resamples scenes instead of questions (a question id starts with its scene,
"<scene>/<kind>/<n>/<t|h>", as `gst data qa` writes it): the questions of one scene share its objects and
views, so their scores are not independent, and this interval is the wider, honest one for a few scenes.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_predictions(path: str) -> dict[str, dict]:
    """id -> line of a ``predictions.jsonl``."""
    lines = {}
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            d = json.loads(line)
            missing = {"id", "family", "kind", "phrasing_split", "score"} - set(d)
            if missing:
                raise SystemExit(f"{path}:{i}: no {sorted(missing)}; write it with `gst eval qa --out DIR`")
            lines[d["id"]] = d
    return lines


def paired_interval(
    a: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    resamples: int,
    clusters: np.ndarray | None = None,
) -> tuple:
    """95 % bootstrap interval of mean(a - b), resampling the paired questions, or whole clusters of them
    (``clusters``: each question's cluster label, e.g. its scene; the mean of a resample is its summed
    difference over its question count). Shapes: a, b, clusters (n,)."""
    diff = a - b
    if clusters is None:
        idx = rng.integers(0, diff.size, size=(resamples, diff.size))  # (R, n)
        means = diff[idx].mean(1)  # (R,)
    else:
        labels, which = np.unique(clusters, return_inverse=True)
        sums = np.bincount(which, weights=diff, minlength=labels.size)  # (C,)
        counts = np.bincount(which, minlength=labels.size)  # (C,)
        idx = rng.integers(0, labels.size, size=(resamples, labels.size))  # (R, C)
        means = sums[idx].sum(1) / counts[idx].sum(1)  # (R,)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def scene_of(qid: str) -> str:
    """The scene of a question id "<scene>/<kind>/<n>/<t|h>"."""
    if "/" not in qid:
        raise SystemExit(f"--by-scene: question id {qid!r} does not start with its scene ('<scene>/...')")
    return qid.split("/", 1)[0]


def groups(lines: dict[str, dict], kinds: bool, splits: bool) -> dict[str, list[str]]:
    """Row name -> question ids, in the order rows are printed; ``splits``: overall rows per phrasing."""
    rows: dict[str, list[str]] = defaultdict(list)
    for qid, d in lines.items():
        rows[d["family"]].append(qid)
        if kinds:
            rows[f"{d['family']} / {d['kind']}"].append(qid)
        rows["overall"].append(qid)
        if splits:
            rows[f"overall, {d['phrasing_split']} phrasings"].append(qid)
    order = sorted(r for r in rows if not r.startswith("overall"))
    return {r: rows[r] for r in order + sorted(r for r in rows if r.startswith("overall"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", nargs="+", help="predictions.jsonl files; the first is under test")
    parser.add_argument("--kinds", action="store_true", help="also one row per question kind")
    parser.add_argument(
        "--phrasings",
        choices=("train", "heldout", "all"),
        default="all",
        help="only questions in these phrasings",
    )
    parser.add_argument(
        "--by-scene", action="store_true", help="resample scenes, not questions (the wider interval)"
    )
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = [read_predictions(p) for p in args.predictions]
    if args.phrasings != "all":
        runs = [{i: d for i, d in run.items() if d["phrasing_split"] == args.phrasings} for run in runs]
        if not runs[0]:
            raise SystemExit(f"{args.predictions[0]}: no questions in {args.phrasings} phrasings")
    for path, run in zip(args.predictions[1:], runs[1:], strict=True):
        if set(run) != set(runs[0]):
            raise SystemExit(f"{path}: not the same questions as {args.predictions[0]}")
    names = [str(Path(p).parent.name or p) for p in args.predictions]
    rng = np.random.default_rng(args.seed)
    head = ["questions", *names, *(f"{names[0]} - {n} (95 %)" for n in names[1:])]
    print("| | " + " | ".join(head) + " |")
    print("| --- " * (len(head) + 1) + "|")
    for row, ids in groups(runs[0], args.kinds, splits=args.phrasings == "all").items():
        scores = [np.array([run[i]["score"] for i in ids], dtype=np.float64) for run in runs]
        clusters = np.array([scene_of(i) for i in ids]) if args.by_scene else None
        cells = [str(len(ids)), *(f"{s.mean():.3f}" for s in scores)]
        for other in scores[1:]:
            lo, hi = paired_interval(scores[0], other, rng, args.resamples, clusters)
            cells.append(
                f"{scores[0].mean() - other.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]{' *' if lo > 0 else ''}"
            )
        print(f"| {row} | " + " | ".join(cells) + " |")
    unit = "scenes (resampled)" if args.by_scene else "questions"
    print(f"\n* the interval lies above 0: {names[0]} leads beyond the noise of these {unit}")
    if args.phrasings == "all":
        print("\nPhrasing gap: training-phrasing score - held-out-phrasing score of the same question (95 %)")
        for name, run in zip(names, runs, strict=True):
            pairs = phrasing_pairs(run)
            if pairs:
                train = np.array([run[t]["score"] for t, _ in pairs], np.float64)
                held = np.array([run[h]["score"] for _, h in pairs], np.float64)
                clusters = np.array([scene_of(t) for t, _ in pairs]) if args.by_scene else None
                lo, hi = paired_interval(
                    train, held, np.random.default_rng(args.seed), args.resamples, clusters
                )
                print(
                    f"- {name}: {train.mean() - held.mean():+.3f} [{lo:+.3f}, {hi:+.3f}], "
                    f"{len(pairs)} questions"
                )


def phrasing_pairs(run: dict[str, dict]) -> list[tuple[str, str]]:
    """(training-phrasing id, held-out-phrasing id) of every question asked in both (ids "<instance>/t" and
    "<instance>/h", as `gst data qa` writes them)."""
    by_split = {(qid.rsplit("/", 1)[0], d["phrasing_split"]): qid for qid, d in run.items()}
    return [(qid, by_split[inst, "heldout"]) for (inst, split), qid in sorted(by_split.items())
            if split == "train" and (inst, "heldout") in by_split]  # fmt: skip


if __name__ == "__main__":
    main()
