"""Request bodies are bounded where they are read, for every route and before the key is checked:
a chunked body (no Content-Length) past the bound is answered 413 after the bound, not read to its
end into memory (JSON routes, the login form) or onto disk (uploads)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tunesmith.config import JobsConfig, ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.jobs.service import JobsService  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402

KEY = "key-limits"
SMALL, UPLOAD = 16 * 1024, 256 * 1024
CHUNK = 4096


MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}
FILE_PART = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="rows.jsonl"\r\n'
             b"Content-Type: application/octet-stream\r\n\r\n")
CONTENT_TYPES = {"/v1/chat/completions": ({"Content-Type": "application/json"}, b'{"model": "'),
                 "/v1/fine_tuning/jobs": ({"Content-Type": "application/json"}, b'{"model": "'),
                 # the login refuses a post from another site before reading it: this one comes from the server's page
                 "/console/login": ({"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://127.0.0.1"},
                                    b"key="),
                 "/v1/files": (MULTIPART, FILE_PART)}


def send_chunked(base_url: str, path: str, headers: dict[str, str], total: int, prefix: bytes = b"") -> tuple[int, dict]:
    """POST `total` bytes as a chunked body with no Content-Length and no last chunk, then read the
    answer: a server that waits for the body's end (it never comes) fails this by the socket's timeout."""
    host, port = base_url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Transfer-Encoding: chunked",
                *(f"{name}: {value}" for name, value in headers.items())]
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if prefix:
            connection.sendall(f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n")
        for _ in range(total // CHUNK):
            connection.sendall(f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 20:
            data = connection.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    body = answer.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("limits")
    jobs = JobsService(JobsConfig(jobs_dir=str(root / "jobs"), workers=0, max_upload_bytes=UPLOAD))
    app = create_app(ServedModels(), ServeConfig(api_keys=(KEY,), max_request_bytes=SMALL), jobs)
    with running(app) as url:
        yield url


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/console/login", "/v1/fine_tuning/jobs", "/v1/files"])
def test_a_chunked_body_without_a_key_is_refused_at_the_small_bound(base_url: str, path: str):
    headers, prefix = CONTENT_TYPES[path]
    status, body = send_chunked(base_url, path, headers, SMALL + 2 * CHUNK, prefix)
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_an_upload_with_a_key_may_reach_the_upload_bound_and_not_past_it(base_url: str, tmp_path: Path):
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0)
    rows = b"".join(json.dumps({"messages": [{"role": "user", "content": "x" * 100}]}).encode() + b"\n"
                    for _ in range(1000))  # ~130 KB: over the small bound, under the upload bound
    assert client.files.create(file=("rows.jsonl", rows), purpose="fine-tune").bytes == len(rows)
    status, body = send_chunked(base_url, "/v1/files", {"Authorization": f"Bearer {KEY}", **MULTIPART},
                                UPLOAD + 80 * 1024, FILE_PART)
    assert status == 413


def test_a_declared_length_past_the_bound_is_refused_before_a_byte_is_read(base_url: str):
    host, port = base_url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Length: {SMALL + 1}\r\n"
                           "Content-Type: application/json\r\n\r\n".encode())
        assert connection.recv(65536).startswith(b"HTTP/1.1 413")
