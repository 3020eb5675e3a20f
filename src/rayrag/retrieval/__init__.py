"""Retrieval: the seam between a RAG model and wherever the index lives (see base.py).

    base.py       the protocols: service (opened once by a job's driver), spec, client (one per process)
    options.py    RetrievalOptions: backend, knowledge base and knobs
    service.py    open_service / load_spec: backend name -> module, the one place that knows the names
    search.py     the search every backend runs where the index lives (canonical order)
    local.py      index in every process
    pytorch.py    rank 0 of a gloo group serves every rank (the reference's baseline)
    ray/          a pool of Ray actors serves every process
    retriever.py  RayragRetriever: transformers' RagRetriever over a client
"""
