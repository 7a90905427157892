"""`tunesmith serve --store`: OpenAI's stored completions and tunesmith's feedback endpoint, over a
real socket with the official `openai` client, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")

from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.data.audit.pii import scrub  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402
from tunesmith.store.db import sqlite_url  # noqa: E402

KEY = "k-store"


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path) -> ServedModels:
    models = ServedModels(precision="fp32")
    models.add_base(str(tiny_model_dir), "tiny")
    return models


@pytest.fixture()
def server(served: ServedModels, tmp_path: Path):
    database = tmp_path / "completions.db"
    app = create_app(served, ServeConfig(api_keys=(KEY,), max_tokens=32, store_url=sqlite_url(database),
                                         store_scrub_pii=True))
    with running(app) as base_url:
        yield openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120), database


def ask(client, text: str, **extra):
    return client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], max_tokens=6,
                                          temperature=0, **extra)


def test_every_completion_is_kept_and_read_back_as_openai_stores_them(server) -> None:
    client, database = server
    first = ask(client, "Name a colour.", metadata={"user": "ann", "topic": "colours"})
    second = ask(client, "Name a fruit.", metadata={"user": "bob"})
    ask(client, "Not this one.", store=False)
    listed = client.chat.completions.list(model="tiny")
    assert [c.id for c in listed.data] == [first.id, second.id]  # oldest first, the store=false one absent
    assert listed.data[0].choices[0].message.content == first.choices[0].message.content
    assert [c.id for c in client.chat.completions.list(metadata={"user": "bob"}).data] == [second.id]
    page = client.chat.completions.list(limit=1)
    assert [c.id for c in page.data] == [first.id] and page.has_more
    assert [c.id for c in client.chat.completions.list(after=first.id).data] == [second.id]
    assert [c.id for c in client.chat.completions.list(order="desc").data] == [second.id, first.id]

    again = client.chat.completions.retrieve(first.id)
    assert again.usage.prompt_tokens == first.usage.prompt_tokens and again.metadata["topic"] == "colours"
    messages = client.chat.completions.messages.list(first.id)
    assert [(m.role, m.content) for m in messages.data] == [("user", "Name a colour.")]
    updated = client.chat.completions.update(first.id, metadata={"user": "ann", "reviewed": "yes"})
    assert updated.metadata == {"user": "ann", "reviewed": "yes"}

    assert client.chat.completions.delete(second.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(second.id)
    with sqlite3.connect(database) as db:  # the real file holds what the API says
        rows = db.execute("SELECT id, model, prompt_tokens, latency_ms FROM completions").fetchall()
    assert [r[0] for r in rows] == [first.id] and rows[0][1] == "tiny" and rows[0][2] > 0 and rows[0][3] > 0


def test_feedback_lands_beside_its_completion(server) -> None:
    client, database = server
    reply = ask(client, "Is this film good?")
    posted = client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object,
                         body={"score": -1, "comment": "wrong", "correction": "Yes, it is very good."})
    assert posted["completion_id"] == reply.id and posted["score"] == -1
    client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object, body={"score": 1})
    kept = client.chat.completions.retrieve(reply.id).model_extra["tunesmith"]["feedback"]
    assert [(f["score"], f["correction"]) for f in kept] == [(-1, "Yes, it is very good."), (1, None)]
    with pytest.raises(openai.BadRequestError, match="give a score"):
        client.post(f"/chat/completions/{reply.id}/feedback", cast_to=object, body={})
    with pytest.raises(openai.NotFoundError):
        client.post("/chat/completions/chatcmpl-nope/feedback", cast_to=object, body={"score": 1})
    client.chat.completions.delete(reply.id)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM feedback").fetchone()[0] == 0  # deleted with its completion


KEYS = {"k-ann": "p1", "k-amy": "p1", "k-bob": "p2"}  # two keys of one project, one of another


def test_completions_are_kept_in_their_keys_project_and_each_key_has_an_hourly_feedback_cap(served, tmp_path: Path) -> None:
    from tunesmith.store.completions import key_fingerprint

    database = tmp_path / "completions.db"
    app = create_app(served, ServeConfig(api_keys=tuple(KEYS), key_projects=KEYS, max_tokens=32,
                                         store_url=sqlite_url(database), max_feedback_per_key_per_hour=3))
    with running(app) as base_url:
        clients = {key: openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120) for key in KEYS}
        replies = {key: ask(client, f"Question number {n}.") for n, (key, client) in enumerate(clients.items())}
        with sqlite3.connect(database) as db:
            assert dict(db.execute("SELECT id, project FROM completions")) == {
                replies[key].id: project for key, project in KEYS.items()}  # each in the project of the key that asked

        def feedback(key: str, asker: str, **body):
            return clients[key].post(f"/chat/completions/{replies[asker].id}/feedback", cast_to=object, body=body)

        for score in (1, -1, 1):
            feedback("k-ann", "k-ann", score=score)
        with pytest.raises(openai.RateLimitError) as refused:  # the fourth in the hour
            feedback("k-ann", "k-ann", score=-1, correction="poisoned answer")
        assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "rate_limit_error")
        assert "max_feedback_per_key_per_hour" in refused.value.message
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 3600
        feedback("k-amy", "k-ann", score=1)  # the cap is per key: another key of the project still may
        with pytest.raises(openai.NotFoundError):  # and another project's key cannot reach the completion at all
            feedback("k-bob", "k-ann", correction="poisoned answer")
        feedback("k-bob", "k-bob", correction="fine")
    with sqlite3.connect(database) as db:
        given = db.execute("SELECT key_fingerprint, count(*), group_concat(correction) FROM feedback "
                           "GROUP BY key_fingerprint").fetchall()
    assert sorted(given) == sorted([(key_fingerprint("k-ann"), 3, None), (key_fingerprint("k-amy"), 1, None),
                                    (key_fingerprint("k-bob"), 1, "fine")])
    assert not any(key.encode() in path.read_bytes() for path in tmp_path.glob("completions.db*") for key in KEYS)


def test_streamed_answers_are_kept_whole_and_personal_data_is_scrubbed(server) -> None:
    client, database = server
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Mail me at ann@example.com"}],
                                            max_tokens=6, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    kept = client.chat.completions.list().data[-1]
    assert kept.choices[0].message.content == scrub(text)[0]  # the whole streamed answer, scrubbed as the prompt was
    messages = client.chat.completions.messages.list(kept.id).data
    assert messages[0].content == "Mail me at <EMAIL>"
    with sqlite3.connect(database) as db:
        assert "ann@example.com" not in str(db.execute("SELECT messages FROM completions").fetchall())


def test_a_server_without_a_store_refuses_store_true_and_the_list(served: ServedModels) -> None:
    with running(create_app(served, ServeConfig(max_tokens=32))) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="--store"):
            ask(client, "hello", store=True)
        assert ask(client, "hello").choices  # store left out: answered, kept nowhere
        with pytest.raises(openai.BadRequestError, match="--store"):
            client.chat.completions.list()


def _completions_at(url: str):
    from tunesmith.store.completions import Completions
    from tunesmith.store.db import open_store

    return Completions(open_store(url))


def _keep(completions, created_at: int, **extra):
    return completions.add(project="default", model="m", kind="base", endpoint="chat",
                           messages=[{"role": "user", "content": "hi"}], answer="hello", choices=[], params={},
                           latency_ms=1.0, created_at=created_at, **extra)


def check_store_reads_and_retention(completions) -> None:
    import time

    now = int(time.time())
    old, new = _keep(completions, now - 10 * 86400, metadata_={"app": "a"}), _keep(completions, now, metadata_={"app": "b"})
    completions.add_feedback(None, old.id, score=-1, comment=None, correction="better")
    completions.add_feedback(None, new.id, score=1, comment="ok", correction=None)
    assert [r.id for r in completions.list(None, metadata={"app": "b"}).rows] == [new.id]
    assert completions.purge(7 * 86400) == 1  # older than a week: the old row and its feedback go
    assert [r.id for r in completions.rows()] == [new.id]
    assert list(completions.feedback()) == [new.id]
    assert completions.get("other-project", new.id) is None  # another project's id reads as missing
    check_feedback_cap(completions, new.id)


def check_feedback_cap(completions, completion_id: str) -> None:
    """Two a key may give in an hour: the third is refused (and not written), another key's is not."""
    from tunesmith.store.completions import FeedbackCapReached, key_fingerprint

    mine, yours = key_fingerprint("k-mine"), key_fingerprint("k-yours")
    for score in (1, -1):
        completions.add_feedback(None, completion_id, score=score, comment=None, correction=None, key_fingerprint=mine,
                                 cap_per_hour=2)
    with pytest.raises(FeedbackCapReached) as refused:
        completions.add_feedback(None, completion_id, score=1, comment=None, correction="x", key_fingerprint=mine,
                                 cap_per_hour=2)
    assert refused.value.cap == 2 and 1 <= refused.value.retry_after <= 3600
    completions.add_feedback(None, completion_id, score=1, comment=None, correction=None, key_fingerprint=yours,
                             cap_per_hour=2)
    given = completions.feedback([completion_id])[completion_id]
    assert [f.key_fingerprint for f in given][-3:] == [mine, mine, yours] and "x" not in [f.correction for f in given]


def test_retention_deletes_old_completions_with_their_feedback_on_sqlite(tmp_path: Path) -> None:
    check_store_reads_and_retention(_completions_at(sqlite_url(tmp_path / "c.db")))


def test_the_same_store_on_postgresql(postgres_url: str) -> None:
    check_store_reads_and_retention(_completions_at(postgres_url))
