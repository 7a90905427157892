"""The web console over a real socket: the page of served models, a run's report and its images,
nothing outside the run folder, and the key check that pages share with the API (login cookie)."""

from __future__ import annotations

import dataclasses
import http.client
import importlib.util
import json
import struct
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")
pytest.importorskip("markdown_it", reason="the console needs markdown-it-py (pip install -e .[serve])")

from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.db import sqlite_url  # noqa: E402

KEY = "k-console"
REPORT = """# Run demo-run

| model | accuracy |
|---|---|
| base zero-shot | 0.52 |
| fine-tuned | 0.81 |

![loss](loss.png)
![comparison](eval/comparison.png)

<script>alert("report")</script>
"""


def png(width: int, height: int) -> bytes:
    """A real PNG of one colour (a browser test checks that the report's images draw)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x2b\x6e\x2f" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


LOSS_PNG, COMPARISON_PNG = png(40, 20), png(30, 30)


def make_report_run(folder: Path) -> Path:
    """A run folder as `tunesmith train` leaves it, as far as the console reads it."""
    (folder / "eval").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"method": "sft"}))
    (folder / "config.yaml").write_text("train:\n  method: sft\n")
    (folder / "report.md").write_text(REPORT)
    (folder / "loss.png").write_bytes(LOSS_PNG)
    (folder / "eval" / "comparison.png").write_bytes(COMPARISON_PNG)
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> ServedModels:
    """The tiny base, and a 'run' answering with the same weights whose folder holds a report."""
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), "tiny")
    root = tmp_path_factory.mktemp("console")
    (root / "secret.png").write_bytes(b"outside the run folder")
    run_dir = make_report_run(root / "demo-run")
    (run_dir / "escape.png").symlink_to(root / "secret.png")
    serve_report_run(models, run_dir)
    return models


def serve_report_run(models: ServedModels, run_dir: Path) -> None:
    """`demo-run`: the tiny base's weights under a run's name, with the run's folder."""
    models.served["demo-run"] = dataclasses.replace(models.served["tiny"], name="demo-run", kind="model",
                                                    run_dir=run_dir, parent="tiny", generation=2)


