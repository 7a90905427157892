"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with its status codes,
so an OpenAI client raises the exception it would raise against OpenAI (NotFoundError, ...)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, type=self.type, param=self.param, code=self.code)


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    message, param = _printable(message), _printable(param) if param is not None else None
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status, headers=headers)


def _printable(text: str) -> str:
    """`text` as UTF-8 can carry it: a message that echoes a client's lone surrogate would otherwise
    fail to encode, and the error answer itself would become a 500."""
    return text.encode("utf-8", "replace").decode("utf-8")


def unknown_model(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist; GET /v1/models lists the served ones.",
                    param="model", code="model_not_found")


async def _api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    return error_response(400, f"{param or 'body'}: {message}", param=param, code="invalid_value")


async def _not_unicode(request: Request, exc: UnicodeError) -> JSONResponse:
    """Text that is not Unicode (a lone surrogate in a path or a query, past every schema)."""
    return error_response(400, "the request holds text that is not valid Unicode (a lone surrogate); send UTF-8 text",
                          code="invalid_value")


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
    return error_response(exc.status_code, str(exc.detail), code=code)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(UnicodeError, _not_unicode)
