"""One config system for every verb, in process (no subprocess, no training): --print_config/--config round
trips, the old spellings, validate() and resolved(), flags named in errors, the pool's flags, config.yaml."""

from __future__ import annotations

import argparse
import dataclasses
import re
from importlib import import_module
from pathlib import Path

import pytest
import yaml

from rayrag.cli.main import VERBS, main
from rayrag.cli.parse import parse
from rayrag.config import write_config
from rayrag.errors import RayragError
from rayrag.cluster.args import ClusterArgs
from rayrag.kb.args import KbArgs
from rayrag.retrieval.options import RetrievalArgs
from rayrag.retrieval.ray.config import PoolConfig
from rayrag.train.options import TrainOptions

TRAIN = ["--data_dir", "d", "--output_dir", "o", "--model_name_or_path", "m"]
REQUIRED = {  # the least each verb parses with
    "demo": [],
    "index": ["--docs", "a.jsonl", "--out", "kb"],
    "init-model": ["--out", "m"],
    "train": [*TRAIN, "--do_train"],
    "eval": ["--model", "m", "--data_dir", "d"],
    "ask": ["--model", "m", "where was x born?"],
    "serve": ["--model", "m"],
    "bench retrieval": [],
    "bench serve": [],
    "tune": [*TRAIN, "--search.learning_rate", "loguniform:1e-5,1e-3"],
}


def options(verb: str, *argv: str):
    """The options dataclass `rayrag VERB ARGV...` parses to."""
    return parse(import_module(VERBS[verb]), f"rayrag {verb}", list(argv))[0]


def parse_error(verb: str, *argv: str) -> str:
    with pytest.raises(argparse.ArgumentError) as e:
        options(verb, *argv)
    return str(e.value)


def print_config(capsys, verb: str, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*verb.split(), *argv, "--print_config"])
    assert e.value.code in (0, None)
    return capsys.readouterr().out


def test_every_verb_is_covered():
    assert set(REQUIRED) == set(VERBS)


@pytest.mark.parametrize("verb", list(REQUIRED))
def test_print_config_is_read_back_by_config(verb, tmp_path, capsys):
    text = print_config(capsys, verb, *REQUIRED[verb])
    assert isinstance(yaml.safe_load(text), dict)
    (tmp_path / "c.yaml").write_text(text)
    assert options(verb, "--config", str(tmp_path / "c.yaml")) == options(verb, *REQUIRED[verb])
    # with no flags at all: required fields print as null, and the file is still accepted
    bare = print_config(capsys, verb)
    (tmp_path / "bare.yaml").write_text(bare)
    assert print_config(capsys, verb, "--config", str(tmp_path / "bare.yaml")) == bare
    # flags after --config override it
    assert options(verb, "--config", str(tmp_path / "bare.yaml"), *REQUIRED[verb]) == options(verb, *REQUIRED[verb])


@pytest.mark.parametrize("verb", list(REQUIRED))
def test_debug_and_quiet_alone_on_every_verb(verb):
    module = import_module(VERBS[verb])
    _, common = parse(module, verb, [*REQUIRED[verb], "--debug", "--quiet"])
    assert common.debug and common.quiet
    _, common = parse(module, verb, ["--quiet", "false", *REQUIRED[verb]])
    assert not common.debug and not common.quiet


