"""The unified vocabulary: offsets, exact round trips of every id mapping, masks, serialisation."""

from __future__ import annotations

import json

import pytest
import torch

from gst.tokenizers.vocab import DEFAULT_SPECIAL_TOKENS, Vocabulary

VOCAB = Vocabulary(num_text=384, num_image_codes=1024, num_camera_codes=1000)


def test_layout_offsets_and_padding() -> None:
    S = len(DEFAULT_SPECIAL_TOKENS)
    assert S == 11
    assert (VOCAB.special_offset, VOCAB.image_offset, VOCAB.camera_offset) == (384, 395, 1419)
    assert VOCAB.size == VOCAB.num_used == 2419
    padded = Vocabulary(num_text=384, num_image_codes=1024, num_camera_codes=1000, pad_to_multiple=64)
    assert padded.size == 2432 and padded.size % 64 == 0 and padded.num_used == 2419
    assert padded.camera_offset == VOCAB.camera_offset  # padding only appends rows


def test_every_id_mapping_round_trips_exactly() -> None:
    image_codes = torch.arange(VOCAB.num_image_codes)
    image_ids = VOCAB.image_ids(image_codes)
    assert image_ids[0] == VOCAB.image_offset and image_ids[-1] == VOCAB.camera_offset - 1
    assert torch.equal(VOCAB.image_codes(image_ids), image_codes)
    camera_codes = torch.arange(VOCAB.num_camera_codes).reshape(10, 100)  # any shape
    camera_ids = VOCAB.camera_ids(camera_codes)
    assert camera_ids.shape == (10, 100) and int(camera_ids.max()) == VOCAB.size - 1
    assert torch.equal(VOCAB.camera_codes(camera_ids), camera_codes)
    for i, name in enumerate(DEFAULT_SPECIAL_TOKENS):
        assert VOCAB.special_id(name) == 384 + i and VOCAB.special_name(384 + i) == name


def test_masks_partition_the_id_space() -> None:
    padded = Vocabulary(num_text=10, num_image_codes=5, num_camera_codes=3, pad_to_multiple=16)
    ids = torch.arange(padded.size)
    masks = torch.stack(
        [padded.is_text(ids), padded.is_special(ids), padded.is_image(ids), padded.is_camera(ids)]
    )
    assert masks.sum(0)[: padded.num_used].eq(1).all()  # every used id in exactly one family
    assert masks.sum(0)[padded.num_used :].eq(0).all()  # padding rows in none
    assert masks.sum(1).tolist() == [10, 11, 5, 3]


def test_ids_outside_a_family_are_errors() -> None:
    with pytest.raises(ValueError, match="image id 5 is outside"):
        VOCAB.image_codes(torch.tensor([VOCAB.image_offset, 5]))
    with pytest.raises(ValueError, match="camera id"):
        VOCAB.camera_codes(torch.tensor([VOCAB.camera_offset - 1]))  # the last image id
    with pytest.raises(ValueError, match="image code 1024"):
        VOCAB.image_ids(torch.tensor([1024]))
    with pytest.raises(ValueError, match="integer tensor"):
        VOCAB.camera_ids(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="unknown special token"):
        VOCAB.special_id("<|nope|>")


def test_serialisation_is_validated() -> None:
    d = json.loads(json.dumps(VOCAB.to_dict()))
    assert Vocabulary.from_dict(d) == VOCAB
    assert d["image_offset"] == 395 and d["size"] == 2419
    with pytest.raises(ValueError, match=r"unknown keys \['num_txt'\]"):
        Vocabulary.from_dict({**d, "num_txt": 1})
    with pytest.raises(ValueError, match="stored camera_offset = 7"):
        Vocabulary.from_dict({**d, "camera_offset": 7})
    with pytest.raises(ValueError, match="format_version 2"):
        Vocabulary.from_dict({**d, "format_version": 2})
    with pytest.raises(ValueError, match="missing keys"):
        Vocabulary.from_dict({"num_text": 3})
    with pytest.raises(ValueError, match="duplicates"):
        Vocabulary(num_text=1, special_tokens=("<a>", "<a>"), num_image_codes=1, num_camera_codes=1)
    with pytest.raises(ValueError, match="must be an int"):
        Vocabulary(num_text=1.5, num_image_codes=1, num_camera_codes=1)


def test_for_tokenizers_reads_sizes() -> None:
    from types import SimpleNamespace

    vocab = Vocabulary.for_tokenizers(
        SimpleNamespace(vocab_size=384),
        SimpleNamespace(num_codes=1024),
        SimpleNamespace(num_codes=1000),
        pad_to_multiple=64,
    )
    sizes = (vocab.num_text, vocab.num_image_codes, vocab.num_camera_codes, vocab.size)
    assert sizes == (384, 1024, 1000, 2432)
