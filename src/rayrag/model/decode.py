"""Generated token ids back to answer text.

A WordPiece tokenizer of the BERT family (the packaged MiniLM's, the tiny test models') splits punctuation off
words before it looks words up, so decoding puts a space on both sides of every punctuation mark: the model that
generated the tokens of "Wi-Fi" reads back as "wi - fi", "Hilbert's problems" as "hilbert ' s problems". SQuAD's
answer normalisation drops punctuation without closing the gap ("wi fi" against "wifi"), so such answers score as
wrong although the model wrote the right tokens. `decode_answers` closes the gaps that written English does not
have: around hyphens, en dashes, apostrophes and slashes, inside brackets, and before closing punctuation.
Tokenizers whose decoding gives the text back as it was (BART's and T5's) are left alone; which kind a tokenizer
is, is found by decoding a probe once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PROBE = "wi-fi"
_JOIN = re.compile(r" ?([-\u2013'/]) ?")    # x - y, x – y (en dash), x ' s, a / b
_OPEN = re.compile(r"([(\[]) ")             # ( x
_CLOSE = re.compile(r" ([)\].,;:!?%])")     # x ) , x . , x %


def splits_punctuation(tokenizer) -> bool:
    """Whether decoding this tokenizer's tokens puts spaces around punctuation (WordPiece after BERT's
    pre-tokenizer does; byte-level BPE and SentencePiece do not). Asked once per tokenizer object."""
    cached = getattr(tokenizer, "_rayrag_splits_punctuation", None)
    if cached is None:
        ids = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
        cached = tokenizer.decode(ids, skip_special_tokens=True).strip().lower() != _PROBE
        try:
            tokenizer._rayrag_splits_punctuation = cached
        except AttributeError:  # a tokenizer that refuses new attributes is probed each time
            pass
    return cached


def join_punctuation(text: str) -> str:
    """Close the spaces a punctuation-splitting tokenizer's decoding leaves: "wi - fi" -> "wi-fi"."""
    text = _JOIN.sub(r"\1", text)
    text = _OPEN.sub(r"\1", text)
    return _CLOSE.sub(r"\1", text).strip()


def decode_answers(tokenizer, ids) -> list[str]:
    """`tokenizer.batch_decode(ids, skip_special_tokens=True)`, with punctuation rejoined where the tokenizer's own
    decoding leaves it spaced out (see the module's note)."""
    texts: Sequence[str] = tokenizer.batch_decode(ids, skip_special_tokens=True)
    if not splits_punctuation(tokenizer):
        return list(texts)
    return [join_punctuation(t) for t in texts]
