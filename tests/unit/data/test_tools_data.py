"""Tool rows: read from OpenAI's and LLaMA-Factory's shapes, checked, rendered through real chat
templates with `tools=` (transformers' apply_chat_template), and masked so that the loss covers the
assistant's calls and answers, never the tool list or the tools' results.

Templates: tunesmith's default, and Qwen2.5-Instruct's and Llama-3.1-Instruct's real templates
(tests/fixtures/chat_templates/, copied verbatim from the models' tokenizer_config.json), on SmolLM2's
real tokenizer (with Llama-3's header tokens added as special tokens for Llama's template).
"""

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
from tokenizers import Regex, pre_tokenizers

from tests.conftest import write_jsonl
from tunesmith.config import DataConfig
from tunesmith.data.examples import Example, Message, ToolCall
from tunesmith.data.pipeline import read_source
from tunesmith.data.template import (
    analyze_template,
    default_chat_template,
    ensure_chat_template,
    render,
    supports_tools,
)
from tunesmith.data.tokenize import encode_prompt, examples_fingerprint, tokenize_examples
from tunesmith.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "chat_templates"

WEATHER = {"name": "get_weather", "description": "Current weather of a city.", "parameters": {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}}
TOOLS = [{"type": "function", "function": WEATHER}]
PARIS, ROME = {"city": "Paris", "unit": "celsius"}, {"city": "Rome"}
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def call(call_id: str, arguments: dict | str, name: str = "get_weather") -> dict:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def openai_row(parallel: bool = True) -> dict:
    calls = [call("call_1", PARIS), call("call_2", ROME)] if parallel else [call("call_1", PARIS)]
    results = [{"role": "tool", "tool_call_id": "call_1", "content": "18 °C, sunny"},
               {"role": "tool", "tool_call_id": "call_2", "content": "21 °C, cloudy"}][:len(calls)]
    answer = "Paris: 18 °C, sunny. Rome: 21 °C, cloudy." if parallel else "Paris: 18 °C, sunny."
    return {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?" if parallel else "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *results,
        {"role": "assistant", "content": answer},
    ], "tools": TOOLS}


def read_rows(tmp_path: Path, rows: list, name: str = "rows.jsonl"):
    """Examples and problems as `tunesmith data validate` and training read them."""
    raw = read_source(write_jsonl(tmp_path / name, rows), DataConfig())
    return raw.examples, raw.problems


@pytest.fixture()
def tok(tokenizer):
    return copy.deepcopy(tokenizer)


def family_tokenizer(tok, family: str):
    if family == "default":
        tok.chat_template = default_chat_template()
    elif family == "qwen2.5":
        tok.chat_template = (FIXTURES / "qwen2.5-instruct.jinja").read_text()
    else:  # Llama-3.1's template, with Llama-3's special tokens and pre-tokenizer (its tokenizer.json)
        tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
        tok.add_tokens(["<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|python_tag|>"], special_tokens=True)
        # Llama-3 splits "\n\n" as one piece whatever follows; SmolLM2's GPT-2 split does not, which would
        # make the prompt ending "<|end_header_id|>\n\n" tokenize differently alone and in context
        tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.chat_template = (FIXTURES / "llama-3.1-instruct.jinja").read_text()
    return tok


