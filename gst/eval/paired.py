"""Two methods' per-pair scores from `gst eval pose` / `gst eval nvs` results.json files, aligned pair by
pair, for paired bootstrap intervals (`scripts/pose_auc_bootstrap.py`, `scripts/nvs_bootstrap.py`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np


def two_method_parser(doc: str) -> argparse.ArgumentParser:
    """Arguments A.json METHOD_A B.json METHOD_B [--resamples] [--seed] of a paired bootstrap script."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a_json")
    p.add_argument("a_method")
    p.add_argument("b_json")
    p.add_argument("b_method")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return p


def method_rows(path: str, method: str, values: Callable[[dict], tuple]) -> dict[tuple, tuple]:
    """(scene, observed, target) -> ``values(row)`` for every row of ``method`` in a results.json."""
    methods = json.load(open(path))["methods"]
    if method not in methods:
        raise SystemExit(f"{path}: no method {method!r}; it has {sorted(methods)}")
    return {(r["scene"], r["obs"], r["tgt"]): values(r) for r in methods[method]["rows"]}


def paired_values(args: argparse.Namespace, values: Callable[[dict], tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Both methods' ``values`` on the same pairs, in one order. Shapes: -> (n, k), (n, k)."""
    a = method_rows(args.a_json, args.a_method, values)
    b = method_rows(args.b_json, args.b_method, values)
    if sorted(a) != sorted(b):
        raise SystemExit("the two runs scored different pairs: use the same --data, --num-pairs and --seed")
    keys = sorted(a)
    return np.array([a[k] for k in keys], dtype=float), np.array([b[k] for k in keys], dtype=float)
