"""`rayrag bench retrieval`: the reference's retrieval table, reproduced on this machine.

One file per job: `options` (what to run), `data` (synthetic vectors and queries), `index`
(the benchmark knowledge base, built once and cached), `floor` (the best in-process search and
the memory read time), `memory` (PSS of the processes that hold the index), `backends` (a
benchmark name such as `ray-hf:4` -> a retrieval backend), `worker` (one training process),
`launch` (W training processes in one gloo group), `report` (rows, JSON, CSV, Markdown),
`plot` (the PNG) and `run` (all of it, in order).
"""
