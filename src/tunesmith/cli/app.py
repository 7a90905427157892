"""`tunesmith <command>`: a thin layer over the Python API.

Every error a user can fix is printed as one line naming the input and the fix (a data report
lists every bad row); the stack trace only with --debug.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from tunesmith.errors import ConfigError, TunesmithError

# The registered training methods (training/methods.py), named here so that --help needs no torch import;
# a test checks the two lists agree.
METHOD_NAMES = ("sft", "pretrain", "classify", "token-classify", "extractive-qa", "dpo", "online-dpo")


# Commands that load a model: started again under tcmalloc where it is installed (allocator.py)
_MODEL_COMMANDS = frozenset({"train", "tune", "eval", "compare", "predict", "generate", "chat", "serve", "worker",
                             "retrain", "export", "demo"})


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

    train = _command(commands, "train", "fine-tune a model (settings from a YAML file and/or flags)", cmd_train)
    train.add_argument("config", nargs="?", help="YAML config file (optional when --data is given)")
    _add_config_flags(train)
    train.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train in N processes on this machine (one per GPU, or CPU processes), data parallel "
                            "(DDP); train.batch_size is per process. Many machines: see torchrun in the README")
    train.add_argument("--estimate", action="store_true",
                       help="print the steps, tokens, wall time and peak memory from a few probe steps; train nothing")

    tune = _command(commands, "tune", "search settings with Optuna: each trial a run in its own process", cmd_tune)
    tune.add_argument("config", nargs="?", help="YAML config file: the base every trial changes")
    _add_config_flags(tune)
    tune.add_argument("--space", required=True, help="YAML of setting paths to ranges, and the objective")
    tune.add_argument("--trials", type=int, default=20, help="finished trials the study should have (default 20)")
    tune.add_argument("--storage", help="Optuna storage URL shared by several machines (default: a journal file)")
    tune.add_argument("--study", help="study name (default: output.name or the run's name); folder tune-NAME")
    tune.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    tune.add_argument("--sampler", choices=["tpe", "random", "grid"], default="tpe", help="default tpe, seeded")
    tune.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median", help="default median")
    tune.add_argument("--time-budget", type=float, help="seconds: start no trial expected to end after it")
    tune.add_argument("--estimate", action="store_true", help="estimate a trial's wall time and peak memory; run none")
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")

    data = _command(commands, "data", "inspect, check and list data", None)
    data_commands = data.add_subparsers(metavar="DATA_COMMAND")
    inspect = _command(data_commands, "inspect", "show examples token by token with the loss mask, and stats", cmd_data_inspect)
    inspect.add_argument("path", help="data file, folder, or named dataset")
    _add_config_flags(inspect, with_data=False)
    inspect.add_argument("--config", dest="config_file", help="YAML config whose data settings apply")
    inspect.add_argument("--rows", type=int, default=2, help="examples to show (default 2)")
    inspect.add_argument("--table", action="store_true", help="one line per token instead of inline text")
    inspect.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    validate = _command(data_commands, "validate", "check every row and report every problem", cmd_data_validate)
    validate.add_argument("path", help="data file, folder, or named dataset")
    _add_config_flags(validate, with_data=False)
    validate.add_argument("--config", dest="config_file", help="YAML config whose data settings apply")
    audit = _command(data_commands, "audit", "duplicates, leakage, personal data, labels and suspicious rows of a "
                     "whole data set; --dedupe/--scrub write a cleaned copy", cmd_data_audit)
    audit.add_argument("path", help="training data file, folder, or named dataset")
    _add_config_flags(audit, with_data=False)
    audit.add_argument("--config", dest="config_file", help="YAML config whose data settings apply")
    audit.add_argument("--test", dest="held_out", action="append", default=[],
                       help="held-out rows to check for leakage (repeat for validation and test)")
    audit.add_argument("--pii", choices=["builtin", "presidio"], default="builtin",
                       help="personal-data detectors: built-in patterns and checksums (offline), or also Presidio")
    audit.add_argument("--groups", help="YAML of group name -> terms: label rates per group of rows mentioning them")
    audit.add_argument("--report-dir", default="audit", help="where audit.json and audit.html go (default ./audit)")
    audit.add_argument("--dedupe", action="store_true", help="leave all but the first row of each duplicate group out of -o")
    audit.add_argument("--scrub", action="store_true", help="replace personal and secret data with <EMAIL>, <CARD>, ... in -o")
    audit.add_argument("-o", "--output", dest="clean_output", help="the cleaned file (.jsonl or .csv); never the input")
    _command(data_commands, "list", "named datasets that can be used by name", cmd_data_list)
    fetch = _command(data_commands, "fetch", "materialize a named dataset into the cache as JSONL", cmd_data_fetch)
    fetch.add_argument("name", help="dataset name, optionally with a split (movie-review-polarity:test)")

    evaluate = _command(commands, "eval", "metrics of a run's model (or any model) on held-out rows", cmd_eval)
    evaluate.add_argument("target", help="run folder, model folder, catalog name or hub id")
    evaluate.add_argument("--data", required=True, help="held-out rows: a file or a named split (movie-review-polarity:test)")
    _add_eval_flags(evaluate)

    compare = _command(commands, "compare", "base zero-shot vs base few-shot vs fine-tuned on the same rows; or, with "
                       "--model (repeated), candidate base models side by side before any training", cmd_compare)
    compare.add_argument("run", nargs="?", help="run folder (leave out to compare --model candidates)")
    compare.add_argument("--model", dest="models", action="append", default=[],
                         help="a candidate base model (repeat for several): catalog name, folder, .gguf or hub id")
    compare.add_argument("--shots-from", help="with --model: solved rows the few-shot examples are drawn from")
    compare.add_argument("--data", required=True, help="held-out rows: a file or a named split (movie-review-polarity:test)")
    compare.add_argument("--few-shot", type=int, default=5, help="solved examples in the few-shot prompt (default 5)")
    compare.add_argument("--selection", choices=["random", "similar", "fixed"], default="random",
                         help="how shots are chosen: per row at random, the most similar, or one fixed draw for every row")
    _add_eval_flags(compare)

    predict = _command(commands, "predict", "predictions of a run's model for every row of a file", cmd_predict)
    predict.add_argument("run", help="run folder")
    predict.add_argument("--data", required=True, help="rows to predict: a file or a named dataset")
    predict.add_argument("--output", help="where to write (.jsonl or .csv; default RUN/predictions/NAME.jsonl)")
    predict.add_argument("--text-column", help="column holding the text")
    predict.add_argument("--batch-size", type=int, default=16)

    generate = _command(commands, "generate", "reply to a prompt with a run's model or any model", cmd_generate)
    generate.add_argument("target", help="run folder, model folder, .gguf file, catalog name or hub id")
    generate.add_argument("--prompt", action="append", required=True, help="user prompt (repeat for several)")
    _add_decoding_flags(generate)

    chat = _command(commands, "chat", "talk to a run's model (or any model) in the terminal", cmd_chat)
    chat.add_argument("target", help="run folder, model folder, .gguf file, catalog name or hub id")
    _add_decoding_flags(chat)

    serve = _command(commands, "serve", "an OpenAI-compatible HTTP server for run folders (needs the serve extra)", cmd_serve)
    serve.add_argument("targets", nargs="*", metavar="RUN",
                       help="run folders (LoRA runs on one base share it), NAME=FOLDER to name one, or a base model")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key-file", help="file with one API key per line (also TUNESMITH_API_KEYS, comma-separated)")
    serve.add_argument("--admin-key-file", help="keys that may load and unload adapters (also TUNESMITH_ADMIN_KEYS)")
    serve.add_argument("--max-queue", type=int, default=64, help="rows queued or decoding before 429 (default 64)")
    serve.add_argument("--max-batch", type=int, default=16, help="rows decoded together (default 16)")
    serve.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask for (default 1024)")
    serve.add_argument("--max-loaded-adapters", type=int, default=8, help="LoRA adapters in memory at once (default 8)")
    serve.add_argument("--max-loaded-models", type=int, default=4, help="full fine-tunes and task heads in memory at "
                       "once (default 4)")
    serve.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="weights' precision: auto is bf16 where the hardware computes it natively (default auto)")
    serve.add_argument("--store", action="store_true", help="keep every chat completion (and its feedback) for the "
                       "monitor and retraining: in --store-url, else RUN/completions.db of the first run")
    serve.add_argument("--store-scrub-pii", action="store_true", help="with --store: replace personal data before it is written")
    serve.add_argument("--store-retention-days", type=float, help="with --store: delete completions older than this")
    serve.add_argument("--max-feedback-per-key-per-hour", type=int, default=1000, help="with --store: feedback posts "
                       "one API key may make in any hour; one more gets 429 (default 1000)")
    # fine-tuning as a service (issue 15)
    serve.add_argument("--jobs", action="store_true", help="also OpenAI's files and fine-tuning API, with workers")
    serve.add_argument("--workers", type=int, default=1, help="with --jobs: worker processes started here (default 1)")
    _add_jobs_flags(serve)
    worker = _command(commands, "worker", "take fine-tuning jobs from a store and train them", cmd_worker)
    _add_jobs_flags(worker)

    # the loop after serving: look, learn from feedback, train again, promote only what wins (issue 16)
    monitor = _command(commands, "monitor", "traffic, latency, feedback and drift of a served run, from its store: "
                       "monitor.html and monitor.json", cmd_monitor)
    monitor.add_argument("run", help="run folder served with --store")
    monitor.add_argument("--store-url", help="the store serve --store wrote (default RUN/completions.db)")
    monitor.add_argument("-o", "--output", help="folder for monitor.html and monitor.json (default RUN/monitor)")
    monitor.add_argument("--since-hours", type=float, help="only the last this many hours of traffic")
    monitor.add_argument("--project", help="the project whose traffic to read (completions are kept in the project of "
                         "the key that asked); needed when the store holds the run's completions in several")
    feedback = _command(commands, "feedback", "users' feedback on a served run's answers", None)
    feedback_export = _command(feedback.add_subparsers(metavar="FEEDBACK_COMMAND"), "export", "feedback as training "
                               "rows (audited: personal data scrubbed, duplicates and test-set prompts dropped)",
                               cmd_feedback_export)
    feedback_export.add_argument("run", help="run folder served with --store")
    feedback_export.add_argument("--as", dest="kind", choices=["sft", "dpo"], required=True,
                                 help="sft: corrections and liked answers; dpo: preference pairs (OpenAI's format)")
    feedback_export.add_argument("-o", "--output", required=True, help="JSONL file to write")
    feedback_export.add_argument("--store-url", help="the store serve --store wrote (default RUN/completions.db)")
    feedback_export.add_argument("--project", help="the project whose feedback to export (completions are kept in the "
                                 "project of the key that asked); needed when the store holds the run's completions "
                                 "in several")
    retrain = _command(commands, "retrain", "a new generation of a run on new rows (plus replayed old ones), "
                       "promoted only if its gate passes", cmd_retrain)
    retrain.add_argument("run", help="run folder (the one being served)")
    retrain.add_argument("--data", required=True, help="new rows (e.g. from tunesmith feedback export --as sft)")
    retrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="change a setting for this generation, e.g. --set retrain.replay=0.5 --set train.max_steps=40")
    retrain.add_argument("--no-progress", action="store_true", help="no progress bars")
    retrain.add_argument("--gate-test-interval", action=argparse.BooleanOptionalAction, default=True,
                         help="promote only when the lower end of the 95%% interval of new - current on the run's test "
                              "set is above -retrain.margin, not just the estimate (default; --no-gate-test-interval: "
                              "the estimate alone)")
    rollback = _command(commands, "rollback", "answer with the previous promoted generation of a run again", cmd_rollback)
    rollback.add_argument("run", help="run folder")
    rollback.add_argument("--to", type=int, help="the generation to go back to (default: the one before the current)")

    export = _command(commands, "export", "write a run for llama.cpp, Ollama, vLLM or ONNX Runtime; every file is read "
                      "back and its answers compared with the run's", cmd_export)
    export.add_argument("run", help="run folder")
    export.add_argument("--format", dest="export_format", required=True,
                        choices=["gguf", "ollama", "gguf-lora", "vllm", "onnx"],
                        help="gguf: the merged model; ollama: GGUF + Modelfile; gguf-lora: the adapter for llama.cpp's "
                             "--lora; vllm: the adapter checked against vLLM's rules; onnx: classifier runs")
    export.add_argument("--quant", default="f16", help="GGUF type: f32, f16, bf16, q8_0; q4_k_m, q5_k_m, q6_k, q4_0, "
                        "q3_k_m with llama-cpp-python installed (default f16)")
    export.add_argument("-o", "--output", help="folder for the files (default RUN/export)")
    export.add_argument("--prompt", action="append", help="a prompt to compare the export's answers on (repeat; "
                        "default: four general prompts)")
    export.add_argument("--check-data", help="onnx: compare ONNX Runtime with predict on every row of this file "
                        "(default: a few sample texts)")
    export.add_argument("--no-verify", action="store_true", help="skip comparing answers (the file is still read back)")

    _command(commands, "models", "models that work by name (materialized once, offline)", cmd_models)
    _command(commands, "settings", "every setting with its default and meaning", cmd_settings)
    demo = _command(commands, "demo", "the main job: fine-tune the default model and show what changed", cmd_demo)
    demo.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    demo.add_argument("--output", default="runs", help="folder for the run (default runs)")
    return parser


def _command(commands: argparse._SubParsersAction, name: str, help_text: str, handler: Callable | None) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show stack traces")
    if handler is not None:
        parser.set_defaults(handler=handler, command_name=parser.prog.removeprefix("tunesmith "))
    return parser


def _add_config_flags(parser: argparse.ArgumentParser, *, with_data: bool = True) -> None:
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


def _add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", help="column holding the text, for labelled data")
    parser.add_argument("--label-column", help="column holding the label, for labelled data")
    parser.add_argument("--max-rows", type=int, help="evaluate at most this many rows")
    parser.add_argument("--batch-size", type=int, default=16, help="prompts decoded together (default 16)")


def _columns(args: argparse.Namespace) -> dict[str, str]:
    columns = {}
    if getattr(args, "text_column", None):
        columns["text"] = args.text_column
    if getattr(args, "label_column", None):
        columns["label"] = args.label_column
    return columns


def _add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--system", help="system prompt")


def _config_from_args(args: argparse.Namespace, config_path: str | None):
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
    for key, column in _columns(args).items():
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


# ---------------------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    import tunesmith

    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: give a number of processes, 1 or more")
    config = _config_from_args(args, args.config)
    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ and not args.estimate:
        from tunesmith.training.distributed.launch import launch
        from tunesmith.training.distributed.world import World
        from tunesmith.training.session import check_distributed

        check_distributed(config, World(0, args.nproc), args.resume)  # before starting any process
        return launch(args.nproc, without_nproc(args.argv))
    if args.estimate:
        from tunesmith.training.estimate import estimate_run

        print(estimate_run(config).describe())
        return 0
    from tunesmith.training.fence import holding_run

    with holding_run():  # a job's training: one trainer in its run folder at a time (training/fence.py)
        result = tunesmith.train(config, resume=args.resume, show_progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 tells where the run landed
        return 0
    print(f"run folder: {result.run_dir}")
    for name, path in result.outputs.items():
        print(f"  {name}: {path}")
    if result.method in ("classify", "token-classify"):
        print(f"try it: tunesmith predict {result.run_dir} --data rows.{'csv' if result.method == 'classify' else 'jsonl'}")
    elif result.method == "extractive-qa":
        print(f"try it: tunesmith predict {result.run_dir} --data questions.jsonl  (rows with a context and a question)")
    else:
        print(f"try it: tunesmith generate {result.run_dir} --prompt \"...\"")
    return 0


def without_nproc(argv: list[str]) -> list[str]:
    """The command line without --nproc N (or --nproc=N), for the processes it starts."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        import optuna  # noqa: F401
    except ImportError as exc:
        raise ConfigError("tunesmith tune needs Optuna; install it with: pip install 'tunesmith[tune]'") from exc
    from tunesmith.tune.study import TuneSettings, tune

    config = _config_from_args(args, args.config)
    settings = TuneSettings(trials=args.trials, storage=args.storage, study=args.study, workers=args.workers,
                            sampler=args.sampler, pruner=args.pruner, time_budget=args.time_budget)
    if args.estimate:
        from tunesmith.tune.space import load_space
        from tunesmith.tune.study import estimate_trials

        estimate_trials(config, load_space(args.space))
        return 0
    tune(config, args.space, settings, show_progress=not args.no_progress)
    return 0


