"""A study's results in its tune folder: best.yaml, the trials as a table (terminal, CSV, JSON),
Optuna's plots as PNG, and report.md that shows them together."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, dump_config, replace
from tunesmith.files import write_atomic, write_json_atomic
from tunesmith.tune.space import SearchSpace, apply_values

PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "intermediate_values": "plot_intermediate_values",
}


def trial_rows(study: Any, space: SearchSpace) -> list[dict[str, Any]]:
    """One row per trial: its number, state, objective value, settings and cost."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        # A pruned trial's Optuna value is its last intermediate figure, a (signed) validation loss,
        # not the objective: shown as the validation loss it stopped at, the objective left empty.
        complete = trial.state.name == "COMPLETE"
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower(),
                               space.objective.metric: trial.value if complete else None}
        row.update({param.path: trial.params.get(param.path) for param in space.params})
        intermediate = trial.intermediate_values
        row["last_step"] = max(intermediate) if intermediate else None
        sign = -1.0 if space.objective.direction == "maximize" else 1.0
        row["last_val_loss"] = (trial.user_attrs.get("val_loss") if complete or not intermediate
                                else sign * intermediate[max(intermediate)])
        row["seconds"] = round(trial.duration.total_seconds(), 1) if trial.duration else None
        row["retry_of"] = trial.system_attrs.get("failed_trial")
        row["run_dir"] = trial.user_attrs.get("run_dir")
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text columns."""
    if not rows:
        return "(no trials)"
    columns = [c for c in rows[0] if c != "run_dir"]
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_config(base: RunConfig, study: Any, name: str) -> RunConfig:
    """The base config (its test-set evaluation included) with the best trial's settings, in a run
    folder of its own."""
    config = apply_values(base, dict(study.best_trial.params))
    return replace(config, output=replace(config.output, name=f"{name}-best"))


def write_results(folder: Path, base: RunConfig, study: Any, space: SearchSpace) -> dict[str, Any]:
    """Every result file; returns what it wrote and the best trial."""
    from optuna.trial import TrialState

    rows = trial_rows(study, space)
    write_json_atomic(folder / "trials.json", rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(folder / "trials.csv", buffer.getvalue())
    written: dict[str, Any] = {"trials": folder / "trials.csv", "table": table(rows), "best": None}
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        write_atomic(folder / "report.md", f"# Study {folder.name}\n\nNo trial finished.\n\n```\n{table(rows)}\n```\n")
        return written
    best = study.best_trial
    config = best_config(base, study, folder.name.removeprefix("tune-"))
    written["best_yaml"] = write_atomic(folder / "best.yaml", dump_config(config))
    written["best"] = best
    plots, notes = draw_plots(study, folder / "plots")
    written["plots"] = plots
    write_atomic(folder / "report.md", _markdown(folder, space, best, rows, plots, notes))
    return written


def draw_plots(study: Any, folder: Path) -> tuple[list[Path], list[str]]:
    """Optuna's matplotlib plots as PNG; a plot the study cannot draw yet (too few trials) is a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    drawn, notes = [], []
    for name, function in PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = getattr(optuna_plots, function)(study)
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            with _atomic_png(folder / f"{name}.png") as path:
                figure.savefig(path, dpi=100, format="png")
            plt.close(figure)
            drawn.append(folder / f"{name}.png")
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            notes.append(f"{name}: not drawn ({exc})")
            plt.close("all")
    return drawn, notes


def _atomic_png(path: Path) -> Any:
    from tunesmith.files import atomic_path

    return atomic_path(path)


def _markdown(folder: Path, space: SearchSpace, best: Any, rows: list[dict[str, Any]], plots: list[Path],
              notes: list[str]) -> str:
    settings = "\n".join(f"- `{key}`: {value!r}" for key, value in best.params.items())
    lines = [f"# Study {folder.name}", "",
             f"Best: trial {best.number}, {space.objective.metric} {best.value:.4f} ({space.objective.direction}d "
             "on the validation rows).", "", settings, "",
             "Train it: `tunesmith train best.yaml` (the base config with these settings, its test evaluation included).",
             "", "## Trials", "", "```", table(rows), "```", ""]
    for plot in plots:
        lines += [f"![{plot.stem}](plots/{plot.name})", ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
