"""Tool use and structured outputs of tunesmith serve, over a real socket, driven by the official
`openai` client: its tool-calling loop (forced calls, the result sent back, the final answer), whole
and streamed; JSON-schema replies; the grammar against generated schemas; the same answers as the
Python generate path; a constrained row beside a free one; and bad input answered with a 400.

The model is the tests' tiny random Llama (SmolLM2's tokenizer) with Qwen2.5-Instruct's own chat
template, which writes the function list, the calls and their results. A random model never calls a
tool of its own accord: the calls here are forced (tool_choice required or named), so the grammar
alone makes them valid. Its strings and numbers are bounded (maxLength, minimum/maximum) so that a
random model finishes them within a few tokens.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the serve tests need the openai client (pip install -e .[dev])")
pytest.importorskip("fastapi", reason="tunesmith serve needs the serve extra (pip install -e .[serve])")
pytest.importorskip("llguidance", reason="structured outputs need llguidance (pip install -e .)")
pytest.importorskip("httpx2")  # the HTTP client the openai package is built on

import jsonschema  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tunesmith.config import ServeConfig  # noqa: E402
from tunesmith.serve.app import create_app, running  # noqa: E402
from tunesmith.serve.models import ServedModels  # noqa: E402

KEY = "test-key"
QWEN_TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates" / "qwen2.5-instruct.jinja"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "local_time", "description": "The time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET", "PST"]},
                                                    "hours24": {"type": "boolean"}},
                   "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags", "member"],
          "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
                         "member": {"type": "boolean"}}}


@pytest.fixture(scope="module")
def qwen_tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with Qwen2.5-Instruct's chat template (tools, calls and results)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-qwen-template") / "tiny-qwen"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = QWEN_TEMPLATE.read_text()
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(qwen_tiny_dir: Path, tiny_model_dir: Path):
    models = ServedModels(precision="fp32")  # the generate references below are fp32
    models.add_base(str(qwen_tiny_dir), "tiny-qwen")
    models.add_base(str(tiny_model_dir), "tiny-plain")  # SmolLM2's own template: no tool support
    app = create_app(models, ServeConfig(api_keys=(KEY,), max_queue=32, max_batch=8, max_tokens=256))
    with running(app) as base_url:
        yield base_url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0], api_key=KEY, max_retries=0, timeout=120)


def forced(client, **kwargs):
    return client.chat.completions.create(**{"model": "tiny-qwen", "temperature": 0, "max_tokens": 80, **kwargs})


def assert_valid_call(call, tool: dict) -> None:
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def streamed_calls(chunks: list) -> tuple[dict[int, dict], list[str | None]]:
    """The calls a stream adds up to, checking OpenAI's order: id, type and name first, then arguments."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if piece.index not in calls:
                assert piece.id.startswith("call_") and piece.type == "function" and piece.function.name
                calls[piece.index] = {"id": piece.id, "name": piece.function.name, "arguments": ""}
            else:
                assert piece.id is None and piece.function.name is None
            calls[piece.index]["arguments"] += piece.function.arguments or ""
    return calls, [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def test_the_clients_tool_loop_works_unchanged(client, qwen_tiny_dir):
    from tunesmith.data.examples import Message, ToolCall
    from tunesmith.data.tokenize import encode_prompt
    from tunesmith.models.generate import load_for_generation

    reply = forced(client, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name in ("get_weather", "local_time")
    assert_valid_call(call, WEATHER if call.function.name == "get_weather" else TIME)
    # the loop: the reply appended as it came, the tool's result after it, then the final answer
    messages = [*ASK, choice.message, {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    final = client.chat.completions.create(model="tiny-qwen", messages=messages, tools=[WEATHER, TIME], temperature=0,
                                           max_tokens=8)
    assert final.choices[0].finish_reason in ("stop", "length") and isinstance(final.choices[0].message.content, str)
    # the server's prompt held the call and its result, as the template writes them
    loaded = load_for_generation(str(qwen_tiny_dir), precision="fp32")
    conversation = [Message("user", ASK[0]["content"]),
                    Message("assistant", "", tool_calls=(ToolCall(call.id, call.function.name, call.function.arguments),)),
                    Message("tool", '{"temp_c": 18}', tool_call_id=call.id)]
    assert final.usage.prompt_tokens == len(encode_prompt(loaded.tokenizer, loaded.info, conversation, [WEATHER, TIME]))


def test_a_streamed_call_adds_up_to_the_whole_one(client):
    whole = forced(client, messages=ASK, tools=[WEATHER], tool_choice="required")
    chunks = list(forced(client, messages=ASK, tools=[WEATHER], tool_choice="required", stream=True))
    calls, finishes = streamed_calls(chunks)
    expected = whole.choices[0].message.tool_calls
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [(c.function.name, c.function.arguments) for c in expected]
    assert finishes == ["tool_calls"] == [whole.choices[0].finish_reason]
    argument_pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.tool_calls
                          and c.choices[0].delta.tool_calls[0].id is None)
    assert argument_pieces > 1  # streamed as written, not in one piece at the end
    # the SDK's own stream helper assembles the same message
    with client.chat.completions.stream(model="tiny-qwen", messages=ASK, tools=[WEATHER], tool_choice="required",
                                        temperature=0, max_tokens=80) as stream:
        final = stream.get_final_completion()
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == \
        [(c.function.name, c.function.arguments) for c in expected]


def test_the_named_function_is_the_one_called(client):
    for tool in (WEATHER, TIME):
        reply = forced(client, messages=ASK, tools=[WEATHER, TIME],
                       tool_choice={"type": "function", "function": {"name": tool["function"]["name"]}})
        (call,) = reply.choices[0].message.tool_calls
        assert_valid_call(call, tool)
        assert reply.choices[0].finish_reason == "tool_calls"


def test_json_schema_replies_parse_and_validate(client):
    from typing import Literal

    from pydantic import BaseModel, Field

    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    for prompt in ("Describe someone.", "Who won?", "List a member."):
        reply = forced(client, messages=[{"role": "user", "content": prompt}], response_format=fmt)
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), PERSON)
    anything = forced(client, messages=ASK, response_format={"type": "json_object"}, max_tokens=200)
    if anything.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(anything.choices[0].message.content), dict)

    class Pet(BaseModel):  # the SDK's own route: a pydantic model, sent as a strict schema, parsed back
        name: str = Field(max_length=8)
        kind: Literal["cat", "dog"]
        legs: int = Field(ge=0, le=4)

    parsed = client.chat.completions.parse(model="tiny-qwen", messages=[{"role": "user", "content": "A pet?"}],
                                           response_format=Pet, temperature=0, max_tokens=60)
    assert isinstance(parsed.choices[0].message.parsed, Pet)


