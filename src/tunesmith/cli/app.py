"""`tunesmith <command>`: a thin layer over the Python API, one module per command group, each
adding its own commands (`add_commands`) to the one parser.

Every error a user can fix is printed as one line naming the input and the fix (a data report
lists every bad row); the stack trace only with --debug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from tunesmith.cli import data, evaluate, export, generate, guide, improve, serve, train
from tunesmith.errors import TunesmithError

# Commands that load a model: started again under tcmalloc where it is installed (allocator.py)
_MODEL_COMMANDS = frozenset({"train", "tune", "eval", "compare", "predict", "generate", "chat", "serve", "worker",
                             "retrain", "export", "demo"})

# The command groups, in the order `tunesmith --help` lists their commands
COMMAND_GROUPS = (train, data, evaluate, generate, serve, improve, export, guide)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] in _MODEL_COMMANDS:  # the process's own command line
        from tunesmith.allocator import restart_under_tcmalloc

        restart_under_tcmalloc(sys.argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for --nproc, which starts this command again
    _quiet_libraries(args.debug)
    try:
        return args.handler(args) or 0
    except TunesmithError as exc:
        if args.debug:
            raise
        print_error(str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted; a training run continues from its last checkpoint with --resume", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: never a bare traceback for the user
        if args.debug:
            raise
        print_error(unexpected_error_line(args, exc))
        return 1


def print_error(line: str) -> None:
    """The one line an error reaches the user as; in a process of several it names the rank (and
    under --nproc the launcher prints it, once, for the rank that failed first)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from tunesmith.training.distributed.launch import report_rank_error

        line = f"rank {os.environ.get('RANK', '?')}: {line}"
        if report_rank_error(line):
            return
    print(f"error: {line}", file=sys.stderr)


def unexpected_error_line(args: argparse.Namespace, exc: BaseException) -> str:
    """One line for an error tunesmith did not foresee: the command, the cause, what to do next."""
    command = getattr(args, "command_name", None)
    detail = (str(exc).strip().splitlines() or [""])[0][:300]
    kind = type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in detail.lower():
        hint = "use a smaller model or batch (train.batch_size), LoRA, or train.gradient_checkpointing=true"
    else:
        hint = "run it again with --debug for the full trace, and report it if the cause is not in your input"
    return f"tunesmith {command or 'command'} failed: {kind}: {detail}; {hint}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune a language model into a specialist.")
    parser.add_argument("--debug", action="store_true", help="show stack traces")
    commands = parser.add_subparsers(metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (weight-loading bars, deprecation notes) hides what tunesmith says."""
    if debug:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # A warning is one line naming what to do, like every other message (the source line only with --debug).
    warnings.formatwarning = lambda message, category, *_: f"tunesmith: warning: {message}\n"
    # bitsandbytes (model.quantization=4bit) says on every import that it could not fetch an optimized
    # kernel from the hub; tunesmith switches that kernel off anyway (models/load.keep_4bit_differentiable)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass
