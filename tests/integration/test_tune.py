"""Hyperparameter search on the tiny model: trials are real runs in subprocesses, reported to a real
Optuna study in a journal file."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import tiny_config
from tunesmith.cli import main
from tunesmith.tune.study import TuneSettings, open_study, prepare, run_worker, start_workers, tune

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402


def write_space(path: Path, space: dict) -> Path:
    path.write_text(yaml.safe_dump(space))
    return path


def test_two_workers_share_one_study_and_best_yaml_trains(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.save_every=0", name="tiny")
    space = write_space(tmp_path / "space.yaml", {"train.learning_rate": {"float": [1e-3, 3e-2], "log": True},
                                                  "lora.rank": {"choice": [4, 8]}})
    results = tune(config, space, TuneSettings(trials=2, workers=2, pruner="none"), show_progress=False)
    folder = tmp_path / "runs" / "tune-tiny"
    study = open_study(folder, TuneSettings(), _space(folder), 0)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    # no trial run twice: each trial number has its own run folder, each ran once (one manifest, one config)
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in trials]
    assert len(set(run_dirs)) == 2 and all((d / "manifest.json").is_file() for d in run_dirs)
    assert sorted(p.name for p in (folder / "trials").iterdir() if p.is_dir()) == [f"trial-{n:03d}" for n in range(2)]
    for trial, run_dir in zip(trials, run_dirs):
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["config"]["train"]["learning_rate"] == trial.params["train.learning_rate"]
        assert manifest["config"]["lora"]["rank"] == trial.params["lora.rank"]
        assert trial.value == manifest["results"]["val_loss"]  # the objective is the run's own validation loss
        assert manifest["config"]["eval"]["test"] is None  # trials never look at test rows
    workers = {t.user_attrs["tunesmith_worker"]["pid"] for t in trials}
    assert len(workers) == 2  # both worker processes ran trials
    rows = json.loads((folder / "trials.json").read_text())
    assert [r["trial"] for r in rows] == [0, 1] and (folder / "trials.csv").read_text().startswith("trial,state,val_loss")
    assert {p.name for p in (folder / "plots").iterdir()} >= {"optimization_history.png", "parallel_coordinate.png"}
    assert "Best: trial" in (folder / "report.md").read_text()

    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["train"]["learning_rate"] == study.best_trial.params["train.learning_rate"]
    assert best["output"]["name"] == "tiny-best" and results["best"].number == study.best_trial.number
    assert main(["train", str(folder / "best.yaml"), "--no-progress"]) == 0  # as is, a complete config
    assert (tmp_path / "runs" / "tiny-best" / "manifest.json").is_file()

    # tune again with more trials: the study resumes, the two finished trials are not run again
    tune(config, space, TuneSettings(trials=3, pruner="none"), show_progress=False)
    assert [t.number for t in open_study(folder, TuneSettings(), _space(folder), 0).get_trials(states=(TrialState.COMPLETE,))] == [0, 1, 2]


def test_the_median_pruner_stops_a_trial_behind_the_others(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.save_every=0", name="prune")
    space = {"train.learning_rate": {"choice": [2e-2, 1e-9]}, "train.max_steps": {"choice": [6, 400]}}
    settings = TuneSettings(trials=2, pruner="median")
    folder = prepare(config, space, settings)
    study = open_study(folder, settings, _space(folder), 0)
    study.enqueue_trial({"train.learning_rate": 2e-2, "train.max_steps": 6})  # learns: sets the median
    study.enqueue_trial({"train.learning_rate": 1e-9, "train.max_steps": 400})  # learns nothing: behind at step 3
    run_worker(folder)
    first, second = open_study(folder, settings, _space(folder), 0).get_trials()
    assert first.state == TrialState.COMPLETE and second.state == TrialState.PRUNED
    assert second.intermediate_values[3] > first.intermediate_values[3]
    records = [json.loads(line) for line in (Path(second.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) < 400  # its run was stopped, not left to finish
    assert not (Path(second.user_attrs["run_dir"]) / "manifest.json").exists()
    from tunesmith.tune.report import trial_rows

    rows = trial_rows(open_study(folder, settings, _space(folder), 0), _space(folder))
    assert rows[0]["val_loss"] == first.value and rows[1]["val_loss"] is None  # a pruned trial has no objective value
    assert rows[1]["last_val_loss"] == second.intermediate_values[max(second.intermediate_values)]


def test_a_killed_worker_leaves_its_trial_failed_and_retried(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.save_every=0", name="kill")
    settings = TuneSettings(trials=1, pruner="none")
    folder = prepare(config, {"lora.rank": {"choice": [4, 8]}}, settings)
    [worker] = start_workers(folder, 1)
    study = open_study(folder, settings, _space(folder), 0)
    deadline = time.time() + 120
    while not [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "tunesmith_worker" in t.user_attrs]:
        assert time.time() < deadline and worker.poll() is None
        time.sleep(0.2)
    os.kill(worker.pid, signal.SIGKILL)  # mid-trial: its run has only started
    worker.wait()
    run_worker(folder)  # the next worker (a rerun of `tune`) finds the dead worker's trial
    killed, retried = open_study(folder, settings, _space(folder), 0).get_trials()
    assert killed.state == TrialState.FAIL and retried.state == TrialState.COMPLETE
    assert retried.system_attrs["failed_trial"] == killed.number and retried.params == killed.params
    assert (Path(retried.user_attrs["run_dir"]) / "manifest.json").is_file()
    # the killed worker's trial process ended with it: its run never finished behind the study's back
    assert not (Path(killed.user_attrs["run_dir"]) / "manifest.json").exists()


def test_unknown_setting_in_the_space_file_is_one_line_from_the_cli(tmp_path: Path, tiny_model_dir: Path,
                                                                    chat_file: Path, capsys: pytest.CaptureFixture):
    space = write_space(tmp_path / "space.yaml", {"lora.rnak": {"choice": [4, 8]}})
    code = main(["tune", "--model", str(tiny_model_dir), "--data", str(chat_file), "--space", str(space),
                 "--set", f"output.dir={tmp_path / 'runs'}"])
    assert code == 2
    assert "unknown setting 'lora.rnak'; did you mean 'lora.rank'?" in capsys.readouterr().err


def _space(folder: Path):
    from tunesmith.tune.study import load_plan

    return load_plan(folder)[1]




def _rows_with_two_too_long(method: str, count: int) -> list[dict]:
    """`count` rows of the method's kind; rows 5 and 17 are over data.max_length=128 tokens, so that
    data.skip_invalid leaves them out before the validation split is made."""
    from tests.conftest import chat_rows

    rows = chat_rows(count, seed=4) if method == "sft" else \
        [{"text": f"{'good' if n % 2 else 'bad'} film number {n}", "label": "positive" if n % 2 else "negative"}
         for n in range(count)]
    for number in (5, 17):
        if method == "sft":
            rows[number]["messages"][1]["content"] = " ".join(["red"] * 300)
        else:
            rows[number]["text"] = " ".join(["good"] * 300)
    return rows


def _training_split(config) -> tuple[set[str], set[str], int]:
    """The rows training trained on and held out, as the method's own data preparation makes them."""
    from tunesmith.models.load import resolve_model
    from tunesmith.training.session import get_method, load_tokenizer_and_template

    method = get_method(config.train.method)
    tokenizer, info, _ = load_tokenizer_and_template(method, config, resolve_model(config.model.name))
    prepared = method.prepare_data(config, tokenizer, info)
    return {r.where for r in prepared.train}, {r.where for r in prepared.validation}, len({p.where for p in prepared.skipped})


