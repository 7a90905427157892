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

from tunesmith.data.examples import Message, ToolCall
from tunesmith.errors import ConfigError


def default_chat_template() -> str:
    return resources.files("tunesmith").joinpath("templates/default.jinja").read_text(encoding="utf-8")


def default_template_path() -> str:
    """Where the default template lies, for messages that tell a user to set model.chat_template to it."""
    return str(resources.files("tunesmith").joinpath("templates/default.jinja"))


def ensure_chat_template(tokenizer: Any, override: str | None = None, *, tools: bool = False) -> str:
    """Set the template to use on `tokenizer` and say where it came from.

    Priority: the config's `model.chat_template` (a file or the text), then the model's own, then
    tunesmith's default. With `tools` (the data has tool rows), a model's own template that ignores
    tools gives way to the default, which writes them (with one warning): training on tool rows
    through a template that drops the function list and the calls would teach the model nothing of
    them. The tokenizer is saved with every output, so the template travels with it.
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
        if not tools or supports_tools(tokenizer):
            return "the model's own"
        warnings.warn(
            "the model's chat template has no tool support (it drops the function list and the calls), so "
            f"tool rows use tunesmith's default template instead ({default_template_path()}, docs/templates.md); "
            "set model.chat_template to a template with tool support to choose another",
            stacklevel=2,
        )
        tokenizer.chat_template = default_chat_template()
        return "tunesmith default, the model's own has no tool support (docs/templates.md)"
    tokenizer.chat_template = default_chat_template()
    return "tunesmith default (docs/templates.md)"


Tools = list[dict[str, Any]] | tuple[dict[str, Any], ...]  # OpenAI's `tools`: function schemas


def render(tokenizer: Any, messages: list[Message] | tuple[Message, ...], *, add_generation_prompt: bool = False,
           tools: Tools = ()) -> str:
    """The conversation as the template writes it; with `tools` (OpenAI's function schemas), the
    template's own tool block, so the prompt at inference is the prompt at training."""
    return tokenizer.apply_chat_template(
        [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt,
        **({"tools": list(tools)} if tools else {}),
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



def reply_start(tokenizer: Any, messages: list[Message] | tuple[Message, ...], index: int, full: str,
                tools: Tools = ()) -> int:
    """Character offset in `full` where the reply `messages[index]` begins."""
    return locate_reply(tokenizer, messages, index, full, tools)[1]


def generation_prompt_end(tokenizer: Any, messages: list[Message] | tuple[Message, ...], index: int, full: str,
                          tools: Tools = ()) -> int:
    """Character offset in `full` where generation's prompt for the reply `messages[index]` ends: the
    conversation before it, rendered with the generation prompt, must be a prefix of the whole."""
    prefix = render(tokenizer, messages[:index], add_generation_prompt=True, tools=tools)
    if not full.startswith(prefix):
        raise ConfigError(
            "the chat template renders earlier turns differently once later turns follow, so the "
            "assistant replies cannot be located for the loss mask; use data.loss_on=all or set "
            "model.chat_template to a template without that behaviour"
        )
    return len(prefix)


def locate_reply(tokenizer: Any, messages: list[Message] | tuple[Message, ...], index: int, full: str,
                 tools: Tools = ()) -> tuple[int, int]:
    """Character offsets in `full` where generation's prompt for the reply `messages[index]` ends
    (what inference tokenizes) and where the reply itself begins (after any space the template adds)."""
    start = generation_prompt_end(tokenizer, messages, index, full, tools)
    content = messages[index].content
    if full.startswith(content, start):
        return start, start
    found = full.find(content.strip(), start)
    if found < 0:
        raise ConfigError(
            "the chat template rewrites the assistant's text, so replies cannot be located for the "
            "loss mask; use data.loss_on=all or set model.chat_template"
        )
    return start, found


def assistant_turn_end(tokenizer: Any, messages: list[Message] | tuple[Message, ...], index: int, full: str,
             tools: Tools = ()) -> int:
    """Character offset in `full` where the assistant turn `messages[index]` ends, with the text that
    closes it (not the whitespace after). For turns whose text the template writes itself (tool calls):
    the conversation up to and including the turn, rendered, must be a prefix of the whole."""
    upto = render(tokenizer, messages[:index + 1], tools=tools)
    if not full.startswith(upto):
        raise ConfigError(
            "the chat template renders an assistant turn with tool calls differently once later turns "
            "follow, so the calls cannot be located for the loss mask; use data.loss_on=all or set "
            "model.chat_template to a template without that behaviour"
        )
    return len(upto.rstrip())


_PROBE_TOOL = {"type": "function", "function": {
    "name": "probe_lookup", "description": "Look a word up.",
    "parameters": {"type": "object", "properties": {"probe_word": {"type": "string"}}, "required": ["probe_word"]}}}
_PROBE_CALLS = (Message("user", "Look this up."),
                Message("assistant", "", tool_calls=(ToolCall("call_1", "probe_lookup", '{"probe_word": "probe-value"}'),)),
                Message("tool", "probe-result", tool_call_id="call_1"),
                Message("assistant", "Found it."))


def supports_tools(tokenizer: Any) -> bool:
    """Whether the template writes a tool list, a call (its name and arguments) and a tool's result:
    templates without tool support render the conversation with those silently left out."""
    try:
        text = render(tokenizer, _PROBE_CALLS, tools=[_PROBE_TOOL])
    except Exception:  # a template may refuse roles or fields it does not know (raise_exception)
        return False
    # the schema's property (the tool list), the argument's value (the call) and the result
    return all(mark in text for mark in ("probe_word", "probe-value", "probe-result"))


def check_tool_support(tokenizer: Any) -> None:
    """Stop with the fix when tool rows would go through a template that drops tools."""
    if not supports_tools(tokenizer):
        raise ConfigError(
            "the data has tool rows (tools, tool_calls, tool results) but the chat template has no tool "
            "support: it would drop the function list and the calls; set model.chat_template to a "
            f"template with tool support, e.g. tunesmith's default {default_template_path()} (docs/templates.md)"
        )


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