OLD_AND_NEW = [
    ("index", ["--docs", "a.jsonl", "b c.tsv", "--out", "kb", "--passage-words", "5", "--index-type", "hnsw",
               "--hnsw-m", "8", "--hnsw-ef-construction", "40", "--hnsw-ef-search", "64", "--ivf-nlist", "4",
               "--pq-m", "4", "--pq-nbits", "6", "--ivf-nprobe", "2", "--batch-size", "8", "--max-length", "32",
               "--overwrite", "--encoder", "tiny"],
     ["--docs", '["a.jsonl", "b c.tsv"]', "--out", "kb", "--passage_words", "5", "--index_type", "hnsw",
      "--index.hnsw_m", "8", "--index.hnsw_ef_construction", "40", "--index.hnsw_ef_search", "64",
      "--index.ivf_nlist", "4", "--index.pq_m", "4", "--index.pq_nbits", "6", "--index.ivf_nprobe", "2",
      "--batch_size", "8", "--max_length", "32", "--overwrite", "true", "--encoder", "tiny"]),
    ("index", ["--docs=a.jsonl", "--out", "kb", "--hnsw_m", "8", "--passage-words=7"],
     ["--docs+", "a.jsonl", "--out", "kb", "--index.hnsw_m=8", "--passage_words", "7"]),
    ("bench retrieval", ["--index-size", "2000", "--dim", "32", "--index-type", "ivfpq", "--steps", "3",
                         "--warmup-steps", "1", "--step-time", "0.01", "--floor-repeats", "1", "--batch-size", "4",
                         "--n-docs", "3", "--cache-dir", "c", "--run-timeout", "60", "--workers", "2",
                         "--backends", "local,ray:2", "--ray-address", "auto"],
     ["--index_size", "2000", "--dim", "32", "--index_type", "ivfpq", "--steps", "3", "--warmup_steps", "1",
      "--step_time", "0.01", "--floor_repeats", "1", "--batch_size", "4", "--n_docs", "3", "--cache_dir", "c",
      "--run_timeout", "60", "--workers", "2", "--backends", "local,ray:2", "--ray_address", "auto"]),
    ("demo", ["--out", "x", "--entities", "12", "--train-minutes", "0.15", "--encoder-layers", "1",
              "--decoder-layers", "1", "--n-test", "5", "--val-every", "3", "--no-overwrite",
              "--train-batch-size", "4", "--question-encoder-lr", "1e-5", "--n-docs", "3"],
     ["--out", "x", "--entities", "12", "--train_minutes", "0.15", "--encoder_layers", "1", "--decoder_layers", "1",
      "--n_test", "5", "--val_every", "3", "--overwrite", "false", "--train_batch_size", "4",
      "--question_encoder_lr", "1e-5", "--n_docs", "3"]),
    ("train", [*TRAIN, "--do_train", "--do_predict", "--fp16", "--profile", "--resume", "--freeze_embeddings",
               "--no-progress", "--distributed_retriever", "ray", "--retrieval_timeout_s", "2.5",
               "--retrieval_max_restarts", "-1", "--n_train", "-1", "--learning_rate", "1e-4"],
     [*TRAIN, "--do_train", "true", "--do_predict=true", "--fp16", "true", "--profile", "true", "--resume", "true",
      "--freeze_embeddings", "true", "--progress", "false", "--distributed_retriever", "ray",
      "--pool.call_timeout_s", "2.5", "--pool.max_restarts", "-1", "--learning_rate", "0.0001"]),
    ("train", [*TRAIN, "--do_predict", "--no-freeze_embeddings", "--no-fp16"],
     [*TRAIN, "--do_predict", "--freeze_embeddings=false", "--fp16", "false"]),
    ("train", ["--data", "d", "--output_dir", "o", "--model_name", "m", "--do_t", "--no-prog"],  # abbreviations
     [*TRAIN, "--do_train", "--progress", "false"]),
    ("init-model", ["--out", "m", "--overwrite", "--n_docs", "3"], ["--out", "m", "--overwrite=true", "--n_docs=3"]),
    ("init-model", ["--out", "m", "--no-overwrite"], ["--out", "m"]),
    ("ask", ["--model", "m", "--json", "first?", "--quiet", "second?", "--n_docs", "2", "--", "--third"],
     ["--model", "m", "--json", "true", "--n_docs", "2", "--questions", '["first?", "second?", "--third"]']),
    ("ask", ["--model", "m", "--file", "q.txt"], ["--config", "{tmp}/ask.yaml"]),
    ("eval", ["--model", "m", "--data_dir", "d", "--split", "val", "--n", "5", "--n_docs", "2"],
     ["--model=m", "--data_dir=d", "--split=val", "--n=5", "--n_docs=2"]),
]


