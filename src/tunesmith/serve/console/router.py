"""The web console: GET / lists the served models with a chat box each (thumbs and corrections go
to the feedback endpoint), GET /console/runs/{name}/report shows a run's report.md,
GET /console/monitor the monitor of the served models, and /console/login puts an API key in the
cookie that auth.py accepts in place of a Bearer header.

Every page and file asks for the same key as the API; a page request without one is sent to the
login form rather than answered with JSON, since a person is reading it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from tunesmith.errors import TunesmithError
from tunesmith.serve.access import find_model, visible_models
from tunesmith.serve.auth import KEY_COOKIE, key_is_valid, project_of, require_key
from tunesmith.serve.console import pages
from tunesmith.serve.errors import APIError

router = APIRouter()

STATIC = {"console.js": "text/javascript", "console.css": "text/css",
          # the workbench's pages (bench.py), one module each, over the shared workbench.js and chart.js
          **{name: "text/javascript" for name in ("workbench.js", "chart.js", "data.js", "new_job.js", "jobs.js",
                                                  "job.js", "compare.js", "ship.js")}}
# What a report links to; anything else in a run folder (weights, data, keys) is not the console's to show.
RUN_FILE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
                  ".json": "application/json", ".md": "text/markdown; charset=utf-8", ".csv": "text/csv; charset=utf-8"}


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": pages.CONTENT_SECURITY_POLICY,
                                                           "X-Content-Type-Options": "nosniff"})


def refused(request: Request) -> Response | None:
    """None if the request carries a key (or comes from this machine in development mode); else the
    login form to go to, or, with no keys to log in with, a page that says why."""
    try:
        require_key(request)
    except APIError as exc:
        config = request.app.state.config
        if config.api_keys or config.admin_keys:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
        return html(pages.message_page("Not from this machine", exc.message), 401)
    return None


@router.get("/", response_class=HTMLResponse)
@router.get("/console", response_class=HTMLResponse)
def models_page(request: Request) -> Response:
    if (denied := refused(request)) is not None:
        return denied
    return html(pages.models_page(visible_models(request), store=request.app.state.recorder is not None))


@router.get("/console/static/{name}")
def static_file(name: str) -> Response:
    """The console's script and style sheet (no key: they hold nothing but code)."""
    if name not in STATIC:
        return html(pages.message_page("Not found", f"{name}: the console has no such file"), 404)
    return FileResponse(Path(__file__).with_name(name), media_type=STATIC[name])


@router.get("/console/runs/{name}/report", response_class=HTMLResponse)
def report(name: str, request: Request) -> Response:
    if (denied := refused(request)) is not None:
        return denied
    served = _served_run(request, name)
    if served is None or not pages.has_report(served):
        return html(pages.message_page("No report", f"{name}: no served model of that name has a run folder with "
                                                    "report.md; `tunesmith train` writes one when it evaluates"), 404)
    return html(pages.report_page(name, render_markdown((served.run_dir / "report.md").read_text())))


@router.get("/console/runs/{name}/files/{path:path}")
def run_file(name: str, path: str, request: Request) -> Response:
    """A file of a served run's folder that its report shows; nothing outside the folder (404)."""
    if (denied := refused(request)) is not None:
        return denied
    served = _served_run(request, name)
    target = _inside(Path(served.run_dir), path) if served is not None else None
    if target is None or target.suffix.lower() not in RUN_FILE_TYPES:
        return html(pages.message_page("Not found", f"{path}: no such report file in the run folder of {name}"), 404)
    return FileResponse(target, media_type=RUN_FILE_TYPES[target.suffix.lower()], headers=sandboxed())


def sandboxed() -> dict[str, str]:
    """A run file's headers: sandboxed, so an SVG opened on its own runs no script under this site's cookie."""
    return {"Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff"}


@router.get("/console/monitor", response_class=HTMLResponse)
def monitor(request: Request) -> Response:
    if (denied := refused(request)) is not None:
        return denied
    recorder = request.app.state.recorder
    if recorder is None:
        return html(pages.message_page("No monitor", "the monitor reads the stored completions; start the server "
                                                     "with `tunesmith serve --store`"))
    try:
        from tunesmith.improve.monitor import build_monitor, render_html
    except ImportError as exc:
        return html(pages.message_page("No monitor", f"this installation has no monitor ({exc}); install a "
                                                     "tunesmith that includes tunesmith.improve.monitor"))
    # a project's key sees its own project's traffic of the models it may use; an admin key, all of it
    runs = {s.public_name: s.root_dir or s.run_dir for s in visible_models(request)}
    try:
        report = build_monitor(recorder.completions, runs, project=project_of(request))
    except TunesmithError as exc:  # e.g. a run's training data moved: say so, as the CLI would
        return html(pages.message_page("No monitor", str(exc)), 500)
    # a whole document of its own (figures inline), so not under the console's stricter policy
    return HTMLResponse(render_html(report))


@router.get("/console/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    if refused(request) is None:  # already carries a key, or development mode on this machine
        return RedirectResponse(_local(next), status_code=303)
    return html(pages.login_page(_local(next)))


@router.post("/console/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    if not same_origin(request):  # login CSRF: another site's page logging a visitor into its own project
        return html(pages.message_page("Refused", "a login must come from this server's own login page; open "
                                                  "/console/login here and log in again"), 403)
    form = await request.form()
    key, next_path = str(form.get("key", "")).strip(), _local(str(form.get("next", "/")))
    if not key_is_valid(request, key):
        return html(pages.login_page(next_path, "That is not one of this server's keys; give a key from its "
                                                "--api-key-file."), 401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


def same_origin(request: Request) -> bool:
    """Whether a browser's form post comes from this server's own pages: its Origin (or, from an
    older browser, its Referer) names this server's scheme, host and port, and Fetch metadata does
    not say cross-site. A post that names no origin at all is refused: every browser sends one."""
    from urllib.parse import urlsplit

    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    origin = request.headers.get("origin")
    if origin is None and request.headers.get("referer"):
        parts = urlsplit(request.headers["referer"])
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin is not None and origin.lower() == own.lower()


def _served_run(request: Request, name: str):
    try:
        served = find_model(request, name)
    except APIError:
        return None
    return served if served.run_dir is not None else None


def _inside(folder: Path, path: str) -> Path | None:
    """`path` under `folder` as a file that really lies inside it (no `..`, absolute path or symlink out)."""
    root = folder.resolve()
    target = (root / path).resolve()
    return target if target.is_relative_to(root) and target.is_file() else None


def _local(path: str) -> str:
    """Where to go after logging in: a path on this server only, never another site."""
    return path if path.startswith("/") and not path.startswith(("//", "/\\")) else "/"


def render_markdown(text: str) -> str:
    """report.md as HTML: CommonMark with tables, raw HTML in it shown as text, not run."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _include_workbench() -> None:
    """The workbench's pages and API (bench.py, api.py), under this router: registering the console registers them."""
    from tunesmith.serve.console.api import router as api_router
    from tunesmith.serve.console.bench import router as bench_router

    router.include_router(bench_router)
    router.include_router(api_router)


_include_workbench()
