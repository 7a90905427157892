"""The workbench's pages: GET /console/data, /console/jobs, /console/jobs/new, /console/jobs/{id}
(and its report), /console/compare, /console/ship. Each asks for a key as every console page does
(a browser without one is sent to the login form); a job page of another project's job is a 404,
as a job that does not exist. The pages' scripts do the rest through the API (api.py and the jobs
and files APIs) with the same key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from tunesmith.serve.access import visible_models
from tunesmith.serve.auth import project_of
from tunesmith.serve.console import bench_pages, pages
from tunesmith.serve.console.work import EXPORT_FORMATS

router = APIRouter()


def _html(text: str, status: int = 200) -> HTMLResponse:
    from tunesmith.serve.console.router import html

    return html(text, status)


def _refused(request: Request, *, jobs: bool = True) -> Response | None:
    """The login form or a page saying why, where the request may not see the page (or, for a page
    that needs them, the server has no fine-tuning jobs)."""
    from tunesmith.serve.console.router import refused

    if (denied := refused(request)) is not None:
        return denied
    if jobs and request.app.state.jobs is None:
        return _html(pages.message_page("No fine-tuning here", "this server has no fine-tuning API; start it with "
                                                               "`tunesmith serve --jobs` to train from the console"), 404)
    return None


def trainable_bases(request: Request) -> list[str]:
    """What a job of this key may start from: the served base and full models it may see, then
    the catalog (the jobs API's own rule, JobsService._base_spec)."""
    from tunesmith.models.catalog import CATALOG

    served = [s.public_name for s in visible_models(request) if s.kind in ("base", "model") and s.source]
    return served + [name for name in CATALOG if name not in served]


@router.get("/console/data", response_class=HTMLResponse)
def data_page(request: Request) -> Response:
    if (denied := _refused(request)) is not None:
        return denied
    return _html(bench_pages.data_page(trainable_bases(request)))


@router.get("/console/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> Response:
    if (denied := _refused(request)) is not None:
        return denied
    return _html(bench_pages.jobs_page())


@router.get("/console/jobs/new", response_class=HTMLResponse)
def new_job_page(request: Request, training_file: str | None = None) -> Response:
    if (denied := _refused(request)) is not None:
        return denied
    return _html(bench_pages.new_job_page(trainable_bases(request), training_file))


def _job_or_page(request: Request, job_id: str):
    job = request.app.state.jobs.store.get_job(project_of(request), job_id)
    if job is None:
        return None, _html(pages.message_page("Not found", f"{job_id}: no fine-tuning job of that id in this "
                                                           "project"), 404)
    return job, None


@router.get("/console/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request) -> Response:
    if (denied := _refused(request)) is not None:
        return denied
    _, missing = _job_or_page(request, job_id)
    return missing or _html(bench_pages.job_page(job_id))


@router.get("/console/jobs/{job_id}/report", response_class=HTMLResponse)
def job_report(job_id: str, request: Request) -> Response:
    """A finished job's report.md, its images through the job's files route."""
    from tunesmith.serve.console.router import render_markdown

    if (denied := _refused(request)) is not None:
        return denied
    job, missing = _job_or_page(request, job_id)
    if missing:
        return missing
    report = Path(job.run_dir) / "report.md" if job.run_dir else None
    if report is None or not report.is_file():
        return _html(pages.message_page("No report", f"{job_id}: no report yet; a job writes one when it is "
                                                     "evaluated on a test file (tunesmith.test_file)"), 404)
    return _html(pages.report_page(job_id, render_markdown(report.read_text()), files=f"/console/jobs/{job_id}/files/"))


@router.get("/console/jobs/{job_id}/files/{path:path}")
def job_file(job_id: str, path: str, request: Request) -> Response:
    from tunesmith.serve.console.router import RUN_FILE_TYPES, _inside, sandboxed

    if (denied := _refused(request)) is not None:
        return denied
    job, missing = _job_or_page(request, job_id)
    if missing:
        return missing
    target = _inside(Path(job.run_dir), path) if job.run_dir else None
    if target is None or target.suffix.lower() not in RUN_FILE_TYPES:
        return _html(pages.message_page("Not found", f"{path}: no such report file of {job_id}"), 404)
    return FileResponse(target, media_type=RUN_FILE_TYPES[target.suffix.lower()], headers=sandboxed())


@router.get("/console/compare", response_class=HTMLResponse)
def compare_page(request: Request) -> Response:
    if (denied := _refused(request, jobs=False)) is not None:
        return denied
    return _html(bench_pages.compare_page())


@router.get("/console/ship", response_class=HTMLResponse)
def ship_page(request: Request) -> Response:
    if (denied := _refused(request, jobs=False)) is not None:
        return denied
    return _html(bench_pages.ship_page(EXPORT_FORMATS))
