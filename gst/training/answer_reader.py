"""The training of `gst train answer-reader` (its flags, outputs and an example:
gst.training.answer_reader_commands): the chat cache encoded for the answer reader
(gst.model.answer_reader), its losses, and the run."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gst.api_checkpoint import resolve_checkpoint
from gst.data.cell_labels import open_cell_labels
from gst.data.chat_cache import open_chat_cache, view_elevations, view_objects
from gst.data.qa_types import QARecord
from gst.data.token_cache import open_token_cache
from gst.eval.qa_baselines import MostFrequentBaseline
from gst.eval.qa_metrics import score_texts, summarize
from gst.hashing import file_sha256
from gst.model.answer_inputs import encode_records, text_tokenizer, word_role_targets
from gst.model.answer_numbers import (
    IGNORE,
    NUMERIC_DIMS,
    NUMERIC_SLICES,
    UNITS,
    number_word_values,
    numeric_target,
)
from gst.model.answer_reader import (
    ANSWER_READER_DIR,
    ELEVATION_SCALE,
    MAX_ANSWER,
    MAX_OBJECTS,
    MAX_QUESTION,
    ROLES,
    AnswerReader,
    AnswerReaderConfig,
    answer,
    inputs,
    words,
)
from gst.model.answer_reader_io import load_answer_reader, save_answer_reader
from gst.model.backbone import load_gst_model
from gst.tokenizers.numbers import NUMBER_BINS


def encode_split(
    split,
    rows: np.ndarray,
    reader: nn.Module,
    vocab: dict,
    text,
    objects: np.ndarray | None = None,
    code_features: bool = False,
    elevations: np.ndarray | None = None,
) -> dict:
    """``encode_records`` (gst.model.answer_inputs) of the chat split's records ``rows``, with the training
    targets: answer ids ``a``, the numeric head's targets, with ``objects`` (gst.data.chat_cache
    ``view_objects``) each record's pointer targets: the objects of each role (``ROLES``, -2 padded),
    whether the record has that role, and the object of each cell of its views; with ``elevations``
    (gst.data.chat_cache ``view_elevations``) the elevation of each record's first view (NaN without)."""
    end = text.vocab_size + 1
    refs = np.full((len(rows), len(ROLES), MAX_OBJECTS), -2, np.int64)
    has_role = np.zeros((len(rows), len(ROLES)), bool)
    a = np.full((len(rows), MAX_ANSWER), IGNORE, np.int64)
    for i, r in enumerate(rows):
        rec = split.records[r]
        ans = (text.encode(rec["answer_text"]) + [end])[:MAX_ANSWER]
        a[i, : len(ans)] = ans
        for k, role in enumerate(ROLES):
            if role in rec.get("objects", {}):
                idx = rec["objects"][role][:MAX_OBJECTS]
                refs[i, k, : len(idx)], has_role[i, k] = idx, True
    records = [
        QARecord.from_json({k: v for k, v in split.records[r].items() if k != "image_rows"}) for r in rows
    ]
    tags = np.zeros((len(rows), MAX_QUESTION, len(ROLES)), np.float32)
    tagged = np.zeros((len(rows), len(ROLES)), bool)
    for i, rec in enumerate(records):
        try:
            tags[i], tagged[i] = word_role_targets(rec.question, rec.references)
        except ValueError as err:
            raise ValueError(f"{split.root}: record {rec.id}: {err}") from None
    view_rows = [split.records[r]["image_rows"] for r in rows]
    d = encode_records(records, view_rows, np.asarray(split.image_codes), reader, vocab, code_features)
    num, num_defined, num_token = (
        np.stack(v) for v in zip(*(numeric_target(r.answer) for r in records), strict=True)
    )
    return {
        **d,
        "a": torch.from_numpy(a),
        "num": torch.from_numpy(num),
        "num_token": torch.from_numpy(num_token.astype(np.int64)),
        "num_unit": torch.tensor([UNITS.index(r.answer.unit) if r.answer.unit else 0 for r in records]),
        "num_defined": torch.from_numpy(num_defined),
        "refs": torch.from_numpy(refs),
        "has_role": torch.from_numpy(has_role),
        "word_roles": torch.from_numpy(tags),
        "word_roles_defined": torch.from_numpy(tagged),
        "motion": torch.tensor([r.target_view is not None for r in records], dtype=torch.bool),
        "cell_objects": None if objects is None else torch.from_numpy(objects),
        "elevation": torch.tensor(
            [np.nan if elevations is None else float(elevations[rows_[0]]) for rows_ in view_rows]
        ),
    }


