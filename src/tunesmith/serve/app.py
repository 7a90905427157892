"""The HTTP server: one FastAPI app over served models and their engine, run by uvicorn.

    tunesmith serve runs/support-bot runs/tone-classifier --port 8000 --api-key-file keys.txt
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tunesmith.config import JobsConfig, ServeConfig
from tunesmith.errors import ConfigError
from tunesmith.serve.auth import require_operator
from tunesmith.serve.classify.router import router as classify_router
from tunesmith.serve.console.router import router as console_router
from tunesmith.serve.engine import Engine
from tunesmith.serve.errors import install_error_handlers
from tunesmith.serve.feedback.router import router as feedback_router
from tunesmith.serve.limits import LimitBody
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.models import ServedModels
from tunesmith.serve.openai.router import router as openai_router
from tunesmith.serve.spans.router import router as spans_router
from tunesmith.serve.stored.router import router as stored_router
from tunesmith.serve.stored.service import Recorder
from tunesmith.store.db import STORE_URL_VARIABLE, shown_url

if TYPE_CHECKING:
    from tunesmith.serve.jobs.service import JobsService

health_router = APIRouter()


@health_router.get("/health")
async def health(request: Request) -> dict:
    """Up, and what it holds (no key needed: load balancers ask)."""
    models = request.app.state.models
    return {"status": "ok", "models": len(models.listed()), "loaded_adapters": models.loaded_adapter_count(),
            "queue_depth": request.app.state.engine.pending}


@health_router.get("/metrics", dependencies=[Depends(require_operator)])
async def metrics(request: Request) -> Response:
    """Prometheus's scrape: every project's model names, so the operator's (an admin key; send it
    with the scrape config's `authorization`)."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(models: ServedModels, config: ServeConfig, jobs: JobsService | None = None) -> FastAPI:
    """The server; with `jobs`, also OpenAI's files and fine-tuning endpoints over its store."""
    engine = Engine(models, max_queue=config.max_queue, max_batch=config.max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.close()

    app = FastAPI(title="tunesmith", lifespan=lifespan)
    app.state.models, app.state.engine, app.state.config, app.state.jobs = models, engine, config, jobs
    app.state.metrics = ServeMetrics(lambda: engine.pending, models.loaded_adapter_count)
    app.state.recorder = _recorder(config)
    install_error_handlers(app)
    app.add_middleware(LimitBody)
    for router in (openai_router, stored_router, feedback_router, classify_router, spans_router, health_router,
                   console_router):
        app.include_router(router)
    if jobs is not None:
        from tunesmith.serve.files.router import router as files_router
        from tunesmith.serve.graders.router import router as graders_router
        from tunesmith.serve.jobs.router import router as jobs_router

        app.include_router(files_router)
        app.include_router(jobs_router)
        app.include_router(graders_router)
    return app


def _recorder(config: ServeConfig) -> Recorder | None:
    """The store of completions `serve --store` keeps (None without one)."""
    if config.store_url is None:
        return None
    from tunesmith.store.completions import Completions
    from tunesmith.store.db import open_store

    recorder = Recorder(Completions(open_store(config.store_url)), scrub_pii=config.store_scrub_pii,
                        retention_days=config.store_retention_days)
    recorder.purge_if_due()
    return recorder


@dataclass(frozen=True)
class ServeTarget:
    """A run folder to serve and the name it answers to (`NAME=FOLDER`, or the folder's name)."""

    folder: str
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> ServeTarget:
        name, sep, folder = text.partition("=")
        return cls(folder, name) if sep and name and not Path(text).exists() else cls(text)


def load_models(targets: list[ServeTarget], config: ServeConfig) -> ServedModels:
    models = ServedModels(max_loaded_adapters=config.max_loaded_adapters, max_loaded_models=config.max_loaded_models,
                          precision=config.precision)
    for target in targets:
        path = Path(target.folder)
        if path.is_dir():
            models.add_run(path, target.name)
        else:  # a catalog name, .gguf file or hub id: a base model on its own
            models.add_base(target.folder, target.name)
    return models


def read_keys(path: str | None, environment: str) -> tuple[str, ...]:
    """Keys from a file (one per line, # comments) and a comma-separated environment variable."""
    import os

    keys: list[str] = []
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the key file ({exc.strerror}); give a file with one key per line") from exc
        keys += [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ConfigError(f"{path}: the key file holds no key; put one key per line")
    keys += [key.strip() for key in os.environ.get(environment, "").split(",") if key.strip()]
    return tuple(dict.fromkeys(keys))


def read_key_projects(path: str | None) -> dict[str, str]:
    """`KEY PROJECT` lines of a key file: the project each key belongs to (a key alone: `default`)."""
    if not path:
        return {}
    lines = [line.split() for line in Path(path).read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {parts[0]: parts[1] for parts in lines if len(parts) > 1}


# How long an idle keep-alive connection stays open. uvicorn's default, 5 s, is the idle expiry of
# httpx's pool, which the official openai client uses: a request sent on a pooled connection as the
# server closes it fails with "Server disconnected without sending a response" (the client retries
# it only where max_retries allows). Longer than the clients' expiry, so clients close first; 75 s
# is nginx's default.
KEEP_ALIVE_S = 75


def serve(targets: list[ServeTarget], config: ServeConfig, jobs_config: JobsConfig | None = None) -> None:
    """Load the targets and answer on config.host:config.port until interrupted; with `jobs_config`,
    also the fine-tuning API, and its worker processes beside the server."""
    import uvicorn

    models = load_models(targets, config)
    jobs, workers = None, []
    if jobs_config is not None:
        from tunesmith.serve.jobs.service import JobsService

        jobs = JobsService(jobs_config)
        workers = [start_worker(jobs_config) for _ in range(jobs_config.workers)]
    app = create_app(models, config, jobs)
    print(f"serving {', '.join(s.public_name for s in models.listed()) or 'no model yet'} on http://{config.host}:{config.port}/v1")
    if config.store_url is not None:
        print(f"keeping completions in {shown_url(config.store_url)}")
    if jobs_config is not None:
        print(f"fine-tuning jobs in {shown_url(jobs_config.database_url)}, {len(workers)} worker(s) here")
    if not config.api_keys and not config.admin_keys:
        print("no API keys: development mode, only clients on this machine are answered (--api-key-file to open it)")
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)


def start_worker(jobs_config: JobsConfig) -> subprocess.Popen:
    """A `tunesmith worker` process for the same store (it dies with the server). The store's URL,
    password and all, goes in the worker's environment (readable by its user alone), not its
    command line (which `ps` shows every user). One of several here, it and its trainings get their
    share of the cores (OMP_NUM_THREADS), unless the user set that."""
    import os

    from tunesmith.jobs import share_cores
    from tunesmith.jobs.worker import _die_with_parent

    command = [sys.executable, "-m", "tunesmith.cli", "worker", "--jobs-dir", jobs_config.jobs_dir,
               "--lease-seconds", str(jobs_config.lease_seconds), "--poll-seconds", str(jobs_config.poll_seconds)]
    command += ["--allow-python-graders"] if jobs_config.allow_python_graders else []
    environment = share_cores({**os.environ, STORE_URL_VARIABLE: jobs_config.database_url}, jobs_config.workers)
    return subprocess.Popen(command, preexec_fn=_die_with_parent, env=environment)


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Run `app` with uvicorn on a thread for the length of the block; yields its base URL (…/v1).
    For tests and benchmarks: a real server on a real socket."""
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_S))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
