"""What every settings section is built from: a frozen pydantic model that refuses unknown keys, and
`setting()`, a field with its default, its help text, its range and whether a fine-tuning job may set
it. Everything the settings feed (YAML and --set loading, `tunesmith settings`, the jobs API's JSON
Schema, the docs' reference, the console's forms) reads these fields; defaults live nowhere else.

pydantic, as FastAPI (our server) already depends on it: one validation pass reports every problem
at once with its location, and the same models give the JSON Schema. Our hand-written coercion
(830 lines of config.py) did the first; nothing did the second."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticUndefined

from tunesmith.config.annotations import literal_words, options_of


def setting(default: Any = PydanticUndefined, help: str = "", *, job: bool = False, **constraints: Any) -> Any:
    """A setting: its default, its help (the --help text, the docs, the console's form label), its
    range (ge, gt, le, lt: pydantic's, so the JSON Schema carries it), and `job`: whether a
    fine-tuning job's `tunesmith` field may set it (settings that name a model, a path or code on
    the server, or that the service decides, never are)."""
    extra = {"job": True} if job else None
    if isinstance(default, BaseModel):
        return Field(default_factory=type(default), description=help, json_schema_extra=extra, **constraints)
    if isinstance(default, (list, dict)):
        value = default
        return Field(default_factory=lambda: copy.deepcopy(value), description=help, json_schema_extra=extra,
                     **constraints)
    return Field(default, description=help, json_schema_extra=extra, **constraints)


# YAML 1.1 reads a bare off/on/no/yes as a boolean: `audit: off` means the word the setting lists
_YAML_WORDS = {False: ("off", "no"), True: ("on", "yes")}


class Section(BaseModel):
    """A group of settings: immutable, unknown keys refused, numbers finite, and only lossless
    spellings converted (1e-4 -> 0.0001, 3.0 -> 3, 7 -> "7"; never true -> 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True,
                              validate_default=False)

    @field_validator("*", mode="before")
    @classmethod
    def _plain_values(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, bool) or info.field_name is None:
            return value
        options = options_of(cls.model_fields[info.field_name].annotation)
        words = [word for word in _YAML_WORDS[value] if any(word in literal_words(o) for o in options)]
        if words and bool not in options:
            return words[0]
        if bool not in options and any(o in (int, float) for o in options):
            raise ValueError("expected a number, not true or false")
        return value



class TopSection(Section):
    """A section built in code on its own, never nested (ServeConfig(port=...)): a bad value is a
    ConfigError naming it, as in YAML. (Not on nested sections: pydantic calls a custom __init__ for
    them too, and their errors would lose their place.)"""

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            from tunesmith.config.errors import problems_of
            from tunesmith.errors import ConfigError

            raise ConfigError("; ".join(problems_of(exc, type(self)))) from None


def replace(section: Any, **changes: Any) -> Any:
    """`section` with some settings changed (settings models and dataclasses alike)."""
    if isinstance(section, BaseModel):
        return section.model_copy(update=changes)
    import dataclasses

    return dataclasses.replace(section, **changes)
