"""Open a retrieval service by backend name, and turn a spec that travelled as JSON back into a spec.

The only place that maps a backend's name to its module: nothing else asks which backend it is.

    service = open_service(RetrievalOptions(kb=..., backend="ray", num_workers=4))   # the job's driver
    text = service.spec.to_json()                                                  # to every process
    client = load_spec(text).connect()                                             # in each process

or, around a job whose processes all run the same code (DDP ranks), `serving(request)`: the first process opens the
service and yields its spec, and closes it once every rank is done.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from importlib import import_module

from rayrag.distributed import barrier, is_first_process
from rayrag.errors import RayragError
from rayrag.retrieval.base import ClientSpec, RetrievalService
from rayrag.retrieval.options import BACKENDS, RetrievalOptions

_SERVICES = {"local": "rayrag.retrieval.local", "pytorch": "rayrag.retrieval.pytorch",
             "ray": "rayrag.retrieval.ray.service"}
"""Each backend's module: it has `open_service(RetrievalOptions)`; its service's `spec` has the spec class."""
_SPECS = {"local": ("rayrag.retrieval.local", "LocalSpec"), "pytorch": ("rayrag.retrieval.pytorch", "TorchSpec"),
          "ray": ("rayrag.retrieval.ray.client", "RaySpec")}


def _check(backend: str) -> None:
    if backend not in BACKENDS:
        raise RayragError(f"--distributed_retriever {backend!r}: choose one of {', '.join(BACKENDS)}")


def open_service(opts: RetrievalOptions) -> RetrievalService:
    """The service of `opts.backend` over `opts.kb`, opened in this (the driver's) process."""
    _check(opts.backend)
    return import_module(_SERVICES[opts.backend]).open_service(opts)


def load_spec(text: str) -> ClientSpec:
    """A spec from its `to_json()` text."""
    try:
        data = json.loads(text)
        backend = data.pop("backend")
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise RayragError(f"retrieval spec {text!r}: not a rayrag retrieval spec ({e})") from None
    _check(backend)
    module, cls = _SPECS[backend]
    return getattr(import_module(module), cls)(**data)


@contextlib.contextmanager
def serving(request: RetrievalOptions | None) -> Iterator[str | None]:
    """Around a job's training: in its first process (before the launcher starts the other ranks) open the service
    of `request` and yield its spec (JSON); in the other processes, or with no request (a closed-book model),
    yield None (the ranks get the spec from the first: `rayrag.distributed.broadcast_from_first`). After a body
    that ended well every rank meets at a barrier (each has closed its client by then), then the first process
    closes the service (`ray`: kills the pool, stops a Ray instance it started)."""
    service = open_service(request) if request is not None and is_first_process() else None
    try:
        yield service.spec.to_json() if service is not None else None
        if request is not None:
            barrier()
    finally:
        if service is not None:
            service.close()