def loss_runs(mask) -> list[tuple[int, int]]:
    runs, start = [], None
    for index, flag in enumerate([*mask.tolist(), False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            runs.append((start, index))
            start = None
    return runs


CALLS_TEXT = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>\n'
              '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>')
FAMILIES = {
    # Qwen2.5's conventions are the default's: the trained text is the same, byte for byte
    "default": (True, CALLS_TEXT + "<|im_end|>" + "Paris: 18 °C, sunny. Rome: 21 °C, cloudy.<|im_end|>"),
    "qwen2.5": (True, CALLS_TEXT + "<|im_end|>" + "Paris: 18 °C, sunny. Rome: 21 °C, cloudy.<|im_end|>"),
    # Llama-3.1 takes one call per turn, written with "parameters"
    "llama3.1": (False, '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}<|eot_id|>'
                        "Paris: 18 °C, sunny.<|eot_id|>"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_rows_render_through_the_template_and_the_loss_covers_only_the_assistant(tok, tmp_path, family):
    parallel, expected_loss_text = FAMILIES[family]
    tok = family_tokenizer(tok, family)
    assert supports_tools(tok)
    (example,), problems = read_rows(tmp_path, [openai_row(parallel)])
    assert not problems
    text = render(tok, example.messages, tools=example.tools)
    schema = json.dumps(TOOLS[0], indent=4 if family == "llama3.1" else None, ensure_ascii=False)
    assert schema in text  # the tool list, as the template writes it
    for message in example.messages:
        for made in message.tool_calls:
            assert made.name in text and json.dumps(json.loads(made.arguments)) in text
        if message.role == "tool":
            assert message.content in text

    info = analyze_template(tok, None)
    (tokenized,) = tokenize_examples([example], tok, info, "assistant")
    ids = tokenized.input_ids.tolist()
    assert ids == tok(text, add_special_tokens=False)["input_ids"]  # the whole rendered text, tokenized once
    assert tok.decode(tokenized.input_ids[tokenized.loss_mask].tolist()) == expected_loss_text
    # each trained run starts where generation's prompt for that turn ends: the prompt at inference
    # (tools included) is the prompt at training
    replies = [index for index, m in enumerate(example.messages) if m.role == "assistant"]
    runs = loss_runs(tokenized.loss_mask)
    assert len(runs) == len(replies)
    for (start, _), index in zip(runs, replies):
        assert encode_prompt(tok, info, list(example.messages[:index]), example.tools) == ids[:start]


def test_loss_on_all_and_weight_zero_apply_to_tool_call_turns(tok, tmp_path):
    tok.chat_template = default_chat_template()
    row = openai_row()
    row["messages"][2]["weight"] = 0
    (example,), problems = read_rows(tmp_path, [row])
    assert not problems and not example.messages[2].train
    info = analyze_template(tok, None)
    (skipped,) = tokenize_examples([example], tok, info, "assistant")
    assert tok.decode(skipped.input_ids[skipped.loss_mask].tolist()) == "Paris: 18 °C, sunny. Rome: 21 °C, cloudy.<|im_end|>"
    (everything,) = tokenize_examples([example], tok, info, "all")
    assert everything.loss_mask[1:].all()


def test_a_conversation_may_end_on_its_calls_and_trains_on_them(tok, tmp_path):
    tok.chat_template = default_chat_template()
    row = {"messages": [{"role": "user", "content": "Weather in Rome?"},
                        {"role": "assistant", "tool_calls": [call("call_1", ROME)]}], "tools": TOOLS}
    (example,), problems = read_rows(tmp_path, [row])
    assert not problems
    (tokenized,) = tokenize_examples([example], tok, analyze_template(tok, None), "assistant")
    assert tok.decode(tokenized.input_ids[tokenized.loss_mask].tolist()) == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>')


def test_the_default_writes_tools_and_results_exactly_as_qwen25_does(tokenizer, tmp_path):
    (example,), _ = read_rows(tmp_path, [openai_row()])
    default, qwen = (render(family_tokenizer(copy.deepcopy(tokenizer), family), example.messages, tools=example.tools)
                     for family in ("default", "qwen2.5"))

    def tool_block(text: str) -> str:
        start = text.index("Be brief.")
        return text[start:text.index("</tool_call>", start) + len("</tool_call>")]

    assert tool_block(default) == tool_block(qwen)
    results = "<tool_response>\n18 °C, sunny\n</tool_response>\n<tool_response>\n21 °C, cloudy\n</tool_response>"
    assert results in default and results in qwen
    assert CALLS_TEXT in default and CALLS_TEXT in qwen


@pytest.mark.parametrize("family", ["default", "qwen2.5"])
def test_text_the_assistant_writes_before_its_calls_is_trained_with_them(tok, tmp_path, family):
    tok = family_tokenizer(tok, family)
    row = {"messages": [{"role": "user", "content": "Weather in Rome?"},
                        {"role": "assistant", "content": "Let me check.", "tool_calls": [call("call_1", ROME)]}],
           "tools": TOOLS}
    (example,), problems = read_rows(tmp_path, [row])
    assert not problems
    (tokenized,) = tokenize_examples([example], tok, analyze_template(tok, None), "assistant")
    assert tok.decode(tokenized.input_ids[tokenized.loss_mask].tolist()) == (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>')


def test_the_default_template_still_renders_plain_chats_as_before(tok):
    tok.chat_template = default_chat_template()
    messages = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Bye")]
    assert render(tok, messages, add_generation_prompt=True) == (
        "Be brief.\n\n### User:\nHi\n\n### Assistant:\nHello<|im_end|>\n\n### User:\nBye\n\n### Assistant:\n")


def test_a_template_without_tool_support_is_refused_for_tool_rows_or_replaced_by_the_default(tok, tmp_path):
    (example,), _ = read_rows(tmp_path, [openai_row()])
    assert ensure_chat_template(tok) == "the model's own"  # SmolLM2's ChatML template knows no tools
    assert not supports_tools(tok)
    with pytest.raises(ConfigError, match="model.chat_template"):
        tokenize_examples([example], tok, analyze_template(tok, 2), "assistant")
    with pytest.warns(UserWarning, match="no tool support"):
        assert "default" in ensure_chat_template(tok, tools=True)
    assert tok.chat_template == default_chat_template()


def test_the_tokenization_cache_key_sees_tool_calls_and_tools():
    messages = (Message("user", "Weather?"), Message("assistant", "", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)))
    example = Example("t.jsonl", 1, "chat", messages=messages, tools=tuple(TOOLS))
    other_call = replace(example, messages=(messages[0], replace(messages[1], tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Rome"}'),))))
    other_tools = replace(example, tools=())
    fingerprints = {examples_fingerprint([e]) for e in (example, other_call, other_tools)}
    assert len(fingerprints) == 3


# ------------------------------------------------------------------------------- the two row shapes


def llamafactory_row(parallel: bool = True) -> dict:
    """LLaMA-Factory's ShareGPT shape (its data/README.md, glaive_toolcall_en_demo.json): bare functions
    in a JSON string, calls as JSON (a list for parallel calls), results joined as its converter joins them."""
    calls = [{"name": "get_weather", "arguments": PARIS}, {"name": "get_weather", "arguments": ROME}]
    return {
        "conversations": [
            {"from": "human", "value": "Weather in Paris and Rome?" if parallel else "Weather in Paris?"},
            {"from": "function_call", "value": json.dumps(calls if parallel else calls[0])},
            {"from": "observation", "value": "18 °C, sunny\n</tool_response>\n<tool_response>\n21 °C, cloudy"
             if parallel else "18 °C, sunny"},
            {"from": "gpt", "value": "Paris: 18 °C, sunny. Rome: 21 °C, cloudy." if parallel else "Paris: 18 °C, sunny."},
        ],
        "system": "Be brief.",
        "tools": json.dumps([WEATHER]),
    }


@pytest.mark.parametrize("parallel", [True, False])
def test_an_openai_row_and_a_llamafactory_row_give_the_same_example(tmp_path, parallel):
    (from_openai,), problems = read_rows(tmp_path, [openai_row(parallel)], "openai.jsonl")
    assert not problems
    (from_sharegpt,), problems = read_rows(tmp_path, [llamafactory_row(parallel)], "sharegpt.jsonl")
    assert not problems
    assert replace(from_sharegpt, source=from_openai.source) == from_openai
    assert [m.role for m in from_openai.messages] == ["system", "user", "assistant", *["tool"] * (1 + parallel), "assistant"]
    assert from_openai.tools == tuple(TOOLS)


# ------------------------------------------------------------------------------------- validation


def test_every_tool_problem_is_named_with_its_file_and_line(tmp_path):
    good = openai_row()

    def with_messages(*messages: dict, tools: object = TOOLS) -> dict:
        return {"messages": [{"role": "user", "content": "Weather?"}, *messages], "tools": tools}

    answer = {"role": "assistant", "content": "Done."}
    rows = [
        good,
        with_messages({"role": "assistant", "tool_calls": [call("call_1", PARIS, name="get_wether")]}),
        with_messages({"role": "assistant", "tool_calls": [call("call_1", '{"city": Paris}')]}),
        with_messages({"role": "assistant", "tool_calls": [call("call_1", {"unit": "kelvin"})]}),
        with_messages(answer, {"role": "user", "content": "And?"}, {"role": "tool", "tool_call_id": "call_9", "content": "?"}, answer),
        with_messages({"role": "assistant", "tool_calls": [call("call_1", PARIS), call("call_2", ROME)]},
                      {"role": "tool", "tool_call_id": "call_1", "content": "18"}, answer),
        with_messages(answer, tools=[WEATHER]),
        with_messages(answer, tools=json.dumps(TOOLS)),
        with_messages(answer, tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]),
        with_messages({"role": "assistant", "tool_calls": [call("call_1", PARIS)]}, tools=[]),
        with_messages({"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}}),
    ]
    examples, problems = read_rows(tmp_path, rows)
    path = tmp_path / "rows.jsonl"
    assert len(examples) == 1
    expected = {
        2: ("calls 'get_wether', which is not a declared tool (the row declares get_weather)", "add the function"),
        3: ("arguments that are not valid JSON", "write the arguments as a JSON object"),
        4: ("arguments that do not match its parameters: 'city' is a required property", "fix the arguments"),
        5: ("answers tool call 'call_9', which no assistant turn just before it made", "put it after the assistant turn"),
        6: ("calls 'get_weather' (id 'call_2'), which no tool message answers before message 4", '"tool_call_id": "call_2"'),
        7: ("tool 1 in 'tools' is not a function declaration", 'wrap it as {"type": "function", "function": {...}}'),
        8: ("'tools' is a str, not a list of function declarations", 'write tools as [{"type": "function"'),
        9: ("tool 'f' has parameters that are not a valid JSON schema", "fix the schema"),
        10: ("calls 'get_weather', which is not a declared tool (the row has no 'tools')", "add the function"),
        11: ("uses OpenAI's deprecated function calling", 'write calls as "tool_calls"'),
    }
    by_line = {int(p.where.rsplit(":", 1)[1]): str(p) for p in problems}
    assert set(by_line) == set(expected), [str(p) for p in problems]
    for line, (what, fix) in expected.items():
        message = by_line[line]
        assert message.startswith(f"{path}:{line}: "), message
        assert what in message and fix in message.split("; ", 1)[1], message


def test_llamafactory_tool_turn_problems_are_named_with_their_file_and_line(tmp_path):
    def turns(*middle: dict) -> dict:
        return {"conversations": [{"from": "human", "value": "Weather?"}, *middle, {"from": "gpt", "value": "Done."}],
                "tools": json.dumps([WEATHER])}

    rows = [
        llamafactory_row(),
        turns({"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": 3}})},
              {"from": "observation", "value": "?"}),
        turns({"from": "function_call", "value": json.dumps([{"name": "get_weather", "arguments": PARIS}] * 2)},
              {"from": "observation", "value": "only one result"}),
        turns({"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": PARIS})}),
        turns({"from": "function_call", "value": "get_weather(city='Paris')"}, {"from": "observation", "value": "?"}),
        {**turns(), "tools": "[{not json"},
    ]
    examples, problems = read_rows(tmp_path, rows)
    assert len(examples) == 1
    expected = {
        2: "turn 2 calls 'get_weather' with arguments that do not match its parameters at 'city': 3 is not of type 'string'",
        3: "turn 3 holds 1 result(s) for the 2 calls of the turn before it",
        4: "turn 3 follows a function_call turn whose calls no observation answers",
        5: "turn 2 (function_call) is not valid JSON",
        6: "'tools' is not valid JSON",
    }
    by_line = {int(p.where.rsplit(":", 1)[1]): str(p) for p in problems}
    assert set(by_line) == set(expected), [str(p) for p in problems]
    for line, what in expected.items():
        assert by_line[line].startswith(f"{tmp_path / 'rows.jsonl'}:{line}: ") and what in by_line[line], by_line[line]
        assert "; " in by_line[line]  # what is wrong; what to do
