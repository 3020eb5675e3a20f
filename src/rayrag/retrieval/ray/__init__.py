"""The `ray` retrieval backend: a pool of Ray actors serves retrieval to every process of a job.

    config.py    PoolConfig (how actors are made and called), the pool's name and policies
    actor.py     RetrievalActor: one actor, the knowledge base memory-mapped, calls merged (coalesce.py)
    pool.py      RayPool: the M actors of one job, created once by the service, found by name by clients
    service.py   RayService / RaySpec: what the job's driver opens, and what clients are made from
    client.py    RayClient: one process's client: pinned actor, timeouts, retries
    connect.py   start or join Ray (token authentication)
"""
