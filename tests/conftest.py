"""Shared fixtures: a tiny synthetic corpus, a knowledge base with a tiny random encoder, tiny models.

Everything is built once per test session in a temporary directory, through the real CLI.
"""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything loads torch/faiss; see rayrag/__init__.py
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Every Ray node a test starts (Cluster, `ray start`, a local instance) listens on 127.0.0.1 only, and every process
# of the tests resolves 127.0.0.1 as they do (Ray reads this when imported; see rayrag/cluster/connect.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


IN_PROCESS = ("eval", "ask", "index", "init-model", "train", "demo")
"""Verbs `rayrag()` runs through the CLI's own entry point in the test process (`cli.main.main(argv)`) when they
start nothing of their own (`_starts_processes`): each saves the 8-12 s of importing torch, Lightning and
transformers that a new process pays on the 2-core machine."""


def _starts_processes(argv: list[str]) -> bool:
    """Whether `rayrag ARGV` may start processes or Ray: those run in a process of their own (Lightning's DDP starts
    its other ranks by re-running the command line, which here would be pytest's). A `--config` file could say so
    too, so it counts."""
    if {"ray", "pytorch", "--ray", "--launcher", "--config", "--train_context_encoder"} & set(argv):
        return True
    if any(a.startswith(("--ray", "--cluster.", "--retrieval.", "--launcher=", "--devices=", "--gpus=")) for a in argv):
        return True
    counts = ("--devices", "--gpus", "--num_nodes", "--num_workers")
    return any(a in counts and (i + 1 >= len(argv) or argv[i + 1] not in ("0", "1")) for i, a in enumerate(argv))


def _in_process(argv: list[str]) -> subprocess.CompletedProcess:
    """`rayrag ARGV` through `rayrag.cli.main.main`, with stdout and stderr captured and the logging set-up of a
    fresh process (the root logger's handlers are removed before and restored after, as is torch's thread count), as
    a completed process."""
    import io
    import logging
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from rayrag.cli.main import main

    import torch

    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    threads = torch.get_num_threads()
    for handler in saved:
        root.removeHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            except BaseException:  # what the interpreter would print before exiting 1
                traceback.print_exc()
                code = 1
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(["rayrag", *argv], code, out.getvalue(), err.getvalue())


def rayrag(*args: str, cwd: Path | None = None, check: bool = True, timeout: float = 600,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `rayrag` command line, in a subprocess (or, for the verbs in `IN_PROCESS` that start nothing
    of their own, through its entry point in this process); returns the completed process."""
    argv = [str(a) for a in args]
    if cwd is None and env is None and argv and argv[0] in IN_PROCESS and not _starts_processes(argv):
        proc = _in_process(argv)
    else:
        proc = subprocess.run([sys.executable, "-m", "rayrag", *argv], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"rayrag {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """documents.jsonl and data/ (train/val/test .source/.target/.titles) of a 40-entity corpus."""
    from rayrag.tasks.synthetic import make_corpus, write_corpus

    d = tmp_path_factory.mktemp("corpus")
    write_corpus(make_corpus(40, seed=1), d / "documents.jsonl", d / "data")
    return d


@pytest.fixture(scope="session")
def tiny_kb(corpus_dir, tmp_path_factory) -> Path:
    """A flat knowledge base of the corpus, embedded by a tiny random encoder stored inside it."""
    out = tmp_path_factory.mktemp("kb") / "kb"
    rayrag("index", "--docs", corpus_dir / "documents.jsonl", "--out", out, "--encoder", "tiny", "--quiet")
    return out


@pytest.fixture(scope="session")
def tiny_rag(tiny_kb, tmp_path_factory) -> Path:
    """A RAG-token model: the knowledge base's tiny encoder + a tiny BART generator, 2 docs."""
    out = tmp_path_factory.mktemp("models") / "rag_token"
    rayrag("init-model", "--kb", tiny_kb, "--out", out, "--generator", "tiny-bart", "--n_docs", "2", "--quiet")
    return out


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance in this test process (rayrag's own, on 127.0.0.1, 2 CPUs), shut down after the module."""
    import ray

    from rayrag.cluster import start_local

    with start_local(num_cpus=2, log_to_driver=False):
        yield ray


def assert_same_loss(plain, ours, questions: list[str], answers: list[str]) -> None:
    """A RAG model loaded by plain transformers (`plain`) and the same directory loaded by rayrag (`ours`, a
    `load_model` result) give the same loss and passage scores for `questions` with `answers` as labels."""
    import torch

    plain.eval(), ours.model.eval()
    enc = ours.question_tokenizer(questions, return_tensors="pt", padding=True)
    labels = ours.generator_tokenizer(answers, return_tensors="pt", padding=True)["input_ids"]
    with torch.no_grad():
        a = plain(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels, reduce_loss=True)
        b = ours.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels,
                       reduce_loss=True)
    assert torch.isfinite(a.loss)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.doc_scores, a.doc_scores, rtol=1e-4, atol=1e-5)


