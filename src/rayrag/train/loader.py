"""A training DataLoader that resumes mid-epoch exactly where it stopped.

The order of epoch e is a permutation seeded by (seed, e), split across ranks like a
DistributedSampler, so it does not depend on anything that happened before. On `--resume`,
Lightning restores its own count of the batches completed in the interrupted epoch and the
module sets `skip` to it (`RagFineTuner.on_train_epoch_start`): the resumed run sees exactly the
batches an uninterrupted run would. (Lightning prefetches a batch ahead, so counting batches
inside the loader would be off by one; Lightning's progress counter is the source of truth.)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices for one rank: epoch e shuffled by (seed, e), rank r takes every world-th example."""

    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch = 0
        self.skip = 0

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
        yield from batches[skip:]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world)
        return -(-per_rank // self.batch_size)


class ResumableLoader(torch.utils.data.DataLoader):
    """DataLoader over an `EpochBatchSampler`; stateful in Lightning's sense, so Lightning knows a
    mid-epoch resume is exact."""

    def __init__(self, dataset, batch_sampler: EpochBatchSampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)

    def state_dict(self) -> dict:
        return {"epoch": self.batch_sampler.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.epoch = int(state["epoch"])
