"""The workbench's own API, for what the jobs API does not answer: check an uploaded file before any
job (`POST /v1/console/check`), estimate a job before it starts (`POST /v1/console/estimate`),
a finished job's evaluation (`GET /v1/console/jobs/{id}/evaluation`), its exports (`POST` and
`GET /v1/console/jobs/{id}/exports`, a file of one), and the generations of served runs
(`GET /v1/console/generations`, `POST /v1/console/generations/{model}/current`).

The same key as every route, the same walls: another project's file, job or model answers 404, as
an id that does not exist. The console's pages call these with the visitor's own key, so they can
do nothing the key could not do with curl."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import Field

from tunesmith.serve.access import find_model
from tunesmith.serve.auth import project_of, require_key, require_operator
from tunesmith.serve.bodies import RequestBody
from tunesmith.serve.console import work
from tunesmith.serve.errors import APIError
from tunesmith.serve.jobs.schemas import CreateJobRequest

router = APIRouter(prefix="/v1/console", dependencies=[Depends(require_key)])


class ExportRequest(RequestBody):
    format: str = Field(description="gguf, ollama, gguf-lora or onnx (a classifier)")
    quant: str = Field("f16", max_length=16, description="GGUF type: f32, f16, bf16, q8_0 (k-quants need llama.cpp)")


class CurrentRequest(RequestBody):
    generation: int = Field(ge=0, description="the promoted generation to answer with")


def _jobs(request: Request):
    jobs = request.app.state.jobs
    if jobs is None:
        raise APIError(404, "this server has no fine-tuning API; start it with `tunesmith serve --jobs`",
                       code="jobs_not_enabled")
    return jobs


@router.post("/check")
def check_file(body: CreateJobRequest, request: Request, rows: int = work.PREVIEW_ROWS) -> dict:
    """The job's files as the worker would check them, every bad line listed, and the data audit,
    before anything trains; the first `rows` rows as the model sees them."""
    jobs = _jobs(request)
    with work.drafted(jobs, body, project_of(request), request.app.state.models) as draft:
        return work.check_files(draft, max(0, min(rows, 20)))


@router.post("/estimate")
def estimate(body: CreateJobRequest, request: Request) -> dict:
    """`tunesmith train --estimate` of the job this body would create: steps, wall time, peak memory."""
    jobs = _jobs(request)
    with work.drafted(jobs, body, project_of(request), request.app.state.models) as draft:
        return work.estimate(draft)


@router.get("/jobs/{job_id}/evaluation")
def evaluation(job_id: str, request: Request) -> dict:
    """A job's last losses and, where it was evaluated on a test file, its comparison table."""
    jobs = _jobs(request)
    job = work.project_job(jobs, project_of(request), job_id)
    last: dict = {}
    for event in reversed(jobs.store.list_events(job.id, after=None, limit=1000).rows):
        if event.type == "metrics":
            last.update({k: v for k, v in (event.data or {}).items() if v is not None})
    comparison = None
    if job.run_dir and (Path(job.run_dir) / "eval" / "comparison.json").is_file():
        comparison = (Path(job.run_dir) / "eval" / "comparison.json").read_text()
    return {"object": "console.evaluation", "job": job.id, "model": job.model, "status": job.status,
            "fine_tuned_model": job.fine_tuned_model, "last_metrics": last,
            "report": bool(job.run_dir) and (Path(job.run_dir) / "report.md").is_file(),
            "comparison": None if comparison is None else json.loads(work.hide_paths(comparison, jobs, job))}


@router.post("/jobs/{job_id}/exports")
def export(job_id: str, body: ExportRequest, request: Request) -> dict:
    jobs = _jobs(request)
    job = work.project_job(jobs, project_of(request), job_id)
    return work.export_job(jobs, job, body.format, body.quant)


@router.get("/jobs/{job_id}/exports")
def list_exports(job_id: str, request: Request) -> dict:
    jobs = _jobs(request)
    job = work.project_job(jobs, project_of(request), job_id)
    folder = work.exports_dir(jobs, job)
    found = sorted(p.parent for p in folder.glob("*/export.json")) if folder.is_dir() else []
    return {"object": "list", "data": [work.read_export(jobs, job, path) for path in found]}


@router.get("/jobs/{job_id}/exports/{export_id}/{name}")
def export_file(job_id: str, export_id: str, name: str, request: Request) -> FileResponse:
    jobs = _jobs(request)
    job = work.project_job(jobs, project_of(request), job_id)
    root = work.exports_dir(jobs, job).resolve()
    target = (root / export_id / name).resolve()
    if not target.is_relative_to(root) or not target.is_file() or target.name == "export.json":
        raise APIError(404, f"{export_id}/{name}: no such export file of {job_id}", param="name", code="not_found")
    return FileResponse(target, media_type="application/octet-stream", filename=target.name)


@router.get("/generations")
def list_generations(request: Request) -> dict:
    """Each served run this key may use that has generations (tunesmith retrain): which answers now."""
    from tunesmith.improve.lineage import read_lineage

    data = []
    for name, watch in sorted(request.app.state.models.lineages.items()):
        try:
            find_model(request, name)
        except APIError:
            continue
        lineage = read_lineage(watch.run_dir)
        data.append({"model": name, "current": lineage["current"], "may_change": _may_change(request, name),
                     "generations": [_generation(g) for g in lineage["generations"]],
                     "history": lineage.get("history", [])[-10:]})
    return {"object": "list", "data": data}


def _generation(record: dict) -> dict:
    shown = ("generation", "started_from", "promoted", "created", "gate")
    return {key: record[key] for key in shown if key in record}


def _may_change(request: Request, name: str) -> bool:
    try:
        _check_owner(request, name)
    except APIError:
        return False
    return True


def _check_owner(request: Request, name: str) -> None:
    """Changing what a model answers with is its owner's: a project's own model, its key; a model
    every project shares (a run given to `tunesmith serve`), the operator's key."""
    served = find_model(request, name)
    if served.project is None:
        require_operator(request)
    elif project_of(request) not in (None, served.project):
        raise APIError(404, f"The model `{name}` does not exist", param="model", code="model_not_found")


@router.post("/generations/{name:path}/current")
def make_current(name: str, body: CurrentRequest, request: Request) -> dict:
    """Answer with another promoted generation: a rollback, or a promotion back to a newer one."""
    from tunesmith.errors import RunError
    from tunesmith.improve.lineage import rollback

    _check_owner(request, name)
    watch = request.app.state.models.lineages.get(name)
    if watch is None:
        raise APIError(404, f"The model `{name}` has no generations", param="model", code="model_not_found")
    try:
        before, after = rollback(watch.run_dir, body.generation)
    except RunError as exc:
        raise APIError(400, str(exc).replace(str(watch.run_dir), name), param="generation", code="invalid_value") from exc
    return {"object": "console.generation_change", "model": name, "from": before, "current": after}
