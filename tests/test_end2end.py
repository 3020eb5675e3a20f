"""End-to-end retriever training (`train --train_context_encoder`): the step scores passages as the index stores them,
generations switch on every rank at one step, a killed re-index worker leaves training going, resume is exact."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import rayrag, train_rows
from rayrag.cli.parse import parse
from rayrag.errors import RayragError
from rayrag.kb.store import KnowledgeBase


TITLES = ["Ada Lovelace", "Analytical Engine", "Charles Babbage", "Notes"]
TEXTS = ["She wrote the first program for the engine.", "A mechanical computer designed in 1837 by Babbage.",
         "An English mathematician " * 100, "x"]  # one text longer than the index's 256 tokens: cut as the index cuts


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny random BERT encoder with a tokenizer trained on the passages (`rayrag index --encoder tiny`'s)."""
    from rayrag.tiny import save_tiny_encoder, train_tokenizer

    return save_tiny_encoder(tmp_path_factory.mktemp("enc") / "encoder", train_tokenizer(TITLES + TEXTS))


# ----- the step's passage vectors are the index's -----------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_the_step_encodes_retrieved_passages_as_rayrag_index_embeds_them(encoder_dir, pooling):
    """What RAG's context-encoder training computes for retrieved passages (the retriever's ctx tokenizer, then
    `ctx_encoder(input_ids, attention_mask).pooler_output`) equals what `embed_passages` stores for them."""
    from rayrag import encoders
    from rayrag.encoders.load import load_trainable_context_encoder

    ctx = load_trainable_context_encoder(str(encoder_dir), pooling).eval()
    stored = encoders.embed_passages(ctx.encoder, ctx.tokenizer, TITLES, TEXTS, progress=False, pooling=pooling)
    batch = ctx.passage_tokenizer()(TITLES, TEXTS, truncation=True, padding="longest", return_tensors="pt")
    with torch.no_grad():
        in_step = ctx(batch["input_ids"], attention_mask=batch["attention_mask"], return_dict=True).pooler_output
    np.testing.assert_allclose(in_step.numpy(), stored, rtol=1e-5, atol=1e-5)
    assert batch["input_ids"].shape[1] == 256


def test_token_types_restored_from_ids_equal_the_tokenizers(encoder_dir):
    from rayrag.encoders.context import pair_token_types
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(encoder_dir)
    enc = tok(["a title", "another longer title here"], ["some text of it", "x"], padding=True, return_tensors="pt")
    got = pair_token_types(enc["input_ids"], enc["attention_mask"], tok.sep_token_id)
    assert torch.equal(got, enc["token_type_ids"])


# ----- the seam: every backend's client switches generation ---------------------------------------------------------
@pytest.fixture(scope="module")
def generations(tmp_path_factory) -> list[Path]:
    """Three knowledge bases with the same passages and different vectors: generations 0, 1, 2 of one index."""
    from rayrag.kb.build import write_knowledge_base

    root = tmp_path_factory.mktemp("gens")
    rng = np.random.default_rng(0)
    titles, texts = [f"t{i}" for i in range(50)], [f"text {i}" for i in range(50)]
    out = []
    for g in range(3):
        vectors = rng.standard_normal((50, 8)).astype(np.float32)
        write_knowledge_base(root / f"gen-{g}", titles, texts, vectors, encoder="x")
        out.append(root / f"gen-{g}")
    return out


def _exact(kb_dir: Path, queries: np.ndarray, k: int) -> np.ndarray:
    vectors = KnowledgeBase(kb_dir).vectors(np.arange(50))
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", ["local", "pytorch"])
def test_a_client_retrieves_from_the_generation_it_switched_to(generations, backend):
    from rayrag.retrieval.local import LocalSpec
    from rayrag.retrieval.pytorch import TorchSpec

    spec = (LocalSpec if backend == "local" else TorchSpec)(kb=str(generations[0]))
    client = spec.connect()
    queries = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    for g in (0, 1, 2):
        if g:
            client.switch(g, str(generations[g]))
        got = client.retrieve(queries, 3)
        assert client.generation == g
        np.testing.assert_array_equal(got.ids, _exact(generations[g], queries, 3))
        np.testing.assert_array_equal(got.vectors, KnowledgeBase(generations[g]).vectors(got.ids))
        assert got.texts[0][0] == f"text {got.ids[0][0]}"
    client.close()


