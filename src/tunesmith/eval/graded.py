"""Did reinforcement fine-tuning work? The held-out prompts answered greedily by the base model, by any
other runs named in eval.compare_runs (an SFT run on the same prompts, say) and by the fine-tuned model,
each answer scored by the run's own reward (its grader, or preference.reward): the mean reward of each
system with its 95% interval, and the fine-tuned model's gain over each with its paired interval (the
same rows, resampled together). With a grader that gives 0 or 1, the mean is the pass@1 accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunesmith.eval.intervals import Interval, mean_gain_interval, resample_indices
from tunesmith.eval.tables import cell, gain_verdict, text_table


@dataclass
class GradedSystem:
    name: str
    model: str
    answers: list[str]
    scores: list[float]
    seconds: float

    @property
    def metrics(self) -> dict[str, float]:
        return {"reward": float(np.mean(self.scores)) if self.scores else 0.0}


@dataclass
class GradedComparison:
    where: list[str]  # each prompt's file:line
    prompts: list[str]
    systems: list[GradedSystem]
    reward: str  # what scored the answers, in words
    intervals: dict[str, Interval] = field(default_factory=dict)
    gains: dict[str, dict[str, Interval]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tuned: str = "fine-tuned"

    @property
    def binary(self) -> bool:
        return all(score in (0.0, 1.0) for s in self.systems for score in s.scores)

    @property
    def metric_name(self) -> str:
        return "pass@1" if self.binary else "mean reward"

    def cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["system", f"{self.metric_name} [95%]", f"{self.tuned} gain [95%]", "seconds"]
        rows = []
        for system in self.systems:
            gain = self.gains.get(system.name, {}).get("reward")
            rows.append([system.name, cell(system.metrics["reward"], self.intervals.get(system.name)),
                         cell(gain.estimate, gain, signed=True) if gain else "", f"{system.seconds:.0f}"])
        return header, rows

    def table(self) -> str:
        return text_table(*self.cells())

    def verdict(self) -> str:
        return gain_verdict(self.systems, self.gains, "reward", self.metric_name, self.tuned)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "graded", "rows": len(self.where), "reward": self.reward, "metric": self.metric_name,
                "notes": self.notes,
                "systems": {s.name: {"model": s.model, "seconds": round(s.seconds, 2), **s.metrics} for s in self.systems},
                "intervals": {name: interval.as_dict() for name, interval in self.intervals.items()},
                "gains": {name: {m: i.as_dict() for m, i in gains.items()} for name, gains in self.gains.items()}}

    def blocks(self) -> list[tuple[str, Any]]:
        """The report's section: what was asked, the table, the verdict."""
        return [("h", "Held-out prompts: fine-tuned vs the base model" + (" and other runs" if len(self.systems) > 2 else "")),
                ("p", f"The same {len(self.where)} held-out prompts, greedy decoding, every answer scored by the run's "
                      f"reward, {self.reward}; {self.metric_name} per system with its 95% interval over the "
                      "prompts, and the fine-tuned model's gain over each system with its paired interval."),
                ("table", self.cells()), ("p", self.verdict()),
                *[("p", f"Note: {note}") for note in self.notes],
                ("p", "Every prompt's answers and scores: eval/predictions.jsonl.")]

    def rows(self) -> list[dict[str, Any]]:
        """Each prompt with every system's answer and score (eval/predictions.jsonl)."""
        return [{"where": where, "prompt": prompt,
                 **{s.name: {"answer": s.answers[n], "score": s.scores[n]} for s in self.systems}}
                for n, (where, prompt) in enumerate(zip(self.where, self.prompts))]


def mean_interval(scores: Sequence[float], *, resamples: int, seed: int) -> Interval:
    """The mean of per-row scores with its percentile bootstrap interval (the rows resampled)."""
    values = np.asarray(scores, dtype=np.float64)
    draws = resample_indices(len(values), resamples=resamples, seed=seed)
    means = values[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high), resamples)


def add_graded_intervals(comparison: GradedComparison, resamples: int, seed: int) -> None:
    """Each system's mean with its interval; the tuned system's gain over each other one, paired."""
    tuned = next((s for s in comparison.systems if s.name == comparison.tuned), None)
    for system in comparison.systems:
        comparison.intervals[system.name] = mean_interval(system.scores, resamples=resamples, seed=seed)
        if tuned is not None and system is not tuned:
            comparison.gains[system.name] = {"reward": mean_gain_interval(system.scores, tuned.scores,
                                                                          resamples=resamples, seed=seed)}
