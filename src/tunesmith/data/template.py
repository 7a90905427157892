"""Chat templates: which one applies, where assistant replies sit in it, and which token ends them.

The loss mask and the stop token both come from the template actually used, found by rendering:
a conversation up to an assistant turn with the generation prompt must be a prefix of the whole
conversation, the reply follows it, and the first token after the reply ends the turn. That token
(`<|im_end|>` for ChatML) is trained on and saved as a stop token, so the model learns to stop on
exactly the token that generation stops on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tunesmith.data.examples import Message
from tunesmith.errors import ConfigError


def default_chat_template() -> str:
    return resources.files("tunesmith").joinpath("templates/default.jinja").read_text(encoding="utf-8")


def ensure_chat_template(tokenizer: Any, override: str | None = None) -> str:
    """Set the template to use on `tokenizer` and say where it came from.

    Priority: the config's `model.chat_template` (a file or the text), then the model's own, then
    tunesmith's default. The tokenizer is saved with every output, so the template travels with it.
    """
    if override:
        path = Path(override).expanduser()
        if path.suffix == ".jinja" or (len(override) < 300 and "{" not in override):
            if not path.is_file():
                raise ConfigError(f"model.chat_template: no such file {override}; give a .jinja file or the template text")
            tokenizer.chat_template = path.read_text(encoding="utf-8")
            return f"file {path}"
        tokenizer.chat_template = override
        return "model.chat_template setting"
    if getattr(tokenizer, "chat_template", None):
        return "the model's own"
    tokenizer.chat_template = default_chat_template()
    return "tunesmith default (docs/templates.md)"


def render(tokenizer: Any, messages: list[Message] | tuple[Message, ...], *, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )


@dataclass(frozen=True)
class TemplateInfo:
    """What tokenization needs to know about a tokenizer and its template."""

    turn_end_text: str  # text that closes an assistant reply and is trained on ("" if none)
    append_eos: bool  # the template closes replies with no stop token: tunesmith appends eos_token
    stop_token_ids: tuple[int, ...]  # tokens generation stops on (saved in generation_config)
    prefix_ids: tuple[int, ...]  # ids the tokenizer puts before raw text (BOS), for text rows


_PROBE_USER, _PROBE_REPLY = "Which colour is the sky?", "Blue."


def analyze_template(tokenizer: Any, generation_eos: list[int] | int | None = None) -> TemplateInfo:
    """Find how the template closes an assistant reply, by rendering a probe conversation."""
    probe = [Message("user", _PROBE_USER), Message("assistant", _PROBE_REPLY)]
    full = render(tokenizer, probe)
    start = reply_start(tokenizer, probe, 1, full)
    tail = full[start + len(_PROBE_REPLY):]
    special = _special_tokens(tokenizer)
    turn_end = next((text for text in sorted(special, key=len, reverse=True) if tail.lstrip(" ").startswith(text)), "")
    if turn_end:
        turn_end = tail[: tail.index(turn_end) + len(turn_end)]
    stop_ids = set(_as_list(generation_eos))
    if tokenizer.eos_token_id is not None:
        stop_ids.add(tokenizer.eos_token_id)
    if turn_end:
        stop_ids.add(tokenizer.convert_tokens_to_ids(turn_end.strip()))
    elif tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no eos_token and the chat template ends replies with no special token; set model.chat_template to one that does")
    else:
        warnings.warn(
            f"the chat template closes assistant replies with {tail[:20]!r}, not a special token; tunesmith "
            f"appends {tokenizer.eos_token!r} to each reply so the model learns to stop (use a template that "
            "ends replies with eos_token to silence this)",
            stacklevel=2,
        )
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    prefix = tuple(with_special[: len(with_special) - len(without)]) if with_special[-len(without):] == without else ()
    return TemplateInfo(turn_end, not turn_end, tuple(sorted(stop_ids)), prefix)


def reply_start(tokenizer: Any, messages: list[Message] | tuple[Message, ...], index: int, full: str) -> int:
    """Character offset in `full` where the reply `messages[index]` begins."""
    return locate_reply(tokenizer, messages, index, full)[1]


def locate_reply(tokenizer: Any, messages: list[Message] | tuple[Message, ...], index: int, full: str) -> tuple[int, int]:
    """Character offsets in `full` where generation's prompt for the reply `messages[index]` ends
    (what inference tokenizes) and where the reply itself begins (after any space the template adds)."""
    prefix = render(tokenizer, messages[:index], add_generation_prompt=True)
    if not full.startswith(prefix):
        raise ConfigError(
            "the chat template renders earlier turns differently once later turns follow, so the "
            "assistant replies cannot be located for the loss mask; use data.loss_on=all or set "
            "model.chat_template to a template without that behaviour"
        )
    content = messages[index].content
    start = len(prefix)
    if full.startswith(content, start):
        return start, start
    found = full.find(content.strip(), start)
    if found < 0:
        raise ConfigError(
            "the chat template rewrites the assistant's text, so replies cannot be located for the "
            "loss mask; use data.loss_on=all or set model.chat_template"
        )
    return start, found


def _special_tokens(tokenizer: Any) -> list[str]:
    tokens = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            tokens.add(str(token))
    return [t for t in tokens if t]


def _as_list(value: list[int] | int | None) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