def request(base_url: str, method: str, path: str, *, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request exactly as written (no redirect followed, no path tidied up)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def page(base_url: str, path: str, **headers) -> tuple[int, str]:
    status, _, body = request(base_url, "GET", path, headers=headers)
    return status, body.decode()


def test_the_page_lists_each_served_model_with_its_chat_box(served: ServedModels, tmp_path: Path) -> None:
    config = ServeConfig(max_tokens=8, store_url=sqlite_url(tmp_path / "completions.db"))
    with running(create_app(served, config)) as base_url:
        status, html = page(base_url, "/")
        assert status == 200 and page(base_url, "/console")[1] == html
        assert 'data-model="tiny"' in html and 'data-model="demo-run"' in html
        assert html.count('class="chat"') == 2 and 'data-store="on"' in html and "store-note" not in html
        run_dir = served.served["demo-run"].run_dir
        assert f">{run_dir.name}<" in html and str(run_dir.parent) not in html  # the folder's name, no server path
        assert '<dd class="fact-generation">2</dd>' in html
        assert html.count("report-link") == 1 and 'href="/console/runs/demo-run/report"' in html
        status, headers, script = request(base_url, "GET", "/console/static/console.js")
        assert status == 200 and b"/feedback" in script and headers["content-type"].startswith("text/javascript")


def test_without_a_store_the_page_says_feedback_needs_serve_store(served: ServedModels) -> None:
    with running(create_app(served, ServeConfig(max_tokens=8))) as base_url:
        status, html = page(base_url, "/")
        assert status == 200 and 'id="store-note"' in html and "tunesmith serve --store" in html
        assert 'data-store="off"' in html
        status, html = page(base_url, "/console/monitor")
        assert status == 200 and "--store" in html


def test_a_run_report_renders_as_html_with_its_images(served: ServedModels) -> None:
    with running(create_app(served, ServeConfig(max_tokens=8))) as base_url:
        status, html = page(base_url, "/console/runs/demo-run/report")
        assert status == 200 and "<table>" in html and "<th>accuracy</th>" in html and "<td>0.81</td>" in html
        assert '<base href="/console/runs/demo-run/files/">' in html and '<img src="loss.png" alt="loss"' in html
        assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # the report's raw HTML stays text
        status, headers, body = request(base_url, "GET", "/console/runs/demo-run/files/loss.png")
        assert status == 200 and body == LOSS_PNG and headers["content-type"] == "image/png"
        assert request(base_url, "GET", "/console/runs/demo-run/files/eval/comparison.png")[2] == COMPARISON_PNG
        assert page(base_url, "/console/runs/tiny/report")[0] == 404  # a base model has no run folder


@pytest.mark.parametrize("path", ["../secret.png", "%2e%2e/secret.png", "..%2fsecret.png", "eval/../../secret.png",
                                  "/etc/passwd", "%2fetc%2fpasswd", "escape.png", "model.safetensors", "config.yaml",
                                  "missing.png"])
def test_files_outside_the_run_folder_or_of_other_types_are_refused(served: ServedModels, path: str) -> None:
    with running(create_app(served, ServeConfig(max_tokens=8))) as base_url:
        status, _, body = request(base_url, "GET", f"/console/runs/demo-run/files/{path}")
        assert status == 404 and b"outside the run folder" not in body and b"root:" not in body


def test_with_keys_pages_need_a_login_and_its_cookie_opens_the_api(served: ServedModels, tmp_path: Path) -> None:
    config = ServeConfig(api_keys=(KEY,), max_tokens=4, store_url=sqlite_url(tmp_path / "completions.db"))
    with running(create_app(served, config)) as base_url:
        status, headers, _ = request(base_url, "GET", "/")
        assert status == 303 and headers["location"] == "/console/login?next=%2F"
        assert request(base_url, "GET", "/console/runs/demo-run/files/loss.png")[0] == 303
        status, form = page(base_url, "/console/login?next=%2F")
        assert status == 200 and 'id="login-form"' in form

        form_headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": base_url.removesuffix("/v1")}
        status, headers, body = request(base_url, "POST", "/console/login", body=b"key=wrong&next=%2F",
                                        headers=form_headers)
        assert status == 401 and b'id="login-error"' in body and "set-cookie" not in headers
        status, headers, _ = request(base_url, "POST", "/console/login", body=f"key={KEY}&next=%2F".encode(),
                                     headers=form_headers)
        cookie = headers["set-cookie"]
        assert status == 303 and headers["location"] == "/"
        assert cookie.startswith(f"tunesmith_key={KEY};") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        logged_in = {"Cookie": f"tunesmith_key={KEY}"}
        status, html = page(base_url, "/", **logged_in)
        assert status == 200 and 'data-model="tiny"' in html
        status, headers, _ = request(base_url, "POST", "/console/login", body=f"key={KEY}&next=//evil.example".encode(),
                                     headers=form_headers)
        assert headers["location"] == "/"  # never sent on to another site
        for other in ({"Origin": "https://evil.example"}, {"Origin": None, "Referer": "https://evil.example/x"},
                      {"Origin": None}, {"Sec-Fetch-Site": "cross-site"}):  # login CSRF: refused, no cookie set
            crafted = {key: value for key, value in (form_headers | other).items() if value is not None}
            status, headers, _ = request(base_url, "POST", "/console/login", body=f"key={KEY}&next=%2F".encode(),
                                         headers=crafted)
            assert status == 403 and "set-cookie" not in headers, other

        chat = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}).encode()
        json_headers = {"Content-Type": "application/json"}
        status, _, body = request(base_url, "POST", "/v1/chat/completions", body=chat, headers=json_headers | logged_in)
        assert status == 200
        completion_id = json.loads(body)["id"]
        status, _, body = request(base_url, "POST", f"/v1/chat/completions/{completion_id}/feedback",
                                  body=b'{"score": 1}', headers=json_headers | logged_in)
        assert status == 200 and json.loads(body)["score"] == 1
        wrong = {"Cookie": "tunesmith_key=wrong"}
        assert request(base_url, "POST", "/v1/chat/completions", body=chat, headers=json_headers | wrong)[0] == 401
        assert request(base_url, "GET", "/", headers=wrong)[0] == 303
        bad_bearer = logged_in | {"Authorization": "Bearer wrong"}  # a header, when sent, is what counts
        assert request(base_url, "POST", "/v1/chat/completions", body=chat, headers=json_headers | bad_bearer)[0] == 401
        assert request(base_url, "GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})[0] == 200


def test_the_monitor_page_shows_the_monitor_or_says_what_is_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    models = ServedModels(precision="fp32")  # the base alone: traffic only, no run's training data to read
    models.add_base(str(tiny_model_dir), "tiny")
    config = ServeConfig(max_tokens=8, store_url=sqlite_url(tmp_path / "completions.db"))
    with running(create_app(models, config)) as base_url:
        chat = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}).encode()
        assert request(base_url, "POST", "/v1/chat/completions", body=chat,
                       headers={"Content-Type": "application/json"})[0] == 200
        status, html = page(base_url, "/console/monitor")
    assert status == 200
    if importlib.util.find_spec("tunesmith.improve.monitor") is None:
        assert 'id="message"' in html and "no monitor" in html
    else:
        assert "<html" in html.lower() and "tiny" in html
