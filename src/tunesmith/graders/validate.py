"""A raw grader (a dict, as OpenAI's API takes it) checked into a typed grader, every problem at once,
each named by its path: `grader.graders.b.evaluation_metric: 'bleu2' is not one of ...`."""

from __future__ import annotations

import difflib
import keyword
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from tunesmith.config.annotations import literal_choices
from tunesmith.errors import ConfigError
from tunesmith.graders.formula import FUNCTIONS, FormulaError, parse_formula
from tunesmith.graders.schema import CONTENT_PARTS, GRADER_TYPES, Grader, MultiGrader

_TYPE_WORDS = {"string_type": "text", "float_type": "a number", "int_type": "a whole number",
               "bool_type": "true or false", "list_type": "a list", "dict_type": "an object",
               "model_type": "an object", "model_attributes_type": "an object", "literal_error": None}


class GraderError(ConfigError):
    """A grader that does not follow OpenAI's schema, or that cannot run here; `problems` lists each one."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def validate_grader(raw: dict[str, Any] | Grader) -> Grader:
    """The typed grader `raw` describes (OpenAI's grader object); GraderError lists every problem."""
    if isinstance(raw, BaseModel):
        return raw
    grader, problems = _validate(raw, "grader", nested=False)
    if problems:
        raise GraderError(problems)
    return grader


def _validate(raw: Any, where: str, *, nested: bool) -> tuple[Any, list[str]]:
    if not isinstance(raw, dict):
        return None, [f"{where}: expected a grader object such as {{\"type\": \"string_check\", ...}}, got {_shown(raw)}"]
    kind = raw.get("type")
    if kind not in GRADER_TYPES or (nested and kind == "multi"):
        return None, [_bad_type(kind, where, nested)]
    if kind == "multi":
        return _validate_multi(raw, where)
    model = GRADER_TYPES[kind]
    try:
        return model.model_validate(raw), []
    except ValidationError as error:
        return None, describe(error, model, where)


def _bad_type(kind: Any, where: str, nested: bool) -> str:
    allowed = [name for name in GRADER_TYPES if not (nested and name == "multi")]
    if nested and kind == "multi":
        return f"{where}.type: a multi grader cannot hold another multi grader; list its graders here instead"
    if kind is None:
        return f"{where}.type: required; one of {', '.join(allowed)}"
    close = difflib.get_close_matches(str(kind), allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{where}.type: {_shown(kind)} is not one of {', '.join(allowed)}{hint}"


def _validate_multi(raw: dict[str, Any], where: str) -> tuple[Any, list[str]]:
    graders = raw.get("graders")
    problems: list[str] = []
    subs: dict[str, Any] = {}
    if not isinstance(graders, dict) or not graders:
        problems.append(f"{where}.graders: expected an object of named graders such as "
                        "{\"exact\": {\"type\": \"string_check\", ...}}, got " + _shown(graders))
    else:
        for name, sub in graders.items():
            name_problem = _name_problem(name, f"{where}.graders")
            sub_grader, sub_problems = _validate(sub, f"{where}.graders.{name}", nested=True)
            problems += ([name_problem] if name_problem else []) + sub_problems
            subs[name] = sub_grader
    try:
        grader = MultiGrader.model_validate({**raw, "graders": {}})
    except ValidationError as error:
        return None, problems + describe(error, MultiGrader, where)
    try:
        parse_formula(grader.calculate_output, set(subs))
    except FormulaError as error:
        problems.append(f"{where}.calculate_output: {error}")
    if problems:
        return None, problems
    return grader.model_copy(update={"graders": subs}), []


def _name_problem(name: str, where: str) -> str | None:
    if not name.isidentifier() or keyword.iskeyword(name):
        return (f"{where}: {name!r} cannot be used in calculate_output; name each grader with letters, digits "
                "and underscores, starting with a letter (such as exact_match)")
    if name in FUNCTIONS:
        return f"{where}: {name!r} is a function of calculate_output; give the grader another name"
    return None


def describe(error: ValidationError, model: type[BaseModel], where: str) -> list[str]:
    """One line per problem in pydantic's `error`, named by its path under `where`; of a union's
    alternatives, the complaint of the one that got furthest."""
    found = []
    for item in error.errors(include_url=False):
        path, field, in_union, owners = _readable(item["loc"], model, item["type"] == "extra_forbidden")
        found.append((where + path, field, in_union, owners, item))
    lines: dict[str, str] = {}
    for path, field, in_union, owners, item in found:
        if in_union and _is_type_error(item) and any(
                other[0].startswith(path) and not _is_type_error(other[-1]) for other in found):
            continue  # another alternative of the union got further: its complaint says more
        if item["type"] == "extra_forbidden":
            lines.setdefault(path, _unknown_key(path, [name for owner in owners for name in owner.model_fields]))
        else:
            lines.setdefault(path, _message(path, field, item, in_union))
    return list(lines.values())


def _is_type_error(item: dict) -> bool:
    return item["type"] in _TYPE_WORDS and item["type"] != "literal_error" or item["type"] == "union_tag_invalid"


def _readable(loc: tuple, model: type[BaseModel], unknown_key: bool) -> tuple[str, Any, bool, list]:
    """`.input[0].content[1].text` from pydantic's location, which also names the branches of unions;
    with the field found there, whether a union was crossed, and the models that could hold the key."""
    path, field, candidates, in_union = "", None, [model], False
    for position, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        owner = next((m for m in candidates if part in m.model_fields), None)
        if owner is not None:
            field = owner.model_fields[part]
            path += f".{part}"
            candidates = _models_in(field.annotation)
        elif unknown_key and position == len(loc) - 1:
            path += f".{part}"
            field = None
        else:  # a union's branch: a discriminator's value ('input_text') or a type's name ('str', 'list[...]')
            in_union = True
            candidates = [CONTENT_PARTS[part]] if part in CONTENT_PARTS else candidates
    return path, field, in_union, candidates


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in typing.get_args(annotation) for model in _models_in(argument)]


def _message(path: str, field: Any, item: dict, in_union: bool) -> str:
    kind, value = item["type"], item.get("input")
    if kind == "missing":
        return f"{path}: required"
    if kind == "literal_error":
        words = [str(word) for word in (literal_choices(field.annotation) if field is not None else ())]
        close = difflib.get_close_matches(value, words, n=1) if isinstance(value, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{path}: {_shown(value)} is not one of {', '.join(words)}{hint}"
    if kind == "value_error":
        return f"{path}: {item['msg'].removeprefix('Value error, ')}"
    if in_union and _is_type_error(item):
        return f"{path}: expected text, a content part object such as {{\"type\": \"input_text\", \"text\": ...}}, or a list of them; got {_shown(value)}"
    if kind in _TYPE_WORDS:
        return f"{path}: expected {_TYPE_WORDS[kind]}, got {_shown(value)}"
    return f"{path}: {item['msg'].lower()}"


def _unknown_key(path: str, fields: list[str]) -> str:
    name = path.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; the fields here are {', '.join(fields)}"
    return f"{path}: unknown field {name!r} (not in OpenAI's grader schema){hint}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
