"""OpenAI's grader templates: `{{ item.field }}`, `{{ sample.output_text }}`, `{{ sample.output_json.x }}`.

A template names a namespace (item: the data row; sample: the model's output) and a path into it,
with dots for fields and [n] (or .n) for list items, like OpenAI's "JSON path like syntax". Text is
put in as it is; any other value as JSON. A field the row or sample lacks is not a crash: rendering
raises TemplateProblem, which the grader reports in the run response's metadata.errors.
"""

from __future__ import annotations

import json
import re
from typing import Any

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")
TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"^(?P<namespace>[A-Za-z_]\w*)(?P<rest>(?:\.[^.\[\]\s]+|\[\d+\])*)$")
_STEP = re.compile(r"\.([^.\[\]\s]+)|\[(\d+)\]")


class TemplateProblem(Exception):
    """A template that cannot be filled from this sample and item; `kind` is the metadata error it sets."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "invalid_variable_error" or "sample_parse_error"


def check_templates(text: str) -> None:
    """Raise ValueError naming the first template in `text` that OpenAI's syntax does not allow."""
    for match in TEMPLATE.finditer(text):
        expression = match.group(1).strip()
        parsed = _PATH.match(expression)
        if parsed is None:
            raise ValueError(f"template {match.group(0)!r} is not {{{{ namespace.field }}}}: use "
                             "{{ item.FIELD }} (the data row) or {{ sample.output_text }} (the model's output)")
        if parsed["namespace"] not in NAMESPACES:
            raise ValueError(f"template {match.group(0)!r} names {parsed['namespace']!r}; the namespaces are "
                             f"item (the data row) and sample ({', '.join(SAMPLE_FIELDS)})")


def render(text: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """`text` with each template replaced by its value (TemplateProblem for one that has none)."""
    namespaces = {"item": item, "sample": sample}
    return TEMPLATE.sub(lambda match: _as_text(resolve(match.group(1).strip(), namespaces)), text)


def resolve(expression: str, namespaces: dict[str, Any]) -> Any:
    """The value a checked template expression (`item.a.b[0]`) names."""
    parsed = _PATH.match(expression)
    namespace = parsed["namespace"]
    value, where = namespaces[namespace], namespace
    for name, index in _STEP.findall(parsed["rest"]):
        step = name if name else int(index)
        if namespace == "sample" and where == "sample.output_json" and value is None:
            raise TemplateProblem("sample_parse_error",
                                  f"{{{{ {expression} }}}}: the sample's output is not valid JSON, so it has no output_json")
        value = _step(value, step, where, expression)
        where += f".{name}" if name else f"[{index}]"
    if where == "sample.output_json" and value is None:
        raise TemplateProblem("sample_parse_error",
                              f"{{{{ {expression} }}}}: the sample's output is not valid JSON, so it has no output_json")
    return value


def _step(value: Any, step: str | int, where: str, expression: str) -> Any:
    if isinstance(value, list):
        position = step if isinstance(step, int) else int(step) if step.isdigit() else None
        if position is not None and position < len(value):
            return value[position]
        raise TemplateProblem("invalid_variable_error",
                              f"{{{{ {expression} }}}}: {where} is a list of {len(value)}, with no item {step!r}")
    if isinstance(value, dict) and str(step) in value:
        return value[str(step)]
    if isinstance(value, dict):
        fields = ", ".join(sorted(map(str, value))) or "none"
        raise TemplateProblem("invalid_variable_error",
                              f"{{{{ {expression} }}}}: {where} has no field {str(step)!r} (its fields: {fields})")
    raise TemplateProblem("invalid_variable_error",
                          f"{{{{ {expression} }}}}: {where} is {type(value).__name__}, with no field {str(step)!r}")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def normalize_sample(sample: str | dict[str, Any]) -> dict[str, Any]:
    """The sample namespace: a model's output text (as the run endpoint's `model_sample`), or a dict
    of OpenAI's sample fields. `output_json` is the output parsed, when it is valid JSON (OpenAI:
    "populated if the model sample is a valid JSON string"), else None."""
    if isinstance(sample, str):
        return {"output_text": sample, "output_json": parse_json(sample)}
    if not isinstance(sample, dict):
        raise TypeError(f"a sample is the model's output text or a dict of its fields, not {type(sample).__name__}")
    filled = dict(sample)
    if "output_json" not in filled and isinstance(filled.get("output_text"), str):
        filled["output_json"] = parse_json(filled["output_text"])
    return filled


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
