"""What limits an answer reader's grounding and its distances: the pointers, the cell heads, or the reader?

    OMP_NUM_THREADS=1 python scripts/grounding_limits.py --answer-reader assets/gst-tiny/answer_reader \\
        --chat data/chat4_world128 --cells data/cache_world128_p64 [--checkpoint assets/gst-tiny] \\
        [--num 3000] [--probe-minutes 2.5]

On ``--num`` records of the chat cache's val split (seeded), with cell labels from ``--cells`` (`gst data
cells`), it prints:

1. **Pointers**: per reference form of the question's object ("the red box" colour+shape, "the box"
   shape, "the red object" colour, "the leftmost object" position), the share of roles whose
   top-scoring cell shows the role's object; for colour+shape references also the same share when the
   cell is chosen from the pose reader's cell heads given the exact words (log P(object) + log P(colour)
   + log P(shape)): a ceiling of the attribute match on these heads.
2. **Distances** (MRA, ``dist_cam`` / ``dist_pair``): the reader's answers; the distance between the
   cell-head centres pooled by the reader's pointers (sigmoid weights, top-1 cell); pooled by the true
   cells of the objects (a ceiling of that readout); the median answer of these records (a constant).
3. **Cell heads**: shape and colour accuracy of the pose reader's (frozen, linear) cell heads on the cells
   that show an object; with ``--probe-minutes`` M > 0, heads trained for M CPU-minutes each on the
   frozen features of the train split's views (a linear head again, an MLP, a 3x3 conv over the features
   and code features) and scored the same way: is there more in the features than the linear head reads?
   With ``--pixel-probe-minutes`` M > 0, a small CNN trained from scratch for M CPU-minutes on the
   pixels the image tokenizer's decoder makes of the codes of ``--pixel-views`` training views: do the
   codes hold more shape than the pose reader's features?
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gst.data.cell_labels import COLOUR_CLASSES, SHAPE_CLASSES
from gst.data.chat_cache import open_chat_cache, view_objects
from gst.eval.qa_metrics import mean_relative_accuracy
from gst.model.answer_geometry import cell_readouts
from gst.model.answer_inputs import text_tokenizer, view_features
from gst.model.answer_reader import ROLES, answer, inputs
from gst.training.answer_reader import pointer_targets, val_sample

POSITION_WORDS = ("left", "right", "closest", "nearest", "farthest", "furthest")


def reference_form(ref: str) -> str:
    """The form of an object reference (``gst.data.qa_families.reference_forms``)."""
    if any(w in ref for w in POSITION_WORDS):
        return "position"
    if ref.split()[-1] in ("object", "thing", "item"):
        return "colour"
    n = len(ref.split())
    return "shape" if n == 2 else "colour+shape" if n == 3 else "other"


def pointer_report(d, hit, defined, ptr) -> None:
    cells = d["feats"][d["views"]].flatten(1, 2).float()
    ro = cell_readouts(cells)
    n = d["feats"].shape[1]
    top1, exact = defaultdict(list), []
    for i, rec in enumerate(d["records"]):
        shown = d["shown"][i].repeat_interleave(n)
        for r, role in enumerate(ROLES):
            if role not in (rec.references or {}) or not (hit[i, :, r] * defined[i, :, r]).any():
                continue
            ref = rec.references[role]
            top1[reference_form(ref)].append(float(hit[i, int(ptr[i, :, r].argmax()), r]))
            words = ref.split()
            if (
                reference_form(ref) == "colour+shape"
                and words[-2] in COLOUR_CLASSES
                and words[-1] in SHAPE_CLASSES
            ):
                score = (
                    F.logsigmoid(ro["object"][i])
                    + ro["colour"][i, :, COLOUR_CLASSES.index(words[-2])].clamp_min(1e-6).log()
                    + ro["shape"][i, :, SHAPE_CLASSES.index(words[-1])].clamp_min(1e-6).log()
                ).masked_fill(~shown, float("-inf"))
                exact.append(float(hit[i, int(score.argmax()), r]))
    print("\n1. pointers: share of roles whose top cell shows the role's object")
    for form, v in sorted(top1.items()):
        print(f"   {form:<13} {len(v):>5} roles  {np.mean(v):.3f}")
    print(
        f"   colour+shape from the cell heads given the exact words: {len(exact)} roles  {np.mean(exact):.3f}"
    )


def attribute_labels(split, cells, cache, rows):
    """The shape and colour class of every cell of the views of ``rows`` (-1: no object)."""
    image_rows = sorted({r for row in rows for r in split.records[row]["image_rows"]})
    labels = {a: view_objects(split, cells, cache, a)[image_rows] for a in ("shape", "colour")}
    return np.array(image_rows), {a: torch.from_numpy(v) for a, v in labels.items()}


class ProbeHead(nn.Module):
    def __init__(self, dims: int, kind: str, grid: tuple[int, int]):
        super().__init__()
        k = 3 if kind == "conv" else 1
        out = len(SHAPE_CLASSES) + len(COLOUR_CLASSES)
        layers = [nn.Conv2d(dims, out, 1)] if kind == "linear" else [
            nn.Conv2d(dims, 128, k, padding=k // 2), nn.GELU(), nn.Conv2d(128, 128, k, padding=k // 2),
            nn.GELU(), nn.Conv2d(128, out, 1),
        ]  # fmt: skip
        self.net, self.grid = nn.Sequential(*layers), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, F) -> (B, n, S + C)
        y = self.net(x.transpose(1, 2).reshape(len(x), x.shape[-1], *self.grid))
        return y.flatten(2).transpose(1, 2)


def attribute_accuracy(shape_logits, colour_logits, labels) -> tuple[float, float]:
    m = labels["shape"] >= 0
    shape = (shape_logits.argmax(-1)[m] == labels["shape"][m]).float().mean()
    colour = (colour_logits.argmax(-1)[m] == labels["colour"][m]).float().mean()
    return float(shape), float(colour)


def cell_head_report(args, reader, cache, cells, val, val_rows) -> None:
    va_rows, lva = attribute_labels(val, cells, cache, val_rows)

    def features(split, image_rows):  # the reader's features and readouts, then the code features
        codes = split.image_codes[image_rows]
        with torch.no_grad():
            ids = torch.from_numpy(codes.astype(np.int64)).flatten(1)
            return torch.cat([view_features(reader, codes).float(), reader.code_feats(ids)], -1)

    fva = features(val, va_rows)
    base = fva.shape[-1] - reader.code_feats.embedding_dim  # without the code features
    ro = cell_readouts(fva[..., :base])
    s, c = attribute_accuracy(ro["shape"], ro["colour"], lva)
    m = int((lva["shape"] >= 0).sum())
    print(f"\n3. cell heads on {m} object cells of {len(va_rows)} val views: shape {s:.3f}, colour {c:.3f}")
    if args.probe_minutes <= 0 and args.pixel_probe_minutes <= 0:
        return
    train = open_chat_cache(args.chat).split("train")
    tr_rows = np.random.default_rng(args.seed).permutation(train.rows("train"))[: args.num * 4]
    tr_image_rows, ltr = attribute_labels(train, cells, cache, tr_rows)
    grid = tuple(val.image_codes.shape[1:])
    if args.probe_minutes > 0:
        ftr = features(train, tr_image_rows)
        for kind, codes_too in (("linear", False), ("mlp", False), ("conv", True)):
            xtr, xva = (f if codes_too else f[..., :base] for f in (ftr, fva))
            mu, sd = xtr.mean((0, 1)), xtr.std((0, 1)) + 1e-3
            torch.manual_seed(args.seed)
            head = ProbeHead(xtr.shape[-1], kind, grid)
            steps, (s, c) = train_probe(
                head, (xtr - mu) / sd, ltr, (xva - mu) / sd, lva, args.probe_minutes, args
            )
            inputs_ = "features + code features" if codes_too else "features"
            print(f"   {kind} head on the frozen {inputs_}, {steps} updates: shape {s:.3f}, colour {c:.3f}")
    if args.pixel_probe_minutes > 0:  # what the codes hold: a CNN from scratch on their decoded pixels
        from gst.api import GST

        gst = GST.from_pretrained(args.checkpoint)
        n_tr = min(args.pixel_views, len(tr_image_rows))

        def pixels(split, image_rows):
            codes = torch.from_numpy(split.image_codes[image_rows].astype(np.int64)).flatten(1)
            return torch.cat([gst.decode_images(codes[i : i + 256] + gst.layout.image_offset)
                              for i in range(0, len(codes), 256)])  # fmt: skip

        pick = np.sort(np.random.default_rng(args.seed).permutation(len(tr_image_rows))[:n_tr])
        xtr, xva = pixels(train, tr_image_rows[pick]), pixels(val, va_rows)
        torch.manual_seed(args.seed)
        net = PixelProbe(grid)
        ltr_px = {a: v[torch.from_numpy(pick)] for a, v in ltr.items()}
        steps, (s, c) = train_probe(net, xtr, ltr_px, xva, lva, args.pixel_probe_minutes, args, batch=32)
        what = f"CNN on the decoded pixels of {n_tr} train views, {steps} updates"
        print(f"   {what}: shape {s:.3f}, colour {c:.3f}")


def train_probe(head, xtr, ltr, xva, lva, minutes: float, args, batch: int = 128) -> tuple[int, tuple]:
    """Train ``head`` (inputs -> (B, n, S + C) logits) for ``minutes`` of process CPU time on the cells'
    shape and colour classes; its updates and its (shape, colour) accuracy on the val views."""
    S = len(SHAPE_CLASSES)
    opt = torch.optim.AdamW(head.parameters(), 2e-3, weight_decay=0.01)
    start, steps, g = time.process_time(), 0, torch.Generator().manual_seed(args.seed)
    while time.process_time() - start < minutes * 60:
        idx = torch.randint(0, len(xtr), (batch,), generator=g)
        y = head(xtr[idx])
        loss = sum(
            F.cross_entropy(part.flatten(0, 1), ltr[a][idx].flatten(), ignore_index=-1)
            for part, a in ((y[..., :S], "shape"), (y[..., S:], "colour"))
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    with torch.no_grad():
        y = torch.cat([head(xva[i : i + 256]) for i in range(0, len(xva), 256)])
    return steps, attribute_accuracy(y[..., :S], y[..., S:], lva)


class PixelProbe(nn.Module):
    """A small CNN from an image to one shape + colour logit vector per cell of the code grid."""

    def __init__(self, grid: tuple[int, int]):
        super().__init__()
        out = len(SHAPE_CLASSES) + len(COLOUR_CLASSES)
        self.grid = grid
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, 96, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(96, 128, 3, stride=2, padding=1),
            nn.GELU(), nn.Conv2d(128, 128, 3, padding=1), nn.GELU(), nn.Conv2d(128, out, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1] -> (B, n, S + C)
        y = F.adaptive_avg_pool2d(self.net(x * 2 - 1), self.grid)
        return y.flatten(2).transpose(1, 2)


def distance_report(net, d, hit, defined, ptr) -> None:
    rows = [i for i, rec in enumerate(d["records"]) if rec.kind in ("dist_cam", "dist_pair")]
    cen = cell_readouts(d["feats"][d["views"]].flatten(1, 2).float())["centre"]
    texts = answer(net, d, text_tokenizer())
    a, b = ROLES.index("a"), ROLES.index("b")
    out, truth = defaultdict(list), defaultdict(list)

    def pooled(w, i):
        return (w[:, None] * cen[i]).sum(0) / w.sum().clamp_min(1e-6)

    def one_hot(logits):
        return torch.zeros_like(logits).scatter_(0, logits.argmax().view(1), 1.0)

    for i in rows:
        rec, t = d["records"][i], float(d["records"][i].answer.value)
        truth[rec.kind].append(t)
        out[rec.kind, "the reader"].append(mean_relative_accuracy(float(texts[i].split()[0]), t))
        ha, hb = hit[i, :, a] * defined[i, :, a], hit[i, :, b] * defined[i, :, b]
        ways = {
            "centres pooled by the pointers": (ptr[i, :, a].sigmoid(), ptr[i, :, b].sigmoid()),
            "centres of the pointers' top cells": (one_hot(ptr[i, :, a]), one_hot(ptr[i, :, b])),
            "centres pooled by the true cells": (ha, hb),
        }
        for name, (wa, wb) in ways.items():
            if wa.sum() == 0 or (rec.kind == "dist_pair" and wb.sum() == 0):
                continue
            ca = pooled(wa, i)
            value = ca.norm() if rec.kind == "dist_cam" else (ca - pooled(wb, i)).norm()
            out[rec.kind, name].append(mean_relative_accuracy(float(value), t))
    print("\n2. distances, MRA")
    for kind in sorted(truth):
        median = float(np.median(truth[kind]))
        const = np.mean([mean_relative_accuracy(median, t) for t in truth[kind]])
        print(f"   {kind}: {len(truth[kind])} records; the median answer {const:.3f}")
        for (k, name), v in sorted(out.items()):
            if k == kind:
                print(f"     {name:<36} {len(v):>5}  {np.mean(v):.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answer-reader", required=True)
    ap.add_argument("--chat", required=True)
    ap.add_argument("--cells", required=True)
    ap.add_argument("--checkpoint", default="assets/gst-tiny", help="the pose reader it was trained over")
    ap.add_argument("--num", type=int, default=3000, help="val records (and 4x as many train for probes)")
    ap.add_argument("--probe-minutes", type=float, default=0.0, help="CPU-minutes per probe head (0: none)")
    ap.add_argument(
        "--pixel-probe-minutes",
        type=float,
        default=0.0,
        help="CPU-minutes of a CNN on decoded pixels (0: none)",
    )
    ap.add_argument(
        "--pixel-views", type=int, default=4000, help="training views decoded for the pixel probe"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sample = val_sample(args.answer_reader, args.chat, args.cells, args.checkpoint, args.num, args.seed)
    net, rows, d = sample.net, sample.rows, sample.d
    hit, defined = pointer_targets(d, torch.arange(len(rows)))
    with torch.no_grad():
        ptr = torch.cat(
            [net(*inputs(d, torch.arange(s, min(s + 250, len(rows))), False), num_slots=1).pointers
             for s in range(0, len(rows), 250)]
        )  # fmt: skip
    print(f"{args.answer_reader}: {len(rows)} val records of {args.chat}")
    pointer_report(d, hit, defined, ptr)
    distance_report(net, d, hit, defined, ptr)
    cell_head_report(args, sample.reader, sample.cache, sample.labels, sample.val, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
