"""Training the GST backbone through the one loop: token-cache batches, gen/est layouts, the GST loss.

- Data: a token cache (``gst.data.token_cache``) built with the same tokenizers (checked by content
  hash). Micro-batch ``index`` reads pairs ``index * B .. index * B + B - 1`` of an endless sequence of
  per-epoch permutations of the train split (``numpy.random.default_rng([seed, epoch])``), so every pair
  is seen once per epoch and the data order is a pure function of (seed, index): exact resume needs no
  loader state.
- Layouts: ``gst.model.collate_pose_batch`` with ``step = index // (A * P)``, the optimiser-update index
  (A accumulation micro-batches, P processes): in ``alternate`` mode one update is all gen or all est;
  passing the micro-batch index would alternate inside an update and silently turn it into ``joint``.
- Loss: ``gst.model.compute_loss`` (restricted heads: camera/image positions softmax over their codes).
- Evaluation (``evaluate``): teacher-forced val loss, CE and top-1 accuracy for gen and est on a fixed
  subset of val pairs (no conditioning dropout), and the pose error of greedy est decoding of a smaller
  subset, decoded by the camera tokenizer and scored against the cache's true relative pose.
- Chat (optional, ``--chat DIR``, ``sequence.chat_fraction`` > 0): spatial QA rows from a chat cache
  (``gst.data.chat_cache``) fill that share of every micro-batch, drawn the same way (per-epoch
  permutations of the train-split, train-phrasing records, ``default_rng([seed, CHAT_SALT, epoch])``).
  A row is exactly what ``gst.api_chat.ChatSession.ask`` reads at inference (no system message):
  ``[user] <img>... question [end] [assistant] answer [end]``, the images in the record's view order,
  the answer the record's canonical ``answer_text`` (which ``gst eval qa`` parses back exactly); the
  loss covers the answer and its ``[end]``. Pose and chat rows are right-padded into one batch. With
  ``sequence.chat_turns`` K > 1 a row is a conversation: the drawn record, then up to K - 1 other
  training records about the same views as follow-up turns, as many as fit in the row's padding
  (``chat_conversation``): more answers for the same compute, every one labelled.
  ``evaluate`` adds ``chat/{loss,token_acc,exact}`` (teacher-forced, answer tokens) on the val split,
  and the same under ``chat/heldout/`` for held-out phrasings.
- Export: ``save_gst_model`` with the sequence config, vocabulary and tokenizer paths and hashes.

Glossary: B batch, N pairs in a split, A accumulation micro-batches, P processes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gst.data.cell_labels import COLOUR_CLASSES, SHAPE_CLASSES, CellLabels, open_cell_labels
from gst.data.chat_cache import ChatSplit, open_chat_cache
from gst.data.token_cache import CacheSplit, open_token_cache
from gst.model import (
    SequenceBatch,
    TokenLayout,
    collate_chat,
    collate_pose_batch,
    compute_loss,
    save_gst_model,
)
from gst.training.gst_chat import chat_metrics, concat_batches, qa_chat_example
from gst.training.gst_config import (
    RUN_PRESETS,
    GSTEvalConfig,
    GSTRunConfig,
    build_vocabulary,
    check_reader_settings,
    get_run_preset,
    load_text_tokenizer,
    text_vocab_size,
    with_cache_grids,
)
from gst.training.gst_eval import (
    cell_metrics,
    eval_rows,
    pose_head_targets,
    pose_metrics,
    teacher_forced_metrics,
)
from gst.training.overrides import to_dict
from gst.training.task import Task

CHAT_SALT = 7  # chat-row permutations draw from default_rng([seed, CHAT_SALT, epoch]), apart from pairs
STEM_SALT = 11  # the reader-only pairs (sequence.stem_pairs) likewise


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


# (path in the run config, its "off" value): config keys added after runs were saved (config_dict)
_LATER_KEYS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("sequence", "chat_turns"), 1),  # multi-turn chat rows
    (("init_from",), None),  # --init-from
    (("model", "pose_head_dim"), 0),  # the pose readout
    (("loss", "pose_weight"), 0),
    (("code_init",), "random"),  # code initialisation
    (("number_tokens",), False),  # number tokens
    (("loss", "cell_weight"), 0),  # the reader's cell heads
    (("model", "reader", "cell_heads"), False),
    (("model", "reader", "corr_dim"), 0),  # the pair stem's correspondence
    (("loss", "pose_beta"), 1.0),  # the pose loss's smooth-L1 beta
    (("loss", "pose_focal_weight"), 1.0),  # the log-focal numbers' weight in the pose loss
    (("model", "pose_reader"), None),  # a second reader for the pose head
    (("frozen",), []),  # frozen parameters
)


class GSTTask(Task):
    """Stage ``gst``: the backbone on gen/est rows from a token cache (and chat rows from a chat cache)."""

    name = "gst"

    def __init__(
        self,
        run: GSTRunConfig,
        cache_dir: str | Path,
        tokenizers_dir: str | Path,
        chat_dir: str | Path | None = None,
    ) -> None:
        self.cache = open_token_cache(cache_dir, tokenizers_dir=tokenizers_dir)
        grids = (self.cache.image_grid, self.cache.camera_grid)
        if (run.sequence.image_grid, run.sequence.camera_grid) != grids:
            raise ValueError(
                f"sequence.image_grid/camera_grid {run.sequence.image_grid}/{run.sequence.camera_grid} "
                f"differ from the cache's token grids {grids[0]}/{grids[1]} ({cache_dir}); leave them unset"
            )
        check_reader_settings(run)
        reader = run.model.reader
        if reader is not None and tuple(reader.grid_hw) != tuple(self.cache.image_grid):
            raise ValueError(
                f"model.reader.grid_hw {reader.grid_hw} differs from the cache's image grid "
                f"{self.cache.image_grid} ({cache_dir}); set --set model.reader.grid_hw="
                f"{self.cache.image_grid[0]},{self.cache.image_grid[1]}"
            )
        self.run = run
        self.tokenizers_dir = Path(tokenizers_dir)
        self.vocab = build_vocabulary(run, self.cache.manifest)
        self.layout = TokenLayout.from_vocab(self.vocab)
        self.train_split = self.cache.split("train")
        if len(self.train_split) == 0:
            raise ValueError(
                f"{cache_dir}: the train split is empty; build the cache with --val-fraction < 1"
            )
        self.val_split = self.cache.split("val")
        if len(self.val_split) == 0:
            print(
                f"gst: notice: {cache_dir} has no val pairs; evaluate() scores train pairs", file=sys.stderr
            )
            self.val_split = self.train_split
        self._perms: dict[tuple[int, ...], dict[int, np.ndarray]] = {}  # salt -> epoch -> permutation
        self._camera_tokenizer: nn.Module | None = None
        self._check_pose_readout()
        self.cells = self._open_cells() if run.loss.cell_weight > 0 else None
        # A micro-batch without est rows (alternate or gen mixes) leaves the pose head without gradient.
        self.find_unused_parameters = run.loss.pose_weight > 0
        self._init_chat(chat_dir, tokenizers_dir)

    def _open_cells(self) -> CellLabels:
        """The cache's cell labels (``gst data cells``), whose classes must be the reader head's."""
        from gst.model.reader import NUM_COLOUR_CLASSES, NUM_SHAPE_CLASSES

        if (len(SHAPE_CLASSES), len(COLOUR_CLASSES)) != (NUM_SHAPE_CLASSES, NUM_COLOUR_CLASSES):
            raise ValueError("gst.data.cell_labels classes differ from gst.model.reader's cell head sizes")
        return open_cell_labels(self.cache)

    def cell_targets(self, split: CacheSplit, rows: np.ndarray) -> torch.Tensor:
        """Cell labels of pairs for ``gst.model.loss.cell_loss``. Shapes: -> (n, 2, h*w, 7) float32."""
        assert self.cells is not None
        return torch.from_numpy(self.cells.pair_targets(split, rows))

    def _check_pose_readout(self) -> None:
        """``loss.pose_weight`` > 0 needs a pose head sized for the camera parameter vector."""
        from gst.tokenizers.camera import NUM_PARAMS

        dim, weight = self.run.model.pose_head_dim, self.run.loss.pose_weight
        if weight > 0 and dim != NUM_PARAMS:
            raise ValueError(
                f"loss.pose_weight={weight} reads the camera parameter vector ({NUM_PARAMS} numbers) from "
                f"the pose head, but model.pose_head_dim={dim}; set --set model.pose_head_dim={NUM_PARAMS}"
            )

    @property
    def camera_tokenizer(self) -> nn.Module:
        """The cache's camera tokenizer (loaded on first use): pose decoding and pose-head targets."""
        if self._camera_tokenizer is None:
            from gst.tokenizers.io import load_tokenizer

            self._camera_tokenizer = load_tokenizer(self.cache.manifest["tokenizers"]["camera"]["path"])
        return self._camera_tokenizer

    def pose_targets(self, split: CacheSplit, rows: np.ndarray) -> torch.Tensor:
        """The camera parameter vector of pairs' true relative cameras (what the pose head reads out).
        Shapes: -> (n, 13) float32."""
        return pose_head_targets(self.camera_tokenizer, split, rows)

    def _init_chat(self, chat_dir: str | Path | None, tokenizers_dir: str | Path) -> None:
        """Open the chat cache (same tokenizers and image grid as the pair cache) and the text tokenizer."""
        fraction = self.run.sequence.chat_fraction
        self.chat = None
        if chat_dir is None:
            if fraction > 0:
                raise ValueError(
                    f"sequence.chat_fraction={fraction} needs chat rows: pass --chat DIR "
                    "(a `gst data chat-cache` folder)"
                )
            return
        if fraction == 0:
            raise ValueError(
                f"--chat {chat_dir} is given but sequence.chat_fraction is 0; set it, e.g. "
                "--set sequence.chat_fraction=0.25"
            )
        self.chat = open_chat_cache(chat_dir, tokenizers_dir=tokenizers_dir)
        if self.chat.image_grid != self.cache.image_grid:
            raise ValueError(
                f"--chat {chat_dir}: image grid {self.chat.image_grid} differs from the pair cache's "
                f"{self.cache.image_grid}; build both with the same tokenizers"
            )
        self.chat_train = self.chat.split("train")
        self.chat_pool = self.chat_train.rows("train")  # held-out phrasings are never trained on
        if len(self.chat_pool) == 0:
            raise ValueError(
                f"--chat {chat_dir}: no train-split records with training phrasings; generate the QA "
                "file with `gst data qa --split all --phrasings all` (or train)"
            )
        # Pool positions of the records that show the same views: follow-up turns (chat_turns > 1).
        groups: dict[tuple[int, ...], list[int]] = {}
        for position, row in enumerate(self.chat_pool.tolist()):
            groups.setdefault(tuple(self.chat_train.records[row]["image_rows"]), []).append(position)
        self.chat_groups = [np.asarray(g, dtype=np.int64) for g in groups.values()]
        self.chat_group_of = np.empty(len(self.chat_pool), dtype=np.int64)
        for g, positions in enumerate(self.chat_groups):
            self.chat_group_of[positions] = g
        self.chat_val = self.chat.split("val")
        if len(self.chat_val) == 0:
            print(
                f"gst: notice: {chat_dir} has no val records; evaluate() scores train ones", file=sys.stderr
            )
            self.chat_val = self.chat_train
        self.text_tokenizer = load_text_tokenizer(self.run.text).with_numbers(self.vocab.numbers)

    def num_chat_rows(self, batch_size: int) -> int:
        """Chat rows per micro-batch: ``chat_fraction`` of it, rounded, at least 1 when chat is on."""
        if self.chat is None:
            return 0
        return min(batch_size, max(1, int(round(self.run.sequence.chat_fraction * batch_size))))

    # ---- Task interface ----
    def config_dict(self) -> dict[str, Any]:
        manifest = self.cache.manifest
        run = {k: v for k, v in to_dict(self.run).items() if k != "train"}
        if self.chat is None:  # runs from before chat rows existed saved no such key: they still resume
            run["sequence"] = {k: v for k, v in run["sequence"].items() if k != "chat_fraction"}
        # Keys added after runs were saved are left out at their "off" value, so those runs still resume.
        for path, off in _LATER_KEYS:
            *parents, key = path
            node = run
            for name in parents:
                node = node.get(name) if isinstance(node, dict) else None
            if isinstance(node, dict) and key in node and node[key] == off:
                node.pop(key)
        out = {
            "run": run,
            "vocabulary": self.vocab.to_dict(),
            "cache": {
                "num_train_pairs": len(self.train_split),
                "num_val_pairs": len(self.cache.split("val")),
                "config": manifest["config"],
                "tokenizers": {k: v["sha256"] for k, v in manifest["tokenizers"].items()},
            },
        }
        if self.chat is not None:
            out["chat"] = {
                "num_train_records": len(self.chat_pool),
                "num_val_records": len(self.chat.split("val")),
                "qa_sha256": self.chat.manifest["qa"]["sha256"],
            }
        return out

    def build_model(self) -> nn.Module:
        from gst.training.gst_init import freeze, initial_model

        cam = lambda: self.camera_tokenizer  # noqa: E731 (loaded only where needed)
        model = freeze(initial_model(self.run, self.vocab, self.cache.manifest, cam), self.run.frozen)
        if model.gen_warp is not None:  # gen rows' cameras are decoded to place the observed cells
            model.attach_camera_tokenizer(self.camera_tokenizer)
        return model

    def batch(self, index: int, generator: torch.Generator, batch_size: int) -> SequenceBatch:
        """Pose rows, then (with a chat cache) ``num_chat_rows`` chat rows, right-padded together."""
        step = index // (self.run.train.grad_accum_steps * _world_size())  # the optimiser-update index
        if step < self.run.sequence.stem_warmup_steps:
            return self.stem_only_batch(index)
        num_chat = self.num_chat_rows(batch_size)
        parts = []
        if num_chat < batch_size:
            rows = self.train_rows(index, batch_size - num_chat)
            obs, tgt, cam = self.train_split.codes(rows)
            pose = collate_pose_batch(
                self.layout, self.run.sequence, obs, tgt, cam, step=step, generator=generator
            )
            if self.run.loss.pose_weight > 0:
                pose.pose_target = self.pose_targets(self.train_split, rows)
            if self.run.sequence.stem_pairs:
                pose.stem_codes, pose.stem_pose, pose.stem_cells = self.stem_pairs(index)
            parts.append(pose)
        if num_chat:
            positions = self.chat_rows(index, num_chat)
            chat = self.chat_batch(self.chat_train, [int(self.chat_pool[p]) for p in positions])
            if self.run.sequence.chat_turns > 1:  # follow-up questions fill the rows' right padding
                room = max(b.seq_len for b in [*parts, chat])
                used = chat.attention_mask.sum(1).tolist()  # (n,) each first question's row length
                talks = [
                    self.chat_conversation(index, k, int(p), room - int(n))
                    for k, (p, n) in enumerate(zip(positions, used, strict=True))
                ]
                chat = self.chat_batch(self.chat_train, talks)
            parts.append(chat)
        return parts[0] if len(parts) == 1 else concat_batches(self.layout, parts)

    def chat_conversation(self, index: int, slot: int, position: int, room: int) -> list[int]:
        """Records of one training chat row: ``chat_pool[position]``, then up to ``chat_turns - 1``
        others that show the same views, taken in the order of ``default_rng([seed, CHAT_SALT, index,
        slot])`` (a pure function of the micro-batch, so resume needs no loader state) when their turn
        still fits in ``room`` more tokens: follow-ups fill a batch's padding and never lengthen it."""
        row = int(self.chat_pool[position])
        group = self.chat_groups[self.chat_group_of[position]]
        others = group[group != position]
        talk = [row]
        if self.run.sequence.chat_turns == 1 or len(others) == 0:
            return talk
        rng = np.random.default_rng([self.run.train.seed, CHAT_SALT, index, slot])
        for other in rng.permutation(others).tolist():
            record = int(self.chat_pool[other])
            question, answer = self.chat_train.texts(record)
            # [user] question [end] [assistant] answer [end]
            need = len(self.text_tokenizer.encode(question)) + len(self.text_tokenizer.encode(answer)) + 4
            if need <= room:
                talk.append(record)
                room -= need
                if len(talk) == self.run.sequence.chat_turns:
                    break
        return talk

    def chat_batch(self, split: ChatSplit, rows: Sequence[int | Sequence[int]]) -> SequenceBatch:
        """Chat rows (``qa_chat_example``), right-padded: one per item of ``rows``, a record or the
        records of one conversation."""
        backbone = self.run.model.backbone  # None for a pretrained LM (thousands of positions)
        limit = backbone.max_position_embeddings if backbone is not None else None
        examples = []
        for row in rows:
            talk = [int(row)] if isinstance(row, (int, np.integer)) else [int(r) for r in row]
            ids, labels, grid = qa_chat_example(
                self.layout, self.run.sequence, split, talk, self.text_tokenizer
            )
            if limit is not None and ids.shape[0] > limit:
                raise ValueError(
                    f"{self.chat.root}: record {split.records[talk[0]]['id']!r} makes a chat row of "
                    f"{ids.shape[0]} tokens, longer than the backbone's {limit} positions"
                    + ("; lower sequence.chat_turns" if len(talk) > 1 else "")
                )
            examples.append((ids, labels, grid))
        return collate_chat(self.layout, examples)

    def loss(
        self, model: nn.Module, batch: SequenceBatch, step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = compute_loss(model, batch, self.run.loss)
        names = list(out.metrics)
        values = torch.stack([out.metrics[k].float().to(out.loss.device) for k in names]).tolist()  # one sync
        return out.loss, dict(zip(names, values, strict=True))

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Weight decay on matrices (embeddings included, as nanoGPT), none on norms and biases."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        cfg = self.run.eval
        rows = eval_rows(len(self.val_split), cfg.num_eval_pairs, cfg.subset_seed)
        metrics = teacher_forced_metrics(
            model,
            self.layout,
            self.run.sequence,
            self.val_split,
            rows,
            loss_config=self.run.loss,
            batch_size=cfg.batch_size,
        )
        if cfg.num_pose_pairs > 0:
            rows = eval_rows(len(self.val_split), cfg.num_pose_pairs, cfg.subset_seed)
            metrics.update(
                pose_metrics(
                    model,
                    self.layout,
                    self.run.sequence,
                    self.val_split,
                    rows,
                    self.camera_tokenizer,
                    batch_size=cfg.batch_size,
                )
            )
        if self.cells is not None and cfg.num_pose_pairs > 0:
            rows = eval_rows(len(self.val_split), cfg.num_pose_pairs, cfg.subset_seed)
            labels = self.cell_targets(self.val_split, rows)
            metrics.update(cell_metrics(model, self.val_split, rows, labels))
        if self.chat is not None:
            for prefix, phrasing in (("chat", "all"), ("chat/heldout", "heldout")):
                rows = self.chat_val.rows(phrasing)
                rows = rows[eval_rows(len(rows), cfg.num_eval_pairs, cfg.subset_seed)]
                if len(rows):
                    chat = chat_metrics(
                        model, lambda r: self.chat_batch(self.chat_val, r), rows, cfg.batch_size
                    )
                    metrics.update({f"{prefix}/{k}": v for k, v in chat.items()})
        return metrics

    def export(self, model: nn.Module, out_dir: Path) -> None:
        save_gst_model(model, out_dir, extra=self.export_extra())

    # ---- data ----
    def train_rows(self, index: int, batch_size: int) -> np.ndarray:
        """Train-split pair rows of micro-batch ``index``. Shapes: -> (B,) int64."""
        return self._epoch_rows(len(self.train_split), index, batch_size, ())

    def stem_pairs(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Micro-batch ``index``'s reader-only pairs: (observed, target) codes, camera vectors and, with
        ``loss.cell_weight``, cell labels. Shapes: -> (B2, 2, h*w) long, (B2, 13) float32,
        (B2, 2, h*w, 7) float32 or None."""
        rows = self.stem_rows(index, self.run.sequence.stem_pairs)
        obs, tgt, _ = self.train_split.codes(rows)
        codes = torch.stack([obs.reshape(len(rows), -1), tgt.reshape(len(rows), -1)], 1).long()
        cells = self.cell_targets(self.train_split, rows) if self.cells is not None else None
        return codes, self.pose_targets(self.train_split, rows), cells

    def stem_only_batch(self, index: int) -> SequenceBatch:
        """A micro-batch of the stem warm-up (``sequence.stem_warmup_steps``): no backbone rows, only
        ``sequence.stem_pairs`` pairs for the reader's pose head."""
        T = self.run.sequence.pose_seq_len
        codes, pose, cells = self.stem_pairs(index)
        return SequenceBatch(
            input_ids=torch.zeros(0, T, dtype=torch.long),
            labels=torch.zeros(0, T, dtype=torch.long),
            grid_pos=torch.zeros(0, T, 2),
            attention_mask=None,
            task=torch.zeros(0, dtype=torch.long),
            stem_codes=codes,
            stem_pose=pose,
            stem_cells=cells,
        )

    def stem_rows(self, index: int, count: int) -> np.ndarray:
        """Train-split pair rows of micro-batch ``index``'s reader-only pairs (``sequence.stem_pairs``),
        their own per-epoch permutations. Shapes: -> (count,) int64."""
        return self._epoch_rows(len(self.train_split), index, count, (STEM_SALT,))

    def chat_rows(self, index: int, count: int) -> np.ndarray:
        """Positions in ``chat_pool`` of micro-batch ``index``'s chat rows. Shapes: -> (count,) int64."""
        return self._epoch_rows(len(self.chat_pool), index, count, (CHAT_SALT,))

    def _epoch_rows(self, n: int, index: int, count: int, salt: tuple[int, ...]) -> np.ndarray:
        """Items ``index * count ..`` of endless per-epoch permutations of ``range(n)``, seeded by
        ``[seed, *salt, epoch]``: a pure function of (seed, index), so resume needs no loader state."""
        positions = index * count + np.arange(count)
        epochs, offsets = positions // n, positions % n
        perms = self._perms.setdefault(salt, {})
        for epoch in np.unique(epochs).tolist():
            if epoch not in perms:
                perms[epoch] = np.random.default_rng([self.run.train.seed, *salt, epoch]).permutation(n)
        rows = np.asarray([perms[int(e)][o] for e, o in zip(epochs, offsets, strict=True)], dtype=np.int64)
        while len(perms) > 4:  # keep the newest epochs (evicted ones are recomputed identically)
            perms.pop(min(perms))
        return rows

    def export_extra(self) -> dict[str, Any]:
        manifest = self.cache.manifest
        return {
            "sequence": self.run.sequence.to_dict(),
            "vocabulary": self.vocab.to_dict(),
            "text_tokenizer": self.run.text,
            "tokenizers": {
                k: {"path": v["path"], "sha256": v["sha256"]} for k, v in manifest["tokenizers"].items()
            },
            "pose_scale": manifest["tokenizers"]["camera"]["pose_scale"],
            "image_hw": manifest["image_hw"],
            "cache": str(self.cache.root.resolve()),
            **({"init_from": self.run.init_from} if self.run.init_from is not None else {}),
        }


__all__ = [
    "GSTEvalConfig",
    "GSTRunConfig",
    "GSTTask",
    "RUN_PRESETS",
    "build_vocabulary",
    "load_text_tokenizer",
    "get_run_preset",
    "text_vocab_size",
    "with_cache_grids",
]
