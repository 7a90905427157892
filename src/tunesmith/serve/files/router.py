"""OpenAI's Files API: POST /v1/files (multipart), GET /v1/files, GET/DELETE /v1/files/{id},
GET /v1/files/{id}/content. Another project's file ids answer 404, as ids that do not exist."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from tunesmith.serve.auth import creating_project, project_of, require_key
from tunesmith.serve.errors import APIError
from tunesmith.serve.files import service
from tunesmith.serve.files.schemas import file_deleted, file_object
from tunesmith.serve.pages import list_page
from tunesmith.store.uploads import delete_upload

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


def _not_found(file_id: str) -> APIError:
    return APIError(404, f"No such File object: {file_id}", param="id", code="file_not_found")


@router.post("/files")
def upload_file(request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> dict:
    jobs = request.app.state.jobs
    row = service.store_upload(jobs, creating_project(request), file.filename or "upload", purpose, file.file)
    return file_object(row)


@router.get("/files")
def list_files(request: Request, after: str | None = None, limit: int = Query(10000, ge=1, le=10000),
               order: Literal["asc", "desc"] = "desc", purpose: str | None = None) -> dict:
    store = request.app.state.jobs.store
    return list_page(lambda: store.list_files(project_of(request), after=after, limit=limit, order=order,
                                              purpose=purpose), file_object)


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, request: Request) -> dict:
    row = request.app.state.jobs.store.get_file(project_of(request), file_id)
    if row is None:
        raise _not_found(file_id)
    return file_object(row)


@router.delete("/files/{file_id}")
def delete_file(file_id: str, request: Request) -> dict:
    jobs = request.app.state.jobs
    if delete_upload(jobs.store, jobs.blobs, project_of(request), file_id) is None:  # a job keeps its own link
        raise _not_found(file_id)
    return file_deleted(file_id)


@router.get("/files/{file_id}/content")
def file_content(file_id: str, request: Request) -> FileResponse:
    jobs = request.app.state.jobs
    row = jobs.store.get_file(project_of(request), file_id)
    if row is None:
        raise _not_found(file_id)
    return FileResponse(jobs.blobs.path(row.sha256), media_type="application/octet-stream", filename=row.filename)
