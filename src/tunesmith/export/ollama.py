"""An Ollama Modelfile whose TEMPLATE renders exactly the prompts the run was trained on.

Ollama's templates are Go templates, the run's is Jinja. Rather than translate Jinja (a language),
we render the run's own template on probe conversations with marker contents and read off what it
puts around each role's message: the prefix of a role's message (when it opens the conversation and
otherwise), its suffix, the generation prompt, and a default system prompt the template injects
when a conversation has none (SmolLM2's does; Ollama's SYSTEM line does the same). The pieces are
written as one Go template over `.Messages`, and checked by rendering other conversations both ways;
a template whose output depends on more than the role and position (e.g. tool calls) is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.export.gguf import ExportError

_MARK = "\u2063{}\u2063"  # invisible separators: no template escapes or strips them


@dataclass(frozen=True)
class TemplateParts:
    head: dict[str, str]  # role -> what precedes its message when it opens the conversation
    prefix: dict[str, str]  # role -> what precedes its message otherwise
    suffix: dict[str, str]  # role -> what follows its message
    generation: str  # what follows the last message when the model is to answer
    default_system: str | None  # a system prompt the template adds when there is none


def derive_parts(render: Any) -> TemplateParts:
    """`render(messages, add_generation_prompt)` -> text, the run's template."""
    suffix = {}
    for roles in (["system"], ["system", "user"], ["system", "user", "assistant"]):
        suffix[roles[-1]] = _split(render(_probe(roles), False), len(roles))[-1]
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    pieces = _split(render(_probe(roles), True), len(roles))
    prefix = {"user": _after(pieces[1], suffix["system"]), "assistant": _after(pieces[2], suffix["user"])}
    if _after(pieces[3], suffix["assistant"]) != prefix["user"] or _after(pieces[4], suffix["user"]) != prefix["assistant"]:
        raise ExportError("the chat template wraps a message differently by its position; write the Modelfile's "
                          "TEMPLATE by hand")
    generation = _after(pieces[-1], suffix["user"])
    head = {"system": pieces[0]}
    prefix["system"] = pieces[0]
    user_first = _split(render(_probe(["user", "assistant", "user"]), True), 3)[0]
    opening, closing = head["system"], suffix["system"] + prefix["user"]
    default_system = None
    if user_first.startswith(opening) and user_first.endswith(closing) and len(user_first) > len(opening) + len(closing):
        default_system = user_first[len(opening): len(user_first) - len(closing)]
    else:
        head["user"] = user_first
    return TemplateParts(head, prefix, suffix, generation, default_system)


def _after(text: str, start: str) -> str:
    if not text.startswith(start):
        raise ExportError("the chat template ends a message differently when another follows; write the "
                          "Modelfile's TEMPLATE by hand")
    return text[len(start):]


def go_template(parts: TemplateParts) -> str:
    """The parts as one Go template over Ollama's `.Messages` (no whitespace trimming: every
    character between the actions is the template's own)."""
    def opening(role: str) -> str:
        first = parts.head.get(role, parts.prefix.get(role, ""))
        other = parts.prefix.get(role, first)
        if first == other:
            return _literal(other)
        return "{{ if eq $i 0 }}" + _literal(first) + "{{ else }}" + _literal(other) + "{{ end }}"

    branches = []
    for keyword, role in (("if", "system"), ("else if", "user"), ("else if", "assistant")):
        branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}' + opening(role) + "{{ .Content }}"
                        + _literal(parts.suffix.get(role, "")))
    return ("{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}" + "".join(branches)
            + "{{ end }}{{ if and $last (ne .Role \"assistant\") }}" + _literal(parts.generation) + "{{ end }}{{ end }}")


def render_parts(parts: TemplateParts, messages: list[dict[str, str]], system: str | None) -> str:
    """What Ollama renders with the template and SYSTEM line: its own semantics, written out."""
    if system is not None and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    out = []
    for number, message in enumerate(messages):
        role = message["role"]
        out.append(parts.head.get(role, parts.prefix[role]) if number == 0 else parts.prefix[role])
        out.append(message["content"] + parts.suffix.get(role, ""))
        if number == len(messages) - 1 and role != "assistant":
            out.append(parts.generation)
    return "".join(out)


SAMPLE_CONVERSATIONS = (
    [{"role": "user", "content": "Is this review positive? 'A tender, funny film.'"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one, please."}],
)


def check_parts(parts: TemplateParts, render: Any, system: str | None) -> list[dict]:
    """Every sample conversation renders the same through the parts as through the run's template."""
    from tunesmith.data.examples import Message

    rows = []
    for conversation in SAMPLE_CONVERSATIONS:
        messages = conversation
        if system is not None and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        expected = render([Message(m["role"], m["content"]) for m in messages], True)
        got = render_parts(parts, conversation, system if system is not None else parts.default_system)
        rows.append({"messages": conversation, "same": got == expected})
        if got != expected:
            raise ExportError(f"the Ollama template renders {got!r} where the run's template renders {expected!r}; "
                              "write the Modelfile's TEMPLATE by hand")
    return rows


def modelfile(gguf_name: str, parts: TemplateParts, stop_tokens: list[str], system: str | None,
              parameters: dict[str, Any]) -> str:
    lines = ["# Made by tunesmith export: `ollama create NAME -f Modelfile` in this folder.", f"FROM ./{gguf_name}",
             f'TEMPLATE """{go_template(parts)}"""']
    chosen = system if system is not None else parts.default_system
    if chosen:
        lines.append(f'SYSTEM """{chosen}"""')
    lines += [f"PARAMETER stop {json.dumps(token)}" for token in stop_tokens]
    lines += [f"PARAMETER {key} {value}" for key, value in parameters.items()]
    return "\n".join(lines) + "\n"


def write_ollama(folder: Path, gguf_name: str, parts: TemplateParts, stop_tokens: list[str], system: str | None,
                 model_name: str) -> Path:
    from tunesmith.files import write_atomic

    text = modelfile(gguf_name, parts, stop_tokens, system, {"temperature": 0})
    path = folder / "Modelfile"
    write_atomic(path, text)
    write_atomic(folder / "README.md", f"# {model_name} for Ollama\n\n    ollama create {model_name} -f Modelfile\n"
                 f"    ollama run {model_name}\n\nThe template, stop tokens and system prompt are the ones "
                 "the run was trained with (checked by tunesmith export).\n")
    return path


def _probe(roles: list[str]) -> list[Any]:
    from tunesmith.data.examples import Message

    return [Message(role, _MARK.format(number)) for number, role in enumerate(roles)]


def _split(text: str, count: int) -> list[str]:
    """The text between the markers: [before the first, between 1st and 2nd, ..., after the last]."""
    pieces = []
    rest = text
    for number in range(count):
        mark = _MARK.format(number)
        if rest.count(mark) != 1:
            raise ExportError("the chat template does not show each message exactly once; write the Modelfile's "
                              "TEMPLATE by hand")
        before, rest = rest.split(mark)
        pieces.append(before)
    pieces.append(rest)
    return pieces


def _literal(text: str) -> str:
    if "{{" in text or '"""' in text:
        raise ExportError('the chat template emits "{{" or triple quotes, which a Modelfile TEMPLATE cannot hold')
    return text
