"""tunesmith serve over a real socket on 127.0.0.1, driven by the official `openai` client.

The served models: a tiny Llama as the base, two LoRA adapter runs on it (random, non-zero LoRA
weights, so each answers differently), and a classifier run trained by tunesmith itself.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")

from tests.integration.helpers import tiny_config  # noqa: E402
from tests.integration.test_eval import write_reviews_csv  # noqa: E402
from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402

KEY, ADMIN = "test-key", "admin-key"
PROMPTS = ["Name a colour.", "What is two plus two?", "Say hello in French.", "Which planet is largest?",
           "Give me a word that rhymes with cat, and then a long explanation of why it rhymes."]


def make_adapter_run(folder: Path, base_dir: Path, seed: int) -> Path:
    """A run folder holding a LoRA adapter on `base_dir` with random non-zero weights (as peft saves it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(folder / "adapter")
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(folder / "adapter")
    (folder / "manifest.json").write_text(json.dumps({"method": "sft", "base_model": {"spec": str(base_dir)}}))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    import tunesmith

    root = tmp_path_factory.mktemp("serve-runs")
    found = {name: make_adapter_run(root / name, tiny_model_dir, seed)
             for name, seed in (("bot-a", 1), ("bot-b", 2), ("bot-c", 3))}
    train = write_reviews_csv(root / "reviews.csv", 64, seed=1)
    config = tiny_config(root, tiny_model_dir, train, "train.method=classify", "data.columns.text=review_text",
                         "data.columns.label=verdict", "lora.enabled=false", "train.max_steps=4", "eval.test=null",
                         name="tone")
    found["tone"] = tunesmith.train(config, show_progress=False).run_dir
    return found


@pytest.fixture(scope="module")
def server(runs: dict[str, Path]):
    models = ServedModels(max_loaded_adapters=2, precision="fp32")  # the references below are fp32 (bf16 rounds by batch shape)
    for name in ("bot-a", "bot-b", "tone"):
        models.add_run(runs[name])
    app = create_app(models, ServeConfig(api_keys=(KEY,), admin_keys=(ADMIN,), max_queue=32, max_batch=8,
                                         max_tokens=256))
    with running(app) as base_url:
        yield base_url, app


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=120)


def base_name_of(client) -> str:
    return next(m.id for m in client.models.list().data if getattr(m, "kind", None) == "base")


def greedy(client, model: str, prompt: str, max_tokens: int = 12) -> str:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                           temperature=0, max_tokens=max_tokens)
    return reply.choices[0].message.content


def test_models_lists_the_base_the_adapters_with_their_parent_and_the_classifier(client):
    cards = {m.id: m for m in client.models.list().data}
    base = base_name_of(client)
    assert set(cards) == {base, "bot-a", "bot-b", "tone"}
    assert cards["bot-a"].parent == base and cards["bot-b"].parent == base and cards[base].parent is None
    assert client.models.retrieve("bot-a").id == "bot-a"


def test_greedy_chat_equals_tunesmith_generate_and_adapters_answer_differently(client, runs, tiny_model_dir):
    from tunesmith.models.generate import generate, load_for_generation

    base = base_name_of(client)
    answers = {name: [greedy(client, name, p) for p in PROMPTS[:3]] for name in (base, "bot-a", "bot-b")}
    assert answers["bot-a"] != answers["bot-b"] and answers["bot-a"] != answers[base]
    for name, target in ((base, str(tiny_model_dir)), ("bot-a", str(runs["bot-a"]))):
        loaded = load_for_generation(target, precision="fp32")
        expected = generate(loaded, PROMPTS[:3], max_new_tokens=12, batch_size=1).texts
        assert [a.strip() for a in answers[name]] == expected  # the same generation as `tunesmith generate`


