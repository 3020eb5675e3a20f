"""Faults of the Ray retrieval pool during real training (`python -m rayrag train --distributed_retriever ray`),
one test per row of docs/RELIABILITY.md: an actor killed, actors killed past their restarts, an actor that
hangs, a process that looks the pool up before it exists, and the driver killed.

Faults are real signals sent to real processes: the run logs its actors' pids when the pool is ready
("ray pool NAME: ... actor pids P0,P1"), and the actors of a Ray instance that the run started itself are
its descendant processes (`ray::RetrievalActor`), which is how a restarted actor is found. A fault is
injected once the run has written its first checkpoint (step 2 of 32), and each test checks that the
run was still training at that moment, so no test can pass because its fault came too late.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from _fixtures_backends import CommandTree, child_env, port_closed, ray_head
from conftest import train_rows

pytestmark = pytest.mark.slow  # every test here trains through the CLI or runs a Ray cluster

STEPS = 32  # 64 training questions, batch 2, one epoch
VAL_CALLS = 1  # 4 validation questions, batch 4
SAVE_EVERY = 2


def train_args(corpus_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data_dir", corpus_dir / "data", "--output_dir", out, "--model_name_or_path", model,
            "--do_train", "--num_train_epochs", "1", "--n_train", "64", "--train_batch_size", "2", "--n_val", "4",
            "--eval_batch_size", "4", "--val_max_target_length", "4", "--learning_rate", "1e-3", "--seed", "7",
            "--accelerator", "cpu", "--log_every_n_steps", "1", "--save_every_n_steps", str(SAVE_EVERY),
            "--no-progress", "--profile", "--distributed_retriever", "ray", *extra]


class Run(CommandTree):
    """A `rayrag train` process; its output goes to files that the test reads while it runs. `hold`: its retrieval
    actors hold calls as the files in that directory say (tests/_holding_actor.py)."""

    def __init__(self, args: list, out: Path, env: dict | None = None, hold: Path | None = None):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        command = ["-m", "rayrag"] if hold is None else [str(Path(__file__).with_name("_holding_actor.py")), str(hold)]
        super().__init__([*command, *args], self.out.parent / f"{self.out.name}.log", env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, what: str, check, timeout: float):
        """Poll `check()` until it returns something truthy; fail (with the log's tail) after `timeout` s or
        if the run exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            if not self.alive():
                raise AssertionError(f"rayrag train exited {self.proc.returncode} before {what}\n{self.log()[-5000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} after {timeout:.0f} s\n{self.log()[-5000:]}")

    def pool(self, timeout: float = 240) -> tuple[str, list[int]]:
        """The pool's name and its actors' pids, from the run's log."""
        pattern = r"ray pool (rayrag-\w+): \d+ actors .* ready in [\d.]+ s; actor pids ([\d,]+)"
        m = self.wait_for("ready retrieval pool", lambda: re.search(pattern, self.log()), timeout)
        return m.group(1), [int(p) for p in m.group(2).split(",")]

    def checkpoint_mtime(self) -> float:
        path = self.out / "checkpoints" / "last.ckpt"
        with contextlib.suppress(FileNotFoundError):
            return path.stat().st_mtime_ns
        return 0

    def first_checkpoint(self, timeout: float = 240) -> float:
        return self.wait_for("first checkpoint", self.checkpoint_mtime, timeout)

    def actor_pids(self) -> set[int]:
        """Pids of the retrieval actors among this run's descendants (a Ray instance the run started)."""
        pids = set()
        for p in self.descendants():
            with contextlib.suppress(psutil.Error):
                if re.match(r"ray::\w*RetrievalActor\b", " ".join(p.cmdline())):  # or a test's subclass
                    pids.add(p.pid)
        return pids

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"rayrag train still running after {timeout:.0f} s\n{self.log()[-5000:]}") from None

    def stop(self) -> None:
        self.kill()


@pytest.fixture
def runs():
    """Start `Run`s; every one is stopped after the test, whatever happened."""
    started: list[Run] = []

    def start(*args, **kwargs) -> Run:
        run = Run(*args, **kwargs)
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