@pytest.mark.parametrize("verb,old,new", OLD_AND_NEW, ids=[f"{v}-{i}" for i, (v, _, _) in enumerate(OLD_AND_NEW)])
def test_old_spellings_parse_like_the_new(verb, old, new, tmp_path):
    (tmp_path / "ask.yaml").write_text("model: m\nfile: q.txt\n")
    new = [a.replace("{tmp}", str(tmp_path)) for a in new]
    assert options(verb, *old) == options(verb, *new)


def test_spellings_reach_the_fields():
    o = options("index", "--docs", "a.jsonl", "b.tsv", "--out", "kb", "--hnsw-m", "8", "--passage-words", "5")
    assert o.docs == [Path("a.jsonl"), Path("b.tsv")] and o.index.hnsw_m == 8 and o.passage_words == 5
    t = options("train", *TRAIN, "--do_train", "--no-progress", "--gpus", "2")
    assert t.do_train and not t.progress and t.gpus == 2 and not t.do_predict
    a = options("ask", "--model", "m", "--json", "where?", "--quiet")
    assert a.json and a.questions == ["where?"]
    assert options("bench retrieval", "--index-size", "7", "--workers", "4").index_size == 7
    assert options("demo", "--train-minutes", "0.5", "--no-overwrite") == \
        dataclasses.replace(options("demo"), train_minutes=0.5, overwrite=False)


def test_pool_flags_reach_the_pool_config():
    """--retrieval.pool.* (and the old --pool.*, --retrieval_timeout_s, --retrieval_max_restarts): defaults are
    PoolConfig's, values reach opts.retrieval.pool, and they are refused with other backends or out of range."""
    assert options("train", *TRAIN, "--do_train").retrieval.pool == PoolConfig()
    o = options("train", *TRAIN, "--do_train", "--distributed_retriever", "ray", "--pool.call_timeout_s", "2.5",
                "--retrieval_max_restarts", "-1", "--retrieval.pool.faiss_threads", "3", "--pool.lookup_timeout_s", "9",
                "--num_retrieval_workers", "2")
    assert o.retrieval == RetrievalArgs("ray", 2, PoolConfig(call_timeout_s=2.5, max_restarts=-1, faiss_threads=3,
                                                             lookup_timeout_s=9.0))
    o.validate()

    def opts(**kw):
        return TrainOptions(data_dir=Path("d"), output_dir=Path("o"), model_name_or_path=Path("m"), do_train=True,
                            retrieval=RetrievalArgs(**kw))

    with pytest.raises(RayragError, match="--retrieval.pool.call_timeout_s applies to --retrieval.backend ray, not "
                                          "local"):
        opts(pool=PoolConfig(call_timeout_s=5.0)).validate()
    with pytest.raises(RayragError, match="--retrieval.pool.suspect_s applies to --retrieval.backend ray, not pytorch"):
        opts(backend="pytorch", pool=PoolConfig(suspect_s=1.0)).validate()
    with pytest.raises(RayragError, match="--retrieval.num_workers applies to --retrieval.backend ray"):
        opts(num_workers=2).validate()
    with pytest.raises(RayragError, match="--retrieval.pool.max_restarts -2: must be -1"):
        opts(backend="ray", pool=PoolConfig(max_restarts=-2)).validate()
    with pytest.raises(RayragError, match="--retrieval.pool.call_timeout_s 0.0: must be positive"):
        opts(backend="ray", pool=PoolConfig(call_timeout_s=0.0)).validate()
    with pytest.raises(RayragError, match="--retrieval.pool.max_concurrency 0: must be 1 or more"):
        opts(backend="ray", pool=PoolConfig(max_concurrency=0)).validate()


def test_the_parts_are_shared_and_checked_once():
    """Every verb that needs a part nests the same dataclass, so a part's flags and checks are the same
    everywhere; a bad address is refused by the one check, naming the flag."""
    for verb, extra in (("train", ["--do_train"]), ("eval", []), ("ask", []), ("init-model", [])):
        o = options(verb, *REQUIRED[verb], *extra, "--kb", "k")
        assert isinstance(o.kb, KbArgs) and o.kb.path == Path("k"), verb
    for verb in ("train", "eval", "ask"):
        o = options(verb, *REQUIRED[verb], "--distributed_retriever", "ray", "--ray_address", "auto")
        assert o.retrieval.backend == "ray" and o.cluster.address == "auto", verb
        with pytest.raises(RayragError, match="--cluster.address 'x': use auto"):
            dataclasses.replace(o, cluster=ClusterArgs(address="x")).validate()
    ind = options("index", *REQUIRED["index"], "--ray", "--num_workers", "2", "--ray_address", "h:1",
                  "--cpus-per-worker", "0.5")
    assert ind.cluster == ClusterArgs(address="h:1", workers=2, cpus_per_worker=0.5)
    assert options("tune", *REQUIRED["tune"], "--kb", "k").train.kb.path == Path("k")


