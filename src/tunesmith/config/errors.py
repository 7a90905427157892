"""pydantic's validation errors as tunesmith's: one line a problem, `key=value what is wrong`, the
closest valid key or word suggested, all of them at once."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from tunesmith.config.annotations import literal_choices, options_of

_KINDS = {
    "int_parsing": "expected a whole number", "int_from_float": "expected a whole number",
    "int_type": "expected a whole number", "float_parsing": "expected a number", "float_type": "expected a number",
    "finite_number": "must be a finite number", "bool_parsing": "expected true or false",
    "bool_type": "expected true or false", "string_type": "expected text", "list_type": "expected a list such as [a, b]",
    "tuple_type": "expected a list such as [a, b]", "dict_type": "expected a mapping such as {a: b}",
}


def problems_of(error: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """One message per setting in error (the first of a union's alternatives' complaints)."""
    found: dict[str, str] = {}
    for item in error.errors(include_url=False):
        key, field = _resolve(model, item["loc"])
        name = prefix + key
        if name not in found or item["type"] == "extra_forbidden":
            found.setdefault(name, _message(item, name, field, model, prefix))
    return list(found.values())


def _resolve(model: type[BaseModel], loc: tuple) -> tuple[str, Any]:
    """The dotted key a location names (list indexes as [i]; a union's branch tags and a mapping's
    keys dropped) and its field (None for an unknown key)."""
    parts: list[str] = []
    current: Any = model
    field = None
    for part in loc:
        if isinstance(part, int):  # an item of a list
            if parts:
                parts[-1] += f"[{part}]"
            continue
        if current is None:  # past a setting: a union's branch tag, or a key of a mapping setting
            break
        if part not in current.model_fields:  # an unknown key, named as given
            return ".".join([*parts, str(part)]), None
        parts.append(part)
        field = current.model_fields[part]
        current = next((o for o in options_of(field.annotation) if isinstance(o, type) and issubclass(o, BaseModel)),
                       None)
    return ".".join(parts), field


def _message(item: dict, key: str, field: Any, model: type[BaseModel], prefix: str) -> str:
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        return _unknown(key, model, prefix)
    if kind in ("model_type", "model_attributes_type"):
        return f"{key or 'config'}: expected a mapping of settings, got {value!r}"
    if kind == "value_error":
        text = item["msg"].removeprefix("Value error, ")
        return text if not key or not field else f"{key}={value!r} {text}"
    if kind == "literal_error" and field is not None:
        words = literal_choices(field.annotation)
        close = difflib.get_close_matches(str(value), [str(w) for w in words], n=1)
        return f"{key}={value!r} is not one of {', '.join(map(str, words))}" + (f"; did you mean '{close[0]}'?" if close else "")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and field is not None:
        return f"{key}={value!r} {_range(field)}"
    return f"{key}={value!r}: {_KINDS.get(kind, item['msg'])}"


def _unknown(key: str, model: type[BaseModel], prefix: str) -> str:
    *section, name = key.removeprefix(prefix).split(".")
    current: Any = model
    for part in section:
        current = next(o for o in options_of(current.model_fields[part].annotation) if isinstance(o, type))
    names = list(current.model_fields)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    where = prefix + "".join(f"{part}." for part in section)
    hint = f"; did you mean '{where}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
    return f"unknown setting '{where}{name}'{hint}"


def _range(field: Any) -> str:
    """A field's bounds in words: 'must be at least 1', 'must be positive', 'must be in [0, 1)'."""
    bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in field.metadata
              if type(m).__name__ in ("Ge", "Gt", "Le", "Lt")}
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if low and high:
        return f"must be in {low[0]}{_number(low[1])}, {_number(high[0])}{high[1]}"
    if low:
        if low == ("(", 0) or low == ("(", 0.0):
            return "must be positive"
        if low[0] == "[":
            return "must be 0 or more" if low[1] == 0 else f"must be at least {_number(low[1])}"
        return f"must be more than {_number(low[1])}"
    return f"must be at most {_number(high[0])}" if high[1] == "]" else f"must be under {_number(high[0])}"


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

