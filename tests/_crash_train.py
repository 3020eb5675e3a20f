"""`python tests/_crash_train.py STEP ARGS...`: `rayrag train ARGS...` whose training process dies like a crashed one
(exit 17, no clean-up) right after optimizer step STEP and its checkpoints. The fault is injected here, by a Lightning
callback added through `rayrag.train.run.train`'s `callbacks`, not by the code under test. With --devices N, Lightning
starts the other ranks by running this same command line, so every rank crashes at the same step."""

from __future__ import annotations

import logging
import os
import sys
from importlib import import_module

import lightning as L

from rayrag.cli.parse import parse
from rayrag.train.run import train


class CrashAfterStep(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # at the start of the next batch: step STEP's checkpoints (saved after every other callback's
        # on_train_batch_end) are written, and what runs in the background (a re-index) is running
        if trainer.global_step == self.step:
            logging.getLogger(__name__).error("crashing after step %d (fault injected by the test)", self.step)
            os._exit(17)


if __name__ == "__main__":
    step, argv = int(sys.argv[1]), sys.argv[2:]  # sys.argv itself is left whole: Lightning reruns it for rank 1
    opts, _ = parse(import_module("rayrag.cli.train"), "rayrag train", argv)
    train(opts, callbacks=[CrashAfterStep(step)])
