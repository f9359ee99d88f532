"""QA records answered as `gst chat` answers them: the chat router (gst.eval.qa_reader.chat_router: the
checkpoint's answer reader, in the answer form its answer forms recognise from the question alone) or,
for the questions it does not take, the world model (greedy, no segments), each record in a fresh chat
with its views attached. Writes predictions for `gst eval qa --predictions` with who answered each.
``--no-router``: the world model answers every record (`gst chat --no-answer-reader`).

    OMP_NUM_THREADS=1 python scripts/chat_routing.py --data data/qa3_heldout_s1000_10.jsonl \\
        --scenes data/eval_heldout_s1000_10 --checkpoint assets/gst-tiny --out runs/chat_routing/answers.jsonl
    gst eval qa --data data/qa3_heldout_s1000_10.jsonl --eval-split all \\
        --predictions runs/chat_routing/answers.jsonl --out runs/eval/chat_routing
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gst.api import GST
from gst.data.qa_types import read_jsonl
from gst.eval.qa_baselines import scene_image_resolver
from gst.eval.qa_reader import chat_router


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a QA file of `gst data qa`")
    ap.add_argument("--scenes", required=True, help="the scene folders its questions were made from")
    ap.add_argument("--checkpoint", default="assets/gst-tiny")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="longest reply of the world model")
    ap.add_argument("--no-router", action="store_true", help="the world model answers every record")
    ap.add_argument("--out", required=True, help="predictions JSONL (id, answer_text, answered_by)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gst = GST.from_pretrained(args.checkpoint)
    router = None if args.no_router else chat_router(gst)
    if router is None and not args.no_router:
        raise SystemExit(f"--checkpoint {args.checkpoint}: its answer_reader/ has no answer_forms.json")
    resolve = scene_image_resolver(args.scenes)
    records = read_jsonl(args.data)
    lines, who = [], Counter()
    for r in tqdm(records, desc="chat"):
        images = [resolve(r.scene, v) for v in r.views]
        reply = gst.start_chat(max_new_tokens=args.max_new_tokens, allow_segments=False, router=router).ask(
            r.question, images
        )
        who[r.phrasing_split, reply.answered_by] += 1
        row = {"id": r.id, "answer_text": reply.text.strip(), "answered_by": reply.answered_by}
        lines.append(json.dumps(row) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines))
    for (split, by), n in sorted(who.items()):
        print(f"{split} phrasings: {n} answered by the {by}")
    print(f"{len(lines)} answers -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
