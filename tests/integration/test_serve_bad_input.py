"""Requests that answered a traceback or a plain 500: each is now a 400 naming the field, and what
was already done for the request is not lost (a generated answer still reaches its client when the
store cannot keep it; an upload refused for its name leaves no bytes behind)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("sqlalchemy", reason="fine-tuning jobs need the serve extra (pip install -e .[serve])")

from tunesmith.config import JobsConfig, ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.jobs.service import JobsService  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.db import sqlite_url  # noqa: E402

STRICT_TEMPLATE = (  # Llama 2's and Mistral's rule: user and assistant turns alternate, or raise_exception
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def strict_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("strict") / "strict"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = STRICT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, strict_model_dir: Path):
    root = tmp_path_factory.mktemp("bad-input")
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), "tiny")
    models.add_base(str(strict_model_dir), "strict")
    jobs = JobsService(JobsConfig(jobs_dir=str(root / "jobs"), workers=0))
    config = ServeConfig(store_url=sqlite_url(root / "completions.db"))
    with running(create_app(models, config, jobs)) as base_url:
        yield openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=120), root


def test_a_job_seed_past_64_bits_is_a_400_naming_it(server):
    client, _ = server
    upload = client.files.create(file=("rows.jsonl", b'{"messages": [{"role": "user", "content": "hi"}, '
                                                     b'{"role": "assistant", "content": "hello"}]}\n'),
                                 purpose="fine-tune")
    for seed in (2**63, 2**70, -1):
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model="tiny", training_file=upload.id, seed=seed)
        assert refused.value.body["param"] == "seed"


def test_a_chat_template_that_raises_is_a_400_naming_the_messages(server):
    client, _ = server
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="strict", max_tokens=2, messages=[
            {"role": "user", "content": "hi"}, {"role": "user", "content": "again"}])
    assert refused.value.body["param"] == "messages" and "alternate" in refused.value.body["message"]
    assert client.chat.completions.create(model="strict", max_tokens=2,
                                          messages=[{"role": "user", "content": "hi"}]).choices


def test_a_filename_longer_than_the_store_keeps_is_a_400_and_leaves_no_bytes(server):
    client, root = server
    blobs = root / "jobs" / "files"
    before = {p for p in blobs.rglob("*") if p.is_file()}
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("x" * 600 + ".jsonl", b'{"prompt": "a", "completion": "b"}\n'), purpose="fine-tune")
    assert refused.value.body["param"] == "file"
    assert {p for p in blobs.rglob("*") if p.is_file()} == before


def test_an_answer_reaches_its_client_when_the_store_cannot_keep_it(server):
    client, root = server
    with sqlite3.connect(root / "completions.db") as database:  # the store breaks under the running server
        database.execute("DROP TABLE feedback")
        database.execute("DROP TABLE completions")
    reply = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0, store=True,
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="tiny", max_tokens=4, temperature=0, store=True, stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == \
        reply.choices[0].message.content


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi \\ud800"}]}'),
    ("/v1/completions", b'{"model": "tiny", "max_tokens": 2, "prompt": "\\udc00 there"}'),
    ("/v1/chat/completions", b'{"model": "tiny", "max_tokens": 2, "store": true, "metadata": {"k": "\\ud800"}, '
                             b'"messages": [{"role": "user", "content": "hi"}]}'),
    ("/v1/fine_tuning/jobs", b'{"model": "tiny", "training_file": "file-\\ud800"}'),
])
def test_text_that_is_json_but_not_unicode_is_a_400_not_a_500(server, path: str, body: bytes):
    """A lone surrogate is valid JSON (`"\\ud800"`) and no UTF-8 text: the tokenizer, SQLite and
    the error answer itself failed on it with 500s (found by the schema-driven fuzzing)."""
    httpx = pytest.importorskip("httpx2")
    client, _ = server
    answer = httpx.post(str(client.base_url).rstrip("/") + path.removeprefix("/v1"), content=body,
                        headers={"Content-Type": "application/json", "Authorization": "Bearer local"}, timeout=60)
    assert answer.status_code == 400, answer.text
    assert "surrogate" in answer.json()["error"]["message"]
    assert client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": "hi"}])


def test_an_id_in_the_path_that_is_not_unicode_is_a_400(server):
    httpx = pytest.importorskip("httpx2")
    client, _ = server
    answer = httpx.get(str(client.base_url).rstrip("/") + "/files/file-%ED%A0%80",
                       headers={"Authorization": "Bearer local"}, timeout=60)
    assert answer.status_code in (400, 404), answer.text


def test_an_empty_completion_prompt_is_a_400(server):
    client, _ = server
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny", prompt="", max_tokens=2)
    assert refused.value.body["param"] == "prompt"