@pytest.mark.parametrize("method", ["sft", "classify"])
def test_a_task_metric_objective_scores_exactly_the_rows_training_held_out(tmp_path: Path, tiny_model_dir: Path,
                                                                          method: str):
    import warnings

    from tests.conftest import write_jsonl
    from tunesmith.tune.trial import validation_rows

    data = write_jsonl(tmp_path / "rows.jsonl", _rows_with_two_too_long(method, 42))
    config = tiny_config(tmp_path, tiny_model_dir, data, f"train.method={method}", "data.skip_invalid=true",
                         "train.max_steps=1", "train.save_every=0", name=method)
    run_dir = tunesmith_train(config)
    trained, held_out, dropped = _training_split(config)
    assert dropped == 2 and len(held_out) == 10  # 40 rows split 30/10: the same count as a split of all 42
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scored = {item.where for item in validation_rows(run_dir, config)}
    assert scored == held_out and not scored & trained

    # a run written before the ids were recorded: the old rebuild, with a warning since rows were dropped
    (run_dir / "validation_rows.json").unlink()
    with pytest.warns(UserWarning, match="2 rows were left out"):
        validation_rows(run_dir, config)


def test_an_old_run_without_dropped_rows_rebuilds_its_split_silently(tmp_path: Path, tiny_model_dir: Path,
                                                                     chat_file: Path):
    import warnings

    from tunesmith.tune.trial import validation_rows

    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=1", "train.save_every=0", name="old")
    run_dir = tunesmith_train(config)
    (run_dir / "validation_rows.json").unlink(missing_ok=True)
    _, held_out, _ = _training_split(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert {item.where for item in validation_rows(run_dir, config)} == held_out


def tunesmith_train(config) -> Path:
    import tunesmith

    return Path(tunesmith.train(config, show_progress=False).run_dir)


def test_with_a_validation_file_the_objective_scores_the_rows_training_validated_on(tmp_path: Path, tiny_model_dir: Path):
    from tests.conftest import chat_rows, write_jsonl
    from tunesmith.tune.trial import validation_rows

    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(24, seed=1))
    validation = write_jsonl(tmp_path / "validation.jsonl", _rows_with_two_too_long("sft", 20))
    config = tiny_config(tmp_path, tiny_model_dir, train, f"data.validation={validation}", "data.skip_invalid=true",
                         "train.max_steps=1", "train.save_every=0", name="file")
    run_dir = tunesmith_train(config)
    _, validated, dropped = _training_split(config)
    assert dropped == 2 and len(validated) == 18
    assert {item.where for item in validation_rows(run_dir, config)} == validated  # not the 2 rows it left out
