"""The fine-tuning service the server holds: its store, the uploaded files, and the job rules.

A job is checked when it is created (its files exist in the caller's project, its model is one the
service can train, every setting builds a valid tunesmith config) and answered with status
`validating_files`; a worker then checks the rows (data/ validation and the audit), queues it,
trains it. The job's files are linked into its folder at once, so deleting an upload later does
not take the bytes from a job that uses them.

A finished job's model is loaded into this server the first time it is asked for (a chat naming
it, or a look at the job), under `ft:<base>:<suffix>:<job id>`, for its project only. GET /v1/models
lists finished jobs' models from the store and loads none of them.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path, PurePath
from typing import Any

from fastapi import FastAPI

from tunesmith.config import JobsConfig
from tunesmith.errors import ConfigError
from tunesmith.jobs.settings import (
    JobFiles,
    JobSettingsError,
    hyperparameters_of,
    reported_hyperparameters,
    run_config,
)
from tunesmith.serve.errors import APIError
from tunesmith.serve.jobs.schemas import CreateJobRequest
from tunesmith.store.blobs import Blobs
from tunesmith.store.db import ACTIVE, Store, open_store
from tunesmith.store.projects import may_see
from tunesmith.store.tables import FileRow, JobRow
from tunesmith.store.uploads import link_upload


def file_names(files: dict[str, FileRow]) -> dict[str, FileRow]:
    """The names a job's files have in its folder: `training_file.jsonl`, `validation_file.csv`, ..."""
    return {f"{param.split('.')[-1]}{PurePath(row.filename).suffix.lower()}": row for param, row in files.items()}


