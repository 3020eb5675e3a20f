"""Model directories written by `init-model`, in process: rayrag's own round trip, and plain transformers.

One tiny knowledge base (a random `tiny` encoder, a dozen passages), one RAG-token model and one
closed-book BART model on it, built once for the module in a few seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import assert_same_loss
from rayrag.errors import RayragError
from rayrag.kb.build import write_knowledge_base
from rayrag.kb.store import KnowledgeBase
from rayrag.kb.args import KbArgs
from rayrag.model.assemble import init_model
from rayrag.model.options import InitOptions
from rayrag.model.checkpoint import INFO_FILE, ModelInfo, load_model, read_info, save_model
from rayrag.tiny import save_tiny_encoder, tiny_generator, train_tokenizer

CITIES = ["paris", "berlin", "rome", "madrid", "lisbon", "vienna", "prague", "oslo", "dublin", "athens",
          "warsaw", "bern"]
QUESTIONS = ["where was person 3 born?", "what is the job of person 7?"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{"kb", "rag", "bart"}: a knowledge base of 12 passages and two model directories on it.

    The knowledge base holds a random `tiny` encoder (the question encoder of the models) and random
    Gaussian passage vectors: well apart, so which passages are nearest never hangs on rounding."""
    d = tmp_path_factory.mktemp("checkpoint")
    titles = [f"Person {i}" for i in range(len(CITIES))]
    texts = [f"person {i} was born in {c} and works as a {c}ian baker" for i, c in enumerate(CITIES)]
    encoder = save_tiny_encoder(d / "encoder", train_tokenizer(titles + texts))
    vectors = np.random.default_rng(0).standard_normal((len(texts), 32)).astype(np.float32)
    write_knowledge_base(d / "kb", titles, texts, vectors, encoder="tiny", encoder_dir=encoder,
                         n_documents=len(texts))
    rag = init_model(InitOptions(out=d / "rag", generator="tiny-bart", n_docs=2, kb=KbArgs(path=d / "kb")))
    bart = init_model(InitOptions(out=d / "bart", model_type="bart", generator="tiny-bart", kb=KbArgs(path=d / "kb")))
    return {"kb": d / "kb", "rag": rag, "bart": bart}


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _question_vectors(model, tokenizer, questions=QUESTIONS):
    enc = tokenizer(questions, return_tensors="pt", padding=True)
    with torch.no_grad():
        q = model.question_encoder(enc["input_ids"], attention_mask=enc["attention_mask"])[0]
    return enc, q.numpy().astype(np.float32)


def _exact_top(kb_dir, q, k):
    """Ids (B, k) of the k best passages for `q`, by brute force over the stored vectors."""
    kb = KnowledgeBase(kb_dir)
    scores = q @ kb.vectors(np.arange(len(kb))).T
    ranked = -np.sort(-scores, axis=1)
    assert (ranked[:, :k] - ranked[:, 1:k + 1] > 1e-3).all(), ranked  # the premise: no near-ties to round off
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


# --- rayrag's own round trip ---------------------------------------------------------------------------

def test_rag_info_records_type_and_knowledge_base(built):
    kb = str(built["kb"].resolve())
    assert json.loads((built["rag"] / INFO_FILE).read_text()) == {"model_type": "rag_token", "kb": kb}
    info = read_info(built["rag"])
    assert info == ModelInfo("rag_token", kb=kb) and info.is_rag
    config = json.loads((built["rag"] / "config.json").read_text())
    assert (config["index_name"], config["n_docs"], config["retrieval_vector_size"]) == ("custom", 2, 32)
    assert config["passages_path"] == str(built["kb"].resolve() / "passages")
    assert config["index_path"] == str(built["kb"].resolve() / "index.faiss")


def test_rag_model_takes_the_knowledge_base_encoder_as_question_encoder(built):
    from transformers import BertModel

    encoder = BertModel.from_pretrained(built["kb"] / "encoder")
    loaded = load_model(built["rag"], retrieval=False)
    bert = loaded.model.question_encoder.question_encoder.bert_model
    _assert_same_weights({k: v for k, v in _state(encoder).items() if not k.startswith("pooler.")},
                         _state(bert))


