"""Coming from the Hugging Face RAG example: its knowledge-base layout, its plain model directories, its --model_type.

The reference's knowledge base is built here as its use_own_knowledge_dataset.py builds it: a `datasets`
Dataset of text, title and embeddings (`Sequence(Value("float32"))`) saved with save_to_disk, then an
`IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT)` added with add_faiss_index and written with
get_index("embeddings").save (M small, so it builds at once). Model directories are re-saved by plain
transformers (RagRetriever / RagTokenForGeneration from_pretrained, then save_pretrained): no rayrag.json.
The fast tests run in process; the command-line runs (train, eval, ask, index) and the Ray pool are `slow`.
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import rayrag
from rayrag.errors import RayragError
from rayrag.kb.build import write_knowledge_base
from rayrag.kb.convert import convert
from rayrag.kb.layout import KbLocation, directory, from_flags, from_pair
from rayrag.kb.store import KnowledgeBase
from rayrag.kb.args import KbArgs
from rayrag.model.assemble import init_model
from rayrag.model.options import InitOptions
from rayrag.model.checkpoint import INFO_FILE, ModelInfo, load_model, read_info, with_type
from rayrag.retrieval.search import search
from rayrag.tiny import save_tiny_encoder, train_tokenizer

CITIES = ["paris", "berlin", "rome", "madrid", "lisbon", "vienna", "prague", "oslo", "dublin", "athens",
          "warsaw", "bern"]
DIM = 32


def write_reference_kb(out: Path, titles, texts, vectors: np.ndarray, m: int = 8) -> tuple[Path, Path]:
    """The reference script's knowledge base in `out`: (passages directory, FAISS file), written its way."""
    import faiss
    from datasets import Dataset, Features, Sequence, Value

    features = Features({"text": Value("string"), "title": Value("string"), "embeddings": Sequence(Value("float32"))})
    dataset = Dataset.from_dict({"text": list(texts), "title": list(titles),
                                 "embeddings": [v.tolist() for v in vectors]}, features=features)
    passages = out / "my_knowledge_dataset"
    dataset.save_to_disk(str(passages))
    dataset.add_faiss_index("embeddings", custom_index=faiss.IndexHNSWFlat(vectors.shape[1], m,
                                                                           faiss.METRIC_INNER_PRODUCT))
    index = out / "my_knowledge_dataset_hnsw_index.faiss"
    dataset.get_index("embeddings").save(str(index))
    return passages, index


def resave_with_transformers(model_dir: Path, out: Path, **retriever_kwargs) -> Path:
    """What a user of plain transformers does: load a RAG directory (retriever and model), save it elsewhere."""
    from transformers import RagRetriever, RagTokenForGeneration

    retriever = RagRetriever.from_pretrained(model_dir, **retriever_kwargs)
    model = RagTokenForGeneration.from_pretrained(model_dir, retriever=retriever)
    model.save_pretrained(out)
    retriever.save_pretrained(out)
    return out