@contextlib.contextmanager
def three_node_cluster(head_resources: dict | None = None):
    """Three Ray nodes on this machine (`ray.cluster_utils.Cluster`): a head with no CPUs (and `head_resources`) and
    two nodes of one logical CPU each, shut down on exit. The nodes inherit this process's environment, where an
    earlier test's connect() may have turned token mode on (RAY_AUTH_MODE=token, once ~/.ray/auth_token exists):
    they start without authentication, so the commands under test need RAY_AUTH_MODE=disabled too."""
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                          "resources": dict(head_resources or {})})
        try:
            for _ in range(2):
                c.add_node(num_cpus=1)
            c.wait_for_nodes()
        except BaseException:
            c.shutdown()
            raise
    try:
        yield c
    finally:
        c.shutdown()


def train_rows(out: Path) -> list[tuple[int, float]]:
    """(step, train_loss_step) of every logged training step."""
    with open(out / "logs" / "metrics.csv", newline="") as f:
        return [(int(r["step"]), float(r["train_loss_step"])) for r in csv.DictReader(f) if r.get("train_loss_step")]


@dataclass
class UserCluster:
    """A cluster as a user starts it (`ray start --head`): its GCS address, and the environment of a process that
    reaches it as that user would (HOME with the cluster's token, `auto` finding it, RAY_AUTH_MODE unset)."""

    address: str
    env: dict
    home: Path


@contextlib.contextmanager
def user_cluster(num_cpus: int = 2):
    """`ray start --head --num-cpus N` with token authentication on, in a temporary HOME and Ray temp dir, so that it
    touches neither the user's token nor their `auto` cluster, on 127.0.0.1. Ray 2.60's `ray start --head` turns
    token authentication on when ~/.ray/auth_token exists, which any earlier local `ray.init()` writes; the
    token is made first here, as `ray get-auth-token --generate` does. Stopped on exit: `ray start --block` stops
    exactly the processes it started when sent SIGTERM (`ray stop` would stop every Ray instance of this user on
    the machine, other tests' too), given 5 s (it drains the node for 30 s) before the rest of what it started, its
    process group and any process of its session directory, is killed."""
    import shutil
    import signal
    import socket
    import tempfile
    import time

    root = Path(tempfile.mkdtemp(prefix="rr-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS", "RAY_AUTH_TOKEN",
                                                            "RAY_AUTH_TOKEN_PATH")}
    env.update(HOME=str(root / "home"), RAY_TMPDIR=str(root), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    (root / "home").mkdir()
    ports = []
    for _ in range(4):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    ray_cli = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    log = open(root / "head.log", "w")
    proc = subprocess.Popen([ray_cli, "start", "--head", "--block",
                             f"--port={ports[0]}", f"--dashboard-port={ports[1]}",
                             f"--ray-client-server-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
                             f"--num-cpus={num_cpus}",
                             "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    try:
        current = root / "ray" / "ray_current_cluster"  # what `auto` reads
        deadline = time.monotonic() + 90
        while not (current.is_file() and current.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not come up: {(root / 'head.log').read_text()[-2000:]}")
            time.sleep(0.2)
        address = current.read_text().strip()
        assert "Token authentication is enabled" in (root / "head.log").read_text(), (root / "head.log").read_text()
        yield UserCluster(address, env, root / "home")
    finally:
        import psutil

        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for p in psutil.process_iter():  # a process of this cluster outside the group: its args name `root`
            with contextlib.suppress(psutil.Error):
                if str(root) in " ".join(p.cmdline()):
                    p.kill()
        log.close()
        shutil.rmtree(root, ignore_errors=True)

