"""The tool-call parser: a streamed reply adds up to the reply read whole, however it is cut; calls
come back as the chat templates write them."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.models.tool_calls import ToolCallStream, parse_tool_calls

TEMPLATES = Path(__file__).resolve().parents[2] / "fixtures" / "chat_templates"


def block(name: str, arguments: dict) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def test_a_reply_with_text_and_parallel_calls():
    text = "Let me check.\n" + block("get_weather", {"city": "Paris"}) + "\n" + block("now", {})
    content, calls = parse_tool_calls(text)
    assert content == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", '{"city": "Paris"}'), ("now", "{}")]
    assert calls[0].id.startswith("call_") and calls[0].id != calls[1].id


def test_other_key_orders_are_read_and_broken_blocks_stay_text():
    content, calls = parse_tool_calls('<tool_call>\n{"arguments": {"a": [1, 2]}, "name": "f"}\n</tool_call>')
    assert content is None and [(c.name, json.loads(c.arguments)) for c in calls] == [("f", {"a": [1, 2]})]
    broken = 'Sure. <tool_call>\n{"name": 3}\n</tool_call>'
    assert parse_tool_calls(broken) == (broken, [])
    assert parse_tool_calls("just <tool_ text") == ("just <tool_ text", [])
    unclosed = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}'  # a reply that stopped before </tool_call>
    assert [(c.name, c.arguments) for c in parse_tool_calls(unclosed)[1]] == [("f", '{"x": 1}')]


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                           max_leaves=6)
parts = st.lists(st.one_of(
    st.text(st.sampled_from("ab }{\n<>_/\"tool_call"), max_size=12),
    st.tuples(st.sampled_from(["f", "get_weather", "x-y"]), st.dictionaries(st.text(max_size=5), json_values, max_size=3))
      .map(lambda call: block(*call)),
), max_size=5)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(pieces=parts, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_a_stream_adds_up_to_the_whole_reply_however_it_is_cut(pieces, cuts):
    text = "".join(pieces)
    whole_content, whole_calls = parse_tool_calls(text)
    stream = ToolCallStream()
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    deltas = [d for start, end in zip(bounds, bounds[1:]) for d in stream.feed(text[start:end])] + stream.close()
    assert ("".join(d.content for d in deltas) or None) == whole_content
    started = [d for d in deltas if d.id is not None]
    assert [d.name for d in started] == [c.name for c in whole_calls]
    assert [d.index for d in started] == list(range(len(whole_calls)))  # each call announced once, in order
    arguments = ["".join(d.arguments for d in deltas if d.index == i) for i in range(len(whole_calls))]
    assert arguments == [c.arguments for c in whole_calls]


def test_calls_come_back_as_the_templates_write_them(tokenizer):
    from tunesmith.data.examples import Message, ToolCall
    from tunesmith.data.template import default_chat_template

    calls = (ToolCall("call_1", "get_weather", '{"city": "Paris", "days": [1, 2]}'), ToolCall("call_2", "now", "{}"))
    user, assistant = Message("user", "Weather?"), Message("assistant", "", tool_calls=calls)
    def render(messages, template, **kwargs):
        return tokenizer.apply_chat_template([m.as_dict() for m in messages], chat_template=template, tokenize=False,
                                             tools=[{"type": "function", "function": {"name": "now"}}], **kwargs)

    for template in ((TEMPLATES / "qwen2.5-instruct.jinja").read_text(), default_chat_template()):
        prompt = render([user], template, add_generation_prompt=True)
        reply = render([user, assistant], template)[len(prompt):].split(tokenizer.eos_token)[0]
        content, parsed = parse_tool_calls(reply)
        assert content is None
        assert [(c.name, c.arguments) for c in parsed] == [(c.name, c.arguments) for c in calls]
