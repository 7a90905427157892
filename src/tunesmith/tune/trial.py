"""One trial, in its own process: a normal tunesmith run, then its objective figure.

    python -m tunesmith.tune.trial TRIAL.yaml METRIC

The run folder is the one TRIAL.yaml names; the figure goes to <run folder>/objective.json. A task
metric (accuracy, macro_f1, exact_match) is measured on the run's validation rows with the
evaluation code `tunesmith eval` uses, never on the test rows: the study must not select on them.
The process ends itself if the worker that started it dies, so a killed worker leaves no orphan
trial training on.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.config import RunConfig, load_config
from tunesmith.errors import ConfigError, RunError, TunesmithError
from tunesmith.files import write_json_atomic

if TYPE_CHECKING:
    from tunesmith.data.tasks import LabelTask

OBJECTIVE_FILE = "objective.json"


def main(argv: list[str]) -> int:
    config_path, metric = argv
    _exit_with_parent()
    config = load_config(config_path)
    from tunesmith.pipeline.train import train

    result = train(config, show_progress=False)
    figures = {"val_loss": result.val_loss, "steps": result.steps, "train_seconds": result.train_seconds,
               "peak_memory_mb": result.peak_memory_mb}
    if metric != "val_loss":
        figures.update(validation_metrics(result.run_dir, config))
    if figures.get(metric) is None:
        raise RunError(f"{result.run_dir}: the run measured no {metric} (does it have validation rows? "
                       "set data.validation or data.validation_split)")
    figures["value"] = figures[metric]
    write_json_atomic(Path(result.run_dir) / OBJECTIVE_FILE, figures)
    return 0


def validation_rows(run_dir: Path, config: RunConfig) -> list:
    """The rows the run validated on, as evaluation items: exactly those whose ids training recorded
    (validation_rows.json), so that no row it trained on is scored. A run written before runs recorded
    them gets the validation file, or the seeded split of the training rows rebuilt."""
    from tunesmith.data.tasks import LabelTask
    from tunesmith.eval.items import load_items
    from tunesmith.training.run_folder import read_validation_rows

    task_file = Path(run_dir) / "task.json"
    task = LabelTask.load(task_file) if task_file.is_file() else None
    ids = read_validation_rows(run_dir)
    if ids is None:
        return _rebuilt_validation_rows(Path(run_dir), config, task)
    spec = config.data.validation or config.data.train
    # the rows training left out are left out here too; any row of `ids` that is not an item is named below
    items, _ = load_items(spec, config.data, task, config.task, skip_invalid=True)
    return _select_rows(items, ids, Path(run_dir), spec)


def _select_rows(items: list, ids: list[str], run_dir: Path, spec: str) -> list:
    from tunesmith.data.pipeline import row_id

    by_id = {row_id(item.where): item for item in items}
    missing = [row for row in ids if row not in by_id]
    if missing:
        raise RunError(f"{run_dir}: {len(missing)} of the {len(ids)} rows it validated on are not evaluation rows of "
                       f"{spec} (first: {missing[0]}): the file changed since the run, or those rows cannot be answered "
                       "by generation; train the run again on the file as it is")
    return [by_id[row] for row in ids]


def _rebuilt_validation_rows(run_dir: Path, config: RunConfig, task: LabelTask | None) -> list:
    """Before validation_rows.json: the split rebuilt over every row, which is the run's own only
    where no row was left out before it (checked by its row count, and warned of)."""
    from tunesmith.data.pipeline import split_validation
    from tunesmith.eval.items import load_items

    manifest = json.loads((run_dir / "manifest.json").read_text())
    dropped = manifest["data"].get("skipped_rows", 0)
    if dropped:
        warnings.warn(f"{run_dir}: written before runs recorded their validation rows, and {dropped} rows were left out "
                      "(data.skip_invalid): the rows rebuilt here may not be the ones it validated on (with a split, some "
                      "may have been trained on); train the run again for an exact objective", stacklevel=3)
    if config.data.validation:
        return load_items(config.data.validation, config.data, task, config.task)[0]
    items, _ = load_items(config.data.train, config.data, task, config.task)
    _, held_out = split_validation(items, config.data.validation_split, config.train.seed)
    expected = manifest["data"]["validation"]["examples"]
    if len(held_out) != expected:
        raise RunError(f"{run_dir}: cannot rebuild the validation split ({expected} rows held out, {len(held_out)} "
                       "found): give the validation rows as a file with data.validation")
    return held_out


def validation_metrics(run_dir: Path, config: RunConfig) -> dict[str, float]:
    """accuracy / macro_f1 (label rows) or exact_match (free text) of the trained run on its validation rows."""
    from tunesmith.eval.compare import evaluate_system
    from tunesmith.models.generate import load_for_generation

    items = validation_rows(run_dir, config)
    if not items:
        raise ConfigError("a task-metric objective needs validation rows: set data.validation or data.validation_split")
    if config.train.method == "classify":
        from tunesmith.eval.classifier import evaluate_classifier, load_classifier

        metrics = evaluate_classifier(load_classifier(str(run_dir)), items, config.eval).systems[0].metrics
    else:
        from tunesmith.data.tasks import LabelTask

        task = LabelTask.load(Path(run_dir) / "task.json")
        labels = list(task.labels) if task else None
        loaded = load_for_generation(str(run_dir), precision=config.eval.precision)
        metrics = evaluate_system(loaded, "fine-tuned", [item.prompt for item in items], items, labels, config.eval,
                                  with_perplexity=False).metrics
    return {name: float(metrics[name]) for name in ("accuracy", "macro_f1", "exact_match") if name in metrics}


def _exit_with_parent() -> None:
    """End this process when the worker that started it is gone (its parent changes). The worker's
    pid comes from the environment: read from getppid() here, after the imports, a worker killed in
    the meantime would already have been replaced by init and never missed."""
    parent = int(os.environ.get("TUNESMITH_TRIAL_PARENT") or os.getppid())
    if os.getppid() != parent:
        os._exit(3)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="tunesmith-parent-watch", daemon=True).start()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except TunesmithError as exc:  # one line, as the CLI prints it; the worker shows the log's last line
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
