"""`tunesmith serve` and `tunesmith worker`: the OpenAI-compatible server, its fine-tuning jobs, and
the workers that train them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tunesmith.cli.flags import add_command
from tunesmith.errors import ConfigError


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = add_command(commands, "serve", "an OpenAI-compatible HTTP server for run folders (needs the serve extra)", cmd_serve)
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
    serve.add_argument("--workers", type=int, default=1, help="with --jobs: worker processes started here (default 1); "
                       "each trains with OMP_NUM_THREADS = cores / N unless you set it")
    _add_jobs_flags(serve)
    worker = add_command(commands, "worker", "take fine-tuning jobs from a store and train them", cmd_worker)
    _add_jobs_flags(worker)


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


def cmd_worker(args: argparse.Namespace) -> int:
    try:
        from tunesmith.jobs.worker import run_worker
    except ImportError as exc:
        raise ConfigError(f"tunesmith worker needs the serve extra ({exc.name} is missing); "
                          "install it with: pip install 'tunesmith[serve]'") from exc
    run_worker(_jobs_config(args))
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
    parser.add_argument("--allow-python-graders", action="store_true", help="run python graders (code a client "
                        "sends) in reinforcement jobs and the grader endpoints; only where every key holder is trusted")


def _jobs_config(args: argparse.Namespace, *, workers: int = 0):
    from tunesmith.config import JobsConfig

    return JobsConfig(jobs_dir=args.jobs_dir, store_url=args.store_url, workers=workers,
                      lease_seconds=args.lease_seconds, poll_seconds=args.poll_seconds,
                      allow_python_graders=args.allow_python_graders)
