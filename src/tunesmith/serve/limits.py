"""The bound on request bodies, at the ASGI level: every route, before the key is checked, whether
the body says its length (Content-Length) or not (chunked). A body past the bound is answered 413
in OpenAI's shape and never read further, so no client fills the server's memory (JSON routes, the
console's login) or disk (multipart uploads, which Starlette spools to a temporary file).

The bound is `max_request_bytes`, except for POST /v1/files from a request that carries a valid key,
which may send an upload of `max_upload_bytes` (plus the multipart envelope): a request without a
valid key never gets more than the small bound."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from tunesmith.serve.errors import error_response

MULTIPART_ENVELOPE = 64 * 1024  # boundaries, part headers and the purpose field around an upload's bytes


class BodyTooLarge(HTTPException):
    """Raised from `receive` past the bound. An HTTPException, so FastAPI's body reading passes it
    on (it turns other exceptions into 400s) and the app's handler answers it in OpenAI's shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over this server's limit of {limit} bytes")
        self.limit = limit


def body_limit(scope: dict[str, Any]) -> int:
    """The most bytes this request's body may hold."""
    app = scope["app"]
    limit = app.state.config.max_request_bytes
    jobs = app.state.jobs
    if jobs is not None and scope["path"] == "/v1/files" and scope["method"] == "POST":
        from tunesmith.serve.auth import carries_valid_key

        if carries_valid_key(Request(scope)):
            limit = jobs.config.max_upload_bytes + MULTIPART_ENVELOPE
    return limit


class LimitBody:
    """ASGI middleware: counts the bytes `receive` hands the app and stops at the request's bound."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:  # said up front: refused without reading a byte
            await _refuse(scope, receive, send, f"the request body is {int(length)} bytes, over this server's "
                                                f"limit of {limit}")
            return
        received, started = 0, False

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no handler answered it (a route reading the stream itself)
            if not started:
                await _refuse(scope, receive, send, exc.detail)


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, message: str) -> None:
    response = error_response(413, message, code="request_too_large")
    response.headers["Connection"] = "close"  # the rest of the body is not read: the connection cannot be reused
    await response(scope, receive, send)
