"""The one error type users see: a message that names the file, line, flag or directory and the fix."""

from __future__ import annotations


class RayragError(Exception):
    """Bad input or a state the user can fix. The CLI prints it as one line and exits non-zero."""


class RetrievalError(RayragError):
    """Retrieval could not be served (actors gone, retries spent, a wait timed out)."""


class RayConnectError(RayragError):
    """Ray could not be reached or started: nothing answers at the address, or the cluster refused this process."""


class ClusterFitError(RayragError):
    """The Ray cluster's live nodes cannot hold the workers asked for (Ray would wait for them forever)."""
