"""The Ray Serve application of `rayrag serve`: two deployments.

    client --HTTP--> Serve's proxy --> Frontend (1 replica: routes, checks, errors)
                                          `--> Generator x N (the model; questions that arrive together are batched
                                                              into one retrieval call and one `generate`)

The front end is a plain class whose `__call__` takes Starlette's request, so every reply, errors included, is
ours: a bad request is a 4xx with one line of JSON naming the field (`serving.requests`) and never reaches a
replica. Only a caller that outlives a replica can tell its client to retry, so the front end turns a replica that
dies (or hangs past --request_timeout_s) under a request into a 503 with `Retry-After`; Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rayrag.serving.requests import MAX_N_DOCS, BadRequest, Limits, check_content, parse_ask

log = logging.getLogger("rayrag.serve")

ROUTES = {"/": "GET", "/health": "GET", "/info": "GET", "/ask": "POST"}
HEALTH_TIMEOUT_S = 5.0
"""Longest `/health` waits for a replica to answer."""


class Unavailable(Exception):
    """No replica answered this request: it died under it, or it took longer than the deadline. Retryable."""


def error(status: int, code: str, message: str, field: str | None = None, retryable: bool = False,
          headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field, "retryable": retryable}},
                        status_code=status, headers=headers)


class Generator:
    """One replica of the model. `ask` takes one question; Serve's batching hands the batch method the questions
    that arrived together, which it answers with one retrieval call and one `generate` per (n_docs, num_beams)."""

    def __init__(self, model: str, model_type: str | None, spec: str | None, threads: int, max_length: int,
                 use_gpu: bool, max_batch_size: int, batch_wait_timeout_s: float):
        import torch

        from rayrag.kb.layout import KbLocation
        from rayrag.model.checkpoint import LoadedModel, attach_retriever, check_pooling, load_model, read_info, \
            with_type
        from rayrag.retrieval.service import load_spec

        torch.set_num_threads(threads)
        self.max_length = max_length
        info = with_type(read_info(model), model_type, model)
        loaded = load_model(model, retrieval=False, info=info)
        where = client_spec = None
        if spec is not None:  # a RAG model: a client of the service the server opened, as a training rank has
            client_spec = load_spec(spec)
            where = KbLocation(client_spec.kb, client_spec.index_path)
            check_pooling(loaded.model, where, model)
            # the replica's rank spreads the replicas over the service's actors (`ray`: one pinned actor each)
            client = client_spec.connect(rank=serve.get_replica_context().rank.rank)
            retriever = attach_retriever(loaded.model, loaded.question_tokenizer, loaded.generator_tokenizer, client,
                                         where=model)
            loaded = LoadedModel(loaded.model, loaded.question_tokenizer, loaded.generator_tokenizer, info, retriever)
        self.loaded = loaded
        if use_gpu:
            self.loaded.model.to("cuda")
        self.ask_batch.set_max_batch_size(max_batch_size)
        self.ask_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self._info = {**self._describe(where, model), "retrieval": client_spec.backend if client_spec else None}

    def _describe(self, where, model: str) -> dict:
        from rayrag import __version__
        from rayrag.encoders import pooling

        loaded = self.loaded
        config = loaded.model.config
        info = {"model": model, "model_type": loaded.info.model_type, "is_rag": loaded.info.is_rag,
                "generator": getattr(config, "generator", config).model_type, "n_docs": None, "max_n_docs": None,
                "kb": None, "passages": None, "encoder": None, "pooling": None, "version": __version__}
        if loaded.info.is_rag:
            client = loaded.retriever.client
            kb = where
            info.update(n_docs=int(config.n_docs), max_n_docs=min(int(client.n_passages), MAX_N_DOCS), kb=kb.kb,
                        passages=int(client.n_passages),
                        pooling=pooling.of_question_encoder(config.question_encoder))
            if not kb.is_reference:
                from rayrag.kb.manifest import Manifest

                info["encoder"] = Manifest.read(Path(kb.kb)).encoder
        return info

    def info(self) -> dict:
        return self._info

    def ping(self) -> bool:
        return True

    async def ask(self, question: str, n_docs: int | None, num_beams: int) -> dict:
        return await self.ask_batch((question, n_docs, num_beams))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)  # set from the flags in __init__
    async def ask_batch(self, items: list[tuple[str, int | None, int]]) -> list[dict]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, (_, n_docs, beams) in enumerate(items):
            groups[(n_docs, beams)].append(i)
        out: list[dict] = [{}] * len(items)
        for (n_docs, beams), idx in groups.items():
            answers = await asyncio.to_thread(self._answer, [items[i][0] for i in idx], n_docs, beams)
            for i, a in zip(idx, answers):
                out[i] = {**a, "batch_size": len(items)}
        return out

    def _answer(self, questions: list[str], n_docs: int | None, num_beams: int) -> list[dict]:
        """Answers to `questions` from one retrieval call and one `generate`, with their timings; an error is an
        answer of its own (every question of the batch would otherwise get the exception)."""
        from rayrag.evaluate.predict import predict

        retriever = self.loaded.retriever
        t0 = time.perf_counter()
        try:
            preds = predict(self.loaded, questions, batch_size=len(questions), num_beams=num_beams,
                            max_length=self.max_length, n_docs=n_docs, progress=False)
        except Exception as e:  # noqa: BLE001  (told to the client as a 500 naming it)
            log.exception("serve: answering %d questions failed", len(questions))
            return [{"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}] * len(questions)
        total = time.perf_counter() - t0
        retrieval = 0.0
        if retriever is not None:
            retrieval = sum(retriever.call_seconds)
            for calls in (retriever.call_seconds, retriever.call_ids_sha1, retriever.call_generations):
                calls.clear()  # a server answers for weeks: keep no per-call record
        timings = {"retrieval_s": retrieval, "generation_s": max(total - retrieval, 0.0), "total_s": total}
        return [{"question": p.question, "answer": p.answer, "passages": p.passages, "timings": timings}
                for p in preds]

    def __del__(self):
        loaded = getattr(self, "loaded", None)
        if loaded is not None and loaded.retriever is not None:
            loaded.retriever.client.close()


class Frontend:
    """The HTTP side: `/` (the page), `/health`, `/info` and `POST /ask`, every reply JSON but the page."""

    def __init__(self, generator, request_timeout_s: float):
        self.generator = generator
        self.request_timeout_s = request_timeout_s
        self.page = importlib.resources.files("rayrag.serving").joinpath("static/index.html").read_bytes()
        self._info: dict | None = None

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        try:
            if path not in ROUTES:
                return error(404, "not_found", f"{path}: no such route; the routes are "
                             + ", ".join(f"{m} {p}" for p, m in ROUTES.items()))
            if method != ROUTES[path] and not (method == "HEAD" and ROUTES[path] == "GET"):
                return error(405, "method_not_allowed", f"{method} {path}: use {ROUTES[path]}",
                             headers={"Allow": ROUTES[path]})
            if path == "/":
                return Response(self.page, media_type="text/html; charset=utf-8")
            if path == "/health":
                return await self._health()
            if path == "/info":
                return JSONResponse(await self._model_info())
            return await self._ask(request)
        except BadRequest as e:
            return JSONResponse(e.body(), status_code=e.status)
        except Unavailable as e:
            return error(503, "unavailable", f"{e}; retry", retryable=True, headers={"Retry-After": "1"})
        except Exception as e:  # noqa: BLE001  (a JSON 500, never Serve's bare text)
            log.exception("serve: %s %s failed", method, path)
            return error(500, "internal", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")

    async def _call(self, method: str, *args, timeout_s: float):
        """`Generator.METHOD(*args)` on some replica, within `timeout_s`; `Unavailable` if none answers."""
        response = getattr(self.generator, method).remote(*args)
        try:
            return await asyncio.wait_for(response, timeout_s)
        except (RayActorError, BackPressureError, DeploymentUnavailableError) as e:
            raise Unavailable(f"the replica answering this request is gone ({type(e).__name__})") from e
        except (asyncio.TimeoutError, TimeoutError) as e:
            response.cancel()
            raise Unavailable(f"no answer within {timeout_s:g} s") from e

    async def _model_info(self) -> dict:
        if self._info is None:
            self._info = await self._call("info", timeout_s=self.request_timeout_s)
        return self._info

    async def _health(self) -> Response:
        try:
            await self._call("ping", timeout_s=HEALTH_TIMEOUT_S)
        except Unavailable as e:
            return error(503, "unavailable", f"no replica is ready ({e})", retryable=True,
                         headers={"Retry-After": "1"})
        return JSONResponse({"status": "ok"})

    async def _ask(self, request: Request) -> Response:
        check_content(request.headers.get("content-type"), request.headers.get("content-length"))
        info = await self._model_info()
        body = await request.body()
        ask = parse_ask(body, Limits(info["is_rag"], info["n_docs"], info["max_n_docs"]))
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(self._call("ask", q, ask.n_docs, ask.num_beams,
                                                    timeout_s=self.request_timeout_s) for q in ask.questions))
        failed = next((a["error"] for a in answers if "error" in a), None)
        if failed is not None:
            return error(500, "generation_failed", failed)
        if ask.many:
            return JSONResponse({"answers": answers, "timings": {"total_s": time.perf_counter() - t0}})
        return JSONResponse(answers[0])


def application(opts, spec: str | None):
    """The bound application of `opts` (`ServeOptions`, resolved): the front end over `opts.replicas` generators,
    each a client of the retrieval service whose spec is `spec` (None: a closed-book model)."""
    threads = opts.threads_per_replica or max(1, (os.cpu_count() or 1) // opts.replicas)
    generator = serve.deployment(
        Generator, name="Generator", num_replicas=opts.replicas,
        ray_actor_options={"num_cpus": opts.cpus_per_replica, "num_gpus": 1 if opts.cluster.use_gpu else 0},
        max_ongoing_requests=2 * opts.max_batch_size, graceful_shutdown_timeout_s=5, max_constructor_retry_count=3,
    ).bind(str(opts.model), opts.model_type, spec, threads, opts.max_length, opts.cluster.use_gpu,
           opts.max_batch_size, opts.batch_wait_timeout_s)
    frontend = serve.deployment(Frontend, name="Frontend", num_replicas=1, ray_actor_options={"num_cpus": 0},
                                max_ongoing_requests=1000, graceful_shutdown_timeout_s=5)
    return frontend.bind(generator, opts.request_timeout_s)
