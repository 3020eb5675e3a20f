"""Reaching Ray, in one place: every verb that runs on Ray (train, tune, index --ray, bench) goes through here.

    args.py     ClusterArgs (--cluster.*): the address and each worker's request; `check_address`
    auth.py     token authentication, turned on before Ray reads its configuration
    connect.py  `connect`: join a running cluster or start a local instance on 127.0.0.1; `NAMESPACE`
    fit.py      `refusal` / `check_fits`: refuse work the cluster's live nodes cannot hold, naming the fix

No module here imports Ray when it is imported: a process settles Ray's environment (token mode, loopback)
before its first `import ray`, which is where Ray reads it.
"""

from rayrag.cluster.args import check_address
from rayrag.cluster.connect import NAMESPACE, RayConnection, connect, start_local
from rayrag.cluster.fit import check_fits, refusal, workers_that_fit

__all__ = ["NAMESPACE", "RayConnection", "check_address", "check_fits", "connect", "refusal", "start_local",
           "workers_that_fit"]
