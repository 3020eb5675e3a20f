"""Pooling that matches the encoder: mean for sentence-transformers checkpoints, first token (CLS) for DPR ones,
in `rayrag index` and the RAG model's question encoder alike, recorded on both sides and checked against each other.

A tiny random BERT encoder (a dozen passages) is embedded both ways, in process, in a few seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import assert_same_loss
from rayrag import encoders
from rayrag.encoders import pooling
from rayrag.errors import RayragError
from rayrag.kb.build import write_knowledge_base
from rayrag.kb.manifest import MANIFEST, Manifest
from rayrag.kb.store import KnowledgeBase
from rayrag.kb.args import KbArgs
from rayrag.model.assemble import init_model
from rayrag.model.options import InitOptions
from rayrag.model.checkpoint import load_model
from rayrag.tiny import save_tiny_encoder, train_tokenizer

TITLES = [f"Person {i}" for i in range(12)]
TEXTS = [f"person {i} was born in {c} and bakes {c} bread every morning" for i, c in
         enumerate(["paris", "berlin", "rome", "madrid", "lisbon", "vienna", "prague", "oslo", "dublin", "athens",
                    "warsaw", "bern"])]
QUESTIONS = ["where was person 3 born?", "who bakes vienna bread every morning in the city?"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{"encoder", "kb_mean", "kb_cls", "rag_mean", "rag_cls"}: one tiny encoder, a knowledge base embedded with each
    pooling, and a RAG-token model made by init-model on each."""
    d = tmp_path_factory.mktemp("pooling")
    encoder = save_tiny_encoder(d / "encoder", train_tokenizer(TITLES + TEXTS + QUESTIONS))
    model, tok = encoders.load_context_encoder(str(encoder))
    out = {"encoder": encoder}
    for p in pooling.POOLINGS:
        vectors = encoders.embed_passages(model, tok, TITLES, TEXTS, progress=False, pooling=p)
        write_knowledge_base(d / f"kb_{p}", TITLES, TEXTS, vectors, encoder="tiny", encoder_dir=encoder,
                             n_documents=len(TEXTS), pooling=p)
        out[f"kb_{p}"] = d / f"kb_{p}"
        out[f"rag_{p}"] = init_model(InitOptions(out=d / f"rag_{p}", generator="tiny-bart",
                                                 n_docs=2, kb=KbArgs(path=d / f"kb_{p}")))
    return out


def _hidden(encoder_dir, texts, pair=None):
    """Token vectors (B, S, d) and attention mask of a BERT checkpoint, computed directly."""
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(encoder_dir)
    bert = BertModel.from_pretrained(encoder_dir, add_pooling_layer=False).eval()
    enc = tok(texts, pair, padding=True, truncation="only_second" if pair else True, max_length=256,
              return_tensors="pt")
    with torch.no_grad():
        return bert(**enc).last_hidden_state, enc["attention_mask"]


def _manual_mean(hidden, mask, scale=1.0):
    """The L2-normalised mean of each row's unmasked token vectors, times `scale`."""
    means = np.stack([hidden[i, mask[i].bool()].mean(0).numpy() for i in range(len(hidden))])
    return means / np.linalg.norm(means, axis=1, keepdims=True) * scale