def test_tools_on_auto_with_a_schema_answer_with_a_valid_call_or_valid_json(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for prompt in ("What's the weather in Paris?", "Describe someone.", "What time is it?", "Hello"):
        choice = forced(client, messages=[{"role": "user", "content": prompt}], tools=[WEATHER, TIME],
                        response_format=fmt).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            for call in choice.message.tool_calls:
                assert_valid_call(call, WEATHER if call.function.name == "get_weather" else TIME)
        else:
            assert choice.finish_reason == "stop"
            jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_logprobs_of_a_constrained_reply_are_the_models_own(client, qwen_tiny_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.data.examples import Message
    from tunesmith.data.tokenize import encode_prompt
    from tunesmith.models.generate import load_for_generation

    reply = forced(client, messages=ASK, max_tokens=3, logprobs=True, top_logprobs=2,
                   response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    first = reply.choices[0].logprobs.content[0]
    assert first.token == '{"'  # the only token the grammar allows first
    loaded = load_for_generation(str(qwen_tiny_dir), precision="fp32")
    ids = encode_prompt(loaded.tokenizer, loaded.info, [Message("user", ASK[0]["content"])])
    model = AutoModelForCausalLM.from_pretrained(qwen_tiny_dir)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
    token = loaded.tokenizer.convert_tokens_to_ids(loaded.tokenizer.tokenize('{"'))[0]
    assert first.logprob == pytest.approx(log_probs[token].item(), abs=1e-4)  # before the mask, not 0.0 after it
    assert [t.logprob for t in first.top_logprobs] == pytest.approx(log_probs.topk(2).values.tolist(), abs=1e-4)


def schemas() -> st.SearchStrategy[dict]:
    """Objects of bounded string / integer / number / boolean / enum / array properties."""
    leaf = st.one_of(
        st.integers(1, 8).map(lambda n: {"type": "string", "maxLength": n}),
        st.tuples(st.integers(-100, 0), st.integers(0, 100)).map(lambda r: {"type": "integer", "minimum": r[0], "maximum": r[1]}),
        st.tuples(st.integers(-5, 0), st.integers(1, 5)).map(lambda r: {"type": "number", "minimum": r[0], "maximum": r[1]}),
        st.just({"type": "boolean"}),
        st.lists(st.one_of(st.text("abcxyz", min_size=1, max_size=4), st.integers(-3, 3)), min_size=1, max_size=4,
                 unique=True).map(lambda values: {"enum": values}),
    )
    prop = st.one_of(leaf, leaf.flatmap(lambda item: st.integers(0, 3).map(
        lambda n: {"type": "array", "items": item, "maxItems": n})))
    names = st.text("abcdefgh", min_size=1, max_size=5)

    def obj(props: dict) -> st.SearchStrategy[dict]:
        return st.lists(st.sampled_from(sorted(props)), unique=True).map(lambda required: {
            "type": "object", "properties": props, "required": required, "additionalProperties": False})

    return st.dictionaries(names, prop, min_size=1, max_size=4).flatmap(obj)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=schemas(), prompt=st.sampled_from(["Give me data.", "Fill this in.", "JSON, please."]))
def test_constrained_output_always_validates(client, schema, prompt):
    reply = forced(client, messages=[{"role": "user", "content": prompt}], max_tokens=120,
                   response_format={"type": "json_schema", "json_schema": {"name": "generated", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_greedy_answers_equal_the_python_generate_path(client, qwen_tiny_dir):
    from tunesmith.data.examples import Message
    from tunesmith.models.constrained import json_grammar, tool_call_grammar
    from tunesmith.models.generate import generate, load_for_generation
    from tunesmith.models.tool_calls import parse_tool_calls

    loaded = load_for_generation(str(qwen_tiny_dir), precision="fp32")
    prompts = ["What's the weather in Paris?", "And the time in Berlin?"]
    for prompt in prompts:
        served = forced(client, messages=[{"role": "user", "content": prompt}], tools=[WEATHER, TIME],
                        tool_choice="required").choices[0].message.tool_calls
        expected = generate(loaded, [[Message("user", prompt)]], max_new_tokens=80, batch_size=1, tools=[WEATHER, TIME],
                            grammar=tool_call_grammar([WEATHER, TIME])).texts[0]
        _, calls = parse_tool_calls(expected)
        assert [(c.function.name, c.function.arguments) for c in served] == [(c.name, c.arguments) for c in calls]
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    served_json = forced(client, messages=[{"role": "user", "content": prompts[0]}], response_format=fmt)
    expected_json = generate(loaded, [prompts[0]], max_new_tokens=80, batch_size=1, grammar=json_grammar(PERSON))
    assert served_json.choices[0].message.content == expected_json.texts[0]


def test_a_constrained_row_leaves_the_others_in_its_batch_unchanged(client, server):
    plain = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 40}
    alone = forced(client, **plain).choices[0].message.content
    stats = server[1].state.engine.stats
    before = stats["largest_batch"]
    stats["largest_batch"] = 0
    answers: dict[str, str] = {}
    go = threading.Barrier(4)

    def ask(key: str, **kwargs) -> None:
        go.wait()
        answers[key] = forced(client, **kwargs).choices[0].message.content

    threads = [threading.Thread(target=ask, args=("plain",), kwargs=plain)] + [
        threading.Thread(target=ask, args=(f"json{i}",), kwargs={
            "messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}})
        for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats["largest_batch"] >= 2  # they did decode together
    stats["largest_batch"] = max(before, stats["largest_batch"])
    assert answers["plain"] == alone
    for i in range(3):
        jsonschema.validate(json.loads(answers[f"json{i}"]), PERSON)


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "book_flight"}}}, "tool_choice",
     "tool_choice names `book_flight`, which `tools` does not declare (it declares `get_weather`)"),
    ({"tool_choice": "required"}, "tool_choice", "tool_choice needs tools"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "`get_weather` is declared 2 times"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strng"}}}]},
     "tools.0.function.parameters", "not a valid JSON schema: 'strng' is not valid"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
      "tool_choice": "required"}, "tools.0.function.parameters", 'cannot be enforced (Unimplemented keys: ["not"])'),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "tools.0.function.name", "should match pattern"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array", "items": 3}}}},
     "response_format.json_schema.schema", "not a valid JSON schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"if": {"type": "string"}}}}},
     "response_format.json_schema.schema", "Unimplemented keys"),
    ({"response_format": {"type": "json_schema"}}, "response_format", 'type "json_schema" needs json_schema'),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_nowhere", "content": "18"}]}, "messages.1.tool_call_id",
     "`call_nowhere` answers no tool call of an earlier assistant message"),
    ({"messages": [*ASK, {"role": "tool", "content": "18"}]}, "messages.1", "a tool message needs tool_call_id"),
])
def test_bad_tool_and_format_input_is_a_400_naming_the_field(client, extra, param, says):
    body = {"messages": ASK, **extra}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-qwen", max_tokens=4, **body)
    assert refused.value.param == param and says in refused.value.message, refused.value.message


