"""Constrained decoding against the library it relies on (llguidance) and the real SmolLM2 tokenizer:
whatever a row picks among the tokens the mask allows ends as text the schema accepts; the tool-call
grammar accepts exactly what the chat templates write; what it cannot enforce is refused, with why."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("llguidance", reason="constrained decoding needs llguidance (pip install -e .)")

from tunesmith.models.constrained import (  # noqa: E402
    Constraint,
    GrammarError,
    check_schema,
    json_grammar,
    tool_call_grammar,
)
from tunesmith.models.tool_calls import parse_tool_calls  # noqa: E402

TEMPLATES = Path(__file__).resolve().parents[2] / "fixtures" / "chat_templates"
STOP = 2  # SmolLM2's <|im_end|>
SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}, "b": {"type": "integer", "minimum": 10, "maximum": 20},
                                      "c": {"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "d": {"type": "boolean"}},
     "required": ["a", "b", "c", "d"], "additionalProperties": False},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[a-c]{3}-[0-9]{2}$"},
                                      "pick": {"enum": ["x", "y z", 3, None]}, "fixed": {"const": "k"}},
     "required": ["code", "pick", "fixed"], "additionalProperties": False},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 1, "maxItems": 2}},
     "required": ["items"], "additionalProperties": False,
     "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"anyOf": [{"type": "null"}, {"type": "integer"}]}},
                         "required": ["x", "y"], "additionalProperties": False}}},
    {"type": "object", "properties": {"maybe": {"type": ["string", "null"], "maxLength": 3}, "opt": {"type": "integer"}},
     "additionalProperties": False},
]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "now"}},  # no parameters: an empty object
]


def walk(constraint: Constraint, tokenizer, rng: random.Random, structural, limit: int = 150) -> str | None:
    """Random tokens among those allowed (closing ones preferred, so walks end) until a stop token."""
    ids: list[int] = []
    for _ in range(limit):
        mask = constraint.allowed()
        allowed = mask.nonzero().flatten()
        assert len(allowed), "the mask allowed nothing"
        if mask[STOP] and rng.random() < 0.5:
            return tokenizer.decode(ids)
        closing = (mask & structural).nonzero().flatten()
        pool = closing if len(closing) and rng.random() < 0.6 else allowed
        token = int(pool[rng.randrange(len(pool))])
        if token == STOP:
            return tokenizer.decode(ids)
        constraint.advance(token)
        ids.append(token)
    return None


@pytest.fixture(scope="module")
def structural(tokenizer):
    """A bool [vocab] mask of the tokens that can close a string, an object, an array or a tag."""
    import torch

    return torch.tensor([any(c in tokenizer.decode([i]) for c in '"}],>') for i in range(len(tokenizer))])


@pytest.mark.parametrize("schema", SCHEMAS, ids=["bounds", "pattern-enum-const", "ref-anyof-array", "nullable-optional"])
def test_every_text_the_mask_allows_validates(tokenizer, structural, schema):
    rng, finished = random.Random(0), 0
    for _ in range(12):
        text = walk(Constraint(json_grammar(schema), tokenizer, [STOP]), tokenizer, rng, structural)
        if text is not None:
            finished += 1
            jsonschema.validate(json.loads(text), schema)
    assert finished >= 6


def test_every_forced_call_is_a_declared_tool_with_valid_arguments(tokenizer, structural):
    rng, finished = random.Random(1), 0
    for parallel in (False, True):
        for _ in range(8):
            text = walk(Constraint(tool_call_grammar(TOOLS, parallel=parallel), tokenizer, [STOP]), tokenizer, rng, structural)
            if text is None:
                continue
            finished += 1
            content, calls = parse_tool_calls(text)
            assert content is None and calls and (parallel or len(calls) == 1)
            for call in calls:
                tool = next(t for t in TOOLS if t["function"]["name"] == call.name)
                schema = tool["function"].get("parameters") or {"type": "object", "maxProperties": 0}
                jsonschema.validate(json.loads(call.arguments), schema)
    assert finished >= 8


def accepts(grammar: str, tokenizer, text: str) -> bool:
    constraint = Constraint(grammar, tokenizer, [STOP])
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        if not constraint.allowed()[token]:
            return False
        constraint.advance(token)
    return bool(constraint.allowed()[STOP])


def test_the_tool_grammar_accepts_what_the_templates_write(tokenizer):
    from tunesmith.data.examples import Message, ToolCall
    from tunesmith.data.template import default_chat_template

    one = (ToolCall("call_1", "get_weather", '{"city": "Paris", "unit": "c"}'),)
    two = (*one, ToolCall("call_2", "now", "{}"))
    for template in ((TEMPLATES / "qwen2.5-instruct.jinja").read_text(), default_chat_template()):
        for calls in (one, two):
            messages = [Message("user", "Weather?"), Message("assistant", "", tool_calls=calls)]
            prompt = tokenizer.apply_chat_template([messages[0].as_dict()], chat_template=template, tools=TOOLS,
                                                   add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template([m.as_dict() for m in messages], chat_template=template, tools=TOOLS,
                                                 tokenize=False)
            reply = full[len(prompt):].split(tokenizer.eos_token)[0]
            assert accepts(tool_call_grammar(TOOLS), tokenizer, reply), reply
            assert accepts(tool_call_grammar(TOOLS, parallel=False), tokenizer, reply) == (len(calls) == 1)
    assert not accepts(tool_call_grammar(TOOLS), tokenizer, block := '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "k"}}\n</tool_call>'), block
    either = tool_call_grammar(TOOLS, or_json=SCHEMAS[0])  # tools on "auto" with a response_format
    assert accepts(either, tokenizer, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
    assert accepts(either, tokenizer, '{"a": "x", "b": 12, "c": 0.5, "d": true}')
    assert not accepts(either, tokenizer, '{"a": "x", "b": 21, "c": 0.5, "d": true}')
    assert accepts(json_grammar(None), tokenizer, '{"any": [1, "thing"]}')
    assert not accepts(json_grammar(None), tokenizer, '[1]')  # json_object: an object


def test_schemas_it_cannot_enforce_are_refused_with_the_reason():
    with pytest.raises(GrammarError, match=r"where: cannot be enforced \(Unimplemented keys: \[\"not\"\]\)"):
        check_schema({"type": "object", "not": {"required": ["a"]}}, "where")
    with pytest.raises(GrammarError, match="not a valid JSON schema: 'strng' is not valid"):
        check_schema({"type": "strng"}, "where")
    with pytest.raises(GrammarError, match="a JSON schema is an object"):
        check_schema([{"type": "string"}], "where")
    check_schema({"type": "object", "properties": {"a": {"type": "string", "format": "date"}}}, "where")
