"""Number tokens (issue 22, item 2): the bins and their MRA loss, text <-> ids round trips for every
numeric answer kind, the vocabulary segment and old dicts, a tiny model training on chat rows with them,
--init-from adding them to a checkpoint, and `gst eval qa --numbers tokens`.

The chat fixture is tests/test_chat_cache.py's (tiny scenes and tokenizers, QA records written by hand).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_api import make_checkpoint
from test_chat_cache import make_qa
from test_token_cache import make_scenes, make_tokenizers

from gst.api import GST
from gst.api_chat import NumberFormat
from gst.cli import main as cli_main
from gst.data.chat_cache import build_chat_cache
from gst.data.qa_types import (
    UNIT_DECIMALS as QA_UNIT_DECIMALS,
)
from gst.data.qa_types import (
    QARecord,
    box_answer,
    number_answer,
    parse_answer,
    parse_like,
    point_answer,
    write_jsonl,
)
from gst.data.token_cache import CacheConfig, build_token_cache, open_token_cache
from gst.eval.qa_baselines import NumberTokenReader
from gst.eval.qa_metrics import mra_of_relative_error, signed_token_belief, token_mbr_number
from gst.model import (
    GSTModelConfig,
    HeadKind,
    TokenLayout,
)
from gst.tokenizers.numbers import NUMBER_BINS, UNIT_DECIMALS, NumberBins, find_quantities
from gst.tokenizers.text import TextTokenizer
from gst.tokenizers.vocab import Vocabulary
from gst.training.gst_chat import qa_chat_example
from gst.training.gst_init import with_initial_weights
from gst.training.gst_task import GSTRunConfig, GSTTask, get_run_preset, with_cache_grids

torch.set_num_threads(1)

BYT5 = 384  # ByT5's ids: number tokens follow them
TOK = TextTokenizer.from_pretrained().with_numbers()
# One answer of every numeric kind (gst.data.qa_types formats) and the text its tokens decode to: each
# number is its bin's value with the unit's decimals.
ROUND_TRIPS = [
    (number_answer(3.85, "m"), "4.01 m"),  # dist_cam / dist_pair
    (number_answer(0.42, "m"), "0.40 m"),  # size_height
    (number_answer(122, "deg"), "127 deg"),  # cm_turn_deg
    (number_answer(12, "deg"), "12 deg"),
    (number_answer(1.37, "m"), "1.40 m"),  # cm_move_dist
    (point_answer([0.12, -0.3, 2.45]), "(0.12, -0.30, 2.49) m"),  # g3d_point
    (
        box_answer([-0.5, 0.0, 3.1], [0.5, 0.41, 0.62]),  # g3d_box: a negative, a zero
        "center (-0.49, 0.00, 3.01) m, size (0.49, 0.40, 0.65) m",
    ),
]


# ---- bins ----


def test_bins_round_trip_and_their_worst_relative_error_is_under_the_finest_mra_tolerance() -> None:
    bins = NUMBER_BINS
    assert (bins.lo, bins.hi, bins.num_bins, bins.num_tokens) == (0.01, 1000.0, 120, 121)
    assert bins.ratio == pytest.approx(10 ** (1 / 24), rel=1e-12)
    assert bins.worst_relative_error == pytest.approx(0.0479338, abs=1e-7)
    tokens = np.arange(bins.num_tokens)
    assert [bins.token(bins.value(int(t))) for t in tokens] == tokens.tolist()  # values round trip
    assert [bins.token(e) for e in bins.edges[:-1]] == list(range(1, 121))  # a bin holds its lower edge
    assert bins.token(0.0) == 0 and bins.value(0) == 0.0
    assert bins.token(0.0099) is None and bins.token(1000.0) is None and bins.token(math.inf) is None
    # Densely over the range: the worst relative error of the written value is (r - 1) / (r + 1), reached
    # at the bin edges, so every value keeps every MRA threshold (MRA 1.0).
    x = np.concatenate([np.geomspace(0.01, 999.99, 200_001), bins.edges[:-1]])
    written = bins.values[[bins.token(v) for v in x]]
    rel = np.abs(written - x) / x
    assert rel.max() <= bins.worst_relative_error + 1e-12 and rel.max() > bins.worst_relative_error - 1e-9
    assert min(mra_of_relative_error(r) for r in rel[::997]) == 1.0
    # 116 bins are the fewest under the finest tolerance (5 %); 100 would lose the 0.95 threshold.
    assert (
        NumberBins(num_bins=116).worst_relative_error < 0.05 <= NumberBins(num_bins=115).worst_relative_error
    )
    assert NumberBins(num_bins=100).worst_relative_error == pytest.approx(0.0576, abs=1e-4)
    assert NumberBins.from_dict(json.loads(json.dumps(bins.to_dict()))) == bins
    with pytest.raises(ValueError, match="lo < hi"):
        NumberBins(lo=1.0, hi=0.5)


def test_units_agree_with_the_answer_formats_and_quantities_are_numbers_with_a_unit() -> None:
    assert {u: UNIT_DECIMALS[u] for u in QA_UNIT_DECIMALS} == QA_UNIT_DECIMALS

    def found(text: str) -> list[str]:
        return [text[a:b] for a, b in find_quantities(text)]

    assert found("center (0.12, -0.30, 2.45) m, size (0.50, 0.41, 0.62) m") == [
        "0.12", "0.30", "2.45", "0.50", "0.41", "0.62",
    ]  # fmt: skip
    question = "Suppose you turn 30 degrees left, tilt 15° up and step 0.8 m ahead. How many in view 2?"
    assert found(question) == ["30", "15", "0.8"]
    assert found("How many objects, 3D, from view 1 to view 2, 1,000 m, 5 more, 2 metres") == ["2"]


# ---- text <-> ids ----


@pytest.mark.parametrize(("answer", "decoded"), ROUND_TRIPS)
def test_answer_text_ids_text_round_trip(answer, decoded: str) -> None:
    ids = TOK.encode(answer.text)
    numbers = [i for i in ids if i >= BYT5]
    assert len(numbers) == len(find_quantities(answer.text))  # one token per number, nothing else
    assert TOK.decode(ids) == decoded and TOK.encode(decoded) == ids  # stable after one round
    assert TOK.decode([i for i in ids if i < BYT5]) == "".join(  # the text around them is unchanged
        answer.text[a:b] for a, b in zip([0] + [e for _, e in find_quantities(answer.text)],
                                         [s for s, _ in find_quantities(answer.text)] + [None], strict=True)
    )  # fmt: skip
    got, want = parse_like(decoded, answer), answer
    flat = lambda a: np.ravel(a.value["center"] + a.value["size"] if a.type == "box" else a.value)  # noqa: E731
    decimals = QA_UNIT_DECIMALS.get(answer.unit or "m")
    tolerance = NUMBER_BINS.worst_relative_error * np.abs(flat(want)) + 0.5 * 10.0**-decimals + 1e-9
    assert np.all(np.abs(flat(got) - flat(want)) <= tolerance)
    assert np.array_equal(np.sign(flat(got)), np.sign(flat(want)))


def test_questions_counts_and_the_plain_tokenizer() -> None:
    plain = TextTokenizer.from_pretrained()
    question = "The camera turns 30 degrees to the left and moves 0.8 m forward. How many objects in view 2?"
    ids = TOK.encode(question)
    assert len(ids) == len(plain.encode(question)) - 3  # "30" and "0.8" are one token each
    assert TOK.decode(ids) == question.replace("0.8 m", "0.79 m")
    assert TOK.encode("3") == plain.encode("3")  # a count keeps its digits
    assert TOK.encode("4500 m") == plain.encode("4500 m")  # outside the bins: digits, never clamped
    assert TOK.decode(TOK.encode("3.85")) == "3.85"  # no unit: not a quantity
    assert TOK.decode([BYT5 + 63], decimals=1) == "4.0" and TOK.decode([BYT5 + 63]) == "4.01"  # 3 digits
    assert TOK.vocab_size == 505 and plain.vocab_size == 384 and TOK.number_id(3.85) == BYT5 + 63
    assert plain.for_text_ids(505).numbers == NUMBER_BINS and plain.for_text_ids(384) is plain
    with pytest.raises(ValueError, match="506 text ids"):
        plain.for_text_ids(506)
    with pytest.raises(ValueError, match="outside"):
        TOK.decode([505])


def test_vocabulary_number_segment_and_old_dicts() -> None:
    old = {
        "format_version": 1, "num_text": 384, "special_tokens": list(Vocabulary(
            num_text=1, num_image_codes=1, num_camera_codes=1).special_tokens),
        "num_image_codes": 32, "num_camera_codes": 27, "pad_to_multiple": 1,
        "special_offset": 384, "image_offset": 395, "camera_offset": 427, "size": 454,
    }  # fmt: skip
    plain = Vocabulary.from_dict(old)
    assert plain.numbers is None and plain.num_numbers == 0 and plain.to_dict() == old
    vocab = Vocabulary.for_tokenizers(TOK, type("I", (), {"num_codes": 32}), type("C", (), {"num_codes": 27}))
    assert (vocab.num_text, vocab.number_offset, vocab.num_numbers) == (505, 384, 121)
    assert (vocab.special_offset, vocab.image_offset, vocab.size) == (505, 516, 575)
    d = json.loads(json.dumps(vocab.to_dict()))
    assert d["numbers"] == {"lo": 0.01, "hi": 1000.0, "num_bins": 120} and d["num_numbers"] == 121
    assert Vocabulary.from_dict(d) == vocab
    with pytest.raises(ValueError, match="stored num_numbers = 120"):
        Vocabulary.from_dict({**d, "num_numbers": 120})
    ids = torch.arange(vocab.size)
    assert vocab.is_number(ids).sum() == 121 and vocab.is_text(ids).sum() == 505
    tokens = torch.arange(121).reshape(11, 11)
    assert torch.equal(vocab.number_tokens(vocab.number_ids(tokens)), tokens)
    with pytest.raises(ValueError, match="number id 383"):
        vocab.number_tokens(torch.tensor([383]))
    layout = TokenLayout.from_vocab(vocab)  # the model sees them as text rows
    assert (layout.num_text, layout.image_offset, layout.size) == (505, 516, 575)


# ---- training ----


pytestmark = pytest.mark.usefixtures("fresh_accelerate")  # tests/conftest.py


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("numbers")
    scenes, toks = make_scenes(tmp / "scenes"), make_tokenizers(tmp / "tok")
    build_token_cache(scenes, toks, tmp / "cache", CacheConfig(pairs_per_scene=4, seed=0, val_fraction=0.5))
    make_qa(tmp / "qa.jsonl")
    build_chat_cache(tmp / "qa.jsonl", scenes, toks, tmp / "chat", progress=False)
    return {"tmp": tmp, "tok": toks, "cache": tmp / "cache", "chat": tmp / "chat"}


def _run(data: dict, number_tokens: bool) -> GSTRunConfig:
    run = with_cache_grids(get_run_preset("micro"), open_token_cache(data["cache"]))
    return dataclasses.replace(
        run,
        number_tokens=number_tokens,
        sequence=dataclasses.replace(run.sequence, chat_fraction=0.5),
        eval=dataclasses.replace(run.eval, num_pose_pairs=0),
    )


def _task(data: dict, run: GSTRunConfig) -> GSTTask:
    return GSTTask(run, data["cache"], data["tok"], chat_dir=data["chat"])


def test_a_tiny_model_with_number_tokens_trains_one_step_on_chat_rows(chat_data: dict) -> None:
    task = _task(chat_data, _run(chat_data, number_tokens=True))
    assert task.vocab.num_numbers == 121 and task.layout.num_text == 505
    split = task.chat_train
    rows = [i for i, r in enumerate(split.records) if r["answer"]["type"] in ("number", "point")][:4]
    ids, labels, _ = qa_chat_example(task.layout, task.run.sequence, split, rows[0], task.text_tokenizer)
    answer = split.texts(rows[0])[1]
    expected = TOK.encode(answer) + [task.layout.special_id("<|end|>")]
    assert labels[labels != -100].tolist() == expected and any(i >= BYT5 for i in expected)
    model = task.build_model()
    batch = task.chat_batch(split, rows)
    number_rows = sorted({int(i) for i in batch.labels.flatten() if BYT5 <= i < 505})
    assert number_rows  # the answers' numbers are learnt as number tokens
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, metrics = task.loss(model, batch, 0)
    loss.backward()
    emb_grad = model.lm.get_input_embeddings().weight.grad  # (V, D), tied with the head
    assert all(float(emb_grad[r].abs().sum()) > 0 for r in number_rows)
    opt.step()
    with torch.no_grad():
        after, _ = task.loss(model, batch, 0)
    assert math.isfinite(float(loss.detach())) and float(after) < float(loss.detach())


def test_init_from_adds_number_rows_to_a_checkpoint_without_them(chat_data: dict, tmp_path: Path) -> None:
    base_task = _task(chat_data, _run(chat_data, number_tokens=False))
    base = base_task.build_model()
    base_task.export(base, tmp_path / "base")
    run = dataclasses.replace(
        with_initial_weights(_run(chat_data, False), tmp_path / "base"), number_tokens=True
    )
    task = _task(chat_data, run)
    grown = task.build_model()
    old, new = base.layout, grown.layout
    assert new == dataclasses.replace(old, num_text=505) and grown.lm.config.vocab_size == new.size
    w_old, w_new = (
        base.lm.get_input_embeddings().weight.detach(),
        grown.lm.get_input_embeddings().weight.detach(),
    )
    assert torch.equal(w_new[:BYT5], w_old[:BYT5])
    assert torch.equal(w_new[505 : new.num_used], w_old[BYT5 : old.num_used])  # specials, codes: moved
    # A number row starts at the mean of its value's digit rows ("4.01"), plus 2 % noise.
    digits = TextTokenizer.from_pretrained().encode("4.01")
    gap = (w_new[BYT5 + 63] - w_old[digits].mean(0)).norm() / w_old[:BYT5].std(0).norm()
    assert 0 < float(gap) < 0.05
    # The model computes what it computed: the same logits on the old rows, for the moved ids.
    batch = base_task.batch(0, torch.Generator().manual_seed(0), 4)
    moved = torch.where(batch.input_ids >= BYT5, batch.input_ids + 121, batch.input_ids)
    with torch.no_grad():
        a = base(batch.input_ids, batch.grid_pos, attention_mask=batch.attention_mask).logits
        b = grown(moved, batch.grid_pos, attention_mask=batch.attention_mask).logits
    assert torch.allclose(b[..., :BYT5], a[..., :BYT5], atol=1e-5)
    assert torch.allclose(b[..., 505:], a[..., BYT5:], atol=1e-5)
    others = {k: v for k, v in base.state_dict().items() if not k.startswith("lm.model.embed")}
    grown_state = grown.state_dict()
    assert all(torch.equal(grown_state[k], v) for k, v in others.items() if "lm_head" not in k)
    # A checkpoint with number tokens keeps them; dropping them is refused.
    task.export(grown, tmp_path / "grown")
    assert with_initial_weights(_run(chat_data, False), tmp_path / "grown").number_tokens
    refused = dataclasses.replace(
        with_initial_weights(_run(chat_data, False), tmp_path / "grown"), number_tokens=False
    )
    with pytest.raises(ValueError, match="token layout"):
        _task(chat_data, refused).build_model()
    with pytest.raises(ValueError, match="number_tokens=true needs a backbone"):
        GSTRunConfig(model=GSTModelConfig(pretrained="x"), train=run.train, number_tokens=True)


# ---- eval ----


def _number_checkpoint(root: Path) -> Path:
    """test_api's tiny untrained checkpoint, with number tokens."""
    vocab = Vocabulary(num_text=505, num_image_codes=32, num_camera_codes=27, numbers=NUMBER_BINS)
    return make_checkpoint(root, vocab)


