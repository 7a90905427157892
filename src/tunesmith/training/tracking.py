"""Run tracking in the tools people already watch: TensorBoard and MLflow (`output.report_to`).

The training loop knows nothing of them: MetricsLog, where the loop writes each step's record,
hands the record on to a Tracker. Metric names are the ones the Hugging Face Trainer's integrations
write (`train/loss`, `train/learning_rate`, `train/grad_norm`, `train/epoch`, `eval/loss`; test-set
figures as `test/...`), so dashboards built for those runs read these too.

TensorBoard events go to <run folder>/tensorboard/. MLflow uses MLFLOW_TRACKING_URI and
MLFLOW_EXPERIMENT_NAME when set (as the Hugging Face integration does), else a local SQLite store
in output.dir (mlflow.db, artifacts under mlartifacts/: MLflow 3 keeps its plain-file store in
maintenance mode). The MLflow run id is kept in the run folder, so the evaluation after training and
a resumed run add to the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError
from tunesmith.files import write_json_atomic

TRACKING_FILE = "tracking.json"
# record key -> the Hugging Face integrations' name
_TRAIN_NAMES = {"loss": "train/loss", "lr": "train/learning_rate", "grad_norm": "train/grad_norm", "epoch": "train/epoch",
                "tokens_per_s": "train/tokens_per_second"}
_SKIPPED = {"step", "tokens", "loss_tokens", "overfitting"}


def metric_names(record: dict[str, Any]) -> dict[str, float]:
    """A step record of metrics.jsonl as {tracked name: value}: numbers only."""
    named = {}
    for key, value in record.items():
        if key in _SKIPPED or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in _TRAIN_NAMES:
            named[_TRAIN_NAMES[key]] = float(value)
        elif key.startswith("val_"):
            named["eval/" + key.removeprefix("val_")] = float(value)
        elif key == "train_val_gap":
            named["eval/train_val_gap"] = float(value)
        else:
            named[f"train/{key}"] = float(value)
    return named


class Tracker:
    """The backends a run reports to; each call goes to every one of them."""

    def __init__(self, backends: list[Any]) -> None:
        self.backends = backends

    def log_config(self, config: dict[str, Any], text: str) -> None:
        for backend in self.backends:
            backend.log_config(config, text)

    def log(self, record: dict[str, Any]) -> None:
        """One record of metrics.jsonl (a step, or the evaluation before the first step)."""
        named = metric_names(record)
        if named:
            for backend in self.backends:
                backend.log_metrics(named, int(record.get("step", 0)))

    def log_metrics(self, named: dict[str, float], step: int) -> None:
        for backend in self.backends:
            backend.log_metrics(named, step)

    def log_table(self, name: str, markdown: str) -> None:
        for backend in self.backends:
            backend.log_table(name, markdown)

    def log_files(self, paths: list[Path]) -> None:
        for backend in self.backends:
            backend.log_files([p for p in paths if p.is_file()])

    def close(self, failed: bool = False) -> None:
        for backend in self.backends:
            backend.close(failed)


@contextlib.contextmanager
def tracking(report_to: list[str], run_dir: Path, output_dir: str) -> Iterator[Tracker | None]:
    """A Tracker for `report_to` (None when empty), closed at the end of the block (a failed run is
    marked failed in MLflow)."""
    if not report_to:
        yield None
        return
    tracker = Tracker([_open_backend(name, Path(run_dir), output_dir) for name in report_to])
    try:
        yield tracker
    except BaseException:
        tracker.close(failed=True)
        raise
    tracker.close()


def _open_backend(name: str, run_dir: Path, output_dir: str) -> Any:
    if name == "tensorboard":
        return TensorBoardBackend(run_dir)
    if name == "mlflow":
        return MlflowBackend(run_dir, output_dir)
    raise ConfigError(f"output.report_to: {name!r} is not one of tensorboard, mlflow")


class TensorBoardBackend:
    """Scalars and text through torch's SummaryWriter, into <run folder>/tensorboard/."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError("output.report_to=tensorboard needs TensorBoard; install it with: "
                              "pip install 'tunesmith[track]' (or pip install tensorboard)") from exc
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log_config(self, config: dict[str, Any], text: str) -> None:
        self.writer.add_text("config", f"```yaml\n{text}\n```")

    def log_metrics(self, named: dict[str, float], step: int) -> None:
        for name, value in named.items():
            self.writer.add_scalar(name, value, step)

    def log_table(self, name: str, markdown: str) -> None:
        self.writer.add_text(name, markdown)

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            if path.suffix == ".md":
                self.writer.add_text(f"files/{path.name}", path.read_text(encoding="utf-8"))

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class MlflowBackend:
    """Params, metrics (sent in batches) and artifacts through MLflow's client, into one run."""

    FLUSH_EVERY = 200  # metric values held before one log_batch call (each call is a database write)

    def __init__(self, run_dir: Path, output_dir: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError("output.report_to=mlflow needs MLflow; install it with: "
                              "pip install 'tunesmith[track]' (or pip install mlflow-skinny)") from exc
        root = Path(output_dir).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        self.pending: list[Any] = []
        saved = run_dir / TRACKING_FILE
        known = json.loads(saved.read_text()) if saved.is_file() else {}
        if known.get("mlflow_uri") == uri and known.get("mlflow_run_id"):
            self.run_id = known["mlflow_run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "tunesmith"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlartifacts").as_uri())
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name,
                                             tags={"tunesmith.run_folder": str(run_dir.resolve())}).info.run_id
        write_json_atomic(saved, {"mlflow_uri": uri, "mlflow_run_id": self.run_id})

    def log_config(self, config: dict[str, Any], text: str) -> None:
        from mlflow.entities import Param

        flat = _flatten(config)
        params = [Param(key, str(value)[:6000]) for key, value in flat.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[start:start + 100])
        self.client.log_text(self.run_id, text, "config.yaml")

    def log_metrics(self, named: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.pending.extend(Metric(name, value, stamp, step) for name, value in named.items())
        if len(self.pending) >= self.FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        for start in range(0, len(self.pending), 1000):  # MLflow takes at most 1000 metrics per call
            self.client.log_batch(self.run_id, metrics=self.pending[start:start + 1000])
        self.pending = []

    def log_table(self, name: str, markdown: str) -> None:
        self.client.log_text(self.run_id, markdown, f"{name}.md")

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path=path.parent.name if path.parent.name == "eval" else None)

    def close(self, failed: bool = False) -> None:
        self._flush()
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def report_results(report_to: list[str], run_dir: Path, output_dir: str) -> None:
    """After the evaluation: its figures (test/<metric> for the fine-tuned model, test/<system>/<metric>
    for the baselines), its table, and the report, metrics, plot and eval files as artifacts."""
    if not report_to:
        return
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").is_file() else {}
    steps = int(manifest.get("results", {}).get("steps") or 0)
    with tracking(report_to, run_dir, output_dir) as tracker:
        comparison = run_dir / "eval" / "comparison.json"
        if comparison.is_file():
            systems = json.loads(comparison.read_text()).get("systems", {})
            named = {}
            for system, figures in systems.items():
                prefix = "test/" if system == "fine-tuned" else f"test/{system.replace(' ', '_')}/"
                named.update({prefix + key: float(value) for key, value in figures.items()
                              if isinstance(value, (int, float)) and not isinstance(value, bool)})
            tracker.log_metrics(named, steps)
            tracker.log_table("eval/comparison", _systems_table(systems))
        files = [run_dir / name for name in ("report.md", "report.html", "loss.png", "metrics.jsonl", "manifest.json")]
        files += sorted((run_dir / "eval").glob("*.json")) if (run_dir / "eval").is_dir() else []
        tracker.log_files(files)


def _systems_table(systems: dict[str, dict[str, Any]]) -> str:
    metrics = [key for key in ("accuracy", "macro_f1", "exact_match", "rouge_l", "reference_ppl")
               if any(key in figures for figures in systems.values())]
    lines = ["| system | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for system, figures in systems.items():
        cells = [f"{figures[m]:.4f}" if isinstance(figures.get(m), (int, float)) else "-" for m in metrics]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
