"""Chat (spatial QA) rows: the chat cache, the row format and loss mask, training with chat rows, resume.

Scenes and tokenizers are the tiny ones of tests/test_token_cache.py; the QA records are written by hand
(typed answers from gst.data.qa_types), split by scene as `gst data qa` splits them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_gst_training import (
    assert_resume_equals_uninterrupted,  # tests/ is on sys.path (pytest rootdir import)
)
from test_token_cache import make_scenes, make_tokenizers

from gst.api_chat import ChatSession
from gst.cli import main as cli_main
from gst.data.chat_cache import build_chat_cache, open_chat_cache
from gst.data.loaders import load_scene
from gst.data.pairs import scene_split
from gst.data.qa_types import (
    QARecord,
    choice_answer,
    count_answer,
    number_answer,
    parse_like,
    point_answer,
    write_jsonl,
)
from gst.data.token_cache import CacheConfig, build_token_cache, open_token_cache
from gst.data.views import crop_resize
from gst.model import SequenceConfig
from gst.model.sequences import IGNORE_INDEX, TASK_CHAT
from gst.tokenizers.image import to_signed
from gst.tokenizers.io import load_tokenizer
from gst.training.gst_chat import chat_metrics, qa_chat_example
from gst.training.gst_task import GSTTask, get_run_preset, with_cache_grids
from gst.training.loop import train

torch.set_num_threads(1)

ANSWERS = (
    count_answer(3),
    choice_answer("left", ("left", "right")),
    number_answer(1.25, "m"),
    point_answer([0.12, -0.3, 2.45]),
)


@pytest.fixture(autouse=True)
def _reset_accelerate():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def make_qa(path: Path, num_scenes: int = 6) -> list[QARecord]:
    """Per scene: one single-view question per answer type in a training phrasing, one two-view question
    (views 1, 2), and one held-out phrasing; split by scene as `gst data qa --val-fraction 0.5`."""
    records = []
    for s in range(num_scenes):
        scene = f"scene_{s:05d}"
        split = scene_split(scene, 0.5)
        for i, answer in enumerate(ANSWERS):
            for phrasing in ("train", "heldout"):
                if phrasing == "heldout" and i != 0:
                    continue
                views = (s % 6,) if i != 1 else (1, 2)
                question = f"Q{i} about {scene}: what is it?" + (
                    " (said otherwise)" if phrasing != "train" else ""
                )
                records.append(
                    QARecord(
                        id=f"{scene}-{i}-{phrasing}",
                        instance=f"{scene}-{i}",
                        scene=scene,
                        views=views,
                        target_view=5 if i == 2 else None,  # described in words, never encoded
                        family="f",
                        kind=f"k{i}",
                        phrasing_id=f"p{i}",
                        phrasing_split=phrasing,
                        split=split,
                        question=question,
                        answer=answer,
                    )
                )
    write_jsonl(records, path)
    return records


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("chat")
    scenes, toks = make_scenes(tmp / "scenes"), make_tokenizers(tmp / "tok")
    build_token_cache(scenes, toks, tmp / "cache", CacheConfig(pairs_per_scene=4, seed=0, val_fraction=0.5))
    records = make_qa(tmp / "qa.jsonl")
    code = cli_main(
        [
            "data",
            "chat-cache",
            "--qa",
            str(tmp / "qa.jsonl"),
            "--scenes",
            str(scenes),
            "--tokenizers",
            str(toks),
            "--out",
            str(tmp / "chat"),
            "--quiet",
        ]
    )
    assert code == 0
    return {
        "tmp": tmp,
        "scenes": scenes,
        "tok": toks,
        "cache": tmp / "cache",
        "chat": tmp / "chat",
        "records": records,
    }


def _task(
    data: dict, chat_fraction: float = 0.5, chat: Path | None = None, chat_turns: int = 1, **train_kw
) -> GSTTask:
    run = with_cache_grids(get_run_preset("micro"), open_token_cache(data["cache"]))
    train_cfg = dataclasses.replace(run.train, tensorboard=False, progress=False, **train_kw)
    seq = dataclasses.replace(run.sequence, chat_fraction=chat_fraction, chat_turns=chat_turns)
    eval_cfg = dataclasses.replace(run.eval, num_pose_pairs=0)
    run = dataclasses.replace(run, train=train_cfg, sequence=seq, eval=eval_cfg)
    return GSTTask(run, data["cache"], data["tok"], chat_dir=chat or data["chat"])


def test_chat_cache_round_trips_codes_and_text(data: dict) -> None:
    cache = open_chat_cache(data["chat"], tokenizers_dir=data["tok"])
    image_tok = load_tokenizer(data["tok"] / "image")
    by_id = {r.id: r for r in data["records"]}
    seen = set()
    for split in cache.splits.values():
        for row, stored in enumerate(split.records):
            record = by_id[stored["id"]]
            seen.add(record.id)
            assert split.name == record.split == scene_split(record.scene, 0.5)
            assert stored["phrasing_split"] == record.phrasing_split
            assert split.texts(row) == (record.question, record.answer_text)
            # The canonical answer text is what `gst eval qa` parses back exactly.
            assert parse_like(record.answer_text, record.answer) == record.answer
            scene = load_scene(data["scenes"] / record.scene)
            views = list(record.views)
            images, _ = crop_resize(scene.load_images(views), scene.K[views], (16, 16))
            assert torch.equal(split.images(row), image_tok.encode(to_signed(images)))  # (V, 4, 4)
    assert seen == set(by_id)
    train = cache.split("train")
    assert len(train.rows("train")) + len(train.rows("heldout")) == len(train)
    assert all(train.records[i]["phrasing_split"] == "heldout" for i in train.rows("heldout"))
    # Views are encoded once per (scene, view); the target view of record kind k2 (view 5) is never shown.
    shown = {(r.scene, v) for r in data["records"] if r.split == "train" for v in r.views}
    assert train.image_codes.shape == (len(shown), 4, 4) and train.image_codes.dtype == np.uint16
    assert cache.manifest["splits"]["val"]["scenes"] == ["scene_00002", "scene_00004"]


def test_chat_row_matches_inference_and_masks_only_the_answer(data: dict) -> None:
    task = _task(data, chat_fraction=0.25)
    layout, seq, tok = task.layout, task.run.sequence, task.text_tokenizer
    split = task.chat_train
    row = next(i for i, r in enumerate(split.records) if len(r["views"]) == 2)
    ids, labels, grid = qa_chat_example(layout, seq, split, row, tok)
    question, answer = split.texts(row)
    # The prompt is what gst.api_chat.ChatSession.ask feeds the model (no system message): its user
    # message of the prepared images (vocabulary ids, view order) and the question, then [assistant].
    gst = SimpleNamespace(
        layout=layout, sequence=seq, text_tokenizer=tok, generator=torch.Generator().manual_seed
    )
    session = ChatSession(gst, system=None, max_new_tokens=8, sampling=None, seed=0, allow_segments=False)
    prepared = [codes.reshape(1, -1) + layout.image_offset for codes in split.images(row)]  # (1, h*w) each
    user, user_grid = session._message("user", [*prepared, question])
    prompt = torch.cat([user, torch.tensor([layout.special_id("<|assistant|>")])])
    assert torch.equal(ids[: len(prompt)], prompt)
    assert torch.equal(grid[: len(user)], user_grid)
    # Loss on exactly the answer's text ids and its [end].
    expected = tok.encode(answer) + [layout.special_id("<|end|>")]
    assert ids[len(prompt) :].tolist() == expected
    assert labels[len(prompt) :].tolist() == expected
    assert (labels[: len(prompt)] == IGNORE_INDEX).all()
    # A batch: 2 of 8 rows are chat, right-padded with pose rows; pose rows keep their tokens.
    batch = task.batch(0, torch.Generator().manual_seed(0), 8)
    assert batch.task.tolist().count(TASK_CHAT) == 2 and batch.attention_mask is not None
    L = seq.pose_seq_len
    assert (batch.attention_mask[:6, :L] == 1).all() and (batch.attention_mask[:6, L:] == 0).all()
    assert (batch.labels[batch.attention_mask == 0] == IGNORE_INDEX).all()
    # Chat rows come from train-split records with training phrasings only.
    pool = {task.chat_train.records[i]["phrasing_split"] for i in task.chat_pool}
    assert pool == {"train"}


def test_multi_turn_chat_rows_are_the_conversation_a_chat_session_reads(data: dict) -> None:
    task = _task(data, chat_fraction=1.0, chat_turns=3)
    layout, seq, tok, split = task.layout, task.run.sequence, task.text_tokenizer, task.chat_train
    talks = [task.chat_conversation(0, k, p, 10_000) for k, p in enumerate(range(len(task.chat_pool)))]
    assert talks == [task.chat_conversation(0, k, p, 10_000) for k in range(len(talks)) for p in [k]]
    pool = set(task.chat_pool.tolist())
    for k, talk in enumerate(talks):
        views = split.records[talk[0]]["image_rows"]
        same = [r for r in pool if split.records[r]["image_rows"] == views]
        assert talk[0] == task.chat_pool[k] and len(set(talk)) == len(talk) == min(3, len(same))
        assert set(talk) <= set(same)  # follow-ups: other training records about the same views
    talk = max(talks, key=len)
    assert len(talk) == 3
    ids, labels, _ = qa_chat_example(layout, seq, split, talk, tok)
    # The token sequence of a ChatSession that asked the three questions and got the three answers.
    gst = SimpleNamespace(
        layout=layout, sequence=seq, text_tokenizer=tok, generator=torch.Generator().manual_seed
    )
    session = ChatSession(gst, system=None, max_new_tokens=8, sampling=None, seed=0, allow_segments=False)
    prepared = [codes.reshape(1, -1) + layout.image_offset for codes in split.images(talk[0])]
    assistant, end = layout.special_id("<|assistant|>"), layout.special_id("<|end|>")
    expected, answers = [], []
    for k, row in enumerate(talk):
        question, answer = split.texts(row)
        user, _ = session._message("user", [*(prepared if k == 0 else []), question])
        expected += [*user.tolist(), assistant, *tok.encode(answer), end]
        answers += [*tok.encode(answer), end]
    assert ids.tolist() == expected
    assert labels[labels != IGNORE_INDEX].tolist() == answers
    # Follow-ups take only the room they are given: here exactly the first follow-up's turn.
    room = len(ids) - len(qa_chat_example(layout, seq, split, talk[0], tok)[0])
    turn = len(qa_chat_example(layout, seq, split, talk[:2], tok)[0]) - (len(ids) - room)
    k, position = talks.index(talk), int(np.flatnonzero(task.chat_pool == talk[0])[0])
    assert task.chat_conversation(0, k, position, turn) == talk[:2]
    assert task.chat_conversation(0, k, position, turn - 1) in ([talk[0]], [talk[0], talk[2]])
    # In a batch, follow-ups only fill the padding: the batch is as long as its one-question rows make
    # it (these short test questions leave no room for a whole follow-up turn).
    one = _task(data, chat_fraction=1.0, chat_turns=1)
    for index in range(8):
        packed, plain = task.batch(index, None, 8), one.batch(index, None, 8)
        assert packed.seq_len == plain.seq_len and packed.input_ids.shape[0] == 8
        assert (packed.attention_mask.sum(1) >= plain.attention_mask.sum(1)).all()
    # Records about other views never share a conversation.
    other = next(r for r in pool if split.records[r]["image_rows"] != split.records[talk[0]]["image_rows"])
    with pytest.raises(ValueError, match="other views"):
        qa_chat_example(layout, seq, split, [talk[0], other], tok)
    with pytest.raises(ValueError, match="chat_turns must be an integer >= 1"):
        dataclasses.replace(seq, chat_turns=0)


def test_chat_loss_decreases_and_eval_reports_chat(data: dict, tmp_path: Path) -> None:
    task = _task(data, chat_fraction=0.5, max_steps=40, checkpoint_every=40, eval_every=40, lr=1e-2)
    rows = task.chat_pool  # a tiny set: 16 records (4 train scenes x 4), 4 per step
    score = lambda model: chat_metrics(model, lambda r: task.chat_batch(task.chat_train, r), rows)  # noqa: E731
    before = score(task.build_model())
    result = train(task, task.run.train, tmp_path / "run")
    from gst.model import load_gst_model

    after = score(load_gst_model(result.checkpoint / "export"))
    assert after["loss"] < 0.5 * before["loss"]
    assert after["token_acc"] > before["token_acc"]
    for key in ("chat/loss", "chat/token_acc", "chat/exact", "chat/heldout/loss", "loss"):
        assert key in result.eval_metrics
    assert 0.0 <= result.eval_metrics["chat/token_acc"] <= 1.0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (
        config["task"]["run"]["sequence"]["chat_fraction"] == 0.5
        and config["task"]["chat"]["num_train_records"] == 16
    )


def test_resume_with_chat_equals_uninterrupted_run(data: dict, tmp_path: Path) -> None:
    kw = dict(max_steps=6, checkpoint_every=2, grad_accum_steps=2, batch_size=4)
    assert_resume_equals_uninterrupted(lambda: _task(data, **kw), tmp_path)


def test_tokenizer_mismatch_and_config_errors(data: dict, tmp_path: Path) -> None:
    other = make_tokenizers(tmp_path / "other", seed=1)
    build_chat_cache(data["tmp"] / "qa.jsonl", data["scenes"], other, tmp_path / "other_chat")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "other_chat" / "manifest.json"))):
        _task(data, chat=tmp_path / "other_chat")  # the pair cache and --tokenizers agree; the chat cache not
    with pytest.raises(ValueError, match="chat-cache"):
        open_chat_cache(data["chat"], tokenizers_dir=other)
    with pytest.raises(ValueError, match="already exists"):
        build_chat_cache(data["tmp"] / "qa.jsonl", data["scenes"], data["tok"], data["chat"])
    with pytest.raises(ValueError, match="--chat DIR"):
        GSTTask(_task(data).run, data["cache"], data["tok"])  # chat_fraction > 0 without a chat cache
    with pytest.raises(ValueError, match="chat_fraction is 0"):
        _task(data, chat_fraction=0.0)
    # Without chat rows the saved config has no chat_fraction key, so runs from before it resume,
    # and sequence configs without it still load.
    run = with_cache_grids(get_run_preset("micro"), open_token_cache(data["cache"]))
    plain = GSTTask(run, data["cache"], data["tok"])
    assert "chat_fraction" not in plain.config_dict()["run"]["sequence"] and "chat" not in plain.config_dict()
    old = {k: v for k, v in run.sequence.to_dict().items() if k != "chat_fraction"}
    assert SequenceConfig.from_dict(old).chat_fraction == 0.0


def test_cli_train_gst_with_chat(data: dict, tmp_path: Path, capsys) -> None:
    def gst(out: Path, *extra: str) -> int:
        return cli_main(
            [
                "train",
                "gst",
                "--preset",
                "micro",
                "--data",
                str(data["cache"]),
                "--tokenizers",
                str(data["tok"]),
                "--out",
                str(out),
                "--chat",
                str(data["chat"]),
                "--max-steps",
                "2",
                "--set",
                "eval.num_pose_pairs=0",
                *extra,
            ]
        )

    assert gst(tmp_path / "run", "--set", "sequence.chat_fraction=0.25") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and "chat/token_acc" in summary["eval"]
    assert gst(tmp_path / "run2") == 1  # --chat without sequence.chat_fraction
    assert "chat_fraction is 0" in capsys.readouterr().err
