"""OpenAI's fine-tuning API: /v1/fine_tuning/jobs (create, list with metadata filters, retrieve,
cancel, pause, resume), .../events and .../checkpoints, with cursor pages (`after`, `limit`,
`has_more`). Another project's job ids answer 404, as ids that do not exist."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Query, Request

from tunesmith.serve.auth import creating_project, project_of, require_key
from tunesmith.serve.errors import APIError
from tunesmith.serve.jobs.schemas import (
    CreateJobRequest,
    checkpoint_object,
    event_object,
    job_object,
)
from tunesmith.serve.pages import list_page
from tunesmith.store.tables import JobRow

router = APIRouter(prefix="/v1/fine_tuning", dependencies=[Depends(require_key)])
METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


def _not_found(job_id: str) -> APIError:
    return APIError(404, f"Could not find fine-tuning job: {job_id}", param="fine_tuning_job_id",
                    code="fine_tuning_job_not_found")


def _job(request: Request, job_id: str) -> JobRow:
    row = request.app.state.jobs.store.get_job(project_of(request), job_id)
    if row is None:
        raise _not_found(job_id)
    return row


async def _answer(request: Request, row: JobRow) -> dict:
    """The job; a succeeded one's model is loaded first, so that it answers once the client sees it
    (one that cannot load fails the requests that name it, not a look at its job)."""
    try:
        await request.app.state.jobs.serve_job(request.app, row)
    except APIError:
        pass
    return job_object(row)


@router.post("/jobs")
def create_job(body: CreateJobRequest, request: Request) -> dict:
    jobs = request.app.state.jobs
    return job_object(jobs.create(body, creating_project(request), request.app.state.models))


@router.get("/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)) -> dict:
    metadata = {match.group(1): value for key, value in request.query_params.items()
                if (match := METADATA_KEY.match(key))}
    null = request.query_params.get("metadata") == "null"
    store = request.app.state.jobs.store
    return list_page(lambda: store.list_jobs(project_of(request), after=after, limit=limit, metadata=metadata,
                                             metadata_null=null), job_object)


@router.get("/jobs/{job_id}")
async def retrieve_job(job_id: str, request: Request) -> dict:
    return await _answer(request, _job(request, job_id))


def _change(request: Request, job_id: str, action: str) -> dict:
    store = request.app.state.jobs.store
    change = {"cancel": store.cancel_job, "pause": store.pause_job, "resume": store.resume_job}[action]
    row, changed = change(project_of(request), job_id)
    if row is None:
        raise _not_found(job_id)
    if not changed:
        raise APIError(400, f"Cannot {action} a job with status {row.status!r}", param="fine_tuning_job_id",
                       code=f"cannot_{action}")
    return job_object(row)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> dict:
    return _change(request, job_id, "cancel")


@router.post("/jobs/{job_id}/pause")
def pause_job(job_id: str, request: Request) -> dict:
    return _change(request, job_id, "pause")


@router.post("/jobs/{job_id}/resume")
def resume_job(job_id: str, request: Request) -> dict:
    return _change(request, job_id, "resume")


@router.get("/jobs/{job_id}/events")
def list_events(job_id: str, request: Request, after: str | None = None,
                limit: int = Query(20, ge=1, le=1000)) -> dict:
    _job(request, job_id)
    store = request.app.state.jobs.store
    return list_page(lambda: store.list_events(job_id, after=after, limit=limit), event_object)


@router.get("/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, request: Request, after: str | None = None,
                     limit: int = Query(10, ge=1, le=100)) -> dict:
    _job(request, job_id)
    store = request.app.state.jobs.store
    return list_page(lambda: store.list_checkpoints(job_id, after=after, limit=limit), checkpoint_object)