def snapshot(root: Path) -> dict:
    """Every file under `root` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def exact_top(vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Ids (B, k) by brute force, after checking that no near-tie could flip them."""
    scores = q @ vectors.T
    ranked = -np.sort(-scores, axis=1)
    assert (ranked[:, :k] - ranked[:, 1:k + 1] > 1e-3).all(), ranked
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The same 12 passages twice: in the reference's layout (hf/) and as a rayrag knowledge base (kb/, with its
    tiny random encoder), plus a RAG-token model (rag/) made by init-model on kb/. Random Gaussian vectors: well
    apart, so which passages are nearest never hangs on rounding."""
    d = tmp_path_factory.mktemp("reference")
    titles = [f"Person {i}" for i in range(len(CITIES))]
    texts = [f"person {i} was born in {c} and works as a {c}ian baker" for i, c in enumerate(CITIES)]
    encoder = save_tiny_encoder(d / "encoder", train_tokenizer(titles + texts))
    vectors = np.random.default_rng(0).standard_normal((len(texts), DIM)).astype(np.float32)
    passages, index = write_reference_kb(d / "hf", titles, texts, vectors)
    write_knowledge_base(d / "kb", titles, texts, vectors, encoder="tiny", encoder_dir=encoder, n_documents=12)
    rag = init_model(InitOptions(out=d / "rag", generator="tiny-bart", n_docs=2, kb=KbArgs(path=d / "kb")))
    return {"dir": d, "hf": d / "hf", "passages": passages, "index": index, "kb": d / "kb", "rag": rag,
            "vectors": vectors, "titles": titles, "encoder": encoder}


def queries(n: int = 5, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _raises_one_line(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(RayragError, match=match) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value)
    return str(e.value)


# --- the reference's knowledge base, as it is -------------------------------------------------------------------

def test_reference_layout_opens_as_it_is_and_is_never_written(built):
    before = snapshot(built["hf"])
    kb = KnowledgeBase(built["passages"], index_path=built["index"])
    assert (len(kb), kb.dim, kb.manifest.index_type) == (12, DIM, "hnsw")
    assert kb.manifest.index_params["hnsw_m"] == 8
    q = queries()
    scores, ids = search(kb, q, 3)
    np.testing.assert_array_equal(ids, exact_top(built["vectors"], q, 3))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ built["vectors"].T, ids, 1), rtol=1e-5)
    passages = kb.passages(ids)
    np.testing.assert_array_equal(passages.vectors, built["vectors"][ids])
    assert passages.titles[0] == [built["titles"][i] for i in ids[0]]
    assert snapshot(built["hf"]) == before


def test_one_place_tells_the_layouts_apart(built, tmp_path):
    hf, kb = built["hf"], built["kb"]
    reference = KbLocation(str(built["passages"].resolve()), str(built["index"].resolve()))
    assert directory(hf) == reference  # the script's output_dir: one datasets directory, one .faiss file
    assert directory(built["passages"]) == reference  # the passages themselves: the one .faiss beside them
    assert directory(kb) == directory(kb / "passages") == KbLocation(str(kb.resolve()))  # rayrag's own names
    assert not directory(kb).is_reference
    assert from_pair(kb / "passages", kb / "index.faiss") == from_pair(None, kb / "index.faiss") == KbLocation(str(kb))
    assert from_pair(built["passages"], built["index"]).is_reference
    assert from_flags(hf) == from_flags(None, built["passages"], built["index"]) == from_flags(
        hf, built["passages"], built["index"]) == reference
    assert reference.rag_paths() == (reference.kb, reference.index_path)
    assert KbLocation(str(kb)).rag_paths() == (str(kb / "passages"), str(kb / "index.faiss"))
    _raises_one_line(r"--passages_path .*my_knowledge_dataset: give --index_path too", from_pair,
                     built["passages"], None)
    _raises_one_line(r"--kb .* contradicts --passages_path/--index_path", from_flags, kb, built["passages"],
                     built["index"])
    # a rayrag knowledge base that lost its manifest is refused, never opened unchecked
    shutil.copytree(kb, tmp_path / "lost")
    (tmp_path / "lost" / "manifest.json").unlink()
    assert not directory(tmp_path / "lost").is_reference
    _raises_one_line(r"manifest\.json: missing, so .* is not a knowledge base", KnowledgeBase, tmp_path / "lost")
    # two indexes beside one passages directory: ambiguous, so named
    shutil.copytree(hf, tmp_path / "two")
    shutil.copy(built["index"], tmp_path / "two" / "other.faiss")
    _raises_one_line(r"holds 1 `datasets` directories and 2 \.faiss files .*--passages_path and --index_path",
                     directory, tmp_path / "two")
    _raises_one_line(r"with 2 \.faiss files beside it; name its index with --index_path", directory,
                     tmp_path / "two" / "my_knowledge_dataset")
    (tmp_path / "empty").mkdir()
    _raises_one_line(r"manifest\.json: missing", KnowledgeBase, directory(tmp_path / "empty").kb)


def test_a_reference_knowledge_base_that_does_not_fit_is_a_one_line_error(built, tmp_path):
    import faiss
    from datasets import Dataset, Features, Sequence, Value

    passages, index, vectors = built["passages"], built["index"], built["vectors"]
    _, fewer = write_reference_kb(tmp_path / "fewer", built["titles"][:10], ["t"] * 10, vectors[:10])
    _raises_one_line(r"10 vectors of size 32 where .* holds 12 passages with vectors of size 32; .*--index_path",
                     KnowledgeBase, passages, index_path=fewer)
    l2 = faiss.IndexFlatL2(DIM)
    l2.add(vectors)
    faiss.write_index(l2, str(tmp_path / "l2.faiss"))
    _raises_one_line(r"by L2 distance, but RAG scores passages by inner product; convert it with `rayrag index "
                     r"--passages_path .* --index_type flat", KnowledgeBase, passages, index_path=tmp_path / "l2.faiss")
    (tmp_path / "junk.faiss").write_bytes(b"not an index")
    _raises_one_line(r"junk\.faiss: not a readable FAISS index", KnowledgeBase, passages,
                     index_path=tmp_path / "junk.faiss")
    _raises_one_line(r"--index_path .*nothing\.faiss: no such file", KnowledgeBase, passages,
                     index_path=tmp_path / "nothing.faiss")
    (tmp_path / "empty").mkdir()
    _raises_one_line(r"empty: not a `datasets` directory", KnowledgeBase, tmp_path / "empty", index_path=index)

    def save(name, rows, features=None):
        Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / name))
        return tmp_path / name

    texts = {"title": ["a", "b"], "text": ["x", "y"]}
    _raises_one_line(r"no embeddings column \(it has title, text\)", KnowledgeBase, save("noemb", texts),
                     index_path=index)
    ragged = save("ragged", {**texts, "embeddings": [[0.0] * DIM, [0.0] * (DIM - 1)]},
                  Features({"title": Value("string"), "text": Value("string"), "embeddings": Sequence(Value("float32"))}))
    _raises_one_line(r"embeddings of sizes 31 to 32; every passage needs a vector of the same size", KnowledgeBase,
                     ragged, index_path=index)
    doubles = save("doubles", {**texts, "embeddings": [[0.0] * DIM] * 2})
    _raises_one_line(r"the embeddings column holds list<item: double>, not lists of float32", KnowledgeBase,
                     doubles, index_path=index)


def test_convert_keeps_the_index_and_writes_a_checked_knowledge_base(built, tmp_path):
    before = snapshot(built["hf"])
    report = convert(built["passages"], built["index"], tmp_path / "kb", encoder="my-ctx-encoder")
    assert (report.passages, report.dim, report.index_type) == (12, DIM, "hnsw")
    kb = KnowledgeBase(tmp_path / "kb")  # manifest, sizes and checksums verified
    m = kb.manifest
    assert (m.encoder, m.n_passages, m.dim, m.index_type, m.index_params["hnsw_m"]) == ("my-ctx-encoder", 12, DIM,
                                                                                         "hnsw", 8)
    assert sorted(m.files) == sorted(p.relative_to(tmp_path / "kb").as_posix()
                                     for p in (tmp_path / "kb").rglob("*") if p.is_file() and p.name != "manifest.json")
    assert (tmp_path / "kb" / "index.faiss").read_bytes() == built["index"].read_bytes()  # kept, not rebuilt
    assert kb.table.schema.field("embeddings").type.list_size == DIM  # rayrag's fixed-size vectors
    q = queries()
    source = KnowledgeBase(built["passages"], index_path=built["index"])
    np.testing.assert_array_equal(search(kb, q, 3)[1], search(source, q, 3)[1])
    assert kb.passages(np.arange(12)[None]).texts == source.passages(np.arange(12)[None]).texts
    # --index_type builds a new index from the stored vectors
    convert(built["passages"], built["index"], tmp_path / "flat", index_type="flat")
    flat = KnowledgeBase(tmp_path / "flat")
    assert (flat.manifest.index_type, flat.manifest.encoder) == ("flat", "")
    np.testing.assert_array_equal(search(flat, q, 3)[1], exact_top(built["vectors"], q, 3))
    _raises_one_line("already exists; pass --overwrite", convert, built["passages"], built["index"], tmp_path / "kb")
    assert snapshot(built["hf"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat", "kb"]  # no temporary left beside them


def test_convert_takes_an_l2_index_only_by_rebuilding_it(built, tmp_path):
    import faiss

    l2 = faiss.IndexFlatL2(DIM)
    l2.add(built["vectors"])
    faiss.write_index(l2, str(tmp_path / "l2.faiss"))
    _raises_one_line("by L2 distance", convert, built["passages"], tmp_path / "l2.faiss", tmp_path / "kb")
    assert not (tmp_path / "kb").exists()
    convert(built["passages"], tmp_path / "l2.faiss", tmp_path / "kb", index_type="hnsw")
    assert KnowledgeBase(tmp_path / "kb").manifest.index_type == "hnsw"


def test_index_verb_takes_the_reference_flags_instead_of_docs(built):
    from rayrag.cli.main import VERBS
    from rayrag.cli.parse import parse

    def options(*argv):
        return parse(import_module(VERBS["index"]), "rayrag index", [str(a) for a in argv])[0]

    opts = options("--passages_path", built["passages"], "--index_path", built["index"], "--out", "kb")
    opts.validate()
    r = opts.resolved()
    assert r.converts and (r.index_type, r.encoder, r.docs) == (None, None, [])  # keep the index, record no encoder
    docs = options("--docs", "a.jsonl", "--out", "kb").resolved()
    assert (docs.index_type, docs.encoder) == ("flat", "minilm")
    for argv, message in [
            (["--docs", "a.jsonl", "--passages_path", "p", "--index_path", "i"], "--docs and --passages_path/--index_path: give one"),
            (["--passages_path", "p"], "--passages_path: give --index_path too"),
            (["--index_path", "i"], "--index_path: give --passages_path too"),
            ([], "--docs: name at least one document file")]:
        _raises_one_line(message, options(*argv, "--out", "kb").validate)


def test_backends_carry_a_reference_knowledge_base_in_their_specs(built):
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import load_spec, open_service

    q = queries()
    for backend in ("local", "pytorch"):
        service = open_service(RetrievalOptions(kb=built["hf"], backend=backend))  # the script's output_dir
        spec = load_spec(service.spec.to_json())
        assert (spec.kb, spec.index_path) == (str(built["passages"].resolve()), str(built["index"].resolve()))
        client = spec.connect()
        r = client.retrieve(q, 3)
        np.testing.assert_array_equal(r.ids, exact_top(built["vectors"], q, 3))
        assert r.titles[1] == [built["titles"][i] for i in r.ids[1]]
        client.close()
        service.close()
    _raises_one_line(r"--passages_path .*nowhere: no such directory", open_service,
                     RetrievalOptions(kb=built["dir"] / "nowhere", index_path=built["index"]))


# --- model directories and --model_type --------------------------------------------------------------------------

def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_model_type_picks_the_rag_class_of_any_rag_checkpoint(built, caplog):
    from rayrag.evaluate.predict import predict

    token = load_model(built["rag"], retrieval=False)
    with caplog.at_level(logging.INFO, logger="rayrag.model.checkpoint"):
        seq = load_model(built["rag"], model_type="rag_sequence")
    assert type(seq.model).__name__ == "RagSequenceForGeneration" and seq.info.model_type == "rag_sequence"
    said = [r.getMessage() for r in caplog.records if "loading it as" in r.getMessage()]
    assert len(said) == 1 and "was saved as rag_token; loading it as rag_sequence" in said[0]
    a, b = _state(token.model), _state(seq.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same RagModel weights
    questions = ["where was person 3 born?", "what does person 7 do?", "who bakes in oslo?"]
    preds = predict(seq, questions, max_length=5, progress=False)
    enc = seq.question_tokenizer(questions, return_tensors="pt", padding=True)
    with torch.no_grad():
        q = seq.model.question_encoder(enc["input_ids"], attention_mask=enc["attention_mask"])[0].numpy()
    # each answer reports its own question's passages (RAG-sequence retrieves again while it scores candidates)
    assert [[d["id"] for d in p.passages] for p in preds] == exact_top(built["vectors"], q, 2).tolist()
    assert with_type(ModelInfo("rag_sequence", kb="k"), "rag_token", "m") == ModelInfo("rag_token", kb="k")
    assert with_type(ModelInfo("bart"), "t5", "m") == ModelInfo("bart")  # closed-book: the generator's own class
    _raises_one_line(r"--model_type bart contradicts .*, which holds a RAG model \(rag_token\)", load_model,
                     built["rag"], model_type="bart")
    _raises_one_line(r"--model_type rag_token contradicts m, which holds a closed-book bart model", with_type,
                     ModelInfo("bart"), "rag_token", "m")


def test_train_picks_the_class_from_model_type(built, tmp_path):
    from rayrag.train.options import TrainOptions
    from rayrag.train.run import _check_model

    def opts(**kw):
        return TrainOptions(data_dir=tmp_path, output_dir=tmp_path / "run", model_name_or_path=built["rag"],
                            do_train=True, **kw)

    info = read_info(built["rag"])
    assert _check_model(opts(model_type="rag_sequence"), info).model_type == "rag_sequence"
    assert _check_model(opts(), info) == info
    _raises_one_line("--model_type t5 contradicts", _check_model, opts(model_type="t5"), info)


def test_a_rag_directory_resaved_by_plain_transformers_loads_with_its_knowledge_base(built, tmp_path):
    plain = resave_with_transformers(built["rag"], tmp_path / "plain")
    assert not (plain / INFO_FILE).exists()
    assert read_info(plain) == ModelInfo("rag_token", kb=str(built["kb"].resolve()))
    tok = load_model(plain)
    enc = tok.question_tokenizer(["where was person 3 born?"], return_tensors="pt")
    with torch.no_grad():
        q = tok.model.question_encoder(enc["input_ids"])[0].numpy()
    np.testing.assert_array_equal(tok.retriever.retrieve(q, 2)[1], exact_top(built["vectors"], q, 2))

    # a directory whose config points at the reference's knowledge base (as the reference's own models do)
    hf = resave_with_transformers(built["rag"], tmp_path / "hf_model", index_name="custom",
                                  passages_path=str(built["passages"]), index_path=str(built["index"]))
    info = read_info(hf)
    assert info == ModelInfo("rag_token", kb=str(built["passages"]), index_path=str(built["index"]))
    loaded = load_model(hf)
    np.testing.assert_array_equal(loaded.retriever.retrieve(q, 2)[1], exact_top(built["vectors"], q, 2))
    assert load_model(hf, kb=built["kb"]).retriever.client.kb.index_path is None  # --kb wins over the config


def test_init_model_on_a_reference_knowledge_base_loads_with_plain_transformers(built, tmp_path):
    from transformers import RagRetriever

    _raises_one_line(r"--question_encoder: .* records no encoder", init_model,
                     InitOptions(out=tmp_path / "m0", generator="tiny-bart", n_docs=2, kb=KbArgs(path=built["hf"])))
    out = init_model(InitOptions(out=tmp_path / "m",
                                 question_encoder=str(built["encoder"]), generator="tiny-bart", n_docs=2,
                                 kb=KbArgs(passages_path=built["passages"], index_path=built["index"])))
    assert read_info(out) == ModelInfo("rag_token", kb=str(built["passages"].resolve()),
                                       index_path=str(built["index"].resolve()))
    assert json.loads((out / INFO_FILE).read_text())["index_path"] == str(built["index"].resolve())
    loaded = load_model(out)
    enc = loaded.question_tokenizer(["where was person 3 born?", "who bakes in oslo?"], return_tensors="pt",
                                    padding=True)
    with torch.no_grad():
        q = loaded.model.question_encoder(enc["input_ids"], attention_mask=enc["attention_mask"])[0].numpy()
    ours = loaded.retriever.retrieve(q, 2)[1]
    np.testing.assert_array_equal(ours, exact_top(built["vectors"], q, 2))
    # plain transformers reads the same knowledge base through the same config, with its own HF index
    plain = RagRetriever.from_pretrained(out)
    np.testing.assert_array_equal(plain(enc["input_ids"].numpy(), q, return_tensors="np")["doc_ids"], ours)


# --- the whole path, through the command line ---------------------------------------------------------------------

def _reference_copy_of(kb_dir: Path, out: Path) -> tuple[Path, Path]:
    """The passages of a rayrag knowledge base written again in the reference's layout."""
    kb = KnowledgeBase(kb_dir)
    p = kb.passages(np.arange(len(kb))[None])
    return write_reference_kb(out, p.titles[0], p.texts[0], p.vectors[0])


