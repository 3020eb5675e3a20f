"""Question-answer examples to model batches: questions for the question encoder, answers as labels.

RAG models take labels that start with the decoder's start token (RAG feeds labels to the
decoder and drops their first column from the target), padded with the pad id. Closed-book
seq2seq models take labels without the start token, padded with -100 (the model shifts them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rayrag.data.qa import QAExample


class Collator:
    """Tokenizes a list of `QAExample` into input_ids/attention_mask (B, S) and labels (B, T) int64."""

    def __init__(self, question_tokenizer, generator_tokenizer, *, is_rag: bool, decoder_start_token_id: int,
                 max_source_length: int, max_target_length: int):
        self.qtok, self.gtok = question_tokenizer, generator_tokenizer
        self.is_rag = is_rag
        self.start = decoder_start_token_id
        self.max_source_length, self.max_target_length = max_source_length, max_target_length

    def labels(self, answers: Sequence[str]) -> torch.Tensor:
        rows = self.gtok(list(answers), truncation=True, max_length=self.max_target_length)["input_ids"]
        rows = [r[1:] if r and r[0] == self.start else r for r in rows]  # without the start token
        if self.is_rag:
            rows = [[self.start] + r for r in rows]
            pad = self.gtok.pad_token_id
        else:
            pad = -100
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)

    def __call__(self, items: Sequence[tuple[int, QAExample]]) -> dict:
        """items: (position in the split, example) pairs; the positions come back as `index` (B,)."""
        examples = [e for _, e in items]
        enc = self.qtok([e.question for e in examples], truncation=True, max_length=self.max_source_length,
                        padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": self.labels([e.answers[0] for e in examples]),
                "index": torch.tensor([i for i, _ in items], dtype=torch.long)}


class QADataset(torch.utils.data.Dataset):
    """A split as a map-style dataset of (position, example)."""

    def __init__(self, examples: Sequence[QAExample]):
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[int, QAExample]:
        return i, self.examples[i]
