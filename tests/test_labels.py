"""`Collator`: questions to encoder inputs, first gold answers to labels in the form each model type expects."""

from __future__ import annotations

import pytest
import torch

from rayrag.data.qa import QAExample
from rayrag.tiny import train_tokenizer
from rayrag.train.batches import Collator, QADataset

TEXTS = ["where was alice born", "paris france london", "the quick brown fox jumps over the lazy dog",
         "who wrote the book", "berlin rome madrid lisbon"]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=200)


def _ids(tok, text):
    """Token ids of `text` without special tokens."""
    return tok(text, add_special_tokens=False)["input_ids"]


def _collator(tok, is_rag, max_target_length=16, max_source_length=32):
    return Collator(tok, tok, is_rag=is_rag, decoder_start_token_id=tok.cls_token_id,
                    max_source_length=max_source_length, max_target_length=max_target_length)


def test_tokenizer_special_ids(tok):
    # the values the expectations below are written against
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 2, 3)
    assert tok("paris")["input_ids"] == [2, *_ids(tok, "paris"), 3]


def test_rag_labels_start_with_the_decoder_start_token_and_pad_with_the_pad_id(tok):
    start, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    labels = _collator(tok, is_rag=True).labels(["paris", "berlin rome madrid"])
    long = [start, *_ids(tok, "berlin rome madrid"), sep]
    short = [start, *_ids(tok, "paris"), sep]
    assert labels.dtype == torch.long
    assert labels.tolist() == [short + [pad] * (len(long) - len(short)), long]


def test_seq2seq_labels_drop_the_start_token_and_pad_with_minus_100(tok):
    sep = tok.sep_token_id
    labels = _collator(tok, is_rag=False).labels(["paris", "berlin rome madrid"])
    long = [*_ids(tok, "berlin rome madrid"), sep]
    short = [*_ids(tok, "paris"), sep]
    assert labels.dtype == torch.long
    assert labels.tolist() == [short + [-100] * (len(long) - len(short)), long]
    assert tok.cls_token_id not in labels.tolist()[0] + labels.tolist()[1]


@pytest.mark.parametrize("is_rag", [True, False])
def test_labels_are_truncated_at_max_target_length(tok, is_rag):
    answer = "the quick brown fox jumps over the lazy dog"
    words = _ids(tok, answer)
    assert len(words) > 4  # long enough to be cut
    labels = _collator(tok, is_rag=is_rag, max_target_length=4).labels([answer]).tolist()[0]
    # the tokenizer keeps max_target_length tokens, [CLS] and [SEP] included; seq2seq then drops [CLS]
    cut = [*words[:2], tok.sep_token_id]
    assert labels == ([tok.cls_token_id, *cut] if is_rag else cut)


@pytest.mark.parametrize("is_rag", [True, False])
def test_batch_uses_the_first_gold_answer_and_carries_positions(tok, is_rag):
    collate = _collator(tok, is_rag=is_rag)
    examples = [QAExample("where was alice born", ("paris", "london")),
                QAExample("who wrote the book", ("berlin rome", "madrid")),
                QAExample("where", ("lisbon",))]
    batch = collate([(7, examples[0]), (2, examples[1]), (40, examples[2])])
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == [7, 2, 40]
    assert torch.equal(batch["labels"], collate.labels(["paris", "berlin rome", "lisbon"]))
    assert not torch.equal(batch["labels"][:2], collate.labels(["london", "madrid"]))
    enc = tok([e.question for e in examples], padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], enc["input_ids"])
    assert torch.equal(batch["attention_mask"], enc["attention_mask"])
    assert batch["attention_mask"].tolist()[2] == [1, 1, 1] + [0] * (batch["input_ids"].shape[1] - 3)


def test_questions_are_truncated_at_max_source_length(tok):
    batch = _collator(tok, is_rag=True, max_source_length=3)([(0, QAExample("where was alice born", ("x",)))])
    assert batch["input_ids"].tolist() == [[tok.cls_token_id, _ids(tok, "where")[0], tok.sep_token_id]]


def test_dataset_yields_positions_with_examples():
    examples = [QAExample("a", ("b",)), QAExample("c", ("d",))]
    ds = QADataset(examples)
    assert len(ds) == 2 and ds[1] == (1, examples[1])