def _passage_ids(stdout: str) -> list[list[int]]:
    return [[d["id"] for d in json.loads(line)["passages"]] for line in stdout.splitlines() if line.strip()]


@pytest.mark.slow
def test_reference_command_line_on_reference_artifacts(tmp_path, corpus_dir, tiny_kb, tiny_rag):
    """The reference's fine-tuning flags with --model_type rag_sequence on a RAG-token directory saved by plain
    transformers whose config points at a knowledge base in the reference's layout; then eval, ask, index."""
    data = corpus_dir / "data"
    passages, index = _reference_copy_of(tiny_kb, tmp_path / "hf")
    plain = resave_with_transformers(tiny_rag, tmp_path / "plain", index_name="custom", passages_path=str(passages),
                                     index_path=str(index))
    run = tmp_path / "run"
    train = ["train", "--data_dir", data, "--output_dir", run, "--model_name_or_path", plain, "--index_name",
             "custom", "--passages_path", passages, "--index_path", index, "--gpus", "0", "--do_train",
             "--train_batch_size", "8", "--n_val", "4", "--n_test", "6", "--no-progress"]
    out = rayrag(*train, "--model_type", "rag_sequence", "--do_predict", "--max_steps", "3")
    assert out.stderr.count("was saved as rag_token; loading it as rag_sequence") == 1, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["test_n"] == 6
    best = run / "best_model"
    assert json.loads((best / INFO_FILE).read_text()) == {
        "model_type": "rag_sequence", "kb": str(passages.resolve()), "index_path": str(index.resolve())}
    config = json.loads((best / "config.json").read_text())
    assert config["architectures"] == ["RagSequenceForGeneration"]
    assert (config["passages_path"], config["index_path"]) == (str(passages.resolve()), str(index.resolve()))

    rayrag("eval", "--model", best, "--data_dir", data, "--n", "4", "--out", tmp_path / "eval", "--quiet")
    assert json.loads((tmp_path / "eval" / "test_metrics.json").read_text())["n"] == 4

    # plain directories, no rayrag.json: the knowledge base comes from the RAG config
    question = "where was " + json.loads((corpus_dir / "documents.jsonl").read_text().splitlines()[0])["title"] + " born?"
    by_config = _passage_ids(rayrag("ask", "--model", plain, "--json", "--quiet", question).stdout)
    assert len(by_config) == 1 and len(by_config[0]) == 2
    by_dir = _passage_ids(rayrag("ask", "--model", plain, "--kb", tmp_path / "hf", "--json", "--quiet",
                                 question).stdout)
    rayrag("index", "--passages_path", passages, "--index_path", index, "--out", tmp_path / "kb2", "--quiet")
    converted = _passage_ids(rayrag("ask", "--model", plain, "--kb", tmp_path / "kb2", "--json", "--quiet",
                                    question).stdout)
    assert by_config == by_dir == converted
    as_sequence = rayrag("eval", "--model", plain, "--model_type", "rag_sequence", "--data_dir", data, "--n", "4",
                         "--out", tmp_path / "eval_seq")
    assert "was saved as rag_token; loading it as rag_sequence" in as_sequence.stderr

    # rayrag's own knowledge base behind a directory re-saved by plain transformers
    resaved = resave_with_transformers(tiny_rag, tmp_path / "resaved")
    rayrag("eval", "--model", resaved, "--data_dir", data, "--n", "4", "--out", tmp_path / "eval_plain", "--quiet")
    rayrag("ask", "--model", resaved, "--quiet", question)

    refused = rayrag(*train, "--model_type", "bart", "--output_dir", tmp_path / "run_bart", check=False)
    assert refused.returncode == 2
    assert "--model_type bart contradicts" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1