@pytest.fixture(scope="module")
def number_gst(tmp_path_factory) -> tuple[Path, GST]:
    ckpt = _number_checkpoint(tmp_path_factory.mktemp("number_gst"))
    return ckpt, GST.from_pretrained(ckpt)


def test_the_checkpoint_reads_and_writes_number_tokens(number_gst) -> None:
    _, gst = number_gst
    assert gst.text_tokenizer.numbers == NUMBER_BINS and gst.vocab.num_numbers == 121
    question, image = "How far is the red box, in metres?", torch.rand(3, 16, 16)
    session = gst.start_chat(allow_segments=False)
    reply = TOK.encode("3.85 m")
    rows = session.next_logprobs(question, [image], reply)  # (4, V')
    assert rows.shape == (4, gst.layout.image_offset)
    assert torch.isinf(rows[:, gst.layout.special_id("<|pad|>")]).all()
    total = float(rows[torch.arange(3), torch.tensor(reply)].sum())
    assert total == pytest.approx(
        gst.score_replies(question, [image], ["3.85 m"], complete=False)[0], abs=1e-4
    )
    assert session._parts(torch.tensor([*reply, gst.layout.special_id("<|end|>")])) == ["4.01 m"]
    # The greedy number format admits number tokens, written with the format's decimals.
    for unit, decimals, token in (("m", 2, 63), ("deg", 0, 99)):  # "4.01", "127": complete numbers
        fmt = NumberFormat(gst.text_tokenizer, gst.layout, unit, decimals)
        assert fmt([])[BYT5:505].all()
        assert fmt([BYT5 + token]).nonzero().flatten().tolist() == TOK.encode(" ")
    answer = gst.answer_number(question, [image], "m", 2)
    assert parse_answer(answer, "number", unit="m").value >= 0