def test_mean_pool_averages_the_unmasked_tokens_only():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    got = pooling.mean_pool(hidden, mask)
    torch.testing.assert_close(got[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(got[1], hidden[1].mean(0))
    torch.testing.assert_close(pooling.pool(hidden, mask, "cls"), hidden[:, 0])
    unit = pooling.pool(hidden, mask, "mean")
    torch.testing.assert_close(unit, got / got.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))


def test_detect_reads_the_sentence_transformers_pooling_module(built, tmp_path):
    assert pooling.detect(encoders.resolve(encoders.MINILM)) == "mean"  # all-MiniLM-L6-v2 was trained with it
    assert encoders.default_pooling(encoders.MINILM) == "mean"
    assert pooling.detect(built["encoder"]) == "cls"  # a plain BERT checkpoint: DPR's first token
    assert encoders.default_pooling("facebook/dpr-ctx_encoder-single-nq-base") == "cls"  # a hub name, not here
    st = tmp_path / "st"
    (st / "1_Pooling").mkdir(parents=True)
    (st / "modules.json").write_text(json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"},
                                                 {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert pooling.detect(st) == "cls"
    (st / "modules.json").write_text("[not json")
    with pytest.raises(RayragError, match=r"modules.json: cannot read .*--pooling"):
        pooling.detect(st)
    with pytest.raises(RayragError, match="--pooling 'max'"):
        pooling.resolve("max", None)


def test_index_embeds_passages_with_the_pooling_it_records(built):
    hidden, mask = _hidden(built["encoder"], TITLES, TEXTS)
    for p, want in (("mean", _manual_mean(hidden, mask)), ("cls", hidden[:, 0].numpy())):
        assert Manifest.read(built[f"kb_{p}"]).pooling == p
        stored = KnowledgeBase(built[f"kb_{p}"]).vectors(np.arange(len(TEXTS)))
        np.testing.assert_allclose(stored, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(_manual_mean(hidden, mask), hidden[:, 0].numpy(), atol=1e-3)  # the two really differ


def test_a_manifest_without_pooling_means_cls(built, tmp_path):
    kb = tmp_path / "old"
    shutil.copytree(built["kb_cls"], kb)
    data = json.loads((kb / MANIFEST).read_text())
    del data["pooling"]
    (kb / MANIFEST).write_text(json.dumps(data))
    assert Manifest.read(kb).pooling == "cls"
    load_model(built["rag_cls"], kb=kb)  # a cls model on it: accepted


def test_init_model_gives_the_question_encoder_the_knowledge_base_pooling(built):
    hidden, mask = _hidden(built["encoder"], QUESTIONS)
    for p, cls_name, want in (("mean", "MeanPoolingQuestionEncoder", _manual_mean(hidden, mask, scale=20.0)),
                              ("cls", "DPRQuestionEncoder", hidden[:, 0].numpy())):
        loaded = load_model(built[f"rag_{p}"])
        q = loaded.model.question_encoder
        assert type(q).__name__ == cls_name
        assert pooling.of_question_encoder(loaded.model.config.question_encoder) == p
        config = json.loads((built[f"rag_{p}"] / "config.json").read_text())
        assert config["question_encoder"]["model_type"] == ("rayrag_dpr_mean" if p == "mean" else "dpr")
        assert config["question_encoder"].get("score_scale") == (20.0 if p == "mean" else None)
        enc = loaded.question_tokenizer(QUESTIONS, return_tensors="pt", padding=True)
        with torch.no_grad():
            got = q(enc["input_ids"], attention_mask=enc["attention_mask"])[0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_mean_pooling_ignores_padding_in_a_batch(built):
    loaded = load_model(built["rag_mean"])
    tok, q = loaded.question_tokenizer, loaded.model.question_encoder
    with torch.no_grad():
        alone = q(**tok(QUESTIONS[:1], return_tensors="pt"))[0]
        batch = tok(QUESTIONS, return_tensors="pt", padding=True)
        assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the premise: it is padded
        padded = q(batch["input_ids"], attention_mask=batch["attention_mask"])[0][:1]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


def test_a_pooling_mismatch_is_one_line_naming_both_and_the_fix(built):
    with pytest.raises(RayragError) as e:
        load_model(built["rag_cls"], kb=built["kb_mean"])
    msg = str(e.value)
    assert "\n" not in msg and "cls" in msg and "mean" in msg and "rayrag index --pooling cls" in msg
    assert str(built["rag_cls"]) in msg and str(built["kb_mean"]) in msg
    with pytest.raises(RayragError, match=r"pools by mean .* cls pooling"):
        load_model(built["rag_mean"], kb=built["kb_cls"])
    with pytest.raises(RayragError, match=r"--pooling cls: the knowledge base .* mean pooling"):
        init_model(InitOptions(out=built["kb_mean"].parent / "x", generator="tiny-bart",
                               pooling="cls", kb=KbArgs(path=built["kb_mean"])))


def test_train_refuses_a_model_whose_pooling_differs_from_the_knowledge_base(built, corpus_dir, tmp_path):
    from rayrag.train.options import TrainOptions
    from rayrag.train.run import train

    opts = TrainOptions(data_dir=corpus_dir / "data", output_dir=tmp_path / "run", model_name_or_path=built["rag_cls"],
                        do_train=True, max_steps=1, progress=False, kb=KbArgs(path=built["kb_mean"]))
    with pytest.raises(RayragError, match=r"pools by cls .* mean pooling"):
        train(opts)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_plain_transformers_loads_a_mean_model_once_rayrag_encoders_is_imported(built):
    """`RagRetriever`/`RagTokenForGeneration.from_pretrained` work unchanged: same question vectors, passages and
    loss as rayrag's own loading."""
    from transformers import RagRetriever, RagTokenForGeneration

    plain = RagTokenForGeneration.from_pretrained(built["rag_mean"],
                                                  retriever=RagRetriever.from_pretrained(built["rag_mean"])).eval()
    assert type(plain.question_encoder) is pooling.MeanPoolingQuestionEncoder
    assert_same_loss(plain, load_model(built["rag_mean"]), QUESTIONS, ["rome", "vienna"])


# What a user of plain transformers writes (README), run where rayrag is never imported: the cls model loads as it
# is; the mean one is refused by name without its code, and loads with it (auto_map + trust_remote_code).
PLAIN_USER = """
import json, sys
import torch
from transformers import AutoConfig, RagRetriever, RagTokenForGeneration, RagTokenizer

cls_dir, mean_dir, questions, answers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
RagTokenForGeneration.from_pretrained(cls_dir)
try:
    RagRetriever.from_pretrained(mean_dir)
    refused = None
except KeyError as e:
    refused = str(e)

config = AutoConfig.from_pretrained(mean_dir, trust_remote_code=True)  # runs mean_dir/mean_pooling_dpr.py
retriever = RagRetriever.from_pretrained(mean_dir, config=config)
model = RagTokenForGeneration.from_pretrained(mean_dir, config=config, retriever=retriever).eval()
tokenizer = RagTokenizer.from_pretrained(mean_dir, config=config)

enc = tokenizer(questions, return_tensors="pt", padding=True)
labels = tokenizer.generator(answers, return_tensors="pt", padding=True)["input_ids"]
with torch.no_grad():
    q = model.question_encoder(enc["input_ids"], attention_mask=enc["attention_mask"])[0]
    ids = retriever(enc["input_ids"].numpy(), q.numpy(), return_tensors="np")["doc_ids"]
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels, reduce_loss=True)
    generated = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_new_tokens=8,
                               do_sample=False)
assert not [m for m in sys.modules if m.split(".")[0] == "rayrag"], "rayrag was imported"
print(json.dumps({"refused": refused, "encoder": type(model.question_encoder).__name__, "ids": ids.tolist(),
                  "doc_scores": out.doc_scores.tolist(), "loss": out.loss.item(), "generated": generated.tolist(),
                  "answers": tokenizer.batch_decode(generated, skip_special_tokens=True)}))
"""


def test_plain_transformers_without_rayrag_loads_a_mean_model_by_its_saved_code(built, tmp_path):
    """A fresh interpreter that never imports rayrag opens the mean model as the README says (its code from the model
    directory, `trust_remote_code=True`): the same retrieved passages, passage scores, loss and generated answers as
    rayrag's own loading; without that step it is refused by name, never silently pooled by the first token."""
    import subprocess
    import sys

    from rayrag.model.checkpoint import AUTO_CONFIG, CODE_MODULE

    mean_dir = built["rag_mean"]
    assert json.loads((mean_dir / "config.json").read_text())["auto_map"] == {"AutoConfig": AUTO_CONFIG}
    assert (mean_dir / f"{CODE_MODULE}.py").is_file()
    assert not (built["rag_cls"] / f"{CODE_MODULE}.py").exists()
    assert "auto_map" not in json.loads((built["rag_cls"] / "config.json").read_text())
    answers = ["rome", "vienna"]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run([sys.executable, "-c", PLAIN_USER, str(built["rag_cls"]), str(mean_dir),
                           json.dumps(QUESTIONS), json.dumps(answers)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "rayrag_dpr_mean" in plain["refused"]
    assert plain["encoder"] == "MeanPoolingQuestionEncoder"

    ours = load_model(mean_dir)
    enc = ours.question_tokenizer(QUESTIONS, return_tensors="pt", padding=True)
    labels = ours.generator_tokenizer(answers, return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        q = ours.model.question_encoder(enc["input_ids"], attention_mask=enc["attention_mask"])[0].numpy()
        out = ours.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels,
                         reduce_loss=True)
        generated = ours.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                        max_new_tokens=8, do_sample=False)
    assert plain["ids"] == ours.retriever.retrieve(q, 2)[1].tolist()
    np.testing.assert_allclose(plain["doc_scores"], out.doc_scores.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(plain["loss"], out.loss.item(), rtol=1e-4)
    assert plain["generated"] == generated.tolist()
    assert plain["answers"] == ours.generator_tokenizer.batch_decode(generated, skip_special_tokens=True)
