"""Hand-written properties for what schemathesis does not generate: multipart uploads, bodies that
are not JSON, texts with a lone surrogate (valid JSON, invalid UTF-8: schemathesis leaves them out),
and requests that get as far as the model and the job rules (a fuzzed chat names the served model,
a fuzzed job an uploaded file, with every parameter inside or at the edge of its range)."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import requests
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.integration.fuzz_checks import Prober
from tests.integration.fuzz_server import BASE_MODEL, MAX_TOKENS, SENDERS

# A text with one lone surrogate in it, and texts that have one a quarter of the time.
with_lone_surrogate = st.builds(lambda head, surrogate, tail: head + surrogate + tail, st.text(max_size=6),
                                st.characters(categories=["Cs"]), st.text(max_size=6))


def texts(max_size: int = 20) -> st.SearchStrategy[str]:
    return st.one_of(st.text(max_size=max_size), st.text(max_size=max_size), st.text(max_size=max_size),
                     with_lone_surrogate)


def walk_settings(examples: int):
    """Bounded, reproducible: a fixed seed per walk, no shrinking (every example is recorded), no deadline."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


# -- uploads (multipart) ---------------------------------------------------------------------------
def owner_of(key: str) -> str | None:
    return {"alpha": "alpha", "beta": "beta"}.get(key)


def check_upload(prober: Prober, key: str, content: bytes, filename: str, purpose: str) -> None:
    """POST /v1/files as multipart; an accepted file reads back as sent for its project only."""
    request = requests.Request("POST", f"{prober.target.root_url}/v1/files", files={"file": (filename, content)},
                               data={"purpose": purpose})
    sent, response = prober.send("POST /v1/files", key, request)
    if response is None or response.status_code != 200:
        return
    file_id, root = response.json()["id"], prober.target.root_url
    _, back = prober.send("GET /v1/files/{file_id}/content", key, requests.Request(
        "GET", f"{root}/v1/files/{quote(file_id, safe='')}/content"))
    if back is not None and (back.status_code != 200 or back.content != content):
        prober.ledger.found("wrong answer", sent, back.status_code, f"read back {back.content[:100]!r}, sent "
                            f"{content[:100]!r}", "content")
    others = [k for k in ("alpha", "beta") if k != owner_of(key)]
    for other in others:
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
            label = "GET /v1/files/{file_id}" + path.removeprefix(f"/v1/files/{file_id}")
            _, seen = prober.send(label, other, requests.Request("GET", root + path))
            if seen is not None and seen.status_code != 404:
                prober.ledger.found("cross-project leak", sent, seen.status_code, f"{other} reads {path}: "
                                    f"{seen.text[:200]}", "upload")


