"""`tunesmith generate` and `tunesmith chat`: a run's model (or any model) answering prompts."""

from __future__ import annotations

import argparse

from tunesmith.cli.flags import add_command, add_decoding_flags


def add_commands(commands: argparse._SubParsersAction) -> None:
    generate = add_command(commands, "generate", "reply to a prompt with a run's model or any model", cmd_generate)
    generate.add_argument("target", help="run folder, model folder, .gguf file, catalog name or hub id")
    generate.add_argument("--prompt", action="append", required=True, help="user prompt (repeat for several)")
    generate.add_argument("--tools", help="a JSON file of OpenAI's `tools` list: the model may call them; each call "
                                          "it makes is printed as a line `tool_call: {name, arguments}`")
    add_decoding_flags(generate)

    chat = add_command(commands, "chat", "talk to a run's model (or any model) in the terminal", cmd_chat)
    chat.add_argument("target", help="run folder, model folder, .gguf file, catalog name or hub id")
    add_decoding_flags(chat)


def cmd_generate(args: argparse.Namespace) -> int:
    from tunesmith.models.generate import generate_replies, load_for_generation

    loaded = load_for_generation(args.target)
    tools = _read_tools(args.tools) if args.tools else []
    replies = generate_replies(loaded, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_p=args.top_p, system_prompt=args.system, tools=tools)
    for prompt, reply in zip(args.prompt, replies):
        if len(args.prompt) > 1:
            print(f">>> {prompt}")
        if not tools:
            print(reply)
            continue
        import json

        from tunesmith.models.tool_calls import parse_tool_calls

        content, calls = parse_tool_calls(reply)
        if content:
            print(content)
        for call in calls:  # as the server's message.tool_calls
            print("tool_call: " + json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False))
    return 0


def _read_tools(path: str) -> list:
    """OpenAI's `tools` list from a JSON file, checked as training checks a row's tools."""
    import json
    from pathlib import Path

    from tunesmith.data.examples import RowProblems
    from tunesmith.data.tools import parse_tools
    from tunesmith.errors import ConfigError

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"--tools {path}: {error}; give a JSON file holding a list of "
                          '{"type": "function", "function": {...}} objects') from None
    problems = RowProblems(path)
    tools = parse_tools(raw, problems)
    if problems:
        raise ConfigError(f"--tools {path}: " + "; ".join(f"{p.what} ({p.fix})" if p.fix else p.what for p in problems.items))
    return list(tools)


def cmd_chat(args: argparse.Namespace) -> int:
    from tunesmith.data.examples import Message
    from tunesmith.models.generate import generate_replies, load_for_generation

    loaded = load_for_generation(args.target)
    history: list[Message] = [Message("system", args.system)] if args.system else []
    print("chatting with", args.target, "(empty line or Ctrl-D to quit, /reset to start over)")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            return 0
        if line == "/reset":
            history = history[:1] if args.system else []
            continue
        history.append(Message("user", line))
        reply = generate_replies(loaded, [history], max_new_tokens=args.max_new_tokens,
                                 temperature=args.temperature, top_p=args.top_p)[0]
        history.append(Message("assistant", reply))
        print(f"model> {reply}")