def gone(proc: psutil.Process) -> bool:
    """The process has exited (a pid reused by another process counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def profile(out: Path) -> dict:
    return json.loads((out / "retrieval_profile.json").read_text())["ranks"]["0"]


def assert_same_training(out: Path, ref: Path) -> None:
    """Same number of steps, no step lost or repeated, the same ids at every retrieval call, the same losses."""
    steps = json.loads((out / "metrics.json").read_text())["train_steps"]
    assert steps == json.loads((ref / "metrics.json").read_text())["train_steps"] == STEPS
    rows, ref_rows = train_rows(out), train_rows(ref)
    assert [s for s, _ in rows] == [s for s, _ in ref_rows] == list(range(STEPS))
    got, want = profile(out)["ids_sha1"], profile(ref)["ids_sha1"]
    assert len(got) == len(want) == STEPS + VAL_CALLS
    assert [i for i, (a, b) in enumerate(zip(got, want)) if a != b] == [], "calls that retrieved other ids"
    np.testing.assert_allclose([v for _, v in rows], [v for _, v in ref_rows], rtol=1e-6)


@pytest.fixture(scope="module")
def undisturbed(corpus_dir, tiny_rag, tmp_path_factory) -> Path:
    """The run that rows 1 and 3 disturb, left alone: 2 actors, same seed."""
    out = tmp_path_factory.mktemp("undisturbed") / "run"
    run = Run(train_args(corpus_dir, tiny_rag, out, "--num_retrieval_workers", "2"), out)
    try:
        assert run.finish() == 0, run.log()[-5000:]
    finally:
        run.stop()
    assert profile(out)["retries"] == 0
    return out


def hold_dir(tmp_path: Path) -> Path:
    """The directory of a run whose actors hold calls (`Run(..., hold=DIR)`): actor I holds each call it receives
    while DIR/hold-I exists, after writing DIR/received-I (tests/_holding_actor.py)."""
    hold = tmp_path / "hold"
    hold.mkdir()
    return hold


def kill_inside_call(run: Run, pid: int, hold: Path, index: int) -> None:
    """Hold the next call that actor `index` receives; once the actor says it has it, SIGKILL the actor."""
    (hold / f"hold-{index}").touch()
    run.wait_for(f"a call inside actor {index}", (hold / f"received-{index}").exists, 120)
    os.kill(pid, signal.SIGKILL)
    (hold / f"hold-{index}").unlink()
    (hold / f"received-{index}").unlink()


def test_actor_killed_mid_training_loses_no_step(corpus_dir, tiny_rag, tmp_path, runs, undisturbed):
    """Row 1. SIGKILL of the actor that serves the run (rank 0 is pinned to actor 0), while a call is in
    flight (the actor says it received the call and holds it): the call is re-sent to actor 1, Ray restarts
    actor 0, and the run ends exactly like the undisturbed run."""
    out = tmp_path / "run"
    hold = hold_dir(tmp_path)
    run = runs(train_args(corpus_dir, tiny_rag, out, "--num_retrieval_workers", "2"), out, hold=hold)
    _, (pid0, pid1) = run.pool()
    run.first_checkpoint()
    assert run.alive(), "training ended before the fault"
    kill_inside_call(run, pid0, hold, 0)
    assert run.finish() == 0, run.log()[-5000:]
    log = run.log()
    assert re.search(r"retrieval call to rayrag-\w+-0 failed \(actor 0: Actor(Died|Unavailable)Error", log), log[-5000:]
    assert profile(out)["retries"] >= 1
    assert "`Trainer.fit` stopped: `max_epochs=1` reached" in log
    assert_same_training(out, undisturbed)


def test_actors_killed_past_their_restarts_stop_training_with_one_line(corpus_dir, tiny_rag, tmp_path, runs,
                                                                       undisturbed):
    """Row 2. One actor, --retrieval_max_restarts 1: the first SIGKILL is survived (Ray restarts the actor,
    training goes on), the second is not: `rayrag train` exits 2 within seconds with one RetrievalError line,
    leaves no Ray process behind, and its last checkpoint loads and resumes to the undisturbed run's end."""
    out = tmp_path / "run"
    hold = hold_dir(tmp_path)
    run = runs(train_args(corpus_dir, tiny_rag, out, "--num_retrieval_workers", "1",
                          "--retrieval_max_restarts", "1"), out, hold=hold)
    _, (first,) = run.pool()
    assert run.actor_pids() == {first}
    ckpt = run.first_checkpoint()
    assert run.alive(), "training ended before the fault"
    os.kill(first, signal.SIGKILL)
    second = run.wait_for("restarted actor", lambda: (run.actor_pids() - {first}), 120).pop()
    run.wait_for("checkpoint after the restart", lambda: run.checkpoint_mtime() > ckpt, 120)
    run.descendants()
    ray_procs = list(run.seen.values())
    kill_inside_call(run, second, hold, 0)  # kill it under a call it holds
    t0 = time.monotonic()
    code = run.finish(timeout=120)
    elapsed = time.monotonic() - t0
    assert code == 2, run.log()[-5000:]
    assert elapsed < 60, f"took {elapsed:.0f} s to stop"
    print(f"rayrag train exited {elapsed:.1f} s after the second kill")
    lines = [ln for ln in run.log().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("rayrag train: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-20:]
    assert re.fullmatch(r"rayrag train: error: retrieval failed after \d+ tries on the 1 actors of pool rayrag-\w+ "
                        r"at [\d.]+:\d+: actor 0: ActorDiedError: .*The actors died or hung more often than they "
                        r"restart; check the Ray logs .*", errors[0]), errors[0]
    deadline = time.monotonic() + 30  # the local Ray instance the run started went with it
    while time.monotonic() < deadline and not all(gone(p) for p in ray_procs):
        time.sleep(0.2)
    assert [p.pid for p in ray_procs if not gone(p)] == []
    # the last checkpoint is whole: it loads, its weights fit the model strictly, and training resumes from it
    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]  # no partial or temporary file
    state = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    step = state["global_step"]
    assert SAVE_EVERY * 2 <= step < STEPS and step % SAVE_EVERY == 0
    from rayrag.model.checkpoint import load_model

    model = load_model(tiny_rag, retrieval=False).model
    model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()}, strict=True)
    # --resume (local retrieval: the same ids) ends where the undisturbed run ended: every step once, the same
    # ids from the resumed step on, the same losses and weights
    resume = [*train_args(corpus_dir, tiny_rag, out), "--resume", "--distributed_retriever", "local"]
    resumed = subprocess.run([sys.executable, "-m", "rayrag", *map(str, resume)], capture_output=True, text=True,
                             timeout=300, env=child_env())
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == STEPS
    rows, ref_rows = train_rows(out), train_rows(undisturbed)
    assert [s for s, _ in rows] == list(range(STEPS))
    np.testing.assert_allclose([v for _, v in rows], [v for _, v in ref_rows], rtol=1e-5)
    assert profile(out)["ids_sha1"] == profile(undisturbed)["ids_sha1"][step:]
    final = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    ref = torch.load(undisturbed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for key, tensor in ref.items():
        torch.testing.assert_close(final[key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def test_hung_actor_times_out_and_another_serves(corpus_dir, tiny_rag, tmp_path, runs, undisturbed):
    """Row 3. SIGSTOP of actor 0 mid-training, --retrieval_timeout_s 2: the call gets no answer in 2 s and is
    re-sent to actor 1; the actor is let go (SIGCONT) once that is logged; the run ends exactly like the
    undisturbed run."""
    out = tmp_path / "run"
    run = runs(train_args(corpus_dir, tiny_rag, out, "--num_retrieval_workers", "2", "--retrieval_timeout_s", "2"),
               out)
    _, (pid0, _) = run.pool()
    run.first_checkpoint()
    assert run.alive(), "training ended before the fault"
    os.kill(pid0, signal.SIGSTOP)
    try:
        run.wait_for("call timeout", lambda: re.search(r"retrieval call to rayrag-\w+-0 failed \(actor 0: no answer "
                                                       r"in 2 s\)", run.log()), 60)
    finally:
        os.kill(pid0, signal.SIGCONT)
    assert run.finish() == 0, run.log()[-5000:]
    assert profile(out)["retries"] >= 1
    assert_same_training(out, undisturbed)


CREATOR = """
import sys
from rayrag.cluster import connect
from rayrag.retrieval.ray.pool import RayPool
conn = connect(None)
print(conn.address, flush=True)
name = sys.stdin.readline().strip()
pool = RayPool.create(sys.argv[1], 2, name=name)
print("created", pool.name, flush=True)
sys.stdin.readline()
pool.close()
conn.close()
"""

LOOKER = """
import json, logging, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from rayrag.errors import RetrievalError
from rayrag.retrieval.service import load_spec
t0 = time.monotonic()
try:
    client = load_spec(sys.argv[1]).connect()
except RetrievalError as e:
    print(json.dumps({"error": str(e), "seconds": time.monotonic() - t0}), flush=True)
    sys.exit(3)
waited = time.monotonic() - t0
ids = client.retrieve(np.load(sys.argv[2]), 2).ids
print(json.dumps({"waited": waited, "ids": ids.tolist(), "pool": client.spec.name}), flush=True)
client.close()
"""


def test_process_that_starts_before_the_actors_waits_then_runs(tiny_kb, tmp_path):
    """Row 4. A process given the pool's spec (as DDP ranks get it) before any actor exists waits with backoff,
    then finds the actors once another process creates them, and retrieves the same ids as local retrieval.
    A pool that never appears is a RetrievalError after --pool.lookup_timeout_s."""
    from rayrag.retrieval.local import LocalSpec
    from rayrag.retrieval.ray.config import PoolConfig
    from rayrag.retrieval.ray.client import RaySpec

    local = LocalSpec(kb=str(tiny_kb)).connect()
    queries = np.random.default_rng(3).standard_normal((4, local.dim)).astype(np.float32)
    np.save(tmp_path / "q.npy", queries)
    creator = subprocess.Popen([sys.executable, "-c", CREATOR, str(tiny_kb)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "creator.log", "w"), text=True,
                               env=child_env(), start_new_session=True)
    lookers = []
    try:
        address = creator.stdout.readline().strip()  # Ray is up; no actor exists yet
        assert re.fullmatch(r"[\d.]+:\d+", address), (tmp_path / "creator.log").read_text()[-3000:]
        name, never = f"rayrag-{uuid.uuid4().hex[:12]}", f"rayrag-{uuid.uuid4().hex[:12]}"
        for pool, timeout in ((name, 120), (never, 3)):
            spec = RaySpec(address=address, name=pool, size=2, policy="rayrag", kb=str(tiny_kb),
                           pool={"lookup_timeout_s": float(timeout)})
            assert spec.config == PoolConfig(lookup_timeout_s=float(timeout))
            log = open(tmp_path / f"{pool}.log", "w")
            lookers.append((subprocess.Popen([sys.executable, "-c", LOOKER, spec.to_json(), str(tmp_path / "q.npy")],
                                             stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(),
                                             start_new_session=True),
                            tmp_path / f"{pool}.log"))
        (waiter, waiter_log), (lost, _) = lookers
        deadline = time.monotonic() + 120
        while "not registered yet; waiting" not in waiter_log.read_text():
            assert waiter.poll() is None and time.monotonic() < deadline, waiter_log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(3)  # the pool does not exist yet: nothing to wait on but time; it must still be waiting ...
        assert waiter.poll() is None
        t_create = time.monotonic()
        creator.stdin.write(name + "\n")  # ... until the pool is created
        creator.stdin.flush()
        assert creator.stdout.readline().split() == ["created", name]
        out, _ = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, waiter_log.read_text()[-3000:]
        got = json.loads(out.strip().splitlines()[-1])
        assert got["waited"] > 3 and got["pool"] == name
        assert time.monotonic() - t_create < 60
        np.testing.assert_array_equal(got["ids"], local.retrieve(queries, 2).ids)
        out, _ = lost.communicate(timeout=120)
        assert lost.returncode == 3
        got = json.loads(out.strip().splitlines()[-1])
        assert got["error"] == (f"retrieval actor '{never}-0' not found in Ray namespace 'rayrag' at {address} "
                                "after 3 s; the process that creates the pool (the job's driver) did not start it "
                                "or has exited")
        assert got["seconds"] < 60
        creator.stdin.close()  # the creator kills its actors and stops Ray
        assert creator.wait(timeout=120) == 0, (tmp_path / "creator.log").read_text()[-3000:]
        assert port_closed(address)
    finally:
        for proc in [creator] + [p for p, _ in lookers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _list_actors(address: str, env: dict) -> list[dict]:
    listed = subprocess.run([str(Path(sys.executable).with_name("ray")), "list", "actors", "--address", address,
                             "--format", "json", "--limit", "1000"], capture_output=True, text=True, timeout=120,
                            env={**env, "RAY_AUTH_MODE": "token"})
    assert listed.returncode == 0, listed.stderr[-2000:]
    return json.loads(listed.stdout)


def test_driver_killed_leaves_nothing_on_the_cluster(corpus_dir, tiny_rag, tmp_path, runs):
    """Row 5. `ray start --head` by the test (token authentication on), `rayrag train --ray_address HOST:PORT`,
    SIGKILL of the training process mid-training: Ray reaps the actors it owned (processes gone, listed DEAD)
    within a minute, and the cluster itself keeps running."""
    with ray_head() as address:
        env = child_env()
        for var in ("RAY_AUTH_MODE", "RAY_ADDRESS"):
            env.pop(var, None)
        out = tmp_path / "run"
        run = runs(train_args(corpus_dir, tiny_rag, out, "--num_retrieval_workers", "2", "--ray_address", address),
                   out, env=env)
        name, pids = run.pool()
        actors = [psutil.Process(p) for p in pids]
        run.first_checkpoint()
        assert run.alive(), "training ended before the fault"
        assert not any(gone(p) for p in actors)
        os.kill(run.proc.pid, signal.SIGKILL)
        t0 = time.monotonic()
        run.proc.wait(timeout=30)
        while time.monotonic() - t0 < 60 and not all(gone(p) for p in actors):
            time.sleep(0.2)
        assert [p.pid for p in actors if not gone(p)] == [], "actor processes outlived their driver by 60 s"
        print(f"actor processes gone {time.monotonic() - t0:.1f} s after the driver was killed")
        states = {}
        while time.monotonic() - t0 < 120:
            states = {a["name"]: a["state"] for a in _list_actors(address, env)
                      if (a.get("name") or "").startswith(name)}
            if set(states.values()) == {"DEAD"}:
                break
            time.sleep(2)
        assert states == {f"{name}-0": "DEAD", f"{name}-1": "DEAD"}
        print(f"actors listed DEAD {time.monotonic() - t0:.1f} s after the driver was killed")
        assert not port_closed(address)  # the user's cluster is still up
