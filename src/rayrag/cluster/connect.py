"""Connect this process to Ray: a running cluster (`auto`, HOST:PORT, ray://...) or a local instance started here.

A local instance that rayrag starts listens on 127.0.0.1 only. Ray 2.60 has no `ray.init` argument for it
(`_node_ip_address="127.0.0.1"` is rewritten to the machine's public address by `ray.init`); Ray's own
loopback mode, the one it uses on macOS and Windows, is chosen by `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`,
read when `ray` is imported. With it (measured) the GCS, the raylet, the workers and the dashboard agent
all listen on 127.0.0.1, and the node and GCS addresses are 127.0.0.1. The variable stays in this process's
environment, so the processes it starts (DDP ranks, benchmark ranks) resolve 127.0.0.1 as the instance does.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass

from rayrag.cluster.auth import TOKEN_HINT, use_token_auth
from rayrag.errors import RayConnectError

NAMESPACE = "rayrag"
"""Ray namespace of rayrag's named actors (the retrieval pools); jobs that attach to them join it."""
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""0: Ray's nodes listen on 127.0.0.1 and take it as their address (Ray's default on macOS and Windows)."""
LOCAL = (None, "", "local")
"""Addresses that mean: start a private local instance."""

log = logging.getLogger(__name__)


@dataclass
class RayConnection:
    """This process's link to Ray. `started`: rayrag started the local instance (and stops it);
    `connected`: rayrag called `ray.init` (and calls `ray.shutdown`). A context manager: leaving it closes it."""

    address: str
    started: bool
    connected: bool

    def close(self) -> None:
        """Stop the local instance this process started, or disconnect (idempotent; Ray joined earlier stays)."""
        import ray

        if self.connected and ray.is_initialized():
            ray.shutdown()
            log.info("ray: %s %s", "stopped the local instance at" if self.started else "disconnected from",
                     self.address)
        self.connected = False

    def __enter__(self) -> RayConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _joined() -> RayConnection:
    """The connection this process already has (made by someone else, who closes it)."""
    import ray

    return RayConnection(ray.get_runtime_context().gcs_address, started=False, connected=False)


def _check_reachable(address: str, flag: str, timeout_s: float = 10.0) -> None:
    """Fail at once, not after minutes of Ray's retries, when nothing listens at HOST:PORT."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise RayConnectError(
            f"{flag} {address}: no Ray cluster answers there ({e}); start one with "
            f"`ray start --head --port {port}` on {host or 'that host'}, or fix the address") from None


def start_local(*, num_cpus: int | None = None, log_to_driver: bool = True) -> RayConnection:
    """Start a private Ray instance in this process, listening on 127.0.0.1 only, in namespace `NAMESPACE`
    (`num_cpus`: its logical CPUs, default the machine's). If Ray is already initialized here, that is used."""
    if "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # before `import ray`, which reads it
    import ray

    if ray.is_initialized():
        return _joined()
    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, namespace=NAMESPACE,
             logging_level=logging.WARNING, log_to_driver=log_to_driver)
    gcs = ray.get_runtime_context().gcs_address
    if not gcs.startswith("127.0.0.1:"):
        log.warning("ray: the local instance listens on %s, not on 127.0.0.1 only: Ray was imported before rayrag "
                    "could choose loopback (set %s=0 before starting to keep it off the network)", gcs, LOOPBACK_ENV)
    log.info("ray: started a local instance at %s in %.1f s", gcs, time.perf_counter() - t0)
    return RayConnection(gcs, started=True, connected=True)


def connect(address: str | None, *, flag: str = "--cluster.address", log_to_driver: bool = True) -> RayConnection:
    """Join the Ray cluster at `address` (`auto`, HOST:PORT, ray://...) or start a local instance (None or `local`,
    see `start_local`), in namespace `NAMESPACE`. If Ray is already initialized in this process, that connection
    is used (and left open by `close`). A failure is a `RayConnectError` naming `flag` and the fix."""
    if address in LOCAL:
        return start_local(log_to_driver=log_to_driver)
    if not address.startswith("ray://"):
        if address != "auto":
            _check_reachable(address, flag)
        use_token_auth(address)  # before `import ray`, which reads RAY_AUTH_MODE
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return _joined()
    t0 = time.perf_counter()
    try:
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    except AuthenticationError as e:
        raise RayConnectError(f"{flag} {address}: {str(e).splitlines()[0]} {TOKEN_HINT}") from None
    except ConnectionError as e:
        fix = (f"start one with `ray start --head`, or pass {flag} local to let rayrag start a local instance; if "
               "one runs" if address == "auto" else "check that `ray start --head` runs at that address; if it does")
        raise RayConnectError(f"{flag} {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]}); "
                              f"{fix}, the likely cause is authentication. {TOKEN_HINT}") from None
    gcs = ray.get_runtime_context().gcs_address
    log.info("ray: connected to %s in %.1f s", gcs, time.perf_counter() - t0)
    return RayConnection(gcs, started=False, connected=True)