def test_rag_save_then_load_round_trips_weights_tokenizers_and_info(built, tmp_path):
    first = load_model(built["rag"], retrieval=False)
    assert first.retriever is None and first.info == read_info(built["rag"])
    assert type(first.model).__name__ == "RagTokenForGeneration"
    save_model(tmp_path / "copy", first.model, first.question_tokenizer, first.generator_tokenizer, first.info)
    again = load_model(tmp_path / "copy", retrieval=False)
    assert again.info == first.info
    _assert_same_weights(_state(first.model), _state(again.model))
    assert again.question_tokenizer.get_vocab() == first.question_tokenizer.get_vocab()
    assert again.generator_tokenizer(QUESTIONS)["input_ids"] == first.generator_tokenizer(QUESTIONS)["input_ids"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temporary left beside it
    with pytest.raises(RayragError, match="already exists"):
        save_model(tmp_path / "copy", first.model, first.question_tokenizer, first.generator_tokenizer,
                   first.info, overwrite=False)


def test_load_model_attaches_a_retriever_over_the_recorded_knowledge_base(built):
    loaded = load_model(built["rag"])
    assert loaded.retriever is not None and loaded.model.retriever is loaded.retriever
    _, q = _question_vectors(loaded.model, loaded.question_tokenizer)
    _, ids, docs = loaded.retriever.retrieve(q, 2)
    np.testing.assert_array_equal(ids, _exact_top(built["kb"], q, 2))
    kb = KnowledgeBase(built["kb"])
    assert docs[1]["title"] == kb.passages(ids).titles[1]


def test_closed_book_model_round_trips(built, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert read_info(built["bart"]) == ModelInfo("bart", kb=None)
    loaded = load_model(built["bart"])
    assert loaded.retriever is None and type(loaded.model).__name__ == "BartForConditionalGeneration"
    assert loaded.question_tokenizer is loaded.generator_tokenizer
    tok = AutoTokenizer.from_pretrained(built["kb"] / "encoder")
    assert loaded.generator_tokenizer.get_vocab() == tok.get_vocab()
    # what was saved is exactly the generator init-model built (seed 0), and plain transformers reads it too
    _assert_same_weights(_state(tiny_generator("tiny-bart", tok, seed=0)), _state(loaded.model))
    _assert_same_weights(_state(AutoModelForSeq2SeqLM.from_pretrained(built["bart"])), _state(loaded.model))
    enc = loaded.generator_tokenizer(QUESTIONS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = loaded.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                    max_length=6)
    assert out.shape[0] == 2 and out.shape[1] <= 6
    assert out[:, 0].tolist() == [loaded.model.config.decoder_start_token_id] * 2
    save_model(tmp_path / "copy", loaded.model, tok, tok, loaded.info)
    assert read_info(tmp_path / "copy") == ModelInfo("bart", kb=None)
    _assert_same_weights(_state(load_model(tmp_path / "copy").model), _state(loaded.model))


def test_read_info_refuses_what_is_not_a_model_directory(built, tmp_path):
    with pytest.raises(RayragError, match="no such model directory"):
        read_info(tmp_path / "none")
    with pytest.raises(RayragError, match=r"not a model directory \(no config\.json\)"):
        read_info(tmp_path)
    shutil.copytree(built["rag"], tmp_path / "m")
    (tmp_path / "m" / INFO_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(RayragError, match=r"rayrag\.json: damaged"):
        read_info(tmp_path / "m")
    (tmp_path / "m" / INFO_FILE).write_text('{"model_type": "gpt", "kb": null}', encoding="utf-8")
    with pytest.raises(RayragError, match="unknown model_type 'gpt'"):
        read_info(tmp_path / "m")


def test_read_info_of_a_directory_without_rayrag_json_points_at_the_knowledge_base(built, tmp_path):
    """A RAG directory with only Hugging Face files: its type and knowledge base come from config.json."""
    shutil.copytree(built["rag"], tmp_path / "m")
    (tmp_path / "m" / INFO_FILE).unlink()
    assert read_info(tmp_path / "m") == ModelInfo("rag_token", kb=str(built["kb"].resolve()))
    loaded = load_model(tmp_path / "m")  # retrieves from the knowledge base its config names
    _, q = _question_vectors(loaded.model, loaded.question_tokenizer)
    np.testing.assert_array_equal(loaded.retriever.retrieve(q, 2)[1], _exact_top(built["kb"], q, 2))


# --- plain transformers ----------------------------------------------------------------------------------

def test_plain_transformers_loads_the_rag_directory_and_generates(built):
    from transformers import RagRetriever, RagTokenForGeneration
    from transformers.models.rag.retrieval_rag import CustomHFIndex

    retriever = RagRetriever.from_pretrained(built["rag"])
    assert isinstance(retriever.index, CustomHFIndex) and retriever.index.is_initialized()
    model = RagTokenForGeneration.from_pretrained(built["rag"], retriever=retriever)
    model.eval()
    _assert_same_weights(_state(model), _state(load_model(built["rag"], retrieval=False).model))

    enc, q = _question_vectors(model, retriever.question_encoder_tokenizer)
    got = retriever(enc["input_ids"].numpy(), q, return_tensors="pt")
    np.testing.assert_array_equal(got["doc_ids"].numpy(), _exact_top(built["kb"], q, 2))
    kb = KnowledgeBase(built["kb"])
    np.testing.assert_array_equal(got["retrieved_doc_embeds"].numpy(), kb.vectors(got["doc_ids"].numpy()))

    with torch.no_grad():
        out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], max_length=5)
    assert out.shape[0] == len(QUESTIONS) and 2 <= out.shape[1] <= 5
    assert out[:, 0].tolist() == [model.config.decoder_start_token_id] * len(QUESTIONS)


def test_plain_transformers_and_rayrag_give_the_same_loss(built):
    """The same weights and the same passages: the loss agrees whichever library loaded the directory."""
    from transformers import RagRetriever, RagTokenForGeneration

    plain = RagTokenForGeneration.from_pretrained(built["rag"], retriever=RagRetriever.from_pretrained(built["rag"]))
    assert_same_loss(plain, load_model(built["rag"]), QUESTIONS, ["paris", "vienna baker"])
