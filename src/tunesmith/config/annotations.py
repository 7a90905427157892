"""Reading a setting's type annotation: its alternatives, and the words it accepts."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal


def options_of(annotation: Any) -> list[Any]:
    """The alternatives of a union annotation (itself otherwise), None left out."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [option for option in typing.get_args(annotation) if option is not type(None)]
    return [annotation]


def literal_words(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation) if typing.get_origin(annotation) is Literal else ()


def literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The words a setting accepts, where it takes words (a Literal, possibly in a union)."""
    return tuple(word for option in options_of(annotation) for word in literal_words(option))