FILE_PURPOSES = ["fine-tune", "batch", "assistants", "vision", "user_data", "evals"]
chat_lines = st.lists(st.fixed_dictionaries({"messages": st.just([{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": "hello"}])}),
                      min_size=1, max_size=3).map(lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode())


def upload_walk(prober: Prober, examples: int) -> None:
    @walk_settings(examples)
    @given(key=st.sampled_from(SENDERS), content=st.one_of(chat_lines, st.binary(max_size=600)),
           filename=st.one_of(st.text(max_size=24).map(lambda name: name + ".jsonl"), st.text(max_size=40)),
           purpose=st.one_of(st.sampled_from(FILE_PURPOSES), st.text(max_size=16)))
    def walk(key: str, content: bytes, filename: str, purpose: str) -> None:
        check_upload(prober, key, content, filename, purpose)

    walk()


# -- bodies that are not JSON ----------------------------------------------------------------------
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", None]


def raw_walk(prober: Prober, labels: list[str], valid_bodies: list[dict], examples: int) -> None:
    """Bodies that are not what a route takes at all: any bytes, JSON cut short, under any content type."""
    valid = [json.dumps(body).encode() for body in valid_bodies]

    @walk_settings(examples)
    @given(label=st.sampled_from(labels), key=st.sampled_from(["beta", "alpha", "admin", "none"]),
           body=st.one_of(st.binary(max_size=300), st.builds(lambda b, n: b[:n], st.sampled_from(valid),
                                                             st.integers(0, 120))),
           content_type=st.sampled_from(CONTENT_TYPES))
    def walk(label: str, key: str, body: bytes, content_type: str | None) -> None:
        method, path = label.split(" ", 1)
        path = path.format_map(_Filled(completion_id=prober.target.ids["beta"]["completion"][0], job_id="ftjob-none"))
        headers = {"Content-Type": content_type} if content_type else {}
        prober.send(label, key, requests.Request(method, prober.target.root_url + path, data=body, headers=headers))

    walk()


def read_back(prober: Prober, path: str) -> None:
    """Every page of a list, by each project and the admin: what the walk stored must read back
    (one row the server cannot write out would fail the list for good)."""
    for key in ("alpha", "beta", "admin"):
        after = None
        for _ in range(50):
            _, page = prober.send(f"GET {path}", key, requests.Request(
                "GET", prober.target.root_url + path, params={"limit": 100, **({"after": after} if after else {})}))
            if page is None or page.status_code != 200 or not page.json().get("has_more"):
                break
            after = page.json()["last_id"]


# -- chats and completions that reach the model -----------------------------------------------------
def sampling(max_n: int) -> st.SearchStrategy[dict]:
    """What chat and text completions share, each field inside or at the edge of its range (n up to
    `max_n` of the 16 allowed: each choice costs its tokens' time)."""
    return st.fixed_dictionaries({}, optional={
        "temperature": st.floats(0, 2), "top_p": st.floats(0, 1, exclude_min=True), "n": st.integers(1, max_n),
        "max_tokens": st.integers(1, MAX_TOKENS), "stop": st.one_of(texts(4), st.lists(texts(4), max_size=4)),
        "seed": st.integers(-(2**63), 2**63 - 1), "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "frequency_penalty": st.just(0), "presence_penalty": st.just(0), "user": texts(8)})


chat_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant"])},
    optional={"content": st.one_of(st.none(), texts(60), st.lists(st.fixed_dictionaries(
        {"type": st.just("text"), "text": texts(20)}), max_size=3)), "name": texts(8)})
chat_only = st.fixed_dictionaries({"messages": st.lists(chat_message, min_size=1, max_size=3)}, optional={
    "logprobs": st.booleans(), "top_logprobs": st.integers(0, 20), "max_completion_tokens": st.integers(1, MAX_TOKENS),
    "metadata": st.dictionaries(texts(8), texts(8), max_size=3), "store": st.booleans()})
completion_only = st.fixed_dictionaries({"prompt": st.one_of(texts(60), st.lists(texts(30), max_size=3))},
                                        optional={"logprobs": st.integers(0, 5)})


# The edges of each range, tried first (hypothesis's explicit phase), with a plain chat and prompt.
EDGE_SAMPLING = [{"temperature": 0.0}, {"temperature": 5e-324}, {"temperature": 2.0}, {"top_p": 5e-324},
                 {"top_p": 1.0}, {"max_tokens": 1}, {"stop": ""}, {"seed": -(2**63)}, {"seed": 2**63 - 1}]
EDGE_PROMPTS = ["", [], [""]]
EDGE_INTEGERS = [-(2**63) - 1, -1, 0, 2**63, 2**64]


def with_edges(walk, edges: list[dict]):
    for edge in edges:
        walk = example(**edge)(walk)
    return walk


def generation_edges(max_n: int) -> list[dict]:
    plain = {"key": "beta", "model": BASE_MODEL, "chat_fields": {"messages": [{"role": "user", "content": "hi"}]},
             "completion_fields": {"prompt": "hi"}}
    return ([{**plain, "chat": chat, "common": common} for common in EDGE_SAMPLING + [{"n": max_n}]
             for chat in (True, False)]
            + [{**plain, "chat": False, "common": {}, "completion_fields": {"prompt": prompt}} for prompt in EDGE_PROMPTS])


def generation_walk(prober: Prober, examples: int, max_n: int = 4, budget_s: float = 45) -> None:
    """Chats and completions of the served base model and alpha's fine-tuned one, by all three keys;
    examples left when `budget_s` runs out are counted in the ledger, not sent."""
    models, deadline = [BASE_MODEL, *prober.target.ids["alpha"]["model"]], time.monotonic() + budget_s

    @walk_settings(examples)
    @given(chat=st.booleans(), key=st.sampled_from(["alpha", "beta", "admin"]),
           model=st.one_of(st.sampled_from(models), st.sampled_from(models), st.sampled_from(models), with_lone_surrogate),
           common=sampling(max_n), chat_fields=chat_only, completion_fields=completion_only)
    def walk(chat: bool, key: str, model: str, common: dict, chat_fields: dict, completion_fields: dict) -> None:
        label = "POST /v1/chat/completions" if chat else "POST /v1/completions"
        if time.monotonic() > deadline:
            prober.ledger.skipped[label] += 1
            return
        prober.post_json(label, key, {"model": model, **common, **(chat_fields if chat else completion_fields)})

    with_edges(walk, generation_edges(max_n))()
    read_back(prober, "/v1/chat/completions")


# -- stored completions and their feedback ----------------------------------------------------------
metadata = st.dictionaries(texts(8), texts(12), max_size=3)
feedback = st.fixed_dictionaries({}, optional={"score": st.one_of(st.floats(), st.integers(), st.booleans()),
                                               "comment": texts(30), "correction": texts(30)})


def stored_walk(prober: Prober, examples: int) -> None:
    """A chat kept with any metadata, its metadata changed, feedback given; then every read of it."""

    @walk_settings(examples)
    @given(key=st.sampled_from(["alpha", "beta"]), first=metadata, second=metadata, notes=st.lists(feedback, max_size=2))
    def walk(key: str, first: dict, second: dict, notes: list[dict]) -> None:
        _, reply = prober.post_json("POST /v1/chat/completions", key, {
            "model": BASE_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "metadata": first})
        if reply is None or reply.status_code != 200:
            return
        completion = f"/v1/chat/completions/{reply.json()['id']}"
        prober.post_json("POST /v1/chat/completions/{completion_id}", key, {"metadata": second},
                         path=completion)
        for note in notes:
            prober.post_json("POST /v1/chat/completions/{completion_id}/feedback", key, note,
                             path=f"{completion}/feedback")
        for suffix in ("", "/messages", "/feedback"):
            prober.send("GET /v1/chat/completions/{completion_id}" + suffix, key,
                        requests.Request("GET", prober.target.root_url + completion + suffix))

    walk()
    read_back(prober, "/v1/chat/completions")


# -- jobs that get past the files check ------------------------------------------------------------
def auto_or(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.just("auto"), values)


hyperparameters = st.fixed_dictionaries({}, optional={
    "n_epochs": auto_or(st.integers()), "batch_size": auto_or(st.integers()),
    "learning_rate_multiplier": auto_or(st.floats()), "beta": auto_or(st.floats())})
method = st.fixed_dictionaries({"type": st.sampled_from(["supervised", "dpo", "reinforcement"])}, optional={
    "supervised": st.fixed_dictionaries({}, optional={"hyperparameters": hyperparameters}),
    "dpo": st.fixed_dictionaries({}, optional={"hyperparameters": hyperparameters})})
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts(10))
# tunesmith's own settings, by the names a job may set (tests/integration/jobs_service.TINY_SETTINGS) and others
setting_names = st.sampled_from(["max_steps", "save_every", "eval_every", "learning_rate", "warmup_ratio",
                                 "batch_size", "gradient_accumulation", "rank", "alpha", "dropout", "max_length",
                                 "general_text", "device", "seed"])
tunesmith_settings = st.dictionaries(
    st.sampled_from(["train", "lora", "data", "eval", "task", "preference", "method", "test_file"]),
    st.one_of(scalars, st.dictionaries(setting_names, scalars, max_size=3)), max_size=3)
job_fields = st.fixed_dictionaries({}, optional={
    "hyperparameters": hyperparameters, "method": method, "suffix": texts(70), "seed": st.integers(),
    "metadata": st.dictionaries(texts(8), texts(8), max_size=3), "tunesmith": tunesmith_settings})


def job_walk(prober: Prober, examples: int) -> None:
    """Beta's jobs on a file it uploads first (the walks before may have deleted its others); no
    worker takes them: they stay queued."""
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": f"Say {i}."},
                                            {"role": "assistant", "content": str(i)}]}) + "\n" for i in range(8))
    _, uploaded = prober.send("POST /v1/files", "beta", requests.Request(
        "POST", f"{prober.target.root_url}/v1/files", files={"file": ("jobs.jsonl", rows.encode())},
        data={"purpose": "fine-tune"}))
    assert uploaded is not None and uploaded.status_code == 200, uploaded and uploaded.text
    training_file = uploaded.json()["id"]

    @walk_settings(examples)
    @given(fields=job_fields, training_file=st.one_of(st.just(training_file), st.just(training_file),
                                                      st.just(training_file), with_lone_surrogate))
    def walk(fields: dict, training_file: str) -> None:
        prober.post_json("POST /v1/fine_tuning/jobs", "beta",
                         {"model": BASE_MODEL, "training_file": training_file, **fields})

    edges = [{"seed": n} for n in EDGE_INTEGERS] + [
        {"hyperparameters": {name: n}} for name in ("n_epochs", "batch_size") for n in EDGE_INTEGERS]
    with_edges(walk, [{"fields": edge, "training_file": training_file} for edge in edges])()
    read_back(prober, "/v1/fine_tuning/jobs")


class _Filled(dict):
    """A route's path parameters: the ones given, and "none" for any other (a model name, an export)."""

    def __missing__(self, key: str) -> str:
        return "none"

