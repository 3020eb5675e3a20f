"""Every verb end to end through the real command line, on tiny models; bad input gets one clear line."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import rayrag

# every test here runs the real command line in subprocesses (seconds to minutes each): the end-to-end tier
pytestmark = pytest.mark.slow


def _train_losses(run_dir) -> list[float]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return [float(r["train_loss_step"]) for r in csv.DictReader(f) if r.get("train_loss_step")]


def test_index_reports_counts_and_skips(tmp_path, corpus_dir):
    docs = tmp_path / "docs.jsonl"
    shutil.copy(corpus_dir / "documents.jsonl", docs)
    with open(docs, "ab") as f:
        f.write(b'\n{"title": "Empty", "text": ""}\n{"title": "Bad", "text": "\xff"}\n')
    out = rayrag("index", "--docs", docs, "--out", tmp_path / "kb", "--encoder", "tiny", "--passage-words", "5",
                 "--quiet")
    assert "200 documents -> " in out.stdout and "2 rows skipped" in out.stdout
    assert f"{docs}:202: empty text" in out.stdout and f"{docs}:203: non-UTF-8 bytes" in out.stdout
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["n_documents"] == 200 and manifest["passage_words"] == 5
    assert manifest["n_passages"] > 200  # facts longer than 5 words were split, not truncated


def test_train_loss_falls_then_predict_eval_ask(tmp_path, corpus_dir, tiny_rag):
    run = tmp_path / "run"
    out = rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", run, "--model_name_or_path", tiny_rag,
                 "--do_train", "--do_predict", "--num_train_epochs", "4", "--learning_rate", "3e-3",
                 "--train_batch_size", "16", "--log_every_n_steps", "1", "--no-progress", "--quiet",
                 "--n_val", "20")
    losses = _train_losses(run)
    assert len(losses) == 40  # 160 questions / 16 per step * 4 epochs
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train_steps"] == 40 and metrics["test_n"] == 20
    assert {"test_em", "test_f1", "test_recall_at_2", "test_precision_at_2"} <= set(metrics)
    assert json.loads(out.stdout[out.stdout.index("{"):])["test_em"] == metrics["test_em"]
    assert len((run / "test_generations.txt").read_text().splitlines()) == 20
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # the exported best model loads with plain transformers, retriever included
    from transformers import RagRetriever, RagTokenForGeneration

    model = RagTokenForGeneration.from_pretrained(run / "best_model")
    retriever = RagRetriever.from_pretrained(run / "best_model")
    enc = retriever.question_encoder_tokenizer(["where was x born?"], return_tensors="pt")
    model.set_retriever(retriever)
    with torch.no_grad():
        assert model.generate(input_ids=enc["input_ids"], max_length=5).shape[0] == 1

    ev = rayrag("eval", "--model", run / "best_model", "--data_dir", corpus_dir / "data", "--split", "test",
                "--out", tmp_path / "ev", "--quiet")
    scores = json.loads((tmp_path / "ev" / "test_metrics.json").read_text())
    assert scores["n"] == 20 and scores["em"] == pytest.approx(metrics["test_em"])
    assert '"recall_at_2"' in ev.stdout
    lines = (tmp_path / "ev" / "test_predictions.jsonl").read_text().splitlines()
    assert len(lines) == 20 and len(json.loads(lines[0])["passages"]) == 2

    question = (corpus_dir / "data" / "test.source").read_text().splitlines()[0]
    ask = rayrag("ask", "--model", run / "best_model", "--json", question, "--quiet")
    answer = json.loads(ask.stdout.splitlines()[0])
    assert answer["question"] == question and len(answer["passages"]) == 2
    assert answer["passages"][0]["score"] >= answer["passages"][1]["score"]


def test_init_model_kinds(tmp_path, tiny_kb):
    rayrag("init-model", "--kb", tiny_kb, "--out", tmp_path / "seq", "--model_type", "rag_sequence",
           "--generator", "tiny-t5", "--n_docs", "3", "--quiet")
    assert json.loads((tmp_path / "seq" / "rayrag.json").read_text())["model_type"] == "rag_sequence"
    cfg = json.loads((tmp_path / "seq" / "config.json").read_text())
    assert cfg["n_docs"] == 3 and cfg["index_name"] == "custom"
    assert cfg["passages_path"] == str((tiny_kb / "passages").resolve())
    rayrag("init-model", "--kb", tiny_kb, "--out", tmp_path / "cb", "--model_type", "bart", "--generator",
           "tiny-bart", "--quiet")
    assert json.loads((tmp_path / "cb" / "rayrag.json").read_text()) == {"model_type": "bart", "kb": None}


@pytest.mark.parametrize("init", ["self", "random"])
def test_minilm_generator_cross_attention_init(tmp_path, init):
    from transformers import AutoModelForSeq2SeqLM

    rayrag("init-model", "--out", tmp_path / "g", "--model_type", "seq2seq", "--generator", "minilm",
           "--generator_encoder_layers", "1", "--generator_decoder_layers", "2", "--cross_attention_init", init,
           "--quiet")
    layers = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "g").decoder.bert.encoder.layer
    assert len(layers) == 2
    for layer in layers:
        self_att, cross = layer.attention.state_dict(), layer.crossattention.state_dict()
        assert self_att.keys() == cross.keys()
        same = [torch.equal(self_att[k], cross[k]) for k in self_att]
        assert all(same) if init == "self" else not any(same)


def test_max_combined_length_of_the_run_is_saved_with_the_model(tmp_path, corpus_dir, tiny_rag):
    """--max_combined_length (the reference's flag) cuts the generator inputs of the run and is the trained model's."""
    from rayrag.model.checkpoint import load_model

    before = json.loads((tiny_rag / "config.json").read_text())["max_combined_length"]
    run = tmp_path / "run"
    quiet = rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", run, "--model_name_or_path", tiny_rag,
                   "--do_train", "--max_steps", "2", "--val_check_interval", "2", "--max_combined_length", "12",
                   "--n_val", "8", "--no-progress", "--quiet")
    assert "GPU available" not in quiet.stdout + quiet.stderr  # --quiet quiets Lightning too
    assert before != 12 and json.loads((run / "best_model" / "config.json").read_text())["max_combined_length"] == 12
    loaded = load_model(run / "best_model")
    docs = [{"title": ["a long title of several words"], "text": ["and a passage that goes on " * 5]}]
    ids, _ = loaded.retriever.postprocess_docs(docs, ["a question?"], None, 1, return_tensors="pt")
    assert ids.shape[1] == 12


def test_eval_n_docs_answers_from_fewer_passages_than_training_reads(tmp_path, corpus_dir, tiny_rag):
    """--eval_n_docs: validation and --do_predict answers are generated from that many passages; training keeps
    --n_docs. A value beyond the knowledge base is refused before training, naming the flag."""
    run = tmp_path / "run"
    proc = rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", run, "--model_name_or_path", tiny_rag,
                  "--do_train", "--do_predict", "--max_steps", "2", "--val_check_interval", "2", "--n_docs", "2",
                  "--eval_n_docs", "1", "--n_val", "8", "--n_test", "6", "--no-progress")
    assert proc.stderr.count("GPU available") == 1, proc.stderr  # Lightning's lines once, in rayrag's format
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_n"] == 6 and "test_recall_at_1" in metrics and "test_recall_at_2" not in metrics
    lines = (run / "test_predictions.jsonl").read_text().splitlines()
    assert [len(json.loads(line)["passages"]) for line in lines] == [1] * 6
    refused = rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", tmp_path / "run2",
                     "--model_name_or_path", tiny_rag, "--do_train", "--eval_n_docs", "1000", "--no-progress",
                     check=False)
    assert refused.returncode == 2
    assert "--eval_n_docs 1000: must be between 1 and the 200 passages of" in refused.stderr
    assert not (tmp_path / "run2" / "checkpoints").exists()

    # validation generates from --eval_n_docs passages, the training loss reads --n_docs
    from rayrag.model.checkpoint import load_model
    from rayrag.train.module import RagFineTuner
    from rayrag.train.options import TrainOptions

    loaded = load_model(tiny_rag)
    opts = TrainOptions(data_dir=corpus_dir / "data", output_dir=tmp_path / "run3", model_name_or_path=tiny_rag,
                        do_train=True, n_docs=2, eval_n_docs=1)
    module = RagFineTuner(opts, loaded, [])
    enc = loaded.question_tokenizer(["where was x born?", "what is y?"], return_tensors="pt", padding=True)
    labels = loaded.generator_tokenizer(["a", "b"], return_tensors="pt", padding=True)["input_ids"]
    with loaded.retriever.capture() as calls:
        module.generate(enc["input_ids"], enc["attention_mask"], max_length=4)
        module.forward_loss({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})
    assert [c.ids.shape for c in calls] == [(2, 1), (2, 2)]


def test_question_encoder_lr_of_its_own(tmp_path, corpus_dir, tiny_rag):
    from safetensors.torch import load_file

    init = load_file(tiny_rag / "model.safetensors")
    for q_lr, moved in (("0", False), ("1e-3", True)):
        run = tmp_path / f"run-{q_lr}"
        rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", run, "--model_name_or_path", tiny_rag,
               "--do_train", "--max_steps", "2", "--learning_rate", "1e-3", "--question_encoder_lr", q_lr,
               "--n_val", "8", "--no-progress", "--quiet")
        state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        changed = {k.removeprefix("model."): not torch.equal(v, init[k.removeprefix("model.")])
                   for k, v in state.items() if k.removeprefix("model.") in init}
        question = [c for k, c in changed.items() if k.startswith("rag.question_encoder.")]
        generator = [c for k, c in changed.items() if k.startswith("rag.generator.")]
        assert question and generator and any(generator)
        assert any(question) == moved, q_lr


def test_closed_book_baseline_trains_and_predicts(tmp_path, corpus_dir, tiny_kb):
    rayrag("init-model", "--kb", tiny_kb, "--out", tmp_path / "cb", "--model_type", "bart", "--generator",
           "tiny-bart", "--quiet")
    rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", tmp_path / "run", "--model_name_or_path",
           tmp_path / "cb", "--do_train", "--do_predict", "--max_steps", "3", "--no-progress", "--quiet")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_steps"] == 3 and metrics["test_n"] == 20 and "test_recall_at_2" not in metrics
    refused = rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", tmp_path / "run2",
                     "--model_name_or_path", tmp_path / "cb", "--do_train", "--question_encoder_lr", "1e-5", check=False)
    assert refused.returncode == 2
    assert "--question_encoder_lr: " in refused.stderr and "closed-book bart model with no question encoder" in refused.stderr


def test_resume_continues_from_last_checkpoint(tmp_path, corpus_dir, tiny_rag):
    args = ["train", "--data_dir", corpus_dir / "data", "--output_dir", tmp_path / "run", "--model_name_or_path",
            tiny_rag, "--do_train", "--train_batch_size", "16", "--no-progress", "--quiet", "--n_val", "8"]
    rayrag(*args, "--num_train_epochs", "1")
    first = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["global_step"] == 10 and first["epoch"] == 0
    rayrag(*args, "--num_train_epochs", "2", "--resume")
    second = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert second["global_step"] == 20  # the second epoch ran on from step 10
    assert len(_train_losses(tmp_path / "run")) >= 2


BAD_INPUTS = [
    (["index", "--docs", "{tmp}/none.jsonl", "--out", "{tmp}/kb"], r"none\.jsonl: no such file"),
    (["index", "--docs", "{tmp}/cols.csv", "--out", "{tmp}/kb"], r"cols\.csv:1: the header has columns"),
    (["init-model", "--kb", "{tmp}", "--out", "{tmp}/m"], r"manifest\.json: missing, so .* is not a knowledge base"),
    (["init-model", "--out", "{tmp}/m"], r"--model_type rag_token retrieves: pass --kb KB_DIR"),
    (["train", "--data_dir", "{tmp}", "--output_dir", "{tmp}/r", "--model_name_or_path", "{tmp}", "--do_train"],
     r"not a model directory \(no config\.json\)"),
    (["train", "--data_dir", "{tmp}", "--output_dir", "{tmp}/r", "--model_name_or_path", "{tmp}"],
     r"nothing to do: pass --do_train, --do_predict or both"),
    (["train", "--data_dir", "{tmp}", "--output_dir", "{tmp}/r", "--model_name_or_path", "{tmp}", "--do_train",
      "--gpus", "1", "--accelerator", "cpu"], r"--gpus 1 contradicts --accelerator cpu"),
    (["train", "--data_dir", "{tmp}", "--output_dir", "{tmp}/r", "--model_name_or_path", "{tmp}", "--do_train",
      "--resume"], r"--resume: no .*last\.ckpt to resume from"),
    (["eval", "--model", "{tmp}", "--data_dir", "{tmp}"], r"no test\.source/test\.target or test\.jsonl"),
    (["ask", "--model", "{tmp}/nomodel"], r"no questions"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[" ".join(a[:1] + [m[:30]]) for a, m in BAD_INPUTS])
def test_bad_input_is_one_clear_line(tmp_path, argv, message):
    import re

    (tmp_path / "cols.csv").write_text("name,body\nx,y\n", encoding="utf-8")
    proc = rayrag(*[a.replace("{tmp}", str(tmp_path)) for a in argv], check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "kb").exists() and not (tmp_path / "m").exists()


def test_mismatched_source_target_is_refused_before_training(tmp_path, corpus_dir, tiny_rag):
    data = tmp_path / "data"
    shutil.copytree(corpus_dir / "data", data)
    with open(data / "train.target", "a", encoding="utf-8") as f:
        f.write("extra answer\n")
    proc = rayrag("train", "--data_dir", data, "--output_dir", tmp_path / "run", "--model_name_or_path", tiny_rag,
                  "--do_train", check=False)
    assert proc.returncode == 2
    assert f"{data / 'train.source'} has 160 lines but {data / 'train.target'} has 161" in proc.stderr


def test_train_n_docs_beyond_the_knowledge_base_is_refused(tmp_path, corpus_dir, tiny_rag, tiny_kb):
    proc = rayrag("train", "--data_dir", corpus_dir / "data", "--output_dir", tmp_path / "run",
                  "--model_name_or_path", tiny_rag, "--do_train", "--n_docs", "1000", "--no-progress", check=False)
    assert proc.returncode == 2
    assert "--n_docs 1000: must be between 1 and the 200 passages of" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_model_and_knowledge_base_of_different_sizes_are_refused(tmp_path, corpus_dir, tiny_rag):
    from rayrag.kb.build import write_knowledge_base

    write_knowledge_base(tmp_path / "kb8", ["t"] * 5, ["x"] * 5, np.zeros((5, 8), np.float32), encoder="x")
    proc = rayrag("ask", "--model", tiny_rag, "--kb", tmp_path / "kb8", "where?", check=False)
    assert proc.returncode == 2
    assert "makes vectors of size 32 but the knowledge base holds vectors of size 8" in proc.stderr
