"""Run `rayrag serve`: check what can be checked before Ray starts, start (or join) Ray and Serve, deploy the
application (serving/app.py), say where it listens, and on Ctrl-C or SIGTERM shut it all down.

A local Ray instance started here is stopped on the way out, with Serve's controller, proxy and replicas and the
retrieval pool: no process is left behind. On a cluster that was joined (`--ray_address`), only this application
and its pool are removed; Serve and the cluster stay as they were.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import threading

from rayrag.errors import RayragError
from rayrag.serving.options import ServeOptions

log = logging.getLogger(__name__)

APP_NAME = "rayrag"
SERVE_HINT = "pip install 'ray[serve]' (or reinstall rayrag: `make setup`)"


def check_model(opts: ServeOptions):
    """The model's info and the knowledge base it will retrieve from (None: closed-book), checked on disk, so a
    mistake is one line here rather than replicas failing to start."""
    from rayrag.kb.layout import resolve
    from rayrag.model.checkpoint import KB_FIX, read_info, with_type

    info = with_type(read_info(opts.model), opts.model_type, str(opts.model))
    if not info.is_rag:
        if opts.kb.given or opts.retrieval.backend != "local":
            raise RayragError(f"--model {opts.model}: a closed-book {info.model_type} model retrieves nothing; drop "
                              "the knowledge base and retrieval flags")
        return info, None
    where = opts.kb.location() or info.location
    if where is None:
        raise RayragError(f"{opts.model}: no knowledge base recorded; {KB_FIX}")
    return info, resolve(where.kb, where.index_path)


def check_port(host: str, port: int) -> None:
    """Refuse at once a port something else holds (Serve's proxy would fail where the user cannot see it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise RayragError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); stop what uses it or "
                              "choose another port") from None


def import_serve():
    try:
        from ray import serve
    except ImportError as e:
        raise RayragError(f"rayrag serve needs Ray Serve ({e}); {SERVE_HINT}") from None
    return serve


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _why_not(serve) -> str | None:
    """The last line of the error a deployment that failed to start reports (its constructor's exception)."""
    with contextlib.suppress(Exception):
        for name, status in serve.status().applications[APP_NAME].deployments.items():
            lines = [line for line in (status.message or "").strip().splitlines() if line.strip()]
            if status.status == "DEPLOY_FAILED" and lines:
                return f"{name}: {lines[-1].strip()}"
    return None


def serve_until_stopped(opts: ServeOptions) -> None:
    """Serve `opts` until Ctrl-C or SIGTERM."""
    from rayrag.cluster.connect import LOCAL, LOOPBACK_ENV, connect, start_local
    from rayrag.cluster.fit import check_fits
    from rayrag.retrieval.options import RetrievalOptions

    info, where = check_model(opts)
    check_port(opts.host, opts.port)
    local = opts.cluster.address in LOCAL
    if local and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")  # as start_local does, before `import ray` reads it
    serve = import_serve()
    from ray.exceptions import RayTaskError

    from rayrag.serving.app import application

    need = math.ceil(opts.replicas * opts.cpus_per_replica)
    conn = start_local(num_cpus=max(os.cpu_count() or 1, need)) if local else connect(opts.cluster.address)
    service = None
    started_serve = False
    # SIGTERM, like Ctrl-C, interrupts whatever runs (installed after Ray starts: `ray.init` installs a SIGTERM
    # handler of its own that exits at once); both are ignored while shutting down, then put back.
    handlers = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        check_fits(opts.replicas, opts.cpus_per_replica, opts.cluster.use_gpu, where=conn.address,
                   what="generator replicas", worker_flag="--replicas")
        if where is not None:  # a RAG model: the retrieval service every replica is a client of (local: nothing held)
            from rayrag.retrieval.service import open_service

            service = open_service(RetrievalOptions.of(where, opts.retrieval, ray_address=opts.cluster.address))
        started_serve = local
        try:
            serve.start(proxy_location="HeadOnly",
                        http_options={"host": opts.host, "port": opts.port,
                                      "request_timeout_s": opts.request_timeout_s + 5},
                        logging_config={"log_level": "WARNING", "enable_access_log": False})
        except RayTaskError as e:
            if "Failed to bind" not in str(e):
                raise
            raise RayragError(f"--port {opts.port}: another process took {opts.host}:{opts.port} while Serve started; "
                              "choose another port") from None
        app = application(opts, service.spec.to_json() if service is not None else None)
        log.info("serve: starting %d replica(s) of %s", opts.replicas, opts.model)
        try:
            serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as e:
            raise RayragError(f"the application did not start: {_why_not(serve) or str(e).strip()}") from e
        url = f"http://{'127.0.0.1' if opts.host in ('0.0.0.0', 'localhost') else opts.host}:{opts.port}/"
        print(f"rayrag serve: {info.model_type} model {opts.model} at {url} ({opts.replicas} replica(s), "
              f"retrieval {opts.retrieval.backend if where is not None else 'none'}); Ctrl-C stops it",
              flush=True)
        threading.Event().wait()  # until a signal interrupts it
    except KeyboardInterrupt:
        pass
    finally:
        for s in handlers:
            signal.signal(s, signal.SIG_IGN)
        print("rayrag serve: shutting down", flush=True)
        try:
            if started_serve:
                serve.shutdown()
            else:
                with contextlib.suppress(Exception):
                    serve.delete(APP_NAME)
        finally:
            if service is not None:
                service.close()
            conn.close()
            for s, handler in handlers.items():
                signal.signal(s, handler)