class JobsService:
    def __init__(self, config: JobsConfig, store: Store | None = None) -> None:
        self.config = config
        self.root = Path(config.jobs_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = store or open_store(config.database_url)
        self.blobs = Blobs(self.root / "files")
        self._loading = asyncio.Lock()
        self.load_failures: dict[str, tuple[float, str]] = {}  # model name -> (when, what the client is told)

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    # -- creating ---------------------------------------------------------------------------------
    def create(self, body: CreateJobRequest, project: str, models: Any) -> JobRow:
        if body.integrations:
            raise APIError(400, "integrations (wandb) are not supported by this server; leave them out",
                           param="integrations", code="unsupported_parameter")
        method = body.method.model_dump(exclude_none=True) if body.method else {"type": "supervised"}
        legacy = body.hyperparameters.model_dump(exclude_none=True) if body.hyperparameters else None
        settings = dict(body.tunesmith or {})
        base_spec, files = self.job_inputs(body, project, models)
        seed = body.seed if body.seed is not None else random.randrange(2**31)
        try:
            hyperparameters = hyperparameters_of(method, legacy)
            config = run_config(base_spec, method, hyperparameters, settings, seed,
                                JobFiles.in_folder(Path("."), list(file_names(files))), str(self.root),
                                allow_python_graders=self.config.allow_python_graders)
        except JobSettingsError as exc:
            raise APIError(400, str(exc), param=exc.param, code="invalid_value") from exc
        except ConfigError as exc:
            raise APIError(400, f"tunesmith settings: {exc}", param="tunesmith", code="invalid_value") from exc
        kind = method["type"]
        resolved = {"type": kind, kind: {"hyperparameters": reported_hyperparameters(config, kind)}}
        if kind == "reinforcement":  # as OpenAI's job shows it; the worker trains with this grader
            resolved[kind]["grader"] = method[kind]["grader"]
        self._check_capacity(project)
        job = self.store.create_job(project=project, model=body.model, base_spec=base_spec,
                                    training_file=body.training_file, validation_file=body.validation_file,
                                    method=resolved, settings={**settings, "_hyperparameters": hyperparameters,
                                                                       "_files": list(file_names(files))},
                                    suffix=body.suffix, seed=seed, metadata_=body.metadata)
        try:
            self._link_files(job.id, files)
        except APIError:  # a file deleted as the job was created: the job never runs
            self.store.cancel_job(project, job.id)
            raise
        return job

    def _base_spec(self, name: str, models: Any, project: str) -> str:
        """What a job in `project` starts from: a served base or full model that project may see, or
        a catalog name."""
        from tunesmith.models.catalog import CATALOG

        served = models.get(name)
        if served is not None and served.kind in ("base", "model") and served.source and may_see(project, served.project):
            return served.source
        if name in CATALOG:
            return name
        bases = sorted([s.public_name for s in models.listed() if s.kind in ("base", "model")
                        and may_see(project, s.project)] + list(CATALOG))
        raise APIError(404, f"The model `{name}` cannot be fine-tuned here; give a served base model or a catalog "
                            f"name: {', '.join(bases)}", param="model", code="model_not_found")

    def job_inputs(self, body: CreateJobRequest, project: str | None, models: Any) -> tuple[str, dict[str, FileRow]]:
        """The base model `body` may train and its files, each one this project may use (404 as for an
        id that does not exist): what a job is created from, and what the console checks before one."""
        base_spec = self._base_spec(body.model, models, project)
        files = {"training_file": self._file(project, body.training_file, "training_file")}
        if body.validation_file:
            files["validation_file"] = self._file(project, body.validation_file, "validation_file")
        test_file = (body.tunesmith or {}).get("test_file")
        if test_file is not None:
            files["test_file"] = self._file(project, str(test_file), "tunesmith.test_file")
        return base_spec, files

    def _file(self, project: str, file_id: str, param: str) -> FileRow:
        row = self.store.get_file(project, file_id)
        if row is None:
            raise APIError(404, f"{param}: no such file: {file_id}", param=param, code="file_not_found")
        if row.purpose != "fine-tune":
            raise APIError(400, f"{param}: {file_id} was uploaded with purpose={row.purpose!r}; upload it with "
                                "purpose=\"fine-tune\"", param=param, code="invalid_file_purpose")
        return row

    def _check_capacity(self, project: str) -> None:
        active = self.store.count_jobs(project, ACTIVE)
        if active >= self.config.max_active_jobs:
            raise APIError(429, f"this project has {active} jobs validating, queued or running, the server's limit "
                                f"(max_active_jobs={self.config.max_active_jobs}); wait for some to finish",
                           type="rate_limit_error", code="rate_limit_exceeded")

    def _link_files(self, job_id: str, files: dict[str, FileRow]) -> None:
        folder = self.job_dir(job_id) / "files"
        folder.mkdir(parents=True, exist_ok=True)
        for name, row in file_names(files).items():
            if not (folder / name).exists() and not link_upload(self.store, self.blobs, row, folder / name):
                raise APIError(404, f"no such file: {row.id} (deleted while the job was created)", param="training_file",
                               code="file_not_found")

    # -- serving finished jobs --------------------------------------------------------------------
    async def model_cards(self, project: str | None) -> list[dict]:
        """GET /v1/models' entries for `project`'s succeeded jobs, read from the store: listing
        loads nothing. A model that failed to load is listed with its error."""
        jobs = await asyncio.to_thread(self.store.succeeded_jobs, project)
        return [self._card(job) for job in jobs if job.fine_tuned_model]

    async def model_card(self, name: str, project: str | None) -> dict | None:
        job = await self._visible_job(name, project)
        return self._card(job) if job is not None else None

    def _card(self, job: JobRow) -> dict:
        card = {"id": job.fine_tuned_model, "object": "model", "created": job.finished_at or job.created_at,
                "owned_by": job.project, "root": job.model, "parent": job.model, "kind": job_model_kind(job)}
        failure = self.load_failures.get(job.fine_tuned_model)
        return {**card, "error": failure[1]} if failure else card

    async def _visible_job(self, name: str, project: str | None) -> JobRow | None:
        if not name.startswith("ft:"):
            return None
        job = await asyncio.to_thread(self.store.jobs_of_model, name)
        return job if job is not None and may_see(project, job.project) else None

    async def serve_model(self, app: FastAPI, name: str, project: str | None) -> None:
        """Load a succeeded job's model by its fine_tuned_model name, if there is one that a key of
        `project` may use (another project's is not even loaded)."""
        job = await self._visible_job(name, project)
        if job is not None:
            await self.serve_job(app, job)

    async def serve_job(self, app: FastAPI, job: JobRow) -> None:
        """Load a succeeded job's model into the server, for its project only. One that cannot load
        fails the requests that name it (for LOAD_RETRY_SECONDS before it is tried again), never others."""
        models, name = app.state.models, job.fine_tuned_model
        if job.status != "succeeded" or not name or models.get(name) is not None:
            return
        async with self._loading:
            if models.get(name) is not None:
                return
            failure = self.load_failures.get(name)
            if failure is None or time.monotonic() - failure[0] > LOAD_RETRY_SECONDS:
                run_dir = Path(job.run_dir or self.job_dir(job.id) / "run")
                try:
                    await asyncio.wrap_future(app.state.engine.call(lambda: models.add_run(run_dir, name, job.project)))
                    self.load_failures.pop(name, None)
                    return
                except Exception as exc:  # the server's log has the detail; the client never sees paths
                    print(f"tunesmith serve: {name} (job {job.id}) could not be loaded: {type(exc).__name__}: {exc}",
                          file=sys.stderr, flush=True)
                    failure = (time.monotonic(), f"the fine-tuned model could not be loaded "
                                                 f"({type(exc).__name__}); the server's log has the details")
                    self.load_failures[name] = failure
        raise APIError(500, f"{name}: {failure[1]}", type="server_error", code="model_load_failed")


LOAD_RETRY_SECONDS = 60.0
HEAD_METHODS = {"classify": "classifier", "token-classify": "tagger", "extractive-qa": "reader"}


def job_model_kind(job: JobRow) -> str:
    """What a job's model is (as GET /v1/models says `kind`), from its settings alone."""
    settings = job.settings or {}
    head = HEAD_METHODS.get(settings.get("method"))
    if head:
        return head
    return "adapter" if (settings.get("lora") or {}).get("enabled", True) else "model"
