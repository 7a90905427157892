"""A trial as Optuna sees it: sample the settings, run them as a tunesmith run in a subprocess, and
report each validation figure as the run measures it.

Design: the subprocess is a plain tunesmith run (`python -m tunesmith.tune.trial`), and the worker
process that holds the Optuna trial reads the run's metrics.jsonl, which the training loop writes at
every evaluation anyway, and reports those figures to Optuna itself. So the training loop knows
nothing of Optuna, only one process per trial talks to the storage (and keeps its heartbeat), and a
trial that crashes or runs out of memory takes down its subprocess alone; pruning is the worker
ending the subprocess.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, dump_config, replace
from tunesmith.errors import RunError
from tunesmith.files import write_atomic
from tunesmith.training.metrics import read_metrics
from tunesmith.tune.space import SearchSpace, apply_values
from tunesmith.tune.trial import OBJECTIVE_FILE

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 5.0
PARENT_ENV = "TUNESMITH_TRIAL_PARENT"  # the worker's pid, for the trial process to outlive it by at most a second
WORKER_ATTR = "tunesmith_worker"  # user attr: which process runs a trial, and its last heartbeat


class TrialFailed(RunError):
    """The trial's run ended with an error (the study carries on with the next trial)."""


def trial_config(base: RunConfig, values: dict[str, Any], trials_dir: Path, number: int) -> RunConfig:
    """The base config with the trial's values: its own run folder under the tune folder, no test-set
    evaluation (a study selects on validation rows only, never on the test rows), adapter only."""
    config = apply_values(base, values)
    return replace(config, eval=replace(config.eval, test=None),
                   output=replace(config.output, dir=str(trials_dir), name=f"trial-{number:03d}", overwrite=True,
                                  save_merged=False))


def run_trial(trial: Any, base: RunConfig, space: SearchSpace, tune_dir: Path) -> float:
    """Optuna's objective: one trial run, pruned when the pruner says so."""
    import optuna

    values = {param.path: param.suggest(trial) for param in space.params}
    config = trial_config(base, values, tune_dir / "trials", trial.number)
    run_dir = Path(config.output.dir) / config.output.name
    config_path = write_atomic(tune_dir / "trials" / f"trial-{trial.number:03d}.yaml", dump_config(config))
    trial.set_user_attr("run_dir", str(run_dir))
    beat = _Heartbeat(trial)
    log_path = tune_dir / "trials" / f"trial-{trial.number:03d}.log"
    sign = 1.0 if space.objective.direction == "minimize" else -1.0
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "tunesmith.tune.trial", str(config_path), space.objective.metric],
                                   stdout=log, stderr=subprocess.STDOUT, env=_child_env())
        try:
            reported = _follow(process, trial, run_dir / "metrics.jsonl", sign)
        except optuna.TrialPruned:
            _stop(process)
            raise
        finally:
            beat.stop()
            if process.poll() is None:
                _stop(process)
    if process.returncode != 0:
        raise TrialFailed(f"trial {trial.number} failed (exit {process.returncode}): {_last_line(log_path)}; log: {log_path}")
    figures = json.loads((run_dir / OBJECTIVE_FILE).read_text())
    trial.set_user_attr("steps", figures.get("steps"))
    trial.set_user_attr("val_loss", figures.get("val_loss"))
    trial.set_user_attr("peak_memory_mb", figures.get("peak_memory_mb"))
    trial.set_user_attr("evaluations", reported)
    return float(figures["value"])


def _follow(process: subprocess.Popen, trial: Any, metrics_path: Path, sign: float) -> int:
    """Report each new validation loss (negated for a maximized objective: a pruner compares the
    intermediate figures in the study's direction) until the run ends; TrialPruned when told."""
    import optuna

    reported: set[int] = set()
    while True:
        done = process.poll() is not None
        for record in read_metrics(metrics_path) if metrics_path.exists() else []:
            step, value = record.get("step", 0), record.get("val_loss")
            if value is None or step == 0 or step in reported:  # step 0: the base model, the same for every trial
                continue
            reported.add(step)
            trial.report(sign * float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"trial {trial.number} pruned at step {step} (validation loss {value:.4f})")
        if done:
            return len(reported)
        time.sleep(POLL_SECONDS)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    source = str(Path(__file__).resolve().parents[2])  # the tunesmith the worker imports, also in the trial
    env["PYTHONPATH"] = os.pathsep.join(p for p in [source, env.get("PYTHONPATH", "")] if p)
    env[PARENT_ENV] = str(os.getpid())  # the trial compares with it: a worker killed while the trial starts up counts
    return env


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


class _Heartbeat:
    """Every few seconds, the worker's host, pid and the time into the trial's user attrs: a worker
    that finds a running trial whose worker is gone (dead pid on this host, or no beat for the
    grace period) fails it and queues it again (study.py). Optuna's own heartbeat exists for RDB
    storages only; this one works on every storage, the journal file included."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.done = threading.Event()
        self._beat()
        self.thread = threading.Thread(target=self._run, name="tunesmith-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        self.trial.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getpid(),
                                               "trial": self.trial.number, "beat": time.time()})

    def _run(self) -> None:
        while not self.done.wait(HEARTBEAT_SECONDS):
            self._beat()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
