"""Where this process stands in a job: its rank, the world size, and the few collectives rayrag needs.

Before a torch.distributed process group exists, launchers say who a process is through environment
variables (Lightning, torchrun, SLURM); afterwards the group does. Every helper works in a process
without a group too (rank 0 of 1), so single-process code needs no special case.
"""

from __future__ import annotations

import os
from typing import Any

_RANK_VARS = ("RANK", "NODE_RANK", "LOCAL_RANK", "SLURM_PROCID", "GROUP_RANK")
"""Variables a launcher sets in processes other than the first; any value but 0 means "not the first"."""


def is_first_process() -> bool:
    """True in the process that starts a job: global rank 0, judged before any process group exists."""
    for var in _RANK_VARS:
        value = os.environ.get(var, "0").strip() or "0"
        if value.isdigit() and int(value) != 0:
            return False
    return True


def _group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the default process group; (0, 1) without one."""
    if _group_active():
        import torch.distributed as dist

        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ranks_on_this_node() -> int:
    """Processes of this job on this machine: LOCAL_WORLD_SIZE where the launcher sets it (torchrun, Ray Train),
    else the whole group (one machine), else 1."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return rank_and_world()[1]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def broadcast_from_first(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a collective when a group of size > 1 exists; `obj` must pickle)."""
    if not _group_active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op without a group of size > 1)."""
    if _group_active():
        import torch.distributed as dist

        dist.barrier()
