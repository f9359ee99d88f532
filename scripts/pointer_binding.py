"""Where an answer reader's pointers put their mass, per question kind and role: on the cells of the role's
own objects, or on the other object the question names (roles a and b of a two-object question)?

    OMP_NUM_THREADS=1 python scripts/pointer_binding.py --answer-reader assets/gst-tiny/answer_reader \\
        --chat data/chat4_world128 --cells data/cache_world128_p64 [--checkpoint assets/gst-tiny] [--num 1500]

Reads ``--num`` records of the chat cache's val split (seeded), with their pointer targets from the cell
labels of ``--cells`` (`gst data cells`). Per (role, kind) with at least one record whose role shows in a
cell: the mean IoU of the cells picked (logit > 0) against the role's cells (as ``val_pointer_iou`` of
`gst train answer-reader`), the mean fraction of the pointer's sigmoid mass on the role's own cells and,
for roles a and b, on the other role's cells (a pointer that binds its words puts far more on its own).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from gst.model.answer_reader import ROLES, inputs
from gst.training.answer_reader import pointer_targets, val_sample


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answer-reader", required=True)
    ap.add_argument("--chat", required=True)
    ap.add_argument("--cells", required=True)
    ap.add_argument("--checkpoint", default="assets/gst-tiny", help="the pose reader it was trained over")
    ap.add_argument("--num", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sample = val_sample(args.answer_reader, args.chat, args.cells, args.checkpoint, args.num, args.seed)
    net, rows, d = sample.net, sample.rows, sample.d
    if not net.config.pointer_layers:
        raise SystemExit(f"--answer-reader {args.answer_reader}: has no pointers")
    iou, own, other = defaultdict(list), defaultdict(list), defaultdict(list)
    with torch.no_grad():
        for start in range(0, len(rows), 250):
            idx = torch.arange(start, min(start + 250, len(rows)))
            ptr = net(*inputs(d, idx, net.config.no_image), num_slots=1).pointers
            hit, defined = pointer_targets(d, idx)
            hit, pick = hit.bool() & defined, (ptr > 0) & defined
            mass = ptr.sigmoid() * defined  # (b, V n, R)
            total = mass.sum(1).clamp(min=1e-6)  # (b, R)
            for j, i in enumerate(idx.tolist()):
                kind = d["records"][i].kind
                for k, role in enumerate(ROLES):
                    if not hit[j, :, k].any():
                        continue
                    union = (pick[j, :, k] | hit[j, :, k]).sum().item()
                    iou[role, kind].append((pick[j, :, k] & hit[j, :, k]).sum().item() / union)
                    own[role, kind].append((mass[j, :, k] * hit[j, :, k]).sum().item() / total[j, k].item())
                    if role in ("a", "b"):
                        o = ROLES.index("b" if role == "a" else "a")
                        if hit[j, :, o].any():
                            share = (mass[j, :, k] * (hit[j, :, o] & ~hit[j, :, k])).sum() / total[j, k]
                            other[role, kind].append(share.item())
    print(f"{args.answer_reader}: {len(rows)} val records of {args.chat}")
    print(f"{'role':<8} {'kind':<12} {'n':>4} {'IoU':>6} {'own mass':>9} {'other object':>13}")
    for key in sorted(iou):
        o = f"{np.mean(other[key]):.2f}" if other[key] else ""
        n, i, m = len(iou[key]), np.mean(iou[key]), np.mean(own[key])
        print(f"{key[0]:<8} {key[1]:<12} {n:>4} {i:>6.3f} {m:>9.2f} {o:>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
