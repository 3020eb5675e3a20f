"""Faults that need no Ray: crashes mid-training, exceptions mid-checkpoint, `rayrag index` killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from conftest import rayrag
from rayrag.train.run import AtomicCheckpointIO


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_exception_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000), "bad": _Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial or temporary file


def _train_crashing_after(step: int, *args) -> subprocess.CompletedProcess:
    """`rayrag train ARGS` that dies (exit 17) after optimizer step `step`: tests/_crash_train.py."""
    script = Path(__file__).with_name("_crash_train.py")
    return subprocess.run([sys.executable, str(script), str(step), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return state["global_step"], state["state_dict"]


@pytest.mark.slow
def test_crash_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path, corpus_dir, tiny_rag):
    args = ["train", "--data_dir", corpus_dir / "data", "--model_name_or_path", tiny_rag, "--do_train",
            "--train_batch_size", "16", "--num_train_epochs", "2", "--learning_rate", "1e-3", "--dropout", "0.1",
            "--save_every_n_steps", "3", "--val_check_interval", "1.0", "--n_val", "8", "--no-progress", "--quiet"]
    rayrag(*args, "--output_dir", tmp_path / "clean")
    crashed = _train_crashing_after(14, *args[1:], "--output_dir", tmp_path / "crash")
    assert crashed.returncode == 17
    step_at_crash, _ = _weights(tmp_path / "crash")
    assert step_at_crash == 12  # the last checkpoint before the crash (every 3 steps)
    rayrag(*args, "--output_dir", tmp_path / "crash", "--resume")
    step_clean, clean = _weights(tmp_path / "clean")
    step_resumed, resumed = _weights(tmp_path / "crash")
    assert step_clean == step_resumed == 20
    for name, tensor in clean.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


# A multi-process run crashed and resumed equals the uninterrupted one bit for bit: tests/test_end2end.py's
# test_resume_in_the_middle_of_a_refresh_is_exact (--devices 2, with end-to-end training on top).


# `rayrag index` with the index build replaced by: say so on stdout, then wait to be killed. It is called
# inside the knowledge base's temporary directory, after the passages are written and before the index,
# manifest and rename: the kill lands exactly midway, on an event the code sets, never on a timed guess.
_INDEX_STOPPED_MIDWAY = """
import sys, threading
from rayrag.kb import faiss_index

def build_index_then_wait(*args, **kwargs):
    print("MIDWAY", flush=True)
    threading.Event().wait(600)
    raise SystemExit("not killed within 600 s")

faiss_index.build_index = build_index_then_wait
from rayrag.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_index_killed_midway_leaves_nothing_visible_and_rerun_succeeds(tmp_path):
    docs = tmp_path / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as f:
        for i in range(2000):
            f.write(json.dumps({"title": f"doc {i}", "text": f"passage number {i} " * 20}) + "\n")
    out = tmp_path / "kb"
    args = ["index", "--docs", str(docs), "--out", str(out), "--encoder", "tiny", "--quiet"]
    err = tempfile.TemporaryFile()  # not in tmp_path, whose listing the test checks
    proc = subprocess.Popen([sys.executable, "-c", _INDEX_STOPPED_MIDWAY, *args], stdout=subprocess.PIPE,
                            stderr=err, text=True)
    try:
        lines = []
        for line in proc.stdout:  # ends when the child says MIDWAY, or at its exit (EOF)
            lines.append(line)
            if line.strip() == "MIDWAY":
                break
        if not (lines and lines[-1].strip() == "MIDWAY"):
            err.seek(0)
            raise AssertionError(f"index exited {proc.wait()} before building the index:\n"
                                 f"{err.read().decode(errors='replace')[-3000:]}")
        tmp = tmp_path / f".kb.tmp-{proc.pid}"
        assert (tmp / "passages").is_dir() and not (tmp / "index.faiss").exists()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        err.close()
    assert not out.exists()
    assert tmp.is_dir()  # the killed process could not clean up: only the rerun can
    visible = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert visible == ["docs.jsonl"]
    done = rayrag("index", "--docs", docs, "--out", out, "--encoder", "tiny", "--quiet")
    assert "2000 documents -> 2000 passages" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "kb"]  # the stale temporary is gone
    from rayrag.kb.store import KnowledgeBase

    assert len(KnowledgeBase(out)) == 2000
