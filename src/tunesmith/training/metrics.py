"""Metrics of a run: one JSON object per line in metrics.jsonl, and the loss curves as a PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tunesmith.files import write_atomic
from tunesmith.training import fence


class MetricsLog:
    """Append-only JSONL log; on resume, entries after the checkpoint's step are dropped, since
    those steps are about to be run again, and so is a last line torn by a kill mid-write."""

    def __init__(self, path: Path, resume_step: int | None = None, tracker: Any = None) -> None:
        self.path = path
        self.tracker = tracker  # training.tracking.Tracker (output.report_to): gets every record too
        if resume_step is None:
            write_atomic(path, "")
        elif path.exists():
            kept = [json.dumps(record) for record in read_metrics(path) if record.get("step", 0) <= resume_step]
            write_atomic(path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        fence.check()  # a job taken over by another worker: not one more line
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.log(record)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics log; a line that is not a whole JSON object (the last line of a
    process killed mid-write) is left out."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def plot_losses(metrics_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Training loss per step and validation loss per evaluation, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        return None
    rewards = [(r["step"], r["reward_mean"], r.get("reward_std", 0.0)) for r in records if "reward_mean" in r]
    if rewards:  # on-policy methods: the reward curve is what tells whether training works
        figure, (reward_axis, axis) = plt.subplots(2, 1, figsize=(7, 6.5), dpi=110, sharex=True)
        plot_rewards(reward_axis, rewards, [(r["step"], r["val_reward_mean"]) for r in records if "val_reward_mean" in r])
    else:
        figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axis.plot(*zip(*train), label="train loss", color="#1f77b4", linewidth=1.2)
        if len(train) >= 10:
            window = max(2, len(train) // 20)
            steps = [s for s, _ in train][window - 1:]
            smooth = [sum(v for _, v in train[i - window + 1:i + 1]) / window for i in range(window - 1, len(train))]
            axis.plot(steps, smooth, color="#0b3d66", linewidth=2, label=f"train loss (mean of {window})")
    if val:
        axis.plot(*zip(*val), "o-", label="validation loss", color="#d62728", linewidth=2)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("the method's loss" if rewards else "cross-entropy per loss token")
    axis.grid(alpha=0.3)
    axis.legend()
    if title:
        (reward_axis if rewards else axis).set_title(title)
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return png_path


def plot_rewards(axis: Any, rewards: list[tuple[int, float, float]], val: list[tuple[int, float]]) -> None:
    """Each rollout's mean reward with a band of one standard deviation, and the held-out greedy reward."""
    steps, means, spreads = zip(*rewards)
    axis.plot(steps, means, label="rollout reward (mean)", color="#2ca02c", linewidth=1.5)
    axis.fill_between(steps, [m - s for m, s in zip(means, spreads)], [m + s for m, s in zip(means, spreads)],
                      color="#2ca02c", alpha=0.15, label="rollout reward (1 std)")
    if val:
        axis.plot(*zip(*val), "o-", label="validation reward (greedy)", color="#9467bd", linewidth=2)
    axis.set_ylabel("reward")
    axis.grid(alpha=0.3)
    axis.legend()


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")
