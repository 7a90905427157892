"""output.report_to: a real run logs to TensorBoard event files and a local MLflow store, and what
they hold reads back equal to what the loop wrote to metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import tiny_config
from tunesmith.pipeline.train import train

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def test_a_run_logs_to_tensorboard_and_mlflow_under_the_hugging_face_names(tmp_path: Path, tiny_model_dir: Path,
                                                                            chat_file: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tiny-tracking")
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "output.report_to=[tensorboard, mlflow]",
                         "eval.test=" + str(chat_file), "eval.compare=false", "eval.max_rows=4",
                         "eval.max_new_tokens=4", name="tracked")
    result = train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_loss = {r["step"]: r["loss"] for r in records if "loss" in r}
    learning_rate = {r["step"]: r["lr"] for r in records if "lr" in r}
    val_loss = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    assert len(train_loss) == 6 and sorted(val_loss) == [0, 3, 6]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/epoch", "eval/loss"} <= scalars
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(train_loss, rel=1e-6)
    assert {e.step: e.value for e in events.Scalars("eval/loss")} == pytest.approx(val_loss, rel=1e-6)
    assert "test/exact_match" in scalars  # the evaluation after training, same run
    assert {"config/text_summary", "eval/comparison/text_summary"} <= set(events.Tags()["tensors"])  # config, eval table

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("tiny-tracking").experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params["train.learning_rate"] == "0.02" and run.data.params["lora.rank"] == "8"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(train_loss, rel=1e-6)
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/learning_rate")} == pytest.approx(learning_rate)
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/loss")} == pytest.approx(val_loss, rel=1e-6)
    assert "test/exact_match" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "report.md", "loss.png", "metrics.jsonl", "eval"} <= artifacts
    assert "eval/comparison.json" in {a.path for a in client.list_artifacts(run.info.run_id, "eval")}


def test_a_missing_tracker_package_is_one_line_naming_the_install(tmp_path: Path, tiny_model_dir: Path, chat_file: Path,
                                                                 monkeypatch):
    import sys

    from tunesmith.errors import ConfigError
    from tunesmith.training.tracking import tracking

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"pip install 'tunesmith\[track\]'"), tracking(["mlflow"], tmp_path, str(tmp_path)):
        pass