def test_numbers_tokens_reads_the_token_distribution(number_gst) -> None:
    _, gst = number_gst
    reader = NumberTokenReader(gst)
    image = torch.rand(3, 16, 16)
    for unit, decimals in (("m", 2), ("deg", 0)):
        text = reader.number("How far?", [image], unit, decimals)
        value = parse_answer(text, "number", unit=unit).value
        assert text == f"{value:.{decimals}f} {unit}" and value > 0
    point = parse_answer(reader.coordinates("Where is it?", [image], "point"), "point")
    box = parse_answer(reader.coordinates("Which box?", [image], "box"), "box")
    assert len(point.value) == 3 and min(box.value["size"]) >= 0
    # The number answer is the MBR choice under the distribution the model gives its number tokens.
    logp = gst.start_chat(allow_segments=False).next_logprobs("How far?", [image], [])[0]
    probs = logp[BYT5:505].softmax(-1).double().numpy()
    want = token_mbr_number(NUMBER_BINS.values, probs, 2)
    assert reader.number("How far?", [image], "m", 2) == f"{want:.2f} m"


def test_token_mbr_and_signed_belief_values() -> None:
    values = np.array([0.0, 1.0, 2.0, 4.0])
    assert token_mbr_number(values, [0.9, 0.1, 0.0, 0.0], 2) == 1.0  # the zero token is left out
    # Half the belief at 1, half at 4: 1.9 keeps no tolerance of either, 4 keeps all of one half.
    assert token_mbr_number(values, [0.0, 0.5, 0.0, 0.5], 0) in (1.0, 4.0)
    assert token_mbr_number(values, [0.0, 0.2, 0.6, 0.2], 0) == 2.0
    v, p = signed_token_belief(values, [0.1, 0.2, 0.1, 0.0], 0.6, [0.0, 0.0, 1.0, 1.0])
    assert v.tolist() == [0.0, 1.0, 2.0, 4.0, -0.0, -1.0, -2.0, -4.0]
    assert p.tolist() == pytest.approx([0.1, 0.2, 0.1, 0.0, 0.0, 0.0, 0.3, 0.3])
    assert float(v @ p) == pytest.approx(0.2 + 0.2 - 0.6 - 1.2)
    with pytest.raises(ValueError, match="no belief"):
        token_mbr_number(values, [1.0, 0.0, 0.0, 0.0], 2)