def test_choices_are_refused_by_the_parser_and_listed_in_help(capsys):
    assert parse_error("train", *TRAIN, "--lr_scheduler", "step") == \
        "--lr_scheduler step: expected one of linear, cosine, cosine_w_restarts, polynomial, constant"
    assert "expected one of local, pytorch, ray" in parse_error("train", *TRAIN, "--distributed_retriever", "faiss")
    assert "expected one of flat, hnsw, ivfpq" in parse_error("index", *REQUIRED["index"], "--index-type", "lsh")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "{local,pytorch,ray}" in capsys.readouterr().out


def test_worker_counts_that_agree_are_no_conflict():
    """The seed's command line says --gpus 2 (or --devices 2); adding --launcher ray --num_workers 2 says 2 again."""
    for count in (["--gpus", "2"], ["--devices", "2"]):
        o = options("train", *TRAIN, "--do_train", *count, "--launcher", "ray", "--num_workers", "2")
        o.validate()
        assert o.resolved().cluster.workers == 2
        o = options("train", *TRAIN, "--do_train", *count, "--launcher", "ray", "--cluster.workers", "3")
        with pytest.raises(RayragError, match=r"--cluster.workers 3 and --(gpus|devices) 2: .* drop one or make them "
                                              "agree"):
            o.validate()
    with pytest.raises(RayragError, match="--cluster.cpus_per_worker applies to --launcher ray"):
        options("train", *TRAIN, "--do_train", "--cpus_per_worker", "1").validate()


def test_resolved_returns_a_new_object_and_changes_nothing(tmp_path):
    kb = tmp_path / "kb"
    o = TrainOptions(data_dir=Path("d"), output_dir=Path("o"), model_name_or_path=Path("m"), do_train=True, gpus=2,
                     kb=KbArgs(passages_path=kb / "passages", index_path=kb / "index.faiss"))
    before = dataclasses.replace(o)
    r = o.resolved()
    assert o == before and o.kb.path is None and o.accelerator == "auto" and o.devices == 1
    assert (r.accelerator, r.devices, r.kb) == ("gpu", 2, KbArgs(path=kb)) and r.retrieval.pool is not o.retrieval.pool
    assert r.resolved() == r  # resolving twice changes nothing more
    o.validate()
    assert o == before
    cpu = dataclasses.replace(o, gpus=0).resolved()
    assert cpu.accelerator == "cpu"
    for verb in REQUIRED:
        opts = options(verb, *REQUIRED[verb])
        copy = dataclasses.replace(opts)
        resolved = opts.resolved()
        assert resolved is not opts and opts == copy, verb
    assert options("eval", "--model", "m", "--data_dir", "d").resolved().out == Path("m") / "eval"
    assert options("bench retrieval", "--index_size", "10000").resolved().clusters == 100
    assert options("init-model", "--out", "m", "--kb", "kb").resolved().kb.path == Path("kb").resolve()


def test_resolving_refuses_contradictions(tmp_path):
    base = dict(data_dir=Path("d"), output_dir=Path("o"), model_name_or_path=Path("m"), do_train=True)
    cases = [(dict(gpus=1, accelerator="cpu"), "--gpus 1 contradicts --accelerator cpu"),
             (dict(kb=KbArgs(passages_path=tmp_path / "hf" / "my_knowledge_dataset")),
              "--passages_path .*: give --index_path too"),
             (dict(kb=KbArgs(tmp_path / "other", index_path=tmp_path / "kb" / "index.faiss")), "--kb .* contradicts")]
    for kw, message in cases:
        with pytest.raises(RayragError, match=message):
            TrainOptions(**base, **kw).resolved()
        with pytest.raises(RayragError, match=message):
            TrainOptions(**base, **kw).validate()


