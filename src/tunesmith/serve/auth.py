"""API keys: `Authorization: Bearer KEY`, compared in constant time. With no keys configured the
server is in development mode and answers only clients on this machine.

A browser cannot send a Bearer header when it opens a page, so the web console's login puts the
key in an HttpOnly, SameSite=Strict cookie, and a request without an Authorization header is
checked against that cookie instead: the same keys, the same check. SameSite=Strict keeps other
sites from making a logged-in browser call the API."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from tunesmith.serve.errors import APIError


def _is_local(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


KEY_COOKIE = "tunesmith_key"


def key_of(request: Request) -> str | None:
    """The key a request carries: its Bearer token, or (no Authorization header) the console's cookie."""
    if "authorization" in request.headers:
        return _bearer(request)
    return request.cookies.get(KEY_COOKIE) or None


def key_is_valid(request: Request, key: str) -> bool:
    """Is `key` one of the server's keys (the console's login asks before setting the cookie)."""
    config = request.app.state.config
    return _matches(key, config.api_keys + config.admin_keys)


def _matches(token: str | None, keys: tuple[str, ...]) -> bool:
    return token is not None and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


def require_key(request: Request) -> None:
    """A route dependency: the request carries one of the API keys (or admin keys)."""
    config = request.app.state.config
    keys = config.api_keys + config.admin_keys
    if not keys:
        if not _is_local(request):
            raise APIError(401, "this server has no API keys and answers only its own machine; start it "
                                "with --api-key-file", code="invalid_api_key")
        return
    if not _matches(key_of(request), keys):
        raise APIError(401, "Incorrect API key provided; send `Authorization: Bearer KEY` with a key from the "
                            "server's --api-key-file", code="invalid_api_key")


def carries_valid_key(request: Request) -> bool:
    """Would require_key let this request through (it raises nothing and reads no body)."""
    try:
        require_key(request)
    except APIError:
        return False
    return True


def require_admin(request: Request) -> None:
    """A route dependency: the request carries an admin key (or, in development mode, comes from this machine)."""
    config = request.app.state.config
    if not config.admin_keys:
        if config.api_keys or not _is_local(request):
            raise APIError(403, "loading and unloading adapters needs an admin key; start the server with "
                                "--admin-key-file", type="permission_error", code="admin_key_required")
        return
    if not _matches(_bearer(request), config.admin_keys):
        raise APIError(401 if _bearer(request) is None else 403, "this endpoint needs an admin key "
                       "(the server's --admin-key-file)", type="permission_error", code="admin_key_required")


def require_operator(request: Request) -> None:
    """A route dependency for what shows every project at once (/metrics labels requests with model
    names, `ft:` ones included): an admin key; on a server without projects, any of its keys."""
    config = request.app.state.config
    if config.admin_keys or config.key_projects:
        require_admin(request)
    else:
        require_key(request)


DEFAULT_PROJECT = "default"


def project_of(request: Request) -> str | None:
    """The project a request acts in: its key's project; None for an admin key (the operator sees
    every project). In development mode (no keys) everything is in `default`."""
    config = request.app.state.config
    token = key_of(request)
    if config.admin_keys and _matches(token, config.admin_keys):
        return None
    if token is not None:
        for key, project in config.key_projects.items():
            if hmac.compare_digest(token.encode(), key.encode()):
                return project
    return DEFAULT_PROJECT


def creating_project(request: Request) -> str:
    """The project a new file or job goes into: the key's own; for an admin key, the one its
    `OpenAI-Project` header names (the openai client's `project=`), else `default`."""
    project = project_of(request)
    if project is not None:
        return project
    named = request.headers.get("openai-project") or DEFAULT_PROJECT
    if len(named) > MAX_PROJECT:
        raise APIError(400, f"OpenAI-Project: a project name of {len(named)} characters, over {MAX_PROJECT}",
                       param="OpenAI-Project", code="invalid_value")
    return named


MAX_PROJECT = 128  # the store's column
