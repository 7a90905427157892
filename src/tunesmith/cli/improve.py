"""The loop after serving: `tunesmith monitor`, `feedback export`, `retrain` and `rollback`; look,
learn from feedback, train again, promote only what wins."""

from __future__ import annotations

import argparse
from pathlib import Path

from tunesmith.cli.flags import add_command


def add_commands(commands: argparse._SubParsersAction) -> None:
    monitor = add_command(commands, "monitor", "traffic, latency, feedback and drift of a served run, from its store: "
                          "monitor.html and monitor.json", cmd_monitor)
    monitor.add_argument("run", help="run folder served with --store")
    monitor.add_argument("--store-url", help="the store serve --store wrote (default RUN/completions.db)")
    monitor.add_argument("-o", "--output", help="folder for monitor.html and monitor.json (default RUN/monitor)")
    monitor.add_argument("--since-hours", type=float, help="only the last this many hours of traffic")
    monitor.add_argument("--project", help="the project whose traffic to read (completions are kept in the project of "
                         "the key that asked); needed when the store holds the run's completions in several")
    feedback = add_command(commands, "feedback", "users' feedback on a served run's answers", None)
    feedback_export = add_command(feedback.add_subparsers(metavar="FEEDBACK_COMMAND"), "export", "feedback as training "
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
    retrain = add_command(commands, "retrain", "a new generation of a run on new rows (plus replayed old ones), "
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
    rollback = add_command(commands, "rollback", "answer with the previous promoted generation of a run again", cmd_rollback)
    rollback.add_argument("run", help="run folder")
    rollback.add_argument("--to", type=int, help="the generation to go back to (default: the one before the current)")


def cmd_monitor(args: argparse.Namespace) -> int:
    from tunesmith.improve.monitor import write_monitor

    html, data, report = write_monitor(Path(args.run), args.store_url, Path(args.output) if args.output else None,
                                       since_hours=args.since_hours, project=args.project)
    verdict = report.to_json().get("retrain_suggested")
    print(f"{html}\n{data}" + ("\nretrain suggested: see the report" if verdict else ""))
    return 0


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from tunesmith.improve.feedback import export_feedback

    report = export_feedback(Path(args.run), Path(args.output), args.kind, store_url=args.store_url,
                             project=args.project)
    print(report.summary())
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from tunesmith.improve.retrain import retrain

    result = retrain(Path(args.run), args.data, args.overrides, show_progress=not args.no_progress,
                     gate_test_interval=args.gate_test_interval)
    print(result.table())
    print(result.summary())
    print(f"report: {result.run_folder / 'gate.md'}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from tunesmith.improve.lineage import rollback

    before, after = rollback(Path(args.run), args.to)
    print(f"{args.run}: generation {after} answers again (was {before}); a server of the run switches on its next request")
    return 0