def pointer_targets(d: dict, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which cells of the records' views show an object of each role, and where that is defined (the role
    exists and the view is shown). Shapes: (B, V n, R) float, (B, V n, R) bool."""
    obj = d["cell_objects"][d["views"][idx]]  # (B, V, n)
    refs = d["refs"][idx]  # (B, R, K)
    hit = (obj[:, :, :, None, None] == refs[:, None, None]).any(-1)  # (B, V, n, R)
    defined = d["shown"][idx][:, :, None, None] & d["has_role"][idx][:, None, None, :]
    return hit.flatten(1, 2).float(), defined.expand_as(hit).flatten(1, 2)


@torch.no_grad()
def val_sample(answer_reader, chat, cells, checkpoint, num: int, seed: int) -> SimpleNamespace:
    """What the diagnostic scripts read (scripts/pointer_binding.py, scripts/grounding_limits.py): ``num``
    records of a chat cache's val split (seeded, sorted), encoded with their pointer targets from the cell
    labels of the token cache ``cells``, beside the answer reader ``net`` (eval mode), the checkpoint's pose
    ``reader``, the ``val`` split, the token ``cache`` and its cell ``labels``."""
    reader = load_gst_model(resolve_checkpoint(checkpoint).model_dir).eval().stem_reader
    net, vocab, _ = load_answer_reader(answer_reader)
    val = open_chat_cache(chat).split("val")
    cache = open_token_cache(cells)
    labels = open_cell_labels(cache)
    rows = np.sort(np.random.default_rng(seed).permutation(val.rows("all"))[:num])
    d = encode_split(val, rows, reader, vocab, text_tokenizer(), view_objects(val, labels, cache))
    return SimpleNamespace(net=net.eval(), reader=reader, val=val, cache=cache, labels=labels, rows=rows, d=d)


@torch.no_grad()
def pointer_iou(net: nn.Module, d: dict) -> dict[str, float]:
    """Per role, the mean intersection over union of the cells the pointer picks (logit > 0) and the cells
    that show the role's objects, over records whose role shows in at least one cell."""
    net.eval()
    inter, total = np.zeros(len(ROLES)), np.zeros(len(ROLES))
    for start in range(0, len(d["records"]), 256):
        idx = torch.arange(start, min(start + 256, len(d["records"])))
        ptr = net(*inputs(d, idx, net.config.no_image), num_slots=1).pointers
        hit, defined = pointer_targets(d, idx)
        pick, hit = (ptr > 0) & defined, hit.bool() & defined
        union = (pick | hit).sum(1).float()  # (b, R)
        ok = hit.any(1)
        inter += torch.where(ok, (pick & hit).sum(1) / union.clamp(min=1), 0).sum(0).numpy()
        total += ok.sum(0).numpy()
    net.train()
    return {role: round(float(i / max(t, 1)), 3) for role, i, t in zip(ROLES, inter, total, strict=True)}


# the network's shape, taken from ``--init-from`` instead of the flags
INIT_FIELDS = ("width", "layers", "pointer_layers", "pointer_match", "numeric_head", "unit_bins",
               "number_readout", "no_image", "pointer_pool", "code_features")  # fmt: skip