def _span_run(target: str | None) -> bool:
    """A token-classify or extractive-qa run folder (evaluated by its own scores, not by generation)."""
    import json
    from pathlib import Path

    manifest = Path(target or "") / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("method") in ("token-classify", "extractive-qa")


def cmd_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from tunesmith.config import EvalConfig
    from tunesmith.runs import evaluate_model, evaluate_span_run

    settings = EvalConfig(max_rows=args.max_rows, batch_size=args.batch_size)
    if _span_run(args.target):
        evaluate_span_run(Path(args.target), args.data, replace(settings, compare=False))
        return 0
    result = evaluate_model(args.target, args.data, settings, columns=_columns(args))
    shown = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
    print(f"{args.target} on {args.data}:")
    for key, value in shown.items():
        print(f"  {key:24} {value:.4f}" if isinstance(value, float) else f"  {key:24} {value}")
    if "per_class" in result.metrics:
        for label, values in result.metrics["per_class"].items():
            print(f"  {label:24} precision {values['precision']:.3f}  recall {values['recall']:.3f}  F1 {values['f1']:.3f}  support {values['support']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tunesmith.config import EvalConfig
    from tunesmith.runs import evaluate_run

    settings = EvalConfig(few_shot=args.few_shot, few_shot_selection=args.selection, max_rows=args.max_rows,
                          batch_size=args.batch_size)
    if args.models:
        from tunesmith.runs import select_base_model

        if args.run:
            raise ConfigError("compare: give a run folder, or candidate models with --model, not both")
        select_base_model(args.models, args.data, settings, shots_from=args.shots_from, columns=_columns(args))
        return 0
    if not args.run:
        raise ConfigError("compare: give a run folder, or candidate base models with --model A --model B")
    if _span_run(args.run):
        from pathlib import Path

        from tunesmith.runs import evaluate_span_run

        evaluate_span_run(Path(args.run), args.data, settings)
        return 0
    evaluate_run(args.run, args.data, settings, columns=_columns(args))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunesmith.runs import predict

    columns = {"text": args.text_column} if args.text_column else {}
    path = predict(args.run, args.data, Path(args.output) if args.output else None, columns=columns,
                   batch_size=args.batch_size)
    print(f"predictions: {path}")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from tunesmith.checks import inspect_data

    config = _config_from_args(args, args.config_file)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(inspect_data(args.path, config, rows=args.rows, table=args.table, color=color))
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from tunesmith.checks import validate_data

    config = _config_from_args(args, args.config_file)
    print(validate_data(args.path, config))
    return 0


def cmd_data_audit(args: argparse.Namespace) -> int:
    from tunesmith.checks import audit_data

    config = _config_from_args(args, args.config_file)
    print(audit_data(args.path, config, held_out=args.held_out, report_dir=args.report_dir, output=args.clean_output,
                     dedupe=args.dedupe, scrub=args.scrub, groups=args.groups, pii=args.pii))
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from tunesmith.assets import cache_dir
    from tunesmith.data.catalog import DATASETS

    for entry in DATASETS.values():
        path = cache_dir() / "datasets" / f"{entry.name}.jsonl"
        first_use = "generated on first use" if entry.generate else "fetched on first use"
        state = f"cached, {path.stat().st_size / 1e6:.1f} MB" if path.is_file() else first_use
        splits = f"; splits {entry.name}:train ({entry.rows - entry.test_rows}) and {entry.name}:test ({entry.test_rows})" if entry.splits else ""
        print(f"{entry.name}: {entry.rows:,} rows ({state}){splits}\n    {entry.description}\n"
              f"    {entry.origin}; licence: {entry.licence}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from tunesmith.data.catalog import dataset_path, parse_name
    from tunesmith.errors import DataError

    parsed = parse_name(args.name)
    if parsed is None:
        raise DataError(f"{args.name}: not a named dataset; `tunesmith data list` shows them")
    path = dataset_path(*parsed)
    rows = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    print(f"{path} ({rows:,} rows)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from tunesmith.serve.app import ServeTarget, read_keys, serve
    except ImportError as exc:
        raise ConfigError(f"tunesmith serve needs the serve extra ({exc.name} is missing); "
                          "install it with: pip install 'tunesmith[serve]'") from exc
    from tunesmith.config import ServeConfig
    from tunesmith.serve.app import read_key_projects

    if not args.targets and not args.jobs:
        raise ConfigError("tunesmith serve: give a run folder or model to serve (or --jobs for the fine-tuning API)")
    config = ServeConfig(host=args.host, port=args.port, api_keys=read_keys(args.api_key_file, "TUNESMITH_API_KEYS"),
                         admin_keys=read_keys(args.admin_key_file, "TUNESMITH_ADMIN_KEYS"), max_queue=args.max_queue,
                         max_batch=args.max_batch, max_tokens=args.max_tokens,
                         max_loaded_adapters=args.max_loaded_adapters, max_loaded_models=args.max_loaded_models,
                         precision=args.precision,
                         key_projects=read_key_projects(args.api_key_file),
                         store_url=_completions_url(args) if args.store else None, store_scrub_pii=args.store_scrub_pii,
                         store_retention_days=args.store_retention_days,
                         max_feedback_per_key_per_hour=args.max_feedback_per_key_per_hour)
    jobs_config = _jobs_config(args, workers=args.workers) if args.jobs else None
    serve([ServeTarget.parse(target) for target in args.targets], config, jobs_config)
    return 0


def _completions_url(args: argparse.Namespace) -> str:
    """Where `serve --store` keeps completions: --store-url, else the first run folder's
    completions.db (where `tunesmith monitor RUN` looks), else the jobs store or ./completions.db."""
    from tunesmith.serve.app import ServeTarget
    from tunesmith.store.completions import COMPLETIONS_FILE
    from tunesmith.store.db import sqlite_url

    if args.store_url:
        return args.store_url
    for run in (Path(ServeTarget.parse(target).folder) for target in args.targets):
        if (run / "manifest.json").is_file() or (run / "lineage.json").is_file():
            return sqlite_url(run / COMPLETIONS_FILE)
    if args.jobs:
        return _jobs_config(args).database_url
    return sqlite_url(COMPLETIONS_FILE)


def cmd_monitor(args: argparse.Namespace) -> int:
    from tunesmith.monitor import write_monitor

    html, data, report = write_monitor(Path(args.run), args.store_url, Path(args.output) if args.output else None,
                                       since_hours=args.since_hours, project=args.project)
    verdict = report.to_json().get("retrain_suggested")
    print(f"{html}\n{data}" + ("\nretrain suggested: see the report" if verdict else ""))
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from tunesmith.feedback import export_feedback

    report = export_feedback(Path(args.run), Path(args.output), args.kind, store_url=args.store_url,
                             project=args.project)
    print(report.summary())
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from tunesmith.retrain import retrain

    result = retrain(Path(args.run), args.data, args.overrides, show_progress=not args.no_progress,
                     gate_test_interval=args.gate_test_interval)
    print(result.table())
    print(result.summary())
    print(f"report: {result.run_folder / 'gate.md'}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from tunesmith.lineage import rollback

    before, after = rollback(Path(args.run), args.to)
    print(f"{args.run}: generation {after} answers again (was {before}); a server of the run switches on its next request")
    return 0


def _add_jobs_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs-dir", default="tunesmith-jobs", help="uploads, job run folders and the default "
                                                                     "SQLite store (default tunesmith-jobs)")
    parser.add_argument("--store-url", default=os.environ.get("TUNESMITH_STORE_URL"),
                        help="database URL (sqlite:///PATH or postgresql+psycopg://...; default: $TUNESMITH_STORE_URL, "
                             "else SQLite in --jobs-dir); give one with a password in TUNESMITH_STORE_URL, since "
                             "other users see command lines")
    parser.add_argument("--lease-seconds", type=float, default=60.0, help="a job whose worker is silent this long "
                                                                           "is taken over (default 60)")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="how often workers look for work (default 1)")


def _jobs_config(args: argparse.Namespace, *, workers: int = 0):
    from tunesmith.config import JobsConfig

    return JobsConfig(jobs_dir=args.jobs_dir, store_url=args.store_url, workers=workers,
                      lease_seconds=args.lease_seconds, poll_seconds=args.poll_seconds)


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        from tunesmith.jobs.worker import run_worker
    except ImportError as exc:
        raise ConfigError(f"tunesmith worker needs the serve extra ({exc.name} is missing); "
                          "install it with: pip install 'tunesmith[serve]'") from exc
    run_worker(_jobs_config(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tunesmith.export import export_run

    result = export_run(args.run, args.export_format, out_dir=args.output, quant=args.quant,
                        verify=not args.no_verify, prompts=args.prompt, check_data=args.check_data)
    for path in result.files:
        print(path)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tunesmith.models.generate import generate_replies, load_for_generation

    loaded = load_for_generation(args.target)
    replies = generate_replies(loaded, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_p=args.top_p, system_prompt=args.system)
    for prompt, reply in zip(args.prompt, replies):
        if len(args.prompt) > 1:
            print(f">>> {prompt}")
        print(reply)
    return 0


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


def cmd_models(args: argparse.Namespace) -> int:
    from tunesmith.models.catalog import CATALOG, catalog_folder

    for entry in CATALOG.values():
        state = "ready" if (catalog_folder(entry.name) / "config.json").exists() else "fetched on first use"
        print(f"{entry.name:24} {entry.description}\n{'':24} weights: {entry.weights}\n{'':24} from "
              f"{entry.package}=={entry.version} ({state}); online twin: {entry.hub_id}; licence {entry.licence}")
    print("Also accepted: a local Hugging Face folder, a .gguf file, or a hub id (owner/name) when online.")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from tunesmith.config import describe_settings

    for key, default, help_text in describe_settings():
        print(f"{key}  (default {default})\n    {help_text}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tunesmith.demo import run_demo

    run_demo(steps=args.steps, output_dir=args.output)
    return 0


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (weight-loading bars, deprecation notes) hides what tunesmith says."""
    if debug:
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # A warning is one line naming what to do, like every other message (the source line only with --debug).
    warnings.formatwarning = lambda message, category, *_: f"tunesmith: warning: {message}\n"
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
