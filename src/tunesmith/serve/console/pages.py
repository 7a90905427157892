"""The console's HTML, rendered on the server: plain strings with every value escaped, so the page
works without a build step and a model name or a report can never inject markup. The chat itself is
console.js, which only ever writes replies as text."""

from __future__ import annotations

from html import escape
from pathlib import Path
from urllib.parse import quote

from tunesmith.serve.models import GENERATIVE, Served

# The console's own pages load nothing from elsewhere and run no inline script.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                           "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'")


NAV = (("models", "/"), ("data", "/console/data"), ("fine-tunes", "/console/jobs"), ("compare", "/console/compare"),
       ("ship", "/console/ship"), ("monitor", "/console/monitor"))


def document(title: str, body: str, *, store: bool = False, base: str | None = None,
             scripts: tuple[str, ...] = ()) -> str:
    """A whole page: the header with its links, then `body`; `scripts` are the page's own modules
    (console/static), after the chat's console.js."""
    base_tag = f'<base href="{escape(base)}">' if base else ""
    modules = "".join(f'\n<script type="module" src="/console/static/{escape(name)}"></script>' for name in scripts)
    links = " ".join(f'<a id="nav-{name.split()[0].replace("-", "")}" href="{href}">{name}</a>' for name, href in NAV)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · tunesmith</title>
{base_tag}
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/console.js" defer></script>{modules}
</head>
<body data-store="{'on' if store else 'off'}">
<header class="top"><a class="brand" href="/">tunesmith</a>
<nav aria-label="console">{links}</nav></header>
<main>
{body}
</main>
</body>
</html>
"""


def models_page(served: list[Served], *, store: bool) -> str:
    """The served models, each with its facts, a link to its run's report and a chat box."""
    note = ("" if store else '<p id="store-note" class="note">Feedback needs <code>tunesmith serve --store</code>: '
                              "this server keeps no completions, so replies come without thumbs or corrections.</p>")
    cards = "\n".join(_model_card(model, store=store) for model in served) or \
        '<p id="no-models" class="note">No model is served yet.</p>'
    return document("models", f"<h1>Served models</h1>\n{note}\n{cards}", store=store)


def _model_card(served: Served, *, store: bool) -> str:
    facts = [("kind", served.kind), ("base", served.parent), ("run folder", Path(served.run_dir).name if served.run_dir else None),  # no server path
             ("generation", served.generation)]
    rows = "".join(f'<dt>{label}</dt><dd class="fact-{label.replace(" ", "-")}">{escape(str(value))}</dd>'
                   for label, value in facts if value is not None)
    report = ""
    if has_report(served):
        report = f'<p><a class="report-link" href="/console/runs/{quote(served.public_name, safe="")}/report">report</a></p>'
    if served.kind in GENERATIVE:
        chat = f"""<div class="chat" data-model="{escape(served.public_name)}">
<ol class="messages"></ol>
<form class="chat-form"><textarea class="chat-input" name="message" rows="2" placeholder="Write a message"
 aria-label="message to {escape(served.public_name)}"></textarea><button class="chat-send" type="submit">Send</button></form>
</div>"""
    else:
        chat = f'<p class="note">A {escape(served.kind)} run: it answers on its own endpoint, not in a chat.</p>'
    return f"""<section class="model" data-model="{escape(served.public_name)}">
<h2 class="model-name">{escape(served.public_name)}</h2>
<dl class="facts">{rows}</dl>
{report}
{chat}
</section>"""


def has_report(served: Served) -> bool:
    return served.run_dir is not None and (Path(served.run_dir) / "report.md").is_file()


def report_page(name: str, report_html: str, files: str | None = None) -> str:
    """A run's report.md as HTML; its relative image links resolve into the run's files route."""
    files = files or f"/console/runs/{quote(name, safe='')}/files/"
    body = f'<h1 class="report-title">Report of {escape(name)}</h1>\n<article class="report">{report_html}</article>'
    return document(f"report of {name}", body, base=files)


def login_page(next_path: str, error: str | None = None) -> str:
    message = f'<p id="login-error" class="error">{escape(error)}</p>' if error else ""
    return document("log in", f"""<h1>Log in</h1>
<p>This server checks API keys. Give one of the keys from its <code>--api-key-file</code>; the browser keeps
it in a cookie for this site only.</p>
{message}
<form id="login-form" method="post" action="/console/login">
<input type="hidden" name="next" value="{escape(next_path)}">
<label>API key <input id="login-key" name="key" type="password" autocomplete="current-password" required></label>
<button id="login-submit" type="submit">Log in</button>
</form>""")


def message_page(title: str, message: str) -> str:
    """A page that only says why it cannot show what was asked, and what to do."""
    return document(title, f'<h1>{escape(title)}</h1>\n<p id="message" class="note">{escape(message)}</p>')