# what ``--init-from`` may add to a reader without it: the config field -> its modules' name prefixes and the
# modules whose last layer starts at zero
GROWABLE = {
    "relations": (("relation.",), ("relation",)),
    "word_roles": (("word_role.", "span_in."), ("span_in",)),
    "attribute_match": (("colour_words.", "shape_words."), ()),  # built near "any"
    "number_words": (("number_in.", "word_values"), ("number_in",)),
    "motion_token": (("motion_in.",), ("motion_in",)),
    "elevation_head": (("elevation_head.",), ("elevation_head",)),
}


def grown(net: AnswerReader, config: AnswerReaderConfig) -> AnswerReader:
    """``net`` itself, or, where ``config`` adds what ``GROWABLE`` names (``--init-from`` with
    ``--relations`` / ``--word-roles`` / ``--attribute-match`` / ``--number-words`` / ``--motion-token``)
    or more question words, a network of ``config`` holding all of ``net``'s weights and the new modules:
    the relation and motion tokens start as the same constant for every record (their last layer zero);
    the word roles and number words start adding nothing (the grown reader answers as ``net``); the
    attribute match starts near "any" (a near-constant shift of the pointer logits); each new word (ids
    from ``net.config.question_vocab`` on) starts as the unknown word (id 1), which is how ``net`` read it,
    so the reader answers as before."""
    if net.config == config:
        return net
    added = [name for name in GROWABLE if getattr(config, name) and not getattr(net.config, name)]
    more = config.question_vocab - net.config.question_vocab
    flags = {name: True for name in added}
    if more < 0 or replace(net.config, question_vocab=config.question_vocab, **flags) != config:
        raise ValueError(f"cannot grow the answer reader {net.config} into {config}")
    new = AnswerReader(config)
    state = net.state_dict()
    if more:
        state["tok.weight"] = torch.cat([state["tok.weight"], state["tok.weight"][1:2].expand(more, -1)])
        if "word_values" in state:  # set from the words by the caller
            values = state["word_values"]
            state["word_values"] = torch.cat([values, values.new_zeros(more, values.shape[1])])
    missing, unexpected = new.load_state_dict(state, strict=False)
    prefixes = tuple(p for name in added for p in GROWABLE[name][0])
    if unexpected or any(not k.startswith(prefixes) for k in missing):
        raise ValueError(f"cannot grow the answer reader: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for module in (getattr(new, m) for name in added for m in GROWABLE[name][1]):
            module[-1].weight.zero_()
            module[-1].bias.zero_()
    return new


def train_answer_reader(args: argparse.Namespace) -> int:
    """`gst train answer-reader` (module docstring)."""
    torch.manual_seed(args.seed)
    files = resolve_checkpoint(args.checkpoint)
    reader = load_gst_model(files.model_dir).eval().stem_reader
    if reader is None or reader.cell_head is None:
        raise ValueError(f"--checkpoint {args.checkpoint}: needs a pose reader with cell heads")
    cache = open_chat_cache(args.chat)
    text = text_tokenizer()
    train_split = cache.split("train")
    counts = Counter(
        w for r in train_split.records if r["phrasing_split"] == "train" for w in words(r["question"])
    )
    vocab = {w: i + 2 for i, w in enumerate(sorted(counts))}  # 0 pad, 1 unknown
    start, earlier = None, {}
    if args.init_from:  # its weights, words and shape; the shape flags given here are replaced by its own
        start, vocab, info = load_answer_reader(args.init_from)
        trained_on = (info.get("metadata") or {}).get("pose_reader", {}).get("model_sha256")
        if trained_on != file_sha256(files.model_dir / "model.safetensors"):
            raise ValueError(
                f"--init-from {args.init_from}: trained over another pose reader than --checkpoint "
                f"{args.checkpoint}'s; give the checkpoint it was trained with"
            )
        for name in INIT_FIELDS:
            setattr(args, name, getattr(start.config, name))
        for name in GROWABLE:  # a growable flag may add what it names
            setattr(args, name, getattr(args, name) or getattr(start.config, name))
        earlier = (info.get("metadata") or {}).get("training", {})
        new_words = sorted(w for w in counts if w not in vocab)
        if new_words:  # training words it never read (new phrasings): appended, grown as the unknown word
            vocab = {**vocab, **{w: len(vocab) + 2 + i for i, w in enumerate(new_words)}}
            print(f"--init-from {args.init_from}: {len(new_words)} new question words {new_words[:12]}")
    val_split = cache.split("val")
    objects = {"train": None, "val": None}
    if args.cells:
        token_cache = open_token_cache(args.cells)
        cells = open_cell_labels(token_cache)
        objects = {name: view_objects(cache.split(name), cells, token_cache) for name in objects}
    elif args.pointer_layers and args.pointer_weight or args.oracle_pointer or args.teacher_pointer:
        raise ValueError(
            "--pointer-weight > 0, --oracle-pointer and --teacher-pointer need --cells (the pointer targets)"
        )
    if args.oracle_pointer and (args.heldout or not args.pointer_layers):
        raise ValueError("--oracle-pointer: a val-only ceiling; give --pointer-layers and no --heldout")
    code, elevations = args.code_features, {"train": None, "val": None}
    if args.elevation_head and args.elevation_weight:
        elevations = {
            name: view_elevations(cache.split(name), cache.manifest["scenes_root"]) for name in elevations
        }
    tr = encode_split(
        train_split,
        train_split.rows("train"),
        reader,
        vocab,
        text,
        objects["train"],
        code,
        elevations["train"],
    )
    val_rows = np.sort(np.random.default_rng(args.seed).permutation(val_split.rows("all"))[: args.num_val])
    va = encode_split(val_split, val_rows, reader, vocab, text, objects["val"], code, elevations["val"])
    config = AnswerReaderConfig(
        text_vocab=text.vocab_size,
        question_vocab=len(vocab) + 2,
        feat=tr["feats"].shape[-1],
        cells=tr["feats"].shape[1],
        width=args.width,
        layers=args.layers,
        pointer_layers=args.pointer_layers,
        pointer_match=args.pointer_match,
        numeric_head=args.numeric_head,
        unit_bins=args.unit_bins,
        number_readout=args.number_readout,
        no_image=args.no_image,
        pointer_pool=args.pointer_pool,
        code_features=args.code_features,
        relations=args.relations,
        word_roles=args.word_roles,
        attribute_match=args.attribute_match,
        number_words=args.number_words,
        motion_token=args.motion_token,
        elevation_head=args.elevation_head,
    )
    grow = {name: getattr(config, name) for name in GROWABLE}
    if start is not None and replace(start.config, question_vocab=config.question_vocab, **grow) != config:
        raise ValueError(
            f"--init-from {args.init_from}: built for other data ({start.config} against {config})"
        )
    net = AnswerReader(config) if start is None else grown(start, config).train()
    if config.number_words:
        net.word_values.copy_(number_word_values(vocab, config.question_vocab))
    params = sum(p.numel() for p in net.parameters())
    print(f"{len(tr['records'])} train records, {len(vocab)} question words, {params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(args.seed)
    n, step, pos, perm = len(tr["records"]), 0, 0, None
    t0, budget = time.process_time(), args.minutes * 60
    while (spent := time.process_time() - t0) < budget:
        if perm is None or pos + args.batch > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx, pos = perm[pos : pos + args.batch], pos + args.batch
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * spent / budget))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = training_loss(net, tr, idx, args, g)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"update {step}: loss {loss.item():.3f}, {spent / 60:.1f} CPU-min", flush=True)
    oracle = (lambda idx: pointer_targets(va, idx)[0]) if args.oracle_pointer else None
    texts = answer(net, va, text, oracle)
    model_s = summarize(va["records"], score_texts(va["records"], texts))
    baseline = MostFrequentBaseline(tr["records"])
    base_s = summarize(va["records"], score_texts(va["records"], baseline.predict(va["records"])))
    print(f"{step} updates in {args.minutes} CPU-minutes; val split of {args.chat} (all phrasings)")
    print(f"{'family':<20} {'n':>5} {'reader':>7} {'most frequent':>13}")
    for fam, v in model_s["families"].items():
        print(f"{fam:<20} {v['n']:>5} {v['score']:>7.3f} {base_s['families'][fam]['score']:>13.3f}")
    o, b = model_s["overall"], base_s["overall"]
    print(f"{'overall':<20} {o['n']:>5} {o['score_micro']:>7.3f} {b['score_micro']:>13.3f}")
    if not args.out:
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"updates": step, "cpu_minutes": args.minutes, "parameters": params, "val": model_s}
    if args.pointer_layers and args.cells:
        result["val_pointer_iou"] = pointer_iou(net, va)
        print("val pointer IoU (cells > 0.5 against the role's cells):", result["val_pointer_iou"])
    if config.elevation_head and torch.isfinite(va["elevation"]).any():
        result["val_elevation_error_deg"] = elevation_error(net, va)
        print("val elevation error (degrees, median / mean):", result["val_elevation_error_deg"])
    result["val_most_frequent"] = base_s
    if not args.oracle_pointer:  # a ceiling pools the true cells: nothing to ship
        metadata = {
            "pose_reader": {
                "checkpoint": str(args.checkpoint),
                "model_sha256": file_sha256(files.model_dir / "model.safetensors"),
            },
            "training": {
                "chat": str(args.chat),
                "cells": args.cells,
                "updates": step,
                "cpu_minutes": args.minutes,
                "batch": args.batch,
                "lr": args.lr,
                "word_dropout": args.word_dropout,
                "construction_dropout": args.construction_dropout,
                "keep_motion": args.keep_motion,
                "elevation_weight": args.elevation_weight if args.elevation_head else None,
                "word_role_weight": args.word_role_weight if args.word_roles else None,
                "teacher_pointer": args.teacher_pointer,
                "pointer_weight": args.pointer_weight,
                "seed": args.seed,
                "init_from": args.init_from,
                "total_cpu_minutes": args.minutes
                + earlier.get("total_cpu_minutes", earlier.get("cpu_minutes", 0)),
                "total_updates": step + earlier.get("total_updates", earlier.get("updates", 0)),
                "val_score": model_s["overall"]["score_micro"],
            },
        }
        save_answer_reader(net, vocab, out / ANSWER_READER_DIR, metadata)
        print(f"answer reader -> {out / ANSWER_READER_DIR}")
    if args.heldout:
        held = open_chat_cache(args.heldout)
        lines = []
        for name in held.splits:
            split = held.split(name)
            d = encode_split(split, split.rows("all"), reader, vocab, text, code_features=code)
            lines += [
                json.dumps({"id": r.id, "answer_text": t}) + "\n"
                for r, t in zip(d["records"], answer(net, d, text), strict=True)
            ]
        (out / "answers.jsonl").write_text("".join(lines))
        print(f"{len(lines)} held-out answers -> {out / 'answers.jsonl'}")
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


