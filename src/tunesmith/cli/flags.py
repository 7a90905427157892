"""The flags several commands share, and the settings they make."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tunesmith.errors import ConfigError

# The registered training methods (training/methods.py), named here so that --help needs no torch import;
# a test checks the two lists agree.
METHOD_NAMES = ("sft", "pretrain", "classify", "token-classify", "extractive-qa", "dpo", "online-dpo", "grpo")


def add_command(commands: argparse._SubParsersAction, name: str, help_text: str, handler: Callable | None) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show stack traces")
    if handler is not None:
        parser.set_defaults(handler=handler, command_name=parser.prog.removeprefix("tunesmith "))
    return parser


def add_config_flags(parser: argparse.ArgumentParser, *, with_data: bool = True) -> None:
    parser.add_argument("--model", help="base model (sets model.name)")
    parser.add_argument("--text-column", help="column holding the text of labelled rows (sets data.columns.text)")
    parser.add_argument("--label-column", help="column holding the label of labelled rows (sets data.columns.label)")
    if with_data:
        parser.add_argument("--data", help="training data (sets data.train)")
        parser.add_argument("--test", help="held-out test data, evaluated after training (sets eval.test)")
        parser.add_argument("--method", help=f"training method (sets train.method): {', '.join(METHOD_NAMES)}")
        parser.add_argument("--tuning", choices=["lora", "full"],
                            help="lora: train adapters; full: train every weight (sets lora.enabled)")
        parser.add_argument("--output", help="run folder name (sets output.name)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set train.learning_rate=1e-4 (see `tunesmith settings`)")


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", help="column holding the text, for labelled data")
    parser.add_argument("--label-column", help="column holding the label, for labelled data")
    parser.add_argument("--max-rows", type=int, help="evaluate at most this many rows")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")


def columns_of(args: argparse.Namespace) -> dict[str, str]:
    columns = {}
    if getattr(args, "text_column", None):
        columns["text"] = args.text_column
    if getattr(args, "label_column", None):
        columns["label"] = args.label_column
    return columns


def add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--system", help="system prompt")


def config_from_args(args: argparse.Namespace, config_path: str | None):
    from tunesmith.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "model", None):
        overrides.insert(0, f"model.name={args.model}")
    if getattr(args, "data", None):
        overrides.insert(0, f"data.train={args.data}")
    if getattr(args, "output", None):
        overrides.insert(0, f"output.name={args.output}")
    if getattr(args, "test", None):
        overrides.insert(0, f"eval.test={args.test}")
    for key, column in columns_of(args).items():
        overrides.insert(0, f"data.columns.{key}={column}")
    method, tuning = getattr(args, "method", None), getattr(args, "tuning", None)
    if method in ("lora", "full"):
        raise ConfigError(f"--method {method}: lora or full is how the model is tuned, not a method; use --tuning {method} "
                          f"(methods: {', '.join(METHOD_NAMES)})")
    if method:
        overrides.insert(0, f"train.method={method}")
    if tuning:
        overrides.insert(0, f"lora.enabled={'true' if tuning == 'lora' else 'false'}")
    return load_config(config_path, overrides)