def test_an_actor_answers_each_call_from_the_generation_it_names_and_keeps_two(generations):
    """The ray backend's actor (its class, run here without Ray): calls name a generation, calls of different
    generations are never merged, and only the newest generation and the one before it stay open."""
    from rayrag.retrieval.ray.actor import RetrievalActor

    actor = RetrievalActor(str(generations[0]), "rayrag", 1, True)
    queries = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    for g in (0, 1, 2):
        at = [g, str(generations[g])] if g else None
        scores, ids, vectors = actor.nearest(queries, 3, at)
        np.testing.assert_array_equal(ids, _exact(generations[g], queries, 3))
        np.testing.assert_array_equal(actor.search(queries, 3, at)[1], ids)
    assert sorted(actor.generations) == [1, 2]
    assert actor.stats()["calls"] == 6


# ----- flags --------------------------------------------------------------------------------------------------------
def _train(tmp_path, *flags):
    from rayrag.cli import train

    return parse(train, "rayrag train", ["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "o"),
                                         "--model_name_or_path", str(tmp_path), "--do_train", *flags])[0]


@pytest.mark.parametrize("flags, message", [
    (["--train_context_encoder", "--reindex_every", "0"], "--reindex_every 0: must be at least 1"),
    (["--context_encoder_lr", "1e-5"], "--context_encoder_lr applies to --train_context_encoder"),
    (["--train_context_encoder", "--context_encoder_lr", "-1"], "--context_encoder_lr -1"),
])
def test_nonsense_flags_get_one_line(tmp_path, flags, message):
    with pytest.raises(RayragError, match=message.replace(".", r"\.")) as e:
        _train(tmp_path, *flags).validate()
    assert "\n" not in str(e.value)


def test_the_reference_end2end_spellings_mean_the_same(tmp_path):
    from rayrag.train.options import reference_index_notes

    opts = _train(tmp_path, "--end2end", "--indexing_freq", "7", "--index_gpus", "2", "--shard_dir", "/x")
    assert opts.train_context_encoder and opts.reindex_every == 7
    notes = reference_index_notes(opts)
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert "--index_gpus" in notes[0] and "--shard_dir" in notes[1]


def test_tune_searches_the_context_encoders_rate_and_the_reindex_interval(tmp_path):
    import dataclasses

    from rayrag.tune.space import build_space, check_values

    dims = build_space(None, {"context_encoder_lr": "loguniform:1e-6,1e-4", "reindex_every": "choice:100,200"})
    base = _train(tmp_path, "--train_context_encoder")
    check_values(dims, base)  # every value is one `rayrag train` accepts
    with pytest.raises(RayragError, match="context_encoder_lr applies to --train_context_encoder"):
        check_values(dims, dataclasses.replace(base, train_context_encoder=False))
    bad = build_space(None, {"reindex_every": "choice:0,100"})
    with pytest.raises(RayragError, match="--search.reindex_every: reindex_every"):
        check_values(bad, base)


def test_a_knowledge_base_without_passage_texts_is_refused(tmp_path):
    from rayrag.kb.build import write_knowledge_base
    from rayrag.reindex.job import source_passages

    write_knowledge_base(tmp_path / "kb", ["t"] * 3, ["", "", ""], np.eye(3, dtype=np.float32), encoder="x")
    with pytest.raises(RayragError, match="every passage text is empty"):
        source_passages(str(tmp_path / "kb"))


@pytest.mark.slow
def test_a_full_disk_while_writing_a_generation_leaves_the_current_one_intact(tiny_kb, tmp_path):
    """The worker of a generation whose files cannot be written (the file-size limit stands in for a full disk)
    fails, and the generation already under that name is untouched; the next attempt writes it."""
    from rayrag.encoders.load import load_trainable_context_encoder
    from rayrag.reindex.job import ReindexJob

    encoder = load_trainable_context_encoder(str(tiny_kb / "encoder"), "cls").save(tmp_path / "snapshot")
    out = tmp_path / "gen-0001"
    job = ReindexJob(number=1, step=2, encoder=str(encoder), source=str(tiny_kb), out=str(out), pooling="cls",
                     index_type="flat")
    job_file = tmp_path / "gen-0001.job.json"
    job_file.write_text(job.to_json())
    shutil.copytree(tiny_kb, out)  # "the current one" under the generation's name
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    failed = subprocess.run([sys.executable, "-m", "rayrag.reindex.worker", str(job_file)], capture_output=True,
                            text=True, preexec_fn=small_files, timeout=300)
    assert failed.returncode != 0 and "File too large" in failed.stderr + failed.stdout
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    from rayrag.reindex.job import run

    run(ReindexJob.from_json(job_file.read_text()))  # the retry, here in this process
    assert KnowledgeBase(out).manifest.encoder == "./encoder"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # the failed attempt's temporary is gone


# ----- runs ---------------------------------------------------------------------------------------------------------
E2E = ["--train_batch_size", "4", "--max_steps", "6", "--learning_rate", "1e-3", "--context_encoder_lr", "1e-3",
       "--train_context_encoder", "--reindex_every", "2", "--save_every_n_steps", "3", "--n_val", "8",
       "--dropout", "0.1", "--log_every_n_steps", "1", "--no-progress"]


def _args(corpus_dir, model, out, *more):
    return ["train", "--data_dir", corpus_dir / "data", "--model_name_or_path", model, "--output_dir", out,
            "--do_train", *E2E, *more]


def _steps(out: Path, rank: int) -> dict[int, int]:
    """step -> index generation, as rank `rank` logged it (the last row of a step a resumed run redid); each row is
    step,generation,unix_time, the times never decreasing within a run."""
    rows = [r.split(",") for r in (out / "index" / f"steps-rank{rank}.csv").read_text().split()]
    assert all(len(r) == 3 and float(r[2]) > 1.7e9 for r in rows), rows[:3]
    return {int(r[0]): int(r[1]) for r in rows}


@pytest.fixture(scope="module")
def two_process_runs(corpus_dir, tiny_rag, tmp_path_factory):
    """With --devices 2 and the ray backend: an uninterrupted run, and one that crashed after step 3 (a re-index
    running) and resumed."""
    root = tmp_path_factory.mktemp("e2e")
    more = ("--devices", "2", "--distributed_retriever", "ray", "--num_retrieval_workers", "2", "--profile")
    rayrag(*_args(corpus_dir, tiny_rag, root / "clean", *more), "--quiet")
    script = Path(__file__).with_name("_crash_train.py")
    crashed = subprocess.run([sys.executable, str(script), "3", *map(str, _args(corpus_dir, tiny_rag, root / "crash",
                                                                                   *more)[1:])],
                             capture_output=True, text=True, timeout=600)
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    assert not (root / "crash" / "index" / "gen-0001").exists()  # the crash ended its re-index unfinished
    rayrag(*_args(corpus_dir, tiny_rag, root / "crash", *more), "--resume", "--quiet")
    return root


@pytest.mark.slow
def test_every_rank_uses_the_same_generation_at_every_step(two_process_runs):
    out = two_process_runs / "clean"
    rank0, rank1 = _steps(out, 0), _steps(out, 1)
    assert rank0 == rank1 == {0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1}  # the re-index started at s is used from s + 2
    history = json.loads((out / "index" / "history.json").read_text())
    assert [h["switched_step"] for h in history if h.get("outcome") == "done"] == [4]
    assert history[1]["started_step"] == 4 and "outcome" not in history[1]  # stopped when training ended
    profile = json.loads((out / "retrieval_profile.json").read_text())
    assert profile["reindex"][0]["number"] == 1
    for rank in ("0", "1"):  # training steps, then validation
        assert profile["ranks"][rank]["generations"][:6] == [0, 0, 0, 0, 1, 1]


@pytest.mark.slow
def test_the_final_knowledge_base_equals_a_fresh_index_with_the_trained_context_encoder(two_process_runs, corpus_dir,
                                                                                      tmp_path):
    out = two_process_runs / "clean"
    info = json.loads((out / "best_model" / "rayrag.json").read_text())
    assert info["kb"] == str((out / "kb").resolve()) and info["context_encoder"] == "context_encoder"
    rayrag("index", "--docs", corpus_dir / "documents.jsonl", "--out", tmp_path / "fresh", "--encoder",
           out / "best_model" / "context_encoder", "--quiet")
    ours, fresh = KnowledgeBase(out / "kb"), KnowledgeBase(tmp_path / "fresh")
    ids = np.arange(len(ours))
    np.testing.assert_allclose(ours.vectors(ids), fresh.vectors(ids), rtol=0, atol=1e-5)
    # the context encoder trained: its vectors moved away from those the run started with
    original = KnowledgeBase(Path(json.loads((out / "index" / "gen-0002.job.json").read_text())["source"]))
    assert np.abs(original.vectors(ids) - ours.vectors(ids)).max() > 1e-3
    # and the model answers from it like from any knowledge base
    rayrag("eval", "--model", out / "best_model", "--data_dir", corpus_dir / "data", "--split", "test",
           "--n", "4", "--out", tmp_path / "eval", "--quiet")


