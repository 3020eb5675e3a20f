"""Tiny randomly initialised models with a WordPiece tokenizer trained on the fly.

For tests and for trying the pipeline with no network: `tiny` encoders are BERT checkpoints
(their weights load into both DPR classes, like any BERT checkpoint), `tiny-bart` and `tiny-t5`
are seq2seq generators. All share one tokenizer with [PAD] [UNK] [CLS] [SEP] [MASK].

Not part of the production import path: `kb/build.py` and `model/assemble.py` import this module
only when `--encoder tiny` or `--generator tiny-bart`/`tiny-t5` is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A lower-casing WordPiece `BertTokenizerFast` trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]",
                             pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                             bos_token="[CLS]", eos_token="[SEP]")


def save_tiny_encoder(out_dir: str | Path, tokenizer, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a random BERT checkpoint (loadable as DPR question or context encoder) and its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=max(1, hidden // 16), intermediate_size=hidden * 2,
                     max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id)
    out = Path(out_dir)
    BertModel(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_generator(kind: str, tokenizer, d_model: int = 32, layers: int = 2, seed: int = 0):
    """A random `BartForConditionalGeneration` (`tiny-bart`) or `T5ForConditionalGeneration` (`tiny-t5`)."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    if kind == "tiny-bart":
        cfg = BartConfig(vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers,
                         decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2,
                         encoder_ffn_dim=d_model * 2, decoder_ffn_dim=d_model * 2,
                         max_position_embeddings=512, bos_token_id=tokenizer.cls_token_id,
                         decoder_start_token_id=tokenizer.cls_token_id, forced_eos_token_id=None, **ids)
        return BartForConditionalGeneration(cfg)
    if kind == "tiny-t5":
        cfg = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // 2, d_ff=d_model * 2,
                       num_layers=layers, num_decoder_layers=layers, num_heads=2,
                       decoder_start_token_id=tokenizer.pad_token_id, **ids)
        return T5ForConditionalGeneration(cfg)
    raise ValueError(f"unknown tiny generator {kind!r}")
