"""`EpochBatchSampler` and `ResumableLoader`: per-rank epoch orders, and resuming mid-epoch exactly."""

from __future__ import annotations

import pytest
import torch

from rayrag.train.loader import EpochBatchSampler, ResumableLoader


def _epoch(n, batch_size, *, seed=0, epoch=0, rank=0, world=1, shuffle=True):
    s = EpochBatchSampler(n, batch_size, seed=seed, shuffle=shuffle, rank=rank, world=world)
    s.set_epoch(epoch)
    return list(s)


@pytest.mark.parametrize("n,world,batch_size", [(10, 3, 2), (12, 4, 3), (7, 2, 5), (5, 1, 2)])
def test_ranks_partition_each_epoch_padded_to_equal_counts(n, world, batch_size):
    per_rank = -(-n // world)
    for epoch in (0, 1):
        ranks = [[i for b in _epoch(n, batch_size, seed=3, epoch=epoch, rank=r, world=world) for i in b]
                 for r in range(world)]
        assert [len(r) for r in ranks] == [per_rank] * world
        seen = [i for r in ranks for i in r]
        assert set(seen) == set(range(n))  # every example covered
        # the padding repeats the first examples of the epoch order, nothing else is repeated
        assert len(seen) - len(set(seen)) == per_rank * world - n


def test_ranks_interleave_one_global_order():
    world, n = 3, 10
    ranks = [[i for b in _epoch(n, 100, seed=5, epoch=2, rank=r, world=world) for i in b] for r in range(world)]
    order = [ranks[j % world][j // world] for j in range(12)]  # undo the rank::world split
    g = torch.Generator().manual_seed(5 * 100_003 + 2)
    expected = torch.randperm(n, generator=g).tolist()
    assert order == expected + expected[:2]


def test_epochs_differ_and_are_reproducible_from_seed_and_epoch():
    e0, e1 = _epoch(50, 8, seed=1, epoch=0), _epoch(50, 8, seed=1, epoch=1)
    assert e0 != e1
    assert sorted(i for b in e0 for i in b) == sorted(i for b in e1 for i in b) == list(range(50))
    assert _epoch(50, 8, seed=1, epoch=1) == e1  # a fresh sampler, same (seed, epoch)
    assert _epoch(50, 8, seed=2, epoch=1) != e1
    # the order of epoch 1 does not depend on having iterated epoch 0 first
    s = EpochBatchSampler(50, 8, seed=1)
    list(s)
    s.set_epoch(1)
    assert list(s) == e1


def test_without_shuffle_batches_are_in_order():
    assert _epoch(7, 3, shuffle=False, epoch=4) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _epoch(7, 2, shuffle=False, rank=1, world=2) == [[1, 3], [5, 0]]  # padded with example 0


@pytest.mark.parametrize("n,world,batch_size", [(10, 3, 2), (12, 4, 3), (7, 2, 5), (16, 1, 4), (1, 1, 8)])
def test_len_is_the_number_of_batches(n, world, batch_size):
    for rank in range(world):
        s = EpochBatchSampler(n, batch_size, seed=0, rank=rank, world=world)
        assert len(s) == len(list(s)) == -(-(-(-n // world)) // batch_size)
    assert len(EpochBatchSampler(10, 4, seed=0)) == 3


def test_skip_leaves_out_the_first_batches_once_and_counts_them_done():
    s = EpochBatchSampler(20, 4, seed=0)
    full = list(s)
    s.skip = 2
    assert list(s) == full[2:]
    assert s.done == 2 and s.skip == 0
    assert list(s) == full  # the skip applies to one iteration only
    assert s.done == 0


def test_set_epoch_to_another_epoch_cancels_a_pending_skip():
    s = EpochBatchSampler(20, 4, seed=0)
    s.skip = 3
    s.set_epoch(0)  # same epoch: the skip stays
    assert s.skip == 3
    s.set_epoch(1)
    assert s.skip == 0
    assert list(s) == _epoch(20, 4, epoch=1)


def _loader(n=20, batch_size=4, seed=7):
    sampler = EpochBatchSampler(n, batch_size, seed=seed)
    return ResumableLoader(list(range(100, 100 + n)), sampler, collate_fn=list)


def _train(loader, epoch, batches):
    """Iterate `batches` batches of `epoch` the way the module does: `done` counts batches started."""
    loader.batch_sampler.set_epoch(epoch)
    seen = []
    for b in loader:
        if len(seen) == batches:
            break
        loader.batch_sampler.done += 1
        seen.append(b)
    return seen


def test_resumed_loader_yields_exactly_the_remaining_batches():
    uninterrupted = _loader()
    uninterrupted.batch_sampler.set_epoch(1)
    whole_epoch = list(uninterrupted)
    assert len(whole_epoch) == 5

    first = _loader()
    _train(first, 0, 5)
    started = _train(first, 1, 2)
    state = first.state_dict()
    assert state == {"epoch": 1, "done": 2}

    resumed = _loader()
    resumed.load_state_dict(state)
    assert resumed.batch_sampler.epoch == 1
    rest = list(resumed)
    assert started + rest == whole_epoch
    assert rest == whole_epoch[2:]
    # after the resumed epoch, the next one is whole again
    resumed.batch_sampler.set_epoch(2)
    assert len(list(resumed)) == 5


def test_state_saved_at_the_end_of_an_epoch_starts_the_next_epoch():
    first = _loader()
    _train(first, 3, 5)
    state = first.state_dict()
    assert state == {"epoch": 3, "done": 5}

    resumed = _loader()
    resumed.load_state_dict(state)
    assert (resumed.batch_sampler.epoch, resumed.batch_sampler.skip) == (4, 0)
    expected = _loader()
    expected.batch_sampler.set_epoch(4)
    assert list(resumed) == list(expected)
    assert len(list(expected)) == 5


def test_state_without_done_starts_the_epoch_from_its_beginning():
    resumed = _loader()
    resumed.load_state_dict({"epoch": 2})
    expected = _loader()
    expected.batch_sampler.set_epoch(2)
    assert list(resumed) == list(expected)