@torch.no_grad()
def elevation_error(net: AnswerReader, d: dict) -> dict[str, float]:
    """The elevation head's absolute error on the records of ``d`` that have a target (degrees, median and
    mean)."""
    errors = []
    for start in range(0, len(d["records"]), 256):
        idx = torch.arange(start, min(start + 256, len(d["records"])))
        pred = net(*inputs(d, idx, net.config.no_image), num_slots=1).elevation
        errors.append((pred - d["elevation"][idx]).abs())
    e = torch.cat(errors)
    e = e[torch.isfinite(e)]
    return {"median": round(float(e.median()), 2), "mean": round(float(e.mean()), 2)}


def dropped_words(
    q: torch.Tensor, tr: dict, idx: torch.Tensor, args: argparse.Namespace, g: torch.Generator
) -> torch.Tensor:
    """The question ids ``q`` (B, MAX_QUESTION) of training records ``idx`` with known words read as
    unknown (id 1): any word at ``--word-dropout`` (held-out phrasings' new words), and in a record that
    names objects each word outside its references at ``--construction-dropout`` (the answer must also
    follow from which objects the question names, not only from its construction), except, with
    ``--keep-motion``, in a question that states a camera motion (motion visibility: the motion's words
    decide the answer, they are not its construction)."""
    if args.word_dropout:
        q = torch.where((q > 1) & (torch.rand(q.shape, generator=g) < args.word_dropout), 1, q)
    if args.construction_dropout:
        named = tr["word_roles"][idx, : q.shape[1]].sum(-1) > 0
        around = tr["word_roles_defined"][idx].any(1, keepdim=True) & ~named
        if args.keep_motion:
            around = around & ~tr["motion"][idx, None]
        q = torch.where(
            (q > 1) & around & (torch.rand(q.shape, generator=g) < args.construction_dropout), 1, q
        )
    return q


