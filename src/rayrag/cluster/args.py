"""`ClusterArgs`: how a verb reaches a Ray cluster and what each of its Ray workers asks for (`--cluster.*`).

Nested by every verb that runs work on Ray: `index --ray` (encoder actors), `train --launcher ray` (Ray Train
workers; the address also serves `--retrieval.backend ray`), `tune` (through its train options). The old flat
spellings (--ray_address, --num_workers, --cpus_per_worker, --use_gpu) still work (cli/aliases.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rayrag.errors import RayragError

ADDRESS_FIX = ("use auto (a cluster started with `ray start --head`), local (start a Ray instance for this run), "
               "HOST:PORT or ray://HOST:PORT")


def valid_address(address: str) -> bool:
    """Whether `address` is one `connect` understands: auto, local, ray://..., or HOST:PORT."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return True
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


def check_address(address: str | None, flag: str = "--cluster.address") -> None:
    """Refuse, naming `flag`, an address `connect` would not understand (None: start a local instance)."""
    if address is not None and not valid_address(address):
        raise RayragError(f"{flag} {address!r}: {ADDRESS_FIX}")


@dataclass
class ClusterArgs:
    """The Ray cluster a verb runs on, and each worker's request (defaults depend on the verb)."""

    OLD_SPELLINGS: ClassVar[dict[str, str]] = {"--ray_address": "address", "--num_workers": "workers",
                                               "--cpus_per_worker": "cpus_per_worker", "--use_gpu": "use_gpu"}
    """The flat flags of these fields, as cli/aliases.py applies them (train keeps --num_workers for its
    DataLoader: a verb's own field wins)."""

    address: str | None = None
    """`auto` (the cluster `ray start --head` started on this machine), HOST:PORT or ray://HOST:PORT; unset or
    `local`: start a private Ray instance for this run, listening on 127.0.0.1 only. Spelled --ray_address."""
    workers: int | None = None
    """Ray workers the verb starts: index --ray, encoder actors (default 1); train --launcher ray, Ray Train
    workers (default --devices, or --gpus). Spelled --num_workers by index."""
    cpus_per_worker: float | None = None
    """CPUs each worker asks Ray for, fractions allowed (default: index 1, also its thread count; train 0.5, which
    lets 2 workers and a retrieval pool share 2 cores). A job the cluster cannot hold is refused with the numbers
    that fit, never left waiting."""
    use_gpu: bool = False
    """Each worker asks Ray for one GPU and runs on it."""

    @property
    def given(self) -> list[str]:
        """The flags of the workers' request that were given (not the address)."""
        return [flag for flag, set_ in (("--cluster.workers", self.workers is not None),
                                        ("--cluster.cpus_per_worker", self.cpus_per_worker is not None),
                                        ("--cluster.use_gpu", self.use_gpu)) if set_]

    def validate(self) -> None:
        """Range-check every field; `RayragError` names the flag."""
        check_address(self.address)
        if self.workers is not None and self.workers < 1:
            raise RayragError(f"--cluster.workers {self.workers}: must be at least 1")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise RayragError(f"--cluster.cpus_per_worker {self.cpus_per_worker}: must be more than 0 (fractions "
                              "such as 0.5 are allowed)")