def test_streaming_sends_the_same_text_then_usage_only_when_asked(client):
    whole = client.chat.completions.create(model="bot-a", messages=[{"role": "user", "content": PROMPTS[4]}],
                                           temperature=0, max_tokens=20)
    chunks = list(client.chat.completions.create(model="bot-a", messages=[{"role": "user", "content": PROMPTS[4]}],
                                                 temperature=0, max_tokens=20, stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    plain = list(client.chat.completions.create(model="bot-a", messages=[{"role": "user", "content": PROMPTS[0]}],
                                                temperature=0, max_tokens=5, stream=True))
    assert all(c.usage is None for c in plain)


def test_n_seed_max_tokens_and_stop_strings(client):
    messages = [{"role": "user", "content": PROMPTS[4]}]
    sampled = client.chat.completions.create(model="bot-b", messages=messages, n=2, temperature=1.0, seed=7,
                                             max_tokens=16)
    again = client.chat.completions.create(model="bot-b", messages=messages, n=2, temperature=1.0, seed=7,
                                           max_tokens=16)
    assert [c.index for c in sampled.choices] == [0, 1]
    assert [c.message.content for c in sampled.choices] == [c.message.content for c in again.choices]  # seeded
    long = client.completions.create(model="bot-a", prompt="Once upon a time", temperature=0, max_tokens=24)
    assert long.choices[0].finish_reason == "length" and long.usage.completion_tokens == 24
    text = long.choices[0].text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip(), text
    cut = client.completions.create(model="bot-a", prompt="Once upon a time", temperature=0, max_tokens=24, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[:text.index(stop)]


def test_logprobs_are_the_models_own(client, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.models.generate import load_for_generation

    reply = client.chat.completions.create(model=base_name_of(client), messages=[{"role": "user", "content": PROMPTS[0]}],
                                           temperature=0, max_tokens=3, logprobs=True, top_logprobs=3)
    first = reply.choices[0].logprobs.content[0]
    assert len(first.top_logprobs) == 3 and first.top_logprobs[0].logprob == pytest.approx(first.logprob)
    loaded = load_for_generation(str(tiny_model_dir), precision="fp32")
    from tunesmith.data.examples import Message
    from tunesmith.data.tokenize import encode_prompt

    ids = encode_prompt(loaded.tokenizer, loaded.info, [Message("user", PROMPTS[0])])
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1).max().item()
    assert first.logprob == pytest.approx(expected, abs=1e-4)


def test_errors_come_in_openais_shape(client, server):
    with pytest.raises(openai.NotFoundError) as missing:
        greedy(client, "no-such-run", "hi")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        greedy(openai.OpenAI(base_url=server[0], api_key="wrong", max_retries=0), "bot-a", "hi")
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.chat.completions.create(model="bot-a", messages=[{"role": "user", "content": "hi"}], logit_bias={"1": 5})
    assert unsupported.value.param == "logit_bias" and unsupported.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as too_long:
        greedy(client, "bot-a", "hi", max_tokens=257)
    assert too_long.value.param == "max_tokens"
    with pytest.raises(openai.APIStatusError) as large:
        greedy(client, "bot-a", "word " * 250_000)  # over the 1 MB body limit: refused before it is read
    assert large.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as wrong:
        greedy(client, "tone", "hi")
    assert wrong.value.param == "model"


def test_a_classifier_run_answers_with_the_same_probabilities_as_predict(client, runs):
    from tunesmith.models.classifier import load_classifier, predict_probabilities

    texts = ["superb lovely film", "dull boring film", "fine"]
    answer = client.post("/classifications", body={"model": "tone", "input": texts}, cast_to=object)
    expected = predict_probabilities(load_classifier(str(runs["tone"])), texts)
    assert [row["index"] for row in answer["data"]] == [0, 1, 2]
    for row, probabilities in zip(answer["data"], expected):
        assert set(row["probabilities"]) == {"negative", "positive"}
        assert [row["probabilities"][label] for label in ("negative", "positive")] == pytest.approx(probabilities, abs=1e-6)
        assert row["label"] == ("negative", "positive")[int(probabilities.argmax())]


def test_adapters_load_and_unload_without_a_restart_behind_the_admin_key(client, server, runs):
    admin = openai.OpenAI(base_url=server[0], api_key=ADMIN, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.post("/load_lora_adapter", body={"lora_name": "late", "lora_path": str(runs["bot-c"])}, cast_to=str)
    admin.post("/load_lora_adapter", body={"lora_name": "late", "lora_path": str(runs["bot-c"])}, cast_to=str)
    assert "late" in {m.id for m in client.models.list().data}
    late = [greedy(client, "late", p) for p in PROMPTS[:2]]
    assert late != [greedy(client, "bot-a", p) for p in PROMPTS[:2]]
    # three adapters, at most two in memory: asking for the other two unloads `late`, asking for it again loads it
    greedy(client, "bot-a", "hi")
    greedy(client, "bot-b", "hi")
    models = server[1].state.models
    assert models.loaded_adapter_count() == 2 and "late" not in models.backends[models.get("late").backend].adapters
    assert [greedy(client, "late", p) for p in PROMPTS[:2]] == late
    admin.post("/unload_lora_adapter", body={"lora_name": "late"}, cast_to=str)
    with pytest.raises(openai.NotFoundError):
        greedy(client, "late", "hi")
    assert client.get("/../health", cast_to=object)["status"] == "ok"


def test_metrics_count_requests_and_tokens(client, server):
    """/metrics names every project's models: the operator's admin key reads it, an API key or none
    gets a refusal."""
    greedy(client, "bot-b", PROMPTS[1], max_tokens=4)
    from urllib.error import HTTPError
    from urllib.request import Request, urlopen

    url = server[0].removesuffix("/v1") + "/metrics"
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {KEY}"}, 403)):
        with pytest.raises(HTTPError) as refused:
            urlopen(Request(url, headers=headers))
        assert refused.value.code == status
    text = urlopen(Request(url, headers={"Authorization": f"Bearer {ADMIN}"})).read().decode()
    assert 'tunesmith_requests_total{endpoint="chat",model="bot-b",status="200"}' in text
    assert "tunesmith_completion_tokens_total" in text and "tunesmith_queue_depth" in text
    assert 'tunesmith_first_token_seconds_count{model="bot-b"}' in text


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_100_concurrent_requests_are_answered_as_alone_or_refused_with_429(client, server):
    """Every request gets the answer it gets alone (greedy), or a 429; none is lost or mixed up."""
    requests = [(("bot-a", "bot-b")[i % 2], PROMPTS[i % len(PROMPTS)], 4 + i % 9) for i in range(100)]
    alone = {key: greedy(client, *key) for key in set(requests)}

    def send(key):
        try:
            return greedy(client, *key)
        except openai.RateLimitError:
            return 429

    memory = []
    for _ in range(2):
        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(send, requests))
        memory.append(rss_mb())
        refused = answers.count(429)
        assert 0 < refused < 100  # the queue (32 rows) was full at times, and most were answered
        for key, answer in zip(requests, answers):
            assert answer == 429 or answer == alone[key], key
    assert memory[1] - memory[0] < 100, memory  # no growth from one round to the next
    stats = server[1].state.engine.stats
    assert stats["largest_batch"] > 1 and stats["joined_rows"] > 0, stats  # rows shared batches and joined them


def test_the_cli_serves_run_folders_with_keys_from_a_file(tmp_path: Path, runs):
    """`tunesmith serve RUN NAME=RUN --api-key-file keys.txt` as a user starts it, then the client."""
    import http.client
    import subprocess
    import sys
    import time
    from urllib.request import urlopen

    from tunesmith.serve.app import free_port

    keys = tmp_path / "keys.txt"
    keys.write_text("# one key per line\nfile-key\n")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", str(runs["bot-a"]),
                                f"second={runs['bot-b']}", "--port", str(port), "--api-key-file", str(keys)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            try:
                assert urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="file-key", max_retries=0)
        assert {m.id for m in client.models.list().data} >= {"bot-a", "second"}
        assert greedy(client, "second", PROMPTS[0]) != greedy(client, "bot-a", PROMPTS[0])
        with pytest.raises(openai.AuthenticationError):
            greedy(openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0), "bot-a", "hi")
        # an idle connection outlives the 5 s after which httpx's pool (the openai client's) retires it,
        # so a pooled connection is never closed under a request (uvicorn's default closed it at 5 s)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        first = connection.getresponse()
        assert first.status == 200 and first.read()  # read whole: the connection is free for the next request
        socket_before = connection.sock
        time.sleep(6)
        connection.request("GET", "/health")
        assert connection.getresponse().status == 200 and connection.sock is socket_before
        connection.close()
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"on http://127.0.0.1:{port}/v1" in output


def test_without_keys_only_this_machine_is_answered_and_an_empty_key_file_is_an_error(tmp_path: Path, runs):
    from tunesmith.errors import ConfigError
    from tunesmith.serve.app import read_keys

    models = ServedModels(precision="fp32")
    models.add_run(runs["bot-a"])
    with running(create_app(models, ServeConfig())) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="anything", max_retries=0)
        assert greedy(client, "bot-a", PROMPTS[0])  # development mode: a local client needs no key
        admin = client.post("/load_lora_adapter", body={"lora_name": "b", "lora_path": str(runs["bot-b"])}, cast_to=str)
        assert "added" in admin
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        read_keys(str(tmp_path / "empty.txt"), "TUNESMITH_TEST_NO_SUCH_VARIABLE")


