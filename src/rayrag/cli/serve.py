"""Serve a model over HTTP on Ray Serve: a JSON API and a page to try it in a browser.

Routes: GET / (the page), POST /ask {"question": ..., "n_docs": ..., "num_beams": ...} or {"questions": [...]}
(answers, the passages used with their scores, timings), GET /info (the model and knowledge base), GET /health.
Questions that arrive together are answered in one batch (--max_batch_size, --batch_wait_timeout_s). A bad request
gets a 4xx naming the field; a request whose replica dies gets a 503 to retry while Serve replaces the replica.
Ctrl-C or SIGTERM shuts the server down and stops the Ray instance it started.

It listens on 127.0.0.1 unless --host says otherwise, and has no authentication of its own.

Example:
  rayrag serve --model runs/demo/rag/best_model
  rayrag serve --model runs/x/best_model --replicas 2 --distributed_retriever ray --num_retrieval_workers 2
"""

from __future__ import annotations

from rayrag.cli.aliases import part_spellings
from rayrag.serving.options import ServeOptions

HELP = "serve a model over HTTP (JSON API and a page) on Ray Serve"
OPTIONS = ServeOptions
ALIASES = part_spellings(ServeOptions)  # --kb, --passages_path, --index_path, --distributed_retriever, --ray_address


def run(opts: ServeOptions, quiet: bool) -> int:
    from rayrag.serving.server import serve_until_stopped

    serve_until_stopped(opts)
    return 0
