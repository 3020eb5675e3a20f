"""Token authentication, turned on before Ray reads its configuration.

Ray 2.60's `ray start --head` turns token authentication on. Measured and read in Ray 2.60:
- Ray reads `RAY_AUTH_MODE` once, when `ray` is first imported in a process; setting it later changes
  nothing for that process (its children read it anew).
- `ray.init(address="auto")`, with `RAY_ADDRESS` unset and `RAY_AUTH_MODE` unset, finds the token itself
  when one exists and refreshes its configuration, even after Ray was imported. If `RAY_AUTH_MODE` is set
  by then, Ray leaves the mode alone: setting it after the import is what broke `rayrag tune --ray_address
  auto` (InvalidAuthToken), whose driver imported Ray Tune before connecting.
- `ray.init(address="HOST:PORT")`, or `auto` with `RAY_ADDRESS` set, never turns token mode on: it fails
  with InvalidAuthToken (after about 20 s of retries) unless `RAY_AUTH_MODE=token` was set before the import.
  A cluster without authentication accepts a token-mode client too.

So `use_token_auth` sets `RAY_AUTH_MODE=token` for the explicit-address case only, and the verbs that connect
import nothing of Ray before `connect` (a test imports their modules and checks).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_HINT = (
    "Ray 2.60 clusters started with `ray start --head` use token authentication: set "
    "RAY_AUTH_MODE=token and make the cluster's token available (~/.ray/auth_token on this machine, "
    "RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN; `ray get-auth-token` prints it on the head node)")


def token_available() -> bool:
    """Whether a Ray token is at hand: `RAY_AUTH_TOKEN`, the file `RAY_AUTH_TOKEN_PATH`, or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file()


def ray_finds_token_itself(address: str) -> bool:
    """Whether `ray.init(address)` turns token mode on by itself: `auto` with `RAY_ADDRESS` unset."""
    return address == "auto" and not os.environ.get("RAY_ADDRESS")


def use_token_auth(address: str) -> bool:
    """Before joining the cluster at `address` (`auto` or HOST:PORT): turn token authentication on for this process
    and its children when `RAY_AUTH_MODE` is unset, a token is available and Ray would not do it itself.
    Returns whether this process will use token mode (as far as rayrag decides it)."""
    mode = os.environ.get(AUTH_MODE_ENV)
    if mode is not None:  # the user's choice
        return mode.lower() == "token"
    if not token_available():
        return False
    if ray_finds_token_itself(address):
        return True
    os.environ[AUTH_MODE_ENV] = "token"
    if "ray" in sys.modules:  # too late for this process: Ray read its configuration when it was imported
        log.warning("ray: RAY_AUTH_MODE unset and a token is available, but Ray was imported before rayrag could "
                    "turn token authentication on; if connecting fails, set RAY_AUTH_MODE=token before starting")
    else:
        log.info("ray: RAY_AUTH_MODE unset and a token is available: using token authentication")
    return True