@pytest.mark.slow
def test_ray_pool_serves_a_reference_knowledge_base(built, ray_local):
    from rayrag.retrieval.local import LocalSpec
    from rayrag.retrieval.options import RetrievalOptions
    from rayrag.retrieval.service import load_spec, open_service

    q = queries(8)
    service = open_service(RetrievalOptions(kb=built["passages"], index_path=built["index"], backend="ray",
                                            num_workers=2))
    try:
        spec = load_spec(service.spec.to_json())
        assert spec.index_path == str(built["index"].resolve())
        client = spec.connect(rank=0)
        r = client.retrieve(q, 3)
        local = LocalSpec(kb=str(built["passages"]), index_path=str(built["index"])).connect().retrieve(q, 3)
        np.testing.assert_array_equal(r.ids, exact_top(built["vectors"], q, 3))
        np.testing.assert_array_equal(r.ids, local.ids)
        np.testing.assert_array_equal(r.vectors, local.vectors)
        assert r.texts == local.texts
        # every actor maps the index file (its flat storage), so the actors of a node share those pages
        index_file = str(built["index"].resolve())
        for pid in service.pids():
            with open(f"/proc/{pid}/maps") as f:
                assert any(line.rstrip().endswith(index_file) for line in f), pid
        client.close()
    finally:
        service.close()
