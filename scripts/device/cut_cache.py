"""Copy a token cache (e.g. data/cache_world128_p64) to DST (e.g. .devdata/cache) for a device run.
Usage: cut_cache.py SRC DST N: all of val, the first N train rows (N a multiple of
64 = whole scenes), manifest counts fixed, tokenizer paths made relative to the repo root."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from gst.data.token_cache import baseline_summary

src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
if dst.exists():
    shutil.rmtree(dst)
(dst / "train").mkdir(parents=True)
shutil.copytree(src / "val", dst / "val")
m = json.loads((src / "manifest.json").read_text())
tr = m["splits"]["train"]
n = min(n, tr["num_pairs"])
for key, spec in tr["arrays"].items():
    a = np.load(src / "train" / f"{key}.npy", mmap_mode="r")
    assert list(a.shape) == spec["shape"] and str(a.dtype) == spec["dtype"], key
    np.save(dst / "train" / f"{key}.npy", np.ascontiguousarray(a[:n]))
    spec["shape"][0] = n
used = np.unique(np.load(dst / "train" / "scene_index.npy"))
tr["num_pairs"] = n
tr["num_pairs_full"] = json.loads((src / "manifest.json").read_text())["splits"]["train"]["num_pairs"]
tr["note"] = (
    f"first {n} of {tr['num_pairs_full']} rows; {len(used)} of {len(tr['scenes'])} scenes used "
    "(scenes list kept whole)"
)
tr["baseline_deg"] = baseline_summary(np.load(dst / "train" / "baseline_deg.npy"))
for kind in ("image", "camera"):
    m["tokenizers"][kind]["path"] = f"assets/tokenizers-tiny-aa/{kind}"
(dst / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
print(n, "train rows,", len(used), "scenes used")