@pytest.mark.parametrize("verb,argv,message", [
    ("train", [*TRAIN, "--n_docs", "x"], "--n_docs x: expected int or null"),
    ("train", [*TRAIN, "--pool.call_timeout_s", "soon"], "--retrieval.pool.call_timeout_s soon: expected float"),
    ("train", [*TRAIN, "--retrieval_timeout_s", "soon"], "--retrieval.pool.call_timeout_s soon: expected float"),
    ("train", [*TRAIN, "--do_train", "maybe"], "unrecognized arguments: maybe"),
    ("train", [*TRAIN, "--n_dox", "3"], "did you mean --n_docs"),
    ("train", ["--data_dir", "d"], "missing --(output_dir|model_name_or_path).*: give them as flags or in --config"),
    ("index", ["--docs", "a", "--out", "kb", "--hnsw-m", "many"], "--index.hnsw_m many: expected int"),
    ("bench retrieval", ["--index-size", "big"], "--index_size big: expected int"),
    ("ask", ["--model", "m", "--n_docs", "two", "q"], "--n_docs two: expected int or null"),
    ("eval", ["--model", "m", "--data_dir", "d", "--config", "/nonexistent.yaml"], "--config"),
])
def test_parse_errors_are_one_line_naming_the_flag(verb, argv, message):
    text = parse_error(verb, *argv)
    assert "\n" not in text and re.search(message, text), text


