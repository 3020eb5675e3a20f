"""The `ray` retrieval backend: a pool of Ray actors serves retrieval to every process of a job.

    config.py    PoolConfig (how actors are made and called) and the pool's policies
    actor.py     RetrievalActor: one actor, the knowledge base memory-mapped, calls merged (coalesce.py)
    pool.py      RayPool: the M actors of one job, created once by the service, found by name by clients
    service.py   RayService: what the job's driver opens (joins or starts Ray, owns the pool)
    client.py    RaySpec (how a process finds the pool) and RayClient: pinned actor, timeouts, retries

Starting or joining Ray is `rayrag.cluster`, shared with the benchmark, `tune` and `index --ray`.
"""
