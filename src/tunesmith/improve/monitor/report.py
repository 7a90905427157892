"""The monitor's report: per served model its traffic, and for a fine-tuned one the drift of its
live prompts from its training prompts, with a verdict on whether to retrain."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tunesmith.eval.metrics import map_answer_to_label
from tunesmith.improve.monitor import drift as stats
from tunesmith.improve.monitor.drift import DriftFigure, DriftThresholds
from tunesmith.improve.monitor.prompts import (
    last_user_text,
    lengths,
    live_rows,
    run_tokenizer,
    training_prompts,
)
from tunesmith.improve.monitor.traffic import Traffic, traffic_by_generation, traffic_of
from tunesmith.store.completions import Completions
from tunesmith.store.tables import CompletionRow

PLOT_BINS = 20


@dataclass(frozen=True)
class Drift:
    verdict: str  # "drift", "no drift", "not enough traffic" or "not measured"
    note: str  # what the lengths are counted in, or why nothing was measured
    live_prompts: int
    training_prompts: int
    reference_prompts: int  # the training prompts every figure compares with
    held_out_prompts: int  # the ones the baselines sample
    length_unit: str  # "tokens" or "words"
    figures: list[DriftFigure]
    length_histogram: dict[str, list]  # edges, training (shares), live (shares): for the plot
    label_mix: dict | None  # labels, training, live (shares among mapped answers), unmapped (share)
    training_files: list[str]
    unusable_training_rows: int

    @classmethod
    def from_json(cls, raw: dict) -> Drift:
        return cls(**{**raw, "figures": [DriftFigure(**figure) for figure in raw["figures"]]})


@dataclass(frozen=True)
class ModelReport:
    name: str
    run_dir: str | None  # None: a base model (traffic only)
    traffic: Traffic
    by_generation: dict[str, Traffic]  # when more than one generation answered
    drift: Drift | None
    retrain_suggested: bool
    reasons: list[str]

    @classmethod
    def from_json(cls, raw: dict) -> ModelReport:
        return cls(**{**raw, "traffic": Traffic.from_json(raw["traffic"]),
                      "by_generation": {key: Traffic.from_json(value) for key, value in raw["by_generation"].items()},
                      "drift": Drift.from_json(raw["drift"]) if raw["drift"] is not None else None})


@dataclass(frozen=True)
class MonitorReport:
    generated_at: int
    since: int | None
    thresholds: DriftThresholds
    models: list[ModelReport]
    retrain_suggested: bool
    reasons: list[str]  # "model: reason", every flag of every model
    project: str | None = None  # the project whose traffic was read (None: every project's)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> MonitorReport:
        return cls(**{**raw, "thresholds": DriftThresholds(**raw["thresholds"]),
                      "models": [ModelReport.from_json(model) for model in raw["models"]]})


def build_monitor(completions: Completions, runs: dict[str, Path | None], *, since: int | None = None,
                  thresholds: DriftThresholds | None = None, project: str | None = None) -> MonitorReport:
    """Traffic of every model in `runs` (served name -> its run folder, None for a base model) in
    `project` (None: every project, the operator's view) since `since` (unix seconds; None: all
    stored), and drift for those with a run folder."""
    thresholds = thresholds or DriftThresholds()
    rows = completions.rows(models=list(runs), since=since, project=project) if runs else []
    feedback = completions.feedback([row.id for row in rows], project=project) if rows else {}
    models = []
    for name, run_dir in runs.items():
        served = [row for row in rows if row.model == name]
        drift = measure_drift(Path(run_dir), live_rows(served), thresholds) if run_dir is not None else None
        reasons = [figure.reason for figure in drift.figures if figure.flagged] if drift else []
        models.append(ModelReport(name, str(run_dir) if run_dir is not None else None, traffic_of(served, feedback),
                                  traffic_by_generation(served, feedback), drift, bool(reasons), reasons))
    reasons = [f"{model.name}: {reason}" for model in models for reason in model.reasons]
    return MonitorReport(int(time.time()), since, thresholds, models, bool(reasons), reasons, project)


def measure_drift(run_dir: Path, live: list[CompletionRow], thresholds: DriftThresholds) -> Drift:
    """Every drift figure of the live prompts (and, for a label task, answers) against the run's training prompts.

    Nothing is read when there is nothing to compare: no live chat prompt yet (a task head's
    requests are not chat completions), or a served model folder that no training run wrote."""
    if not live:
        return unmeasured("not enough traffic", "no answered chat completion yet")
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "manifest.json").is_file():
        return unmeasured("not measured", f"{run_dir} is a model folder, not a run folder `tunesmith train` wrote (no "
                          "config.yaml and manifest.json), so there are no training prompts to compare with", len(live))
    prompts = training_prompts(run_dir)
    train_texts = prompts.texts
    live_texts = [last_user_text(row.messages) for row in live]
    if len(train_texts) < stats.MIN_TRAINING_PROMPTS:
        return unmeasured("not measured", f"the run has {len(train_texts)} training prompts; drift needs at least "
                          f"{stats.MIN_TRAINING_PROMPTS} to set a baseline", len(live), len(train_texts), prompts.files,
                          prompts.unusable_rows)
    reference, held_out = stats.split_reference(len(train_texts))
    tokenizer, note = run_tokenizer(run_dir)
    unit = "tokens" if tokenizer is not None else "words"
    all_lengths = np.asarray(lengths(train_texts + live_texts, tokenizer))
    train_lengths, live_lengths = all_lengths[:len(train_texts)], all_lengths[len(train_texts):]
    figures = [stats.length_figure(train_lengths[reference], train_lengths[held_out], live_lengths.tolist(), unit, thresholds),
               stats.vocabulary_figure(pick(train_texts, reference), pick(train_texts, held_out), live_texts, thresholds),
               stats.centroid_figure(pick(train_texts, reference), pick(train_texts, held_out), live_texts, thresholds)]
    label_mix = None
    if prompts.task is not None:
        labels = list(prompts.task.labels)
        predicted = [map_answer_to_label(row.answer or "", labels)[0] for row in live]
        labelled = [i for i in reference if prompts.labels[i] is not None]
        held_labelled = [i for i in held_out if prompts.labels[i] is not None]
        figures += stats.label_figures(labels, pick(prompts.labels, labelled), pick(prompts.labels, held_labelled),
                                       predicted, thresholds)
        label_mix = mix_of(labels, [label for label in prompts.labels if label is not None], predicted)
    flagged = any(figure.flagged for figure in figures)
    verdict = "drift" if flagged else "not enough traffic" if len(live) < thresholds.min_live_prompts else "no drift"
    return Drift(verdict, f"prompt lengths in {note}", len(live), len(train_texts), len(reference), len(held_out), unit,
                 figures, length_histogram(train_lengths[reference], live_lengths), label_mix, prompts.files,
                 prompts.unusable_rows)


def unmeasured(verdict: str, note: str, live: int = 0, training: int = 0, files: list[str] | None = None,
               unusable: int = 0) -> Drift:
    return Drift(verdict, note, live, training, 0, 0, "", [], {}, None, files or [], unusable)


def pick(values: list, indices: Iterable[int]) -> list:
    return [values[i] for i in indices]


def length_histogram(train_lengths: np.ndarray, live_lengths: np.ndarray) -> dict[str, list]:
    """Shares of each side in shared, evenly spaced bins: what the page draws."""
    edges = np.histogram_bin_edges(np.concatenate([train_lengths, live_lengths]).astype(float), bins=PLOT_BINS)
    return {"edges": edges.tolist(), "training": histogram_shares(train_lengths, edges),
            "live": histogram_shares(live_lengths, edges)}


def histogram_shares(values: np.ndarray, edges: np.ndarray) -> list[float]:
    return (np.histogram(values, edges)[0] / max(len(values), 1)).tolist()


def mix_of(labels: list[str], training: list[str], predicted: list[str | None]) -> dict:
    mapped = [label for label in predicted if label is not None]
    return {"labels": labels,
            "training": [training.count(label) / len(training) if training else 0.0 for label in labels],
            "live": [mapped.count(label) / len(mapped) if mapped else 0.0 for label in labels],
            "unmapped": 1 - len(mapped) / len(predicted) if predicted else None}
