"""Connect this process to Ray: a running cluster (`auto`, HOST:PORT) or a local instance started here.

Ray 2.60's `ray start --head` turns token authentication on. `ray.init(address="auto")` finds the
token by itself when it finds the cluster through the last `ray start` on this machine, but not
when `RAY_ADDRESS` names the cluster; `ray.init(address="HOST:PORT")` fails with `InvalidAuthToken`
(after about 20 s of retries) unless `RAY_AUTH_MODE=token` is set when Ray reads its
configuration (measured). So before connecting to a cluster, if the user left `RAY_AUTH_MODE`
unset and a token is available (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or ~/.ray/auth_token),
token mode is turned on; a cluster without authentication accepts such a client too (measured).
A failed connection names the address and this fix.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rayrag.errors import RetrievalError

NAMESPACE = "rayrag"
"""Ray namespace of rayrag's named actors (the retrieval pools); jobs that attach to them join it."""

log = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_HINT = (
    "Ray 2.60 clusters started with `ray start --head` use token authentication: set "
    "RAY_AUTH_MODE=token and make the cluster's token available (~/.ray/auth_token on this machine, "
    "RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN; `ray get-auth-token` prints it on the head node)")


@dataclass
class RayConnection:
    """This process's link to Ray. `started`: rayrag started the local instance (and stops it);
    `connected`: rayrag called `ray.init` (and calls `ray.shutdown`)."""

    address: str
    started: bool
    connected: bool

    def close(self) -> None:
        import ray

        if self.connected and ray.is_initialized():
            ray.shutdown()
            log.info("ray: %s %s", "stopped the local instance at" if self.started else "disconnected from",
                     self.address)
        self.connected = False


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def use_token_auth_if_available() -> bool:
    """Turn on Ray token authentication for this process (and its children) when `RAY_AUTH_MODE`
    is unset and a token is available. Returns whether token mode is on."""
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:
        return mode.lower() == "token"
    if not _token_available():
        return False
    os.environ[AUTH_MODE_ENV] = "token"
    if "ray" in sys.modules:  # Ray read its configuration when it was imported: too late for this process
        log.warning("ray: RAY_AUTH_MODE unset and a token is available, but Ray was imported before rayrag could "
                    "turn token authentication on; if connecting fails, set RAY_AUTH_MODE=token before starting")
    else:
        log.info("ray: RAY_AUTH_MODE unset and a token is available: using token authentication")
    return True


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail at once, not after minutes of Ray's retries, when nothing listens at HOST:PORT."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        raise RetrievalError(
            f"--ray_address {address}: no Ray cluster answers there ({e}); start one with "
            f"`ray start --head --port {port}` on {host or 'that host'}, or fix the address") from None


def connect(address: str | None, *, namespace: str, log_to_driver: bool = True) -> RayConnection:
    """Join the Ray cluster at `address` (`auto`, HOST:PORT, ray://...) or start a local instance
    (`None` or `local`). If Ray is already initialized in this process, that connection is used."""
    local = address in (None, "", "local")
    if not local and not address.startswith("ray://"):
        if address != "auto":
            _check_reachable(address)
        use_token_auth_if_available()  # before `import ray`, which reads the variable
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return RayConnection(ray.get_runtime_context().gcs_address, started=False, connected=False)
    kwargs = dict(namespace=namespace, logging_level=logging.WARNING, log_to_driver=log_to_driver)
    t0 = time.perf_counter()
    try:
        if local:
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except AuthenticationError as e:
        raise RetrievalError(f"--ray_address {address}: {str(e).splitlines()[0]} {TOKEN_HINT}") from None
    except ConnectionError as e:
        fix = ("start one with `ray start --head`, or pass --ray_address local to let rayrag start a local "
               "instance; if one runs" if address == "auto" else "check that `ray start --head` runs at that address; "
               "if it does")
        raise RetrievalError(f"--ray_address {address}: cannot connect to a Ray cluster ({str(e).splitlines()[0]}); "
                             f"{fix}, the likely cause is authentication. {TOKEN_HINT}") from None
    gcs = ray.get_runtime_context().gcs_address
    log.info("ray: %s %s in %.1f s", "started a local instance at" if local else "connected to", gcs,
             time.perf_counter() - t0)
    return RayConnection(gcs, started=local, connected=True)
