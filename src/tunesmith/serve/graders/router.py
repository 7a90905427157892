"""OpenAI's grader endpoints (the SDK's client.fine_tuning.alpha.graders): POST
/v1/fine_tuning/alpha/graders/validate answers {"grader": ...} for a grader that runs here, and
.../run grades one model_sample against one item, answering OpenAI's GraderRunResponse. Behind the
same keys as the jobs API; a bad grader is a 400 naming its field."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from tunesmith.graders import GraderError, run_grader
from tunesmith.serve.auth import require_key
from tunesmith.serve.graders.schemas import RunGraderRequest, ValidateGraderRequest
from tunesmith.serve.graders.service import (
    ServedModelRunner,
    checked_grader,
    grader_error,
    model_grader_paths,
    with_usage,
)

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", dependencies=[Depends(require_key)])


@router.post("/validate")
async def validate_grader(body: ValidateGraderRequest, request: Request) -> dict:
    await checked_grader(request, body.grader)
    return {"grader": body.grader}


@router.post("/run")
async def run(body: RunGraderRequest, request: Request) -> dict:
    grader = await checked_grader(request, body.grader)
    runner = ServedModelRunner(request, asyncio.get_running_loop()) if model_grader_paths(grader) else None
    allow_python = request.app.state.jobs.config.allow_python_graders
    try:  # off the event loop: a python grader's process, and a model grader waits on the engine through it
        response = await asyncio.to_thread(run_grader, grader, sample=body.model_sample, item=body.item,
                                           allow_python=allow_python, model_runner=runner)
    except GraderError as exc:
        raise grader_error(exc) from exc
    return with_usage(response, runner)
