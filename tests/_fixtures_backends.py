"""Helpers for the retrieval-backend and DDP tests: a knowledge base with exact ties, a Ray cluster
started by the test (`ray start --head --block`, stopped by the test), the expected top-k computed
by brute force, and the environment of a child process that joins a gloo group on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 16
GROUPS = 30
COPIES = 3


def child_env(**extra: str) -> dict:
    """Environment for a child process: loopback gloo, quiet tokenizers, few threads (2 shared cores)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_tie_kb(out: Path) -> np.ndarray:
    """A flat knowledge base of 90 passages: 30 vectors, each stored 3 times under scattered ids, so
    many queries have exact ties inside and across the top k. Returns the passage vectors (90, 16)."""
    from rayrag.kb.build import write_knowledge_base

    rng = np.random.default_rng(7)
    base = rng.standard_normal((GROUPS, DIM)).astype(np.float32)
    order = rng.permutation(GROUPS * COPIES)
    vectors = np.repeat(base, COPIES, axis=0)[order]
    titles = [f"group {order[i] // COPIES}" for i in range(len(order))]
    texts = [f"passage {i} (copy of group {order[i] // COPIES})" for i in range(len(order))]
    write_knowledge_base(out, titles, texts, vectors, encoder="test-vectors")
    return vectors


def tie_queries(vectors: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n queries (n, d) float32: every other one is a stored vector (three-way tie at the top), the rest random."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, vectors.shape[1])).astype(np.float32)
    q[::2] = vectors[rng.integers(0, len(vectors), size=len(q[::2]))]
    return q


def expected_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (B, k) int64 by brute force: score (float64) descending, then id ascending."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    ids = np.broadcast_to(np.arange(len(vectors)), scores.shape)
    order = np.lexsort((ids, -scores), axis=1)
    return order[:, :k].astype(np.int64)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2):
    """A Ray cluster of one head node, as a user starts it (`ray start --head`, token auth on by
    default in Ray 2.60), in its own temp dir so that no other Ray user on the machine sees it as
    `auto`. Yields its GCS address HOST:PORT; stops exactly the processes it started."""
    temp = tempfile.mkdtemp(prefix="rr-ray-", dir="/tmp")
    port = free_port()
    log = open(Path(temp) / "head.log", "w")
    env = child_env()
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)  # the default of `ray start --head`: token authentication
    ray_bin = Path(sys.executable).with_name("ray")
    ports = [f"--port={port}", f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}"]  # not the fixed defaults another Ray may hold
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", *ports, f"--num-cpus={num_cpus}",
                             f"--temp-dir={temp}", "--disable-usage-stats"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    try:
        address = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and address is None:
            if proc.poll() is not None:
                raise RuntimeError(f"ray start --head exited {proc.returncode}: "
                                   f"{(Path(temp) / 'head.log').read_text()[-2000:]}")
            current = Path(temp) / "ray_current_cluster"
            if current.is_file() and current.read_text().strip():
                address = current.read_text().strip()
            time.sleep(0.5)
        if address is None:
            raise RuntimeError("ray start --head did not come up in 90 s")
        host, port_s = address.rsplit(":", 1)
        while time.monotonic() < deadline:  # the GCS accepts connections
            with contextlib.suppress(OSError), socket.create_connection((host, int(port_s)), timeout=1):
                break
            time.sleep(0.5)
        time.sleep(2)  # the dashboard (state API) starts a little after the GCS
        yield address
    finally:
        if proc.poll() is None:
            # `ray start --block` stops the processes it started on SIGTERM (sent to it alone: a GCS
            # killed first would make it wait 30 s to drain the node)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of the group left behind
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def port_closed(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return False
    except OSError:
        return True


class CommandTree:
    """`python ARGV...` in a session of its own (as a command started from a shell), its output in `log_path`; every
    descendant it is seen to have is remembered (psutil objects, which check that a pid was not reused by another
    process before they signal it), so `kill` stops them all, Ray's included, even after the command died."""

    def __init__(self, argv: list, log_path: Path, env: dict | None = None):
        import psutil

        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, *map(str, argv)], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env or child_env(), start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def descendants(self) -> list:
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            kids = psutil.Process(self.proc.pid).children(recursive=True)
            self.seen.update((p.pid, p) for p in kids)
            return kids
        return []

    def kill(self) -> None:
        """Kill the command and every process it started (idempotent): what a test starts, it stops."""
        import psutil

        self.descendants()
        if self.proc.poll() is None:
            self.proc.kill()
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)  # a stopped process must run to die of anything but SIGKILL
                p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self._log.close()