@pytest.mark.slow
def test_resume_in_the_middle_of_a_refresh_is_exact(two_process_runs):
    """--devices 2, crashed after step 3 while the re-index of step 2 ran, resumed: each rank restores its own RNG
    state (dropout draws from it, and ranks draw different amounts), the loader resumes mid-epoch, the pending
    re-index starts again from its snapshot, so every loss and weight is the uninterrupted run's, bit for bit. (This
    is also the suite's test of a multi-process resume without end-to-end training: the same code, and more.)"""
    clean, resumed = two_process_runs / "clean", two_process_runs / "crash"
    assert _steps(resumed, 0) == _steps(clean, 0) == _steps(resumed, 1)
    a = torch.load(clean / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6
    assert any("ctx_encoder" in name for name in a["state_dict"])
    assert all(torch.equal(b["state_dict"][name], tensor) for name, tensor in a["state_dict"].items())
    rows = train_rows(clean)
    assert [step for step, _ in rows] == list(range(6)) and train_rows(resumed) == rows  # each step once, equal


@pytest.mark.slow
def test_a_killed_reindex_worker_is_retried_then_skipped_and_training_goes_on(corpus_dir, tiny_rag, tmp_path):
    """One process, local backend. Every worker of generation 1 is killed as it starts (3 tries: the first and its
    2 retries): the refresh is skipped with a warning, training goes on with generation 0, and the next refresh
    (generation 2) is used. Then --resume with 2 processes instead of 1 continues from the final checkpoint."""
    out = tmp_path / "run"
    args = _args(corpus_dir, tiny_rag, out)
    args[args.index("--max_steps") + 1] = "8"
    proc = subprocess.Popen([sys.executable, "-m", "rayrag", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = set(), time.monotonic() + 300
    log = out / "index" / "gen-0001.log"
    while len(killed) < 3 and time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines() if log.is_file() else []:
            if "re-index worker pid" in line:
                pid = int(line.split("re-index worker pid ")[1].split(":")[0])
                if pid not in killed:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    killed.add(pid)
        time.sleep(0.02)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert len(killed) == 3
    assert "re-index to generation 1 failed 3 times" in stderr and "starting it again" in stderr
    steps = _steps(out, 0)
    assert steps == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 2, 7: 2}
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 8
    args = _args(corpus_dir, tiny_rag, out, "--devices", "2", "--resume", "--quiet")
    args[args.index("--max_steps") + 1] = "10"
    rayrag(*args)
    assert _steps(out, 1) == {8: 3, 9: 3}  # the pending re-index (weights of step 8) is used from step 8 + 2
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 10


@pytest.mark.slow
def test_init_model_writes_a_model_that_carries_the_knowledge_bases_context_encoder(tiny_kb, tmp_path):
    """`init-model --context_encoder kb`: the model carries the knowledge base's encoder with its pooling recorded,
    and `train --train_context_encoder` starts from it."""
    from rayrag.encoders import pooling
    from rayrag.kb.layout import KbLocation
    from rayrag.model.checkpoint import read_info
    from rayrag.reindex.setup import context_encoder_name

    out = tmp_path / "model"
    rayrag("init-model", "--kb", tiny_kb, "--out", out, "--generator", "tiny-bart", "--n_docs", "2",
           "--context_encoder", "kb", "--quiet")
    info = read_info(out)
    assert info.context_encoder == "context_encoder" and pooling.detect(out / "context_encoder") == "cls"
    ours = load_context_encoder_weights(out / "context_encoder")
    theirs = load_context_encoder_weights(tiny_kb / "encoder")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    opts = _train(tmp_path, "--train_context_encoder", "--model_name_or_path", str(out))
    assert context_encoder_name(opts, info, KbLocation(str(tiny_kb))) == str(out / "context_encoder")
    refused = rayrag("init-model", "--kb", tiny_kb, "--out", tmp_path / "cb", "--model_type", "bart", "--generator",
                     "tiny-bart", "--context_encoder", "kb", check=False)
    assert refused.returncode == 2 and "--context_encoder: a closed-book bart model" in refused.stderr


def load_context_encoder_weights(path: Path) -> dict:
    from rayrag.encoders import load_context_encoder

    return load_context_encoder(str(path))[0].state_dict()