def test_main_prints_parse_errors_as_one_line(capsys):
    assert main(["train", *TRAIN, "--n_train", "all"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "rayrag train: error: --n_train all: expected int"
    assert main(["bench", "retrieval", "--steps", "x"]) == 2
    assert capsys.readouterr().err.strip() == "rayrag bench retrieval: error: --steps x: expected int"


@pytest.mark.parametrize("verb,argv,message", [
    ("train", [*TRAIN], "nothing to do: pass --do_train, --do_predict or both"),
    ("train", [*TRAIN, "--do_train", "--train_batch_size", "0"], "--train_batch_size 0: must be at least 1"),
    ("train", [*TRAIN, "--do_train", "--label_smoothing", "1.5"], r"--label_smoothing 1.5: must be in \[0, 1\)"),
    ("train", [*TRAIN, "--do_train", "--gpus", "-1"], "--gpus -1: must be at least 0"),
    ("train", [*TRAIN, "--do_train", "--distributed_retriever", "ray", "--ray_address", "x"], "--cluster.address 'x'"),
    ("index", ["--docs", "a", "--out", "kb", "--passage-words", "0"], "--passage_words 0: must be at least 1"),
    ("index", ["--docs", "a", "--out", "kb", "--ivf-nprobe", "0"], "--index.ivf_nprobe 0: must be at least 1"),
    ("init-model", ["--out", "m"], "--model_type rag_token retrieves: pass --kb KB_DIR"),
    ("eval", ["--model", "m", "--data_dir", "d", "--batch_size", "0"], "--batch_size 0: must be at least 1"),
    ("ask", ["--model", "m"], "no questions: give them as arguments or with --file FILE"),
    ("ask", ["--model", "m", "--n_docs", "0", "q"], "--n_docs 0: must be at least 1"),
    ("demo", ["--entities", "2"], "--entities 2: must be at least 3"),
    ("demo", ["--train-minutes", "0"], "--train_minutes 0.0: must be positive"),
    ("bench retrieval", ["--steps", "0"], "--steps 0: must be at least 1"),
    ("bench retrieval", ["--index-type", "lsh"], "--index_type 'lsh'"),
    ("index", ["--docs", "a", "--out", "kb", "--num_workers", "2"], "--cluster.workers applies to --ray"),
    ("eval", ["--model", "m", "--data_dir", "d", "--num_workers", "2"], "--cluster.workers: answering starts no Ray"),
])
def test_bad_values_name_the_flag(verb, argv, message):
    opts = options(verb, *argv)
    before = dataclasses.replace(opts)
    with pytest.raises(RayragError, match=message):
        opts.validate()
    assert opts == before  # validate() changes nothing


def test_written_config_reruns_the_same_options(tmp_path):
    argv = [*TRAIN, "--do_train", "--gpus", "0", "--passages_path", str(tmp_path / "kb" / "passages"),
            "--distributed_retriever", "ray", "--retrieval_timeout_s", "7", "--no-progress", "--dropout", "0.1"]
    opts = options("train", *argv).resolved()
    path = write_config(opts, tmp_path / "run")
    assert path == tmp_path / "run" / "config.yaml"
    text = path.read_text()
    loaded = yaml.safe_load(text)
    assert loaded["data_dir"] == "d" and loaded["kb"]["path"] == str(tmp_path / "kb")
    assert loaded["retrieval"]["pool"]["call_timeout_s"] == 7
    assert loaded["accelerator"] == "cpu" and loaded["n_docs"] is None and "!!" not in text  # plain YAML
    assert options("train", "--config", str(path)) == opts
    assert options("train", "--config", str(path)).resolved() == opts
    assert options("train", "--config", str(path), "--seed", "3") == dataclasses.replace(opts, seed=3)
    for verb in REQUIRED:  # every verb's options survive the round trip
        o = options(verb, *REQUIRED[verb]).resolved()
        assert options(verb, "--config", str(write_config(o, tmp_path / verb.replace(" ", "_")))) == o, verb


def test_train_writes_its_resolved_config_first(tmp_path):
    """train() writes OUTPUT_DIR/config.yaml before it reads the model (which here does not exist)."""
    from rayrag.train.run import train

    opts = TrainOptions(data_dir=tmp_path, output_dir=tmp_path / "run", model_name_or_path=tmp_path / "nomodel",
                        do_train=True, gpus=0, kb=KbArgs(index_path=tmp_path / "kb" / "index.faiss"))
    with pytest.raises(RayragError):
        train(opts)
    assert opts.kb.path is None and opts.accelerator == "auto"  # the caller's options are untouched
    assert options("train", "--config", str(tmp_path / "run" / "config.yaml")) == opts.resolved()


def test_a_config_written_before_the_options_were_grouped_still_reruns(tmp_path):
    """A config.yaml with the flat keys of earlier releases (kb, distributed_retriever, pool, ray_address) reads as
    the same options as today's grouped file."""
    old = tmp_path / "old.yaml"
    old.write_text("data_dir: d\noutput_dir: o\nmodel_name_or_path: m\ndo_train: true\nkb: some/kb\n"
                   "distributed_retriever: ray\nnum_retrieval_workers: 2\nray_address: auto\n"
                   "pool:\n  call_timeout_s: 7.0\n  resources: {retrieval: 0.5}\nlearning_rate: 0.001\n")
    o = options("train", "--config", str(old))
    assert o == options("train", *TRAIN, "--do_train", "--kb", "some/kb", "--retrieval.backend", "ray",
                        "--retrieval.num_workers", "2", "--cluster.address", "auto", "--learning_rate", "1e-3",
                        "--retrieval.pool.call_timeout_s", "7", "--retrieval.pool.resources", '{"retrieval": 0.5}')
    assert options("tune", "--config", str(old), "--search.n_docs", "choice:2,3").train == o


def test_fp16_on_a_cpu_trains_in_bfloat16_only_where_it_is_native(caplog):
    """--fp16 on the CPU: bfloat16 autocast where a bfloat16 product costs about what float32's does, float32 with one
    warning where bfloat16 is emulated (92 times slower on the AVX2 machine of session 9)."""
    import logging

    from rayrag.train.run import _bf16_over_fp32, cpu_half_precision

    assert cpu_half_precision(ratio=1.1) == "bf16-mixed"
    with caplog.at_level(logging.WARNING, logger="rayrag.train.run"):
        assert cpu_half_precision(ratio=92.0) == "32-true"
    assert "bfloat16 is emulated on this CPU" in caplog.text and "drop --fp16" in caplog.text
    assert _bf16_over_fp32(n=64, repeats=2) > 0
