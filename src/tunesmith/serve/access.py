"""Which served model a request may use: the one lookup every route that takes a model name calls
(chat, completions, models, classifications, entities, answers, the console's pages). Another
project's model answers 404, as a name that does not exist, never "forbidden"."""

from __future__ import annotations

from fastapi import Request

from tunesmith.serve.auth import project_of
from tunesmith.serve.errors import APIError, unknown_model
from tunesmith.serve.models import Served
from tunesmith.store.projects import may_see

ENDPOINTS = {"base": "POST /v1/chat/completions", "adapter": "POST /v1/chat/completions",
             "model": "POST /v1/chat/completions", "classifier": "POST /v1/classifications",
             "tagger": "POST /v1/entities", "reader": "POST /v1/answers"}


def visible(request: Request, served: Served) -> bool:
    return may_see(project_of(request), served.project)


def visible_models(request: Request) -> list[Served]:
    return [served for served in request.app.state.models.listed() if visible(request, served)]


def find_model(request: Request, name: str, kinds: tuple[str, ...] | None = None) -> Served:
    """The served model `name` as this request's key sees it: 404 when there is none or it is another
    project's; 400 naming the right endpoint when it is of another kind than `kinds`."""
    served = request.app.state.models.get(name)
    if served is None or served.retired or not visible(request, served):
        raise unknown_model(name)
    if kinds is not None and served.kind not in kinds:
        raise APIError(400, f"`{name}` is a {served.kind} run; send its requests to {ENDPOINTS[served.kind]}",
                       param="model", code="wrong_endpoint")
    return served
