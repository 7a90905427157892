"""What a newcomer runs first: `tunesmith models` (the models that work by name), `tunesmith settings`
(every setting with its default and meaning) and `tunesmith demo` (the main job, end to end)."""

from __future__ import annotations

import argparse

from tunesmith.cli.flags import add_command


def add_commands(commands: argparse._SubParsersAction) -> None:
    add_command(commands, "models", "models that work by name (materialized once, offline)", cmd_models)
    add_command(commands, "settings", "every setting with its default and meaning", cmd_settings)
    demo = add_command(commands, "demo", "the main job: fine-tune the default model and show what changed", cmd_demo)
    demo.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    demo.add_argument("--rows", type=int, default=200, help="held-out reviews compared, a seeded sample of the "
                                                            "400 (default 200)")
    demo.add_argument("--output", default="runs", help="folder for the run (default runs)")


def cmd_models(args: argparse.Namespace) -> int:
    from tunesmith.models.catalog import CATALOG, catalog_folder

    for entry in CATALOG.values():
        state = "ready" if (catalog_folder(entry.name) / "config.json").exists() else "fetched on first use"
        print(f"{entry.name:24} {entry.description}\n{'':24} weights: {entry.weights}\n{'':24} from "
              f"{entry.origin} ({state}); online twin: {entry.hub_id}; licence {entry.licence}")
    print("Also accepted: a local Hugging Face folder, a .gguf file, or a hub id (owner/name) when online.")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from tunesmith.config import describe_settings

    for key, default, help_text in describe_settings():
        print(f"{key}  (default {default})\n    {help_text}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tunesmith.pipeline.demo import run_demo

    run_demo(steps=args.steps, output_dir=args.output, rows=args.rows)
    return 0
