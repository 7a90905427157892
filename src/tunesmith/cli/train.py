"""`tunesmith train` and `tunesmith tune`: one run, or a search over runs, from a YAML file and/or flags."""

from __future__ import annotations

import argparse
import os

from tunesmith.cli.flags import add_command, add_config_flags, config_from_args
from tunesmith.errors import ConfigError


def add_commands(commands: argparse._SubParsersAction) -> None:
    train = add_command(commands, "train", "fine-tune a model (settings from a YAML file and/or flags)", cmd_train)
    train.add_argument("config", nargs="?", help="YAML config file (optional when --data is given)")
    add_config_flags(train)
    train.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--nproc", type=int, metavar="N",
                       help="train in N processes on this machine (one per GPU, or CPU processes), data parallel "
                            "(DDP); train.batch_size is per process. Many machines: see torchrun in the README")
    train.add_argument("--estimate", action="store_true",
                       help="print the steps, tokens, wall time and peak memory from a few probe steps; train nothing")
    train.add_argument("--trust-python-graders", action="store_true",
                       help="run the python graders in grpo.grader (their source runs here, in a subprocess with time "
                            "and memory limits): only for graders you wrote or whose author you trust")

    tune = add_command(commands, "tune", "search settings with Optuna: each trial a run in its own process", cmd_tune)
    tune.add_argument("config", nargs="?", help="YAML config file: the base every trial changes")
    add_config_flags(tune)
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


def cmd_train(args: argparse.Namespace) -> int:
    import tunesmith

    if args.nproc is not None and args.nproc < 1:
        raise ConfigError(f"--nproc {args.nproc}: give a number of processes, 1 or more")
    if args.trust_python_graders:
        args.overrides = [*args.overrides, "grpo.trust_python_grader=true"]
    config = config_from_args(args, args.config)
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

    config = config_from_args(args, args.config)
    settings = TuneSettings(trials=args.trials, storage=args.storage, study=args.study, workers=args.workers,
                            sampler=args.sampler, pruner=args.pruner, time_budget=args.time_budget)
    if args.estimate:
        from tunesmith.tune.space import load_space
        from tunesmith.tune.study import estimate_trials

        estimate_trials(config, load_space(args.space))
        return 0
    tune(config, args.space, settings, show_progress=not args.no_progress)
    return 0