def training_loss(
    net: AnswerReader, tr: dict, idx: torch.Tensor, args: argparse.Namespace, g: torch.Generator
) -> torch.Tensor:
    """The loss of one batch of records ``idx`` of the training split (module docstring)."""
    target = tr["a"][idx]
    slots = int((target != IGNORE).sum(1).max())
    hit, defined = pointer_targets(tr, idx) if args.cells else (None, None)
    oracle, oracle_rows = (hit, None) if args.oracle_pointer else (None, None)
    if args.teacher_pointer:  # these records' answers read the true cells; the rest the pointers'
        oracle, oracle_rows = hit, torch.rand(len(idx), generator=g) < args.teacher_pointer
    q, cells, shown, pose, motion = inputs(tr, idx, args.no_image)
    q = dropped_words(q, tr, idx, args, g)
    logits, ptr, values, roles, elevation = net(q, cells, shown, pose, motion, slots, oracle, oracle_rows)
    loss = F.cross_entropy(logits.flatten(0, 1), target[:, :slots].flatten(), ignore_index=IGNORE)
    if roles is not None and args.word_role_weight:  # the words that name each role's objects
        where = q[:, : roles.shape[1]].ne(0).unsqueeze(-1) & tr["word_roles_defined"][idx].unsqueeze(1)
        if where.any():
            tags = tr["word_roles"][idx, : roles.shape[1]]
            loss = loss + args.word_role_weight * F.binary_cross_entropy_with_logits(
                roles[where], tags[where]
            )
    defined_num = tr["num_defined"][idx].clone()
    if values is not None and args.number_readout == "bins":
        defined_num[:, NUMERIC_SLICES["number"]] = False
        token = tr["num_token"][idx]
        if args.unit_bins:  # the class: the answer's unit's set of bins, then the bin
            token = torch.where(token != IGNORE, token + tr["num_unit"][idx] * NUMBER_BINS.num_tokens, IGNORE)
        if (token != IGNORE).any():
            loss = loss + F.cross_entropy(values[:, NUMERIC_DIMS:], token, ignore_index=IGNORE)
    if values is not None and defined_num.any():
        loss = loss + F.smooth_l1_loss(
            values[:, :NUMERIC_DIMS][defined_num], tr["num"][idx][defined_num], beta=0.05
        )
    if elevation is not None and args.elevation_weight:  # the observed camera's elevation, where known
        target = tr["elevation"][idx]
        known = torch.isfinite(target)
        if known.any():
            error = (elevation[known] - target[known]) / ELEVATION_SCALE
            loss = loss + args.elevation_weight * F.smooth_l1_loss(error, torch.zeros_like(error), beta=0.1)
    if ptr is not None and args.pointer_weight and not args.oracle_pointer:
        loss = loss + args.pointer_weight * F.binary_cross_entropy_with_logits(ptr[defined], hit[defined])
    return loss
