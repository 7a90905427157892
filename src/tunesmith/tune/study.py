"""A study: its storage, sampler and pruner, the workers that run its trials, and resuming it.

The storage is Optuna's own: a journal file in the tune folder by default (Optuna's advice for
several processes on one machine), or any RDB URL (PostgreSQL, MySQL) that workers on several
machines share. No scheduler of our own: each worker asks Optuna for the next trial until the study
has its number of finished trials, so running `tune` again, on this machine or another, resumes it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tunesmith.config import RunConfig, build_config, config_to_dict, dump_config, read_yaml
from tunesmith.errors import ConfigError, RunError
from tunesmith.files import write_atomic, write_json_atomic
from tunesmith.jobs import share_cores
from tunesmith.tune.objective import WORKER_ATTR, TrialFailed, run_trial
from tunesmith.tune.space import SearchSpace, parse_space

GRACE_SECONDS = 60.0  # a running trial without a heartbeat for this long is failed and queued again
MAX_RETRIES = 2  # times a trial whose worker died is queued again


@dataclass(frozen=True)
class TuneSettings:
    """How a study runs (the `tunesmith tune` flags)."""

    trials: int = 20
    """Finished trials (complete or pruned) the study should have; a resumed study runs only the rest."""
    storage: str | None = None
    """Optuna storage URL (postgresql://..., sqlite:///...); unset: a journal file in the tune folder."""
    study: str | None = None
    """Study name; unset: output.name or the run's default name. Names the tune folder tune-<study>."""
    workers: int = 1
    """Local worker processes running trials side by side."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """tpe (seeded with train.seed), random, or grid (every combination of choices and stepped ranges)."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    """Stops trials whose validation loss is behind the others' at the same step."""
    time_budget: float | None = None
    """Seconds: no trial is started that would, by the trials so far, end after the budget."""


def study_name(config: RunConfig, settings: TuneSettings) -> str:
    from tunesmith.training.run_folder import run_name

    return settings.study or run_name(config)


def tune_folder(config: RunConfig, settings: TuneSettings) -> Path:
    return Path(config.output.dir) / f"tune-{study_name(config, settings)}"


def prepare(config: RunConfig, space_raw: dict, settings: TuneSettings) -> Path:
    """The tune folder with the study's base config and space; a resumed study must match them."""
    space = parse_space(space_raw)
    _check_space_against(config, space)
    folder = tune_folder(config, settings)
    saved = folder / "tune.json"
    plan = {"config": config_to_dict(config), "space": space_raw, "settings": asdict(settings)}
    if saved.is_file():
        before = json.loads(saved.read_text())
        for part in ("config", "space"):
            if before[part] != json.loads(json.dumps(plan[part])):
                raise ConfigError(f"{folder}: the {part} differs from the one this study started with; resume it with the "
                                  f"same {part}, or start another study with --study NAME")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trials").mkdir(exist_ok=True)
    write_json_atomic(saved, plan)
    write_atomic(folder / "base.yaml", dump_config(config))
    return folder


def _check_space_against(config: RunConfig, space: SearchSpace) -> None:
    searched = {param.path for param in space.params}
    if "train.epochs" in searched and config.train.max_steps is not None and "train.max_steps" not in searched:
        raise ConfigError(f"the space searches train.epochs, but train.max_steps={config.train.max_steps} overrides it; "
                          "set train.max_steps: null in the config (or search train.max_steps instead)")
    if not (config.data.validation or config.data.validation_split > 0):
        raise ConfigError(f"objective {space.objective.metric} is measured on validation rows: set data.validation "
                          "or data.validation_split")


def load_plan(folder: Path) -> tuple[RunConfig, SearchSpace, dict, TuneSettings]:
    plan = json.loads((folder / "tune.json").read_text())
    return build_config(plan["config"]), parse_space(plan["space"]), plan["space"], TuneSettings(**plan["settings"])


def open_study(folder: Path, settings: TuneSettings, space: SearchSpace, seed: int, worker: int = 0) -> Any:
    """The study (created on first use), with a sampler seeded per worker and per trials so far, so
    that two workers, or a resumed study, never draw the same random settings again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(folder, settings.storage)
    name = study_name_of(folder)
    study = optuna.create_study(storage=storage, study_name=name, direction=space.objective.direction,
                                load_if_exists=True, pruner=make_pruner(settings))
    study.sampler = make_sampler(settings, space, seed + 1000 * worker + len(study.trials))
    return study


def study_name_of(folder: Path) -> str:
    return folder.name.removeprefix("tune-")


def make_storage(folder: Path, url: str | None) -> Any:
    import optuna

    if url is None:
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    if url.startswith(("sqlite:", "postgresql", "mysql", "oracle", "mssql")):
        return optuna.storages.RDBStorage(url)
    raise ConfigError(f"--storage {url}: expected a database URL such as postgresql://user@host/db or "
                      "sqlite:///study.db (unset: a journal file in the tune folder)")


def make_sampler(settings: TuneSettings, space: SearchSpace, seed: int) -> Any:
    import optuna

    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    # A third of the trials (2 to 10) drawn at random before TPE models the rest (Optuna's default
    # of 10 would leave a 12-trial study nearly all random).
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, settings.trials // 3)))


def make_pruner(settings: TuneSettings) -> Any:
    import optuna

    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    # The first quarter of the trials (1 to 5) run whole to set the median the others are held to.
    return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(1, settings.trials // 4)))


def run_worker(folder: Path, worker: int = 0, say: Any = None) -> None:
    """Run trials until the study has its finished trials (or the time budget is spent)."""
    from optuna.trial import TrialState

    config, space, _, settings = load_plan(folder)
    study = open_study(folder, settings, space, config.train.seed, worker)
    started = time.time()
    wanted = settings.trials if settings.sampler != "grid" else min(settings.trials, _grid_size(space))
    while True:
        fail_stale_trials(study)
        counts = _counts(study)
        if counts["WAITING"] == 0 and counts["COMPLETE"] + counts["PRUNED"] + counts["RUNNING"] >= wanted:
            return
        if counts["FAIL_OWN"] >= max(3, wanted):
            raise RunError(f"{folder}: {counts['FAIL_OWN']} trials failed; the logs in {folder / 'trials'} say why")
        if settings.time_budget is not None and not _fits(study, started, settings.time_budget, folder):
            if say:
                say(f"worker {worker}: the next trial would end after the time budget ({settings.time_budget:.0f} s); stopping")
            return
        study.optimize(lambda trial: run_trial(trial, config, space, folder), n_trials=1, catch=(TrialFailed,),
                       callbacks=[lambda _, trial: say and say(
                           f"trial {trial.number}: {trial.state.name.lower()}"
                           + (f", {space.objective.metric} {trial.value:.4f}" if trial.state == TrialState.COMPLETE else ""))])


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name: 0 for state in TrialState}
    counts["FAIL_OWN"] = 0  # failed by their own run (not by a dead worker): these are not retried
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
        if trial.state == TrialState.FAIL and not trial.system_attrs.get("tunesmith_stale"):
            counts["FAIL_OWN"] += 1
    return counts


def _grid_size(space: SearchSpace) -> int:
    size = 1
    for values in space.grid().values():
        size *= len(values)
    return size


def _fits(study: Any, started: float, budget: float, folder: Path) -> bool:
    """Whether a trial started now is expected to end inside the budget: the median finished
    trial's time, or before any has finished, the estimate's (`tune` probes it first)."""
    from optuna.trial import TrialState

    durations = sorted(t.duration.total_seconds() for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.duration is not None)
    estimate = folder / "estimate.json"
    probed = json.loads(estimate.read_text())[0]["wall_seconds"] if estimate.is_file() else 0.0
    expected = durations[len(durations) // 2] if durations else probed
    return time.time() - started + expected <= budget


def fail_stale_trials(study: Any) -> list[int]:
    """Fail the running trials whose worker is gone and queue each again with the same settings
    (Optuna's RetryHeartbeatStaleTrialCallback): a dead pid on this host, or no heartbeat for
    GRACE_SECONDS. Only the worker whose FAIL lands first queues the retry."""
    import optuna
    from optuna.trial import TrialState

    retry_class = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = retry_class(max_retry=MAX_RETRIES)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(trial):
            continue
        try:
            study._storage.set_trial_system_attr(trial._trial_id, "tunesmith_stale", True)
            if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(trial.number)
        retry(study, study._storage.get_trial(trial._trial_id))
    return failed


def _is_stale(trial: Any) -> bool:
    worker = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(worker, dict) or worker.get("trial") != trial.number:  # no beat of its own yet (a retry copies attrs)
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return time.time() - started > GRACE_SECONDS
    if worker["host"] == socket.gethostname() and not _alive(int(worker["pid"])):
        return True
    return time.time() - float(worker["beat"]) > GRACE_SECONDS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped by its parent) is dead too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def start_workers(folder: Path, count: int) -> list[subprocess.Popen]:
    """`count` worker processes on the study, each logging to <tune>/worker-N.log."""
    from tunesmith.tune.objective import _child_env

    env = share_cores(_child_env(), count)  # trials side by side share the cores instead of fighting for them
    processes = []
    for number in range(count):
        log = open(folder / f"worker-{number}.log", "w", encoding="utf-8")  # noqa: SIM115 (the child holds it)
        processes.append(subprocess.Popen([sys.executable, "-m", "tunesmith.tune.worker", str(folder), str(number)],
                                          stdout=log, stderr=subprocess.STDOUT, env=env))
        log.close()
    return processes


def read_space_file(path: str | Path) -> dict:
    raw = read_yaml(Path(path), "no such space file; check the path")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of setting paths to ranges")
    return json.loads(json.dumps(raw))  # plain JSON types, as tune.json stores it



def tune(config: RunConfig, space_path: str | Path, settings: TuneSettings, *, show_progress: bool = True,
         say: Any = print) -> dict[str, Any]:
    """Run (or resume) a study with `settings.workers` local workers; write and return its results."""
    from tunesmith.tune.report import write_results

    if settings.trials < 1 or settings.workers < 1:
        raise ConfigError("--trials and --workers must be at least 1")
    folder = prepare(config, read_space_file(space_path), settings)
    _, space, _, _ = load_plan(folder)
    say(f"tunesmith: study {study_name_of(folder)} in {folder} ({settings.storage or 'journal file study.journal'}), "
        f"{settings.trials} trials, {settings.workers} worker{'s' * (settings.workers > 1)}")
    if settings.time_budget is not None and not (folder / "estimate.json").is_file():
        # the budget holds each trial to its expected time: probed now, until trials have measured it
        write_json_atomic(folder / "estimate.json", estimate_trials(config, space, say=say))
    processes = start_workers(folder, settings.workers)
    try:
        _watch(folder, settings, space, config.train.seed, processes, show_progress)
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    study = open_study(folder, settings, space, config.train.seed)
    codes = [process.returncode for process in processes]
    results = write_results(folder, config, study, space)
    if any(codes) and results["best"] is None:
        logs = [folder / f"worker-{n}.log" for n, code in enumerate(codes) if code]
        raise RunError(f"{folder}: the workers stopped with no finished trial: {_last_error(logs[0])}; see {logs[0]}")
    say(results["table"])
    if results["best"] is not None:
        best = results["best"]
        say(f"best: trial {best.number}, {space.objective.metric} {best.value:.4f}: "
            + ", ".join(f"{k}={v!r}" for k, v in best.params.items()))
        say(f"best config: {results['best_yaml']}  (tunesmith train {results['best_yaml']})")
    say(f"report: {folder / 'report.md'}")
    return results


def _watch(folder: Path, settings: TuneSettings, space: SearchSpace, seed: int, processes: list[subprocess.Popen],
           show_progress: bool) -> None:
    """Wait for the workers, with a bar of finished trials."""
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=settings.trials, desc="trials", unit="trial", dynamic_ncols=True)
    study = None
    while any(process.poll() is None for process in processes):
        time.sleep(2.0)
        if progress is None:
            continue
        study = study or open_study(folder, settings, space, seed)
        counts = _counts(study)
        progress.n = min(settings.trials, counts["COMPLETE"] + counts["PRUNED"])
        progress.set_postfix({"running": counts["RUNNING"], "pruned": counts["PRUNED"], "failed": counts["FAIL"]},
                             refresh=True)
    if progress is not None:
        progress.close()


def _last_error(log: Path) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or ["no output"])[-1][:300]


def estimate_trials(config: RunConfig, space: SearchSpace, say: Any = print) -> list[dict[str, Any]]:
    """`tune --estimate`: the base config's cost and that of the space's costliest corner (every
    number at its high end), each probed in its own process (so that one's memory peak is not the
    other's), as `tunesmith train --estimate` measures them."""
    from tunesmith.tune.objective import _child_env
    from tunesmith.tune.space import apply_values

    corner = {}
    for param in space.params:
        if param.kind != "choice":
            corner[param.path] = param.high
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in param.choices):
            corner[param.path] = max(param.choices)
    cases = [("base config", config)]
    if corner:
        cases.append(("costliest corner " + ", ".join(f"{k}={v}" for k, v in corner.items()), apply_values(config, corner)))
    estimates = []
    with tempfile.TemporaryDirectory(prefix="tunesmith-estimate-") as scratch:
        for number, (label, case) in enumerate(cases):
            path = write_atomic(Path(scratch) / f"case-{number}.yaml", dump_config(case))
            done = subprocess.run([sys.executable, "-m", "tunesmith.training.estimate", str(path)], capture_output=True,
                                  text=True, env=_child_env())
            if done.returncode != 0:
                raise RunError(f"--estimate ({label}) failed: {_last_error_text(done.stderr)}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            estimates.append({"case": label, **figures})
            say(f"{label}: {figures['steps']} steps, ~{figures['wall_seconds'] / 60:.1f} min, "
                f"peak memory ~{figures['peak_memory_mb']:,.0f} MB ({figures['device']})")
    say("a trial's wall time lies between these (pruned trials stop sooner); the test-set evaluation is not run by trials")
    return estimates


def _last_error_text(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines or ["no output"])[-1][:300]
