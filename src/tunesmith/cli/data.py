"""`tunesmith data`: inspect rows token by token with the loss mask, validate and audit a data set,
list and fetch the named datasets."""

from __future__ import annotations

import argparse
import sys

from tunesmith.cli.flags import add_command, add_config_flags, config_from_args


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = add_command(commands, "data", "inspect, check and list data", None)
    data_commands = data.add_subparsers(metavar="DATA_COMMAND")
    inspect = add_command(data_commands, "inspect", "show examples token by token with the loss mask, and stats", cmd_data_inspect)
    inspect.add_argument("path", help="data file, folder, or named dataset")
    add_config_flags(inspect, with_data=False)
    inspect.add_argument("--config", dest="config_file", help="YAML config whose data settings apply")
    inspect.add_argument("--rows", type=int, default=2, help="examples to show (default 2)")
    inspect.add_argument("--table", action="store_true", help="one line per token instead of inline text")
    inspect.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    validate = add_command(data_commands, "validate", "check every row and report every problem", cmd_data_validate)
    validate.add_argument("path", help="data file, folder, or named dataset")
    add_config_flags(validate, with_data=False)
    validate.add_argument("--config", dest="config_file", help="YAML config whose data settings apply")
    audit = add_command(data_commands, "audit", "duplicates, leakage, personal data, labels and suspicious rows of a "
                        "whole data set; --dedupe/--scrub write a cleaned copy", cmd_data_audit)
    audit.add_argument("path", help="training data file, folder, or named dataset")
    add_config_flags(audit, with_data=False)
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
    add_command(data_commands, "list", "named datasets that can be used by name", cmd_data_list)
    fetch = add_command(data_commands, "fetch", "materialize a named dataset into the cache as JSONL", cmd_data_fetch)
    fetch.add_argument("name", help="dataset name, optionally with a split (movie-review-polarity:test)")


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from tunesmith.pipeline.checks import inspect_data

    config = config_from_args(args, args.config_file)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    print(inspect_data(args.path, config, rows=args.rows, table=args.table, color=color))
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from tunesmith.pipeline.checks import validate_data

    config = config_from_args(args, args.config_file)
    print(validate_data(args.path, config))
    return 0


def cmd_data_audit(args: argparse.Namespace) -> int:
    from tunesmith.pipeline.checks import audit_data

    config = config_from_args(args, args.config_file)
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
