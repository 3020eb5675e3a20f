"""The Ray cluster the ray backends of a benchmark run on: a running one, or a local instance started for the run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def ray_cluster(address: str | None) -> Iterator[str]:
    """Yield the address the training processes connect to; a local instance started here is shut down after.

    With `address` None a new local instance is started (never an existing cluster found by
    `auto`, which may belong to someone else); its GCS address is passed to every rank, and
    `ray.init` puts RAY_AUTH_MODE in this process's environment, which the ranks inherit.
    """
    import ray

    if address is not None:
        yield address
        return
    ctx = ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        gcs = ctx.address_info["gcs_address"]
        log.info("started a local Ray instance at %s for the benchmark", gcs)
        yield gcs
    finally:
        ray.shutdown()
