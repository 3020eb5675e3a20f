"""A training DataLoader that resumes mid-epoch exactly where it stopped.

The order of epoch e is a permutation seeded by (seed, e), split across ranks like a
DistributedSampler, so it does not depend on anything that happened before. The module counts
the batches it has started training in the current epoch (`done`, in
`RagFineTuner.on_train_batch_start`); a checkpoint stores (epoch, done) as the loader's state, and
on `--resume` Lightning hands that state back (`load_state_dict`) before it makes the loader's
first iterator, which then skips those batches: the resumed run sees exactly the batches an
uninterrupted run would. (Counting inside the sampler would be wrong: Lightning, and DataLoader
workers, fetch batches ahead of training them. Lightning 2.6 does not call `on_train_epoch_start`
when it restarts mid-epoch, so the skip cannot be set there.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices for one rank: epoch e shuffled by (seed, e), rank r takes every world-th example."""

    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch = 0
        self.skip = 0
        """Batches of the next iteration to leave out (set on resume)."""
        self.done = 0
        """Batches of the current epoch that training has started (counted by the module)."""

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.world)
        order += order[:per_rank * self.world - self.n]  # pad so every rank gets as many examples
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self._order()
        batches = [mine[i:i + self.batch_size] for i in range(0, len(mine), self.batch_size)]
        skip, self.skip = self.skip, 0
        self.done = skip
        yield from batches[skip:]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world)
        return -(-per_rank // self.batch_size)


class ResumableLoader(torch.utils.data.DataLoader):
    """DataLoader over an `EpochBatchSampler`; stateful in Lightning's sense: its state (epoch, batches
    done) is saved in every checkpoint and restored on resume, before the first batch is fetched."""

    def __init__(self, dataset, batch_sampler: EpochBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch, "done": self.batch_sampler.done}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.batch_sampler
        epoch, done = int(state["epoch"]), int(state.get("done", 0))
        if done >= len(sampler):  # saved at the end of an epoch: the next one starts from its beginning
            epoch, done = epoch + 1, 0
        sampler.epoch, sampler.skip, sampler.done = epoch, done, done
        if done:
            log.info("resuming epoch %d after its first %d batches", epoch, done)