def test_a_client_that_goes_away_frees_its_rows(client, server):
    """A stream closed after its first chunk: its row leaves the batch long before max_tokens."""
    import time

    engine = server[1].state.engine
    cancelled = engine.stats["cancelled_rows"]
    stream = client.chat.completions.create(model="bot-a", messages=[{"role": "user", "content": PROMPTS[4]}],
                                            temperature=0, max_tokens=256, stream=True)
    next(iter(stream))
    stream.close()
    deadline = time.monotonic() + 20
    while engine.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.pending == 0 and engine.stats["cancelled_rows"] == cancelled + 1


def test_tagger_and_reader_runs_answer_as_predict_does(tmp_path: Path, tiny_wordpiece_bert_dir: Path):
    import tunesmith
    from tests.integration.test_span_methods import write_conll, write_squad
    from tunesmith.data.qa import QARow
    from tunesmith.models.reader import load_reader, read_answers
    from tunesmith.models.tagger import find_entities, load_tagger

    ner = tunesmith.train(tiny_config(tmp_path, tiny_wordpiece_bert_dir, write_conll(tmp_path / "t.conll", 60, seed=1),
                                      "train.method=token-classify", "eval.test=null", "train.max_steps=4", name="ner"),
                          show_progress=False).run_dir
    qa = tunesmith.train(tiny_config(tmp_path, tiny_wordpiece_bert_dir, write_squad(tmp_path / "q.jsonl", 60, seed=1),
                                     "train.method=extractive-qa", "data.max_length=48", "data.stride=16",
                                     "eval.test=null", "train.max_steps=4", name="qa"), show_progress=False).run_dir
    models = ServedModels(precision="fp32")
    models.add_run(ner)
    models.add_run(qa)
    texts = ["Wei Chen flew to Lima on Monday .", "Acme Corp opened an office in Oslo ."]
    questions = [{"question": "Where does Mara live?", "context": "It rained. Mara lives in Vesk and works as a baker."}]
    with running(create_app(models, ServeConfig())) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0)
        found = client.post("/entities", body={"model": "ner", "input": texts}, cast_to=object)
        answered = client.post("/answers", body={"model": "qa", "questions": questions}, cast_to=object)
        with pytest.raises(openai.BadRequestError):
            client.post("/answers", body={"model": "ner", "questions": questions}, cast_to=object)
    expected, _ = find_entities(load_tagger(str(ner)), texts)
    assert [row["entities"] for row in found["data"]] == [[e.as_dict() for e in row] for row in expected]
    rows = [QARow("q", "0", q["question"], q["context"], ()) for q in questions]
    assert answered["data"][0]["answer"] == read_answers(load_reader(str(qa)), rows)[0].text