def test_tools_through_a_template_without_tool_support_are_refused(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-plain", messages=ASK, tools=[WEATHER], max_tokens=4)
    assert refused.value.param == "tools" and "no tool support" in refused.value.message
    # tool_choice "none": the tools stay out of the prompt, and the reply is plain text
    reply = client.chat.completions.create(model="tiny-plain", messages=ASK, tools=[WEATHER], tool_choice="none",
                                           max_tokens=4, temperature=0)
    assert reply.choices[0].message.tool_calls is None


def test_tunesmith_generate_with_tools_prints_the_reply_and_its_calls(qwen_tiny_dir, tmp_path, capsys):
    """`tunesmith generate --tools` renders the tools as the server does and prints what the Python
    path generates; a bad tools file is refused naming it."""
    from tunesmith.cli import main
    from tunesmith.models.generate import generate_replies, load_for_generation
    from tunesmith.models.tool_calls import parse_tool_calls

    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER, TIME]))
    assert main(["generate", str(qwen_tiny_dir), "--prompt", "What's the weather in Paris?", "--tools", str(tools),
                 "--max-new-tokens", "24"]) == 0
    printed = capsys.readouterr().out.strip()
    reply = generate_replies(load_for_generation(str(qwen_tiny_dir)), ["What's the weather in Paris?"],
                             max_new_tokens=24, tools=[WEATHER, TIME])[0]
    content, calls = parse_tool_calls(reply)
    assert printed == "\n".join([*([content] if content else []),
                                 *(f'tool_call: {json.dumps({"name": c.name, "arguments": c.arguments})}' for c in calls)])
    tools.write_text(json.dumps([{"name": "get_weather"}]))
    assert main(["generate", str(qwen_tiny_dir), "--prompt", "Hi", "--tools", str(tools)]) == 2
    assert f"--tools {tools}" in capsys.readouterr().err
