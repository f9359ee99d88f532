"""A reduced copy of a chat cache (gst.data.chat_cache) for a device run.
Usage: cut_chat_cache.py SRC DST N_TRAIN N_VAL [SCENE_STEP]
train: N_TRAIN records with phrasing_split == "train" (the only ones training reads: ChatSplit.rows("train")),
       taken evenly spaced over the records of every SCENE_STEP-th scene (default 1 = all scenes);
val:   about N_VAL records: every k-th QA instance with all its phrasings (train and held-out), so the
       chat/ and chat/heldout/ eval metrics both have rows.
Only the image_codes rows the kept records show are kept (in their old order) and image_rows renumbered;
manifest counts, scenes and array shapes fixed, tokenizer paths made relative to the repo root
(assets/tokenizers-tiny-aa/{image,camera}); the qa entry (path, sha256 of the full QA file) is kept as is."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

src, dst, n_train, n_val = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
scene_step = int(sys.argv[5]) if len(sys.argv) > 5 else 1
m = json.loads((src / "manifest.json").read_text())


def read(split):
    with open(src / split / "records.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pick_train(records):
    scenes = sorted({r["scene"] for r in records})
    keep_scenes = set(scenes[::scene_step])
    pool = [r for r in records if r["phrasing_split"] == "train" and r["scene"] in keep_scenes]
    idx = np.unique(np.linspace(0, len(pool) - 1, min(n_train, len(pool))).round().astype(int))
    return [pool[i] for i in idx]


def pick_val(records):
    instances = list(dict.fromkeys(r["instance"] for r in records))  # in file order
    per = len(records) / len(instances)
    want = max(1, int(round(n_val / per)))
    idx = np.unique(np.linspace(0, len(instances) - 1, min(want, len(instances))).round().astype(int))
    keep = {instances[i] for i in idx}
    return [r for r in records if r["instance"] in keep]


if dst.exists():
    shutil.rmtree(dst)
for split, pick in (("train", pick_train), ("val", pick_val)):
    entry = m["splits"][split]
    records = read(split)
    assert len(records) == entry["num_records"], split
    kept = pick(records)
    codes = np.load(src / split / "image_codes.npy", mmap_mode="r")
    assert list(codes.shape) == entry["arrays"]["image_codes"]["shape"], split
    used = np.unique(np.asarray([i for r in kept for i in r["image_rows"]], dtype=np.int64))
    new = {int(old): i for i, old in enumerate(used)}
    for r in kept:
        r["image_rows"] = [new[i] for i in r["image_rows"]]
    (dst / split).mkdir(parents=True)
    np.save(dst / split / "image_codes.npy", np.ascontiguousarray(codes[used]))
    with open(dst / split / "records.jsonl", "w", encoding="utf-8") as f:
        for r in kept:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    scenes = sorted({r["scene"] for r in kept})
    full = {k: entry[k] for k in ("num_records", "num_train_phrasing_records", "num_images", "num_scenes")}
    entry.update(
        num_records=len(kept),
        num_train_phrasing_records=sum(r["phrasing_split"] == "train" for r in kept),
        num_images=len(used),
        num_scenes=len(scenes),
        scenes=scenes,
        full=full,
        note=f"reduced copy of {src} by .devdata/tools/cut_chat_cache.py",
    )
    entry["arrays"]["image_codes"]["shape"][0] = len(used)
    print(
        split,
        f"{len(kept)} records ({entry['num_train_phrasing_records']} train phrasings),",
        f"{len(used)} images, {len(scenes)} scenes; full: {full}",
    )
for kind in ("image", "camera"):
    m["tokenizers"][kind]["path"] = f"assets/tokenizers-tiny-aa/{kind}"
(dst / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")
