"""Coalescing: concurrent requests to one retrieval actor run as one batched search, on one thread.

A threaded Ray actor receives calls from several trainers at once, each on a thread of Ray's
pool. They all hand their request to one searcher thread, which takes every waiting request
with the same key (the same `k`) and runs them as one batch; each caller then gets its rows.
With no window a lone request runs at once, so coalescing adds no latency when there is nothing
to merge, and requests that arrive while a search runs are merged into the next one. With a window
of w seconds the searcher waits until w after the oldest waiting request arrived, so requests that
reach the actor within w of each other (trainers in lockstep) are searched as one BLAS call. The
window closes early once as many requests wait as the largest of the recent searches merged: callers
in lockstep are then all there, and waiting longer would only add to every caller's time.

Why one searcher thread: OpenMP thread counts and allocator caches are per thread, and Ray's pool
runs successive calls on different threads (30 calls, 30 threads). Searching on those threads, a
retrieval call over a 100k x 768 flat index took 167 ms (median) against 137 ms in a serial
actor; on one searcher thread, 127-138 ms against 141-144 ms.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

RECENT = 16
"""The window closes early once as many requests wait as the largest of this many recent searches merged."""


@dataclass
class _Request:
    key: Hashable
    payload: Any
    arrived: float = 0.0
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class CoalesceStats:
    """requests: calls submitted; batches: batched calls run (requests - batches were merged away);
    busy_s: seconds spent running batches; waited_s: summed over batches, the seconds from the oldest
    request's arrival to the batch's start (the window, and any search it queued behind)."""

    requests: int = 0
    batches: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    busy_s: float = 0.0
    waited_s: float = 0.0


class Coalescer:
    """Runs `run_batch(key, payloads) -> results` (one result per payload, same order) on its own
    thread for requests submitted from many threads, merging those that wait together; `window_s`: how
    long after the oldest waiting request the searcher waits for more before it runs them."""

    def __init__(self, run_batch: Callable[[Hashable, list[Any]], list[Any]], window_s: float = 0.0):
        self._run_batch = run_batch
        self._window_s = window_s
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._closed = False
        self._recent: collections.deque[int] = collections.deque(maxlen=RECENT)
        self.stats = CoalesceStats()
        self._thread = threading.Thread(target=self._loop, name="rayrag-searcher", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, payload: Any) -> Any:
        """The result for `payload`; raises what `run_batch` raised for its batch."""
        req = _Request(key, payload, arrived=time.monotonic())
        with self._cond:
            if self._closed:
                raise RuntimeError("coalescer is closed")
            self._pending.append(req)
            self.stats.requests += 1
            self._cond.notify_all()
            while not req.done:
                self._cond.wait()
        if req.error is not None:
            raise req.error
        return req.result

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _waiting(self, key: Hashable) -> int:
        return sum(1 for r in self._pending if r.key == key)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._window_s > 0 and self._pending:  # let requests on their way join this search
                    deadline = self._pending[0].arrived + self._window_s
                    expected = max(self._recent, default=0)
                    while not self._closed and (left := deadline - time.monotonic()) > 0:
                        if expected and self._waiting(self._pending[0].key) >= expected:
                            break  # as many as the largest recent search: the lockstep callers are all here
                        self._cond.wait(timeout=left)
                if self._closed:
                    for r in self._pending:
                        r.error, r.done = RuntimeError("coalescer is closed"), True
                    self._cond.notify_all()
                    return
                key = self._pending[0].key
                batch = [r for r in self._pending if r.key == key]
                self._pending = [r for r in self._pending if r.key != key]
                self._recent.append(len(batch))
                self.stats.batches += 1
                self.stats.largest = max(self.stats.largest, len(batch))
                self.stats.sizes[len(batch)] = self.stats.sizes.get(len(batch), 0) + 1
                started = time.monotonic()
                self.stats.waited_s += started - batch[0].arrived
            try:
                results, error = self._run_batch(key, [r.payload for r in batch]), None
                if len(results) != len(batch):
                    results, error = None, RuntimeError(
                        f"batched call returned {len(results)} results for {len(batch)} requests")
            except BaseException as e:  # handed to every request of the batch
                results, error = None, e
            with self._cond:
                self.stats.busy_s += time.monotonic() - started
                for i, r in enumerate(batch):
                    r.result, r.error, r.done = (None if results is None else results[i]), error, True
                self._cond.notify_all()
