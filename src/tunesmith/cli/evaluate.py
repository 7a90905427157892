"""`tunesmith eval`, `compare` and `predict`: a model's metrics on held-out rows, the fine-tuned model
beside the base model prompted (or candidate base models side by side), predictions for a file."""

from __future__ import annotations

import argparse

from tunesmith.cli.flags import add_command, add_eval_flags, columns_of
from tunesmith.errors import ConfigError


def add_commands(commands: argparse._SubParsersAction) -> None:
    evaluate = add_command(commands, "eval", "metrics of a run's model (or any model) on held-out rows", cmd_eval)
    evaluate.add_argument("target", help="run folder, model folder, catalog name or hub id")
    evaluate.add_argument("--data", required=True, help="held-out rows: a file or a named split (movie-review-polarity:test)")
    add_eval_flags(evaluate)

    compare = add_command(commands, "compare", "base zero-shot vs base few-shot vs fine-tuned on the same rows; or, with "
                          "--model (repeated), candidate base models side by side before any training", cmd_compare)
    compare.add_argument("run", nargs="?", help="run folder (leave out to compare --model candidates)")
    compare.add_argument("--model", dest="models", action="append", default=[],
                         help="a candidate base model (repeat for several): catalog name, folder, .gguf or hub id")
    compare.add_argument("--shots-from", help="with --model: solved rows the few-shot examples are drawn from")
    compare.add_argument("--data", required=True, help="held-out rows: a file or a named split (movie-review-polarity:test)")
    compare.add_argument("--few-shot", type=int, default=5, help="solved examples in the few-shot prompt (default 5)")
    compare.add_argument("--selection", choices=["random", "similar", "fixed"], default="random",
                         help="how shots are chosen: per row at random, the most similar, or one fixed draw for every row")
    compare.add_argument("--scoring", choices=["both", "generate", "likelihood"], default="both",
                         help="label tasks: by generated answer, by the likelihood of each label, or both (default); "
                              "likelihood is the fast one (eval.scoring)")
    compare.add_argument("--generate-sample", type=int, default=50,
                         help="with --scoring likelihood: rows each baseline also generates answers for (default 50)")
    compare.add_argument("--with-run", dest="with_runs", action="append", default=[], metavar="RUN",
                         help="grpo runs: another run whose model answers the same prompts, graded by the run's reward "
                              "(repeat for several; eval.compare_runs)")
    add_eval_flags(compare)

    predict = add_command(commands, "predict", "predictions of a run's model for every row of a file", cmd_predict)
    predict.add_argument("run", help="run folder")
    predict.add_argument("--data", required=True, help="rows to predict: a file or a named dataset")
    predict.add_argument("--output", help="where to write (.jsonl or .csv; default RUN/predictions/NAME.jsonl)")
    predict.add_argument("--text-column", help="column holding the text")
    predict.add_argument("--batch-size", type=int, default=16)


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunesmith.config import EvalConfig, replace
    from tunesmith.pipeline.evaluate import evaluate_model
    from tunesmith.pipeline.spans import evaluate_span_run

    settings = EvalConfig(max_rows=args.max_rows, batch_size=args.batch_size)
    if _span_run(args.target):
        evaluate_span_run(Path(args.target), args.data, replace(settings, compare=False))
        return 0
    result = evaluate_model(args.target, args.data, settings, columns=columns_of(args))
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
    from tunesmith.pipeline.evaluate import evaluate_run

    settings = EvalConfig(few_shot=args.few_shot, few_shot_selection=args.selection, max_rows=args.max_rows,
                          batch_size=args.batch_size, scoring=args.scoring, generate_sample=args.generate_sample)
    if args.models:
        from tunesmith.pipeline.evaluate import select_base_model

        if args.run:
            raise ConfigError("compare: give a run folder, or candidate models with --model, not both")
        select_base_model(args.models, args.data, settings, shots_from=args.shots_from, columns=columns_of(args))
        return 0
    if not args.run:
        raise ConfigError("compare: give a run folder, or candidate base models with --model A --model B")
    if _span_run(args.run):
        from pathlib import Path

        from tunesmith.pipeline.spans import evaluate_span_run

        evaluate_span_run(Path(args.run), args.data, settings)
        return 0
    if _grpo_run(args.run):
        from pathlib import Path

        from tunesmith.config import replace
        from tunesmith.pipeline.graded import evaluate_graded_run

        evaluate_graded_run(Path(args.run), args.data, replace(settings, compare_runs=args.with_runs))
        return 0
    if args.with_runs:
        raise ConfigError("compare --with-run: only grpo runs are compared with other runs (graded by their reward)")
    evaluate_run(args.run, args.data, settings, columns=columns_of(args))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tunesmith.pipeline.predict import predict

    columns = {"text": args.text_column} if args.text_column else {}
    path = predict(args.run, args.data, Path(args.output) if args.output else None, columns=columns,
                   batch_size=args.batch_size)
    print(f"predictions: {path}")
    return 0


def _span_run(target: str | None) -> bool:
    """A token-classify or extractive-qa run folder (evaluated by its own scores, not by generation)."""
    import json
    from pathlib import Path

    manifest = Path(target or "") / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("method") in ("token-classify", "extractive-qa")


def _grpo_run(target: str) -> bool:
    import json
    from pathlib import Path

    manifest = Path(target) / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("method") == "grpo"