def test_a_row_arriving_as_the_batch_empties_starts_a_new_batch_instead_of_joining_the_finished_one(tiny_model_dir: Path):
    """The last row of a batch finishes in a step while another row waits: joining the emptied batch
    (whose mask and cache still held the finished row) answered the newcomer with a 500."""
    from tunesmith.serve.engine import Engine, Row, Sampling

    models = ServedModels(precision="fp32")
    served = models.add_base(str(tiny_model_dir))
    engine = Engine(models)
    engine.close()  # its thread stops: this test drives the decoding itself, step by step
    backend = models.backends[served.backend]
    events: dict[str, list] = {"first": [], "waiting": [], "alone": []}
    ids = served.tokenizer("Name a colour.", add_special_tokens=False)["input_ids"]
    first = Row(served, ids, Sampling(max_tokens=1, temperature=0), events["first"].append)
    waiting = Row(served, ids + ids, Sampling(max_tokens=4, temperature=0), events["waiting"].append)
    engine.inbox.put(waiting)
    engine._decode(backend, [first])  # `first` ends after its one token, with `waiting` in the inbox
    assert events["first"][-1].finish_reason == "length" and events["first"][-1].error is None
    assert not events["waiting"] and engine.inbox.get_nowait() is waiting  # not joined, not failed
    engine._decode(backend, [waiting])
    alone = Row(served, ids + ids, Sampling(max_tokens=4, temperature=0), events["alone"].append)
    engine._decode(backend, [alone])
    assert events["waiting"][-1].error is None
    assert "".join(e.text for e in events["waiting"]) == "".join(e.text for e in events["alone"])