def test_cli_eval_qa_numbers_tokens(number_gst, tmp_path: Path, capsys) -> None:
    ckpt, _ = number_gst
    answers = [number_answer(3.85, "m"), number_answer(35, "deg"), point_answer([0.1, -0.2, 2.0])]
    answers.append(box_answer([0.1, -0.2, 2.0], [0.5, 0.4, 0.3]))
    records = [
        QARecord(
            id=f"q{i}",
            instance=f"q{i}",
            scene="scene_00000",
            views=(0,),
            family="distance",
            kind=f"k{i}",
            phrasing_id="p",
            phrasing_split="train",
            split="val",
            question=f"Question {i}?",
            answer=answer,
        )  # fmt: skip
        for i, answer in enumerate(answers)
    ]
    write_jsonl(records, tmp_path / "qa.jsonl")
    args = ["eval", "qa", "--data", str(tmp_path / "qa.jsonl"), "--method", "text-only", "--json"]
    assert (
        cli_main([*args, "--checkpoint", str(ckpt), "--numbers", "tokens", "--out", str(tmp_path / "o")]) == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert results["numbers"] == "tokens" and results["metrics"]["overall"]["unparseable"] == 0
    lines = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert [d["parsed"] for d in lines] == [True] * 4
    plain = make_checkpoint(tmp_path / "plain")  # a model that writes digits: mbr is its row
    assert cli_main([*args, "--checkpoint", str(plain), "--numbers", "tokens"]) == 1
    assert "no number tokens" in capsys.readouterr().err
    head = HeadKind.FULL  # the chat head covers number rows (text rows of the layout)
    assert GST.from_pretrained(ckpt).layout.kind_rows(head) == (0, 575)
