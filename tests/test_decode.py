"""Answer text from generated ids: punctuation rejoined for WordPiece tokenizers, other tokenizers untouched."""

from __future__ import annotations

import pytest

from rayrag.evaluate.metrics import exact_match
from rayrag.model.decode import decode_answers, join_punctuation, splits_punctuation

TITLES = ["Wi-Fi", "Hilbert's problems", "Signal-to-noise ratio", "AC/DC", "Jupiter (planet)", "St. Peter, Rome"]


@pytest.fixture(scope="module")
def wordpiece():
    from transformers import AutoTokenizer

    from rayrag.encoders import resolve

    return AutoTokenizer.from_pretrained(resolve("minilm"))


@pytest.fixture(scope="module")
def byte_level():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TITLES * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>"],
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def test_wordpiece_round_trip_scores_as_the_title(wordpiece):
    ids = [wordpiece(t)["input_ids"] for t in TITLES]
    plain = wordpiece.batch_decode(ids, skip_special_tokens=True)
    assert "wi - fi" in plain  # what the tokenizer's own decoding gives
    assert splits_punctuation(wordpiece)
    answers = decode_answers(wordpiece, ids)
    assert answers == ["wi-fi", "hilbert's problems", "signal-to-noise ratio", "ac/dc", "jupiter (planet)",
                       "st. peter, rome"]
    assert all(exact_match(a, [t]) for a, t in zip(answers, TITLES))
    assert not all(exact_match(p, [t]) for p, t in zip(plain, TITLES))


def test_lossless_tokenizer_is_left_alone(byte_level):
    ids = [byte_level(t)["input_ids"] for t in ["a - b", "x ' y"]]
    assert not splits_punctuation(byte_level)
    assert decode_answers(byte_level, ids) == ["a - b", "x ' y"]


def test_join_punctuation():
    assert join_punctuation("rock ' n ' roll") == "rock'n'roll"
    assert join_punctuation("( band ) , 1990 .") == "(band), 1990."
    assert join_punctuation("post \u2013 world war ii") == "post\u2013world war ii"
    assert join_punctuation("plain words") == "plain words"
