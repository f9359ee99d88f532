"""Like cut_cache.py (first N train rows, manifest fixed, tokenizer paths relative), but val keeps only
the rows `gst train gst`'s evaluate() scores: eval_rows(num_val_full, V, seed 0) with V=256 by default
(= eval.num_eval_pairs = eval.num_pose_pairs of the gpu1 run). With exactly those V rows kept,
eval_rows(V, V, 0) selects all of them, so a run with eval.num_eval_pairs=eval.num_pose_pairs=V scores
exactly the pairs the full cache's eval scored (same metrics as gpu1's). Usage: SRC DST N [V]"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from gst.data.token_cache import baseline_summary
from gst.training.gst_eval import eval_rows

src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
v = int(sys.argv[4]) if len(sys.argv) > 4 else 256
if dst.exists():
    shutil.rmtree(dst)
m = json.loads((src / "manifest.json").read_text())
full = {s: m["splits"][s]["num_pairs"] for s in ("train", "val")}
keep = {"train": np.arange(min(n, full["train"])), "val": eval_rows(full["val"], v, 0)}
for split, rows in keep.items():
    (dst / split).mkdir(parents=True)
    entry = m["splits"][split]
    for key, spec in entry["arrays"].items():
        a = np.load(src / split / f"{key}.npy", mmap_mode="r")
        assert list(a.shape) == spec["shape"] and str(a.dtype) == spec["dtype"], key
        np.save(dst / split / f"{key}.npy", np.ascontiguousarray(a[rows]))
        spec["shape"][0] = len(rows)
    used = np.unique(np.load(dst / split / "scene_index.npy"))
    entry["num_pairs"] = len(rows)
    entry["num_pairs_full"] = full[split]
    how = f"first {len(rows)}" if split == "train" else f"eval_rows({full[split]}, {v}, 0): {len(rows)}"
    entry["note"] = (
        f"{how} of {full[split]} rows; {len(used)} of {len(entry['scenes'])} scenes used "
        "(scenes list kept whole)"
    )
    entry["baseline_deg"] = baseline_summary(np.load(dst / split / "baseline_deg.npy"))
    print(split, len(rows), "rows,", len(used), "scenes used")
for kind in ("image", "camera"):
    m["tokenizers"][kind]["path"] = f"assets/tokenizers-tiny-aa/{kind}"
(dst / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
