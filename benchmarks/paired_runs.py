"""Two runs of one task on the same held-out rows: each one's metrics with bootstrap intervals, and
the paired difference (B - A) with its interval, by the evaluation's own code (greedy answers
mapped to labels, as `tunesmith eval` scores them).

    python benchmarks/paired_runs.py runs/default runs/tuned --data movie-review-polarity:test

Used for issue 17's closing figure: the tuned config's held-out macro F1 against the default's.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from tunesmith.data.tasks import LabelTask
from tunesmith.eval.compare import evaluate_system
from tunesmith.eval.intervals import system_intervals
from tunesmith.eval.items import load_items
from tunesmith.models.generate import load_for_generation
from tunesmith.pipeline.folder import run_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    folders = [Path(args.run_a), Path(args.run_b)]
    config = run_config(folders[0])
    task = LabelTask.load(folders[0] / "task.json")
    if task is None or LabelTask.load(folders[1] / "task.json") != task:
        raise SystemExit("both runs must be label runs of the same task (task.json)")
    settings = replace(config.eval, scoring="generate")
    items, _ = load_items(args.data, config.data, task, config.task)
    answers = {}
    for folder in folders:
        loaded = load_for_generation(str(folder), precision=settings.precision)
        result = evaluate_system(loaded, folder.name, [i.prompt for i in items], items, list(task.labels), settings)
        answers[folder.name] = result.predicted
        print(f"{folder.name}: {result.seconds:.0f} s")
    names = [f.name for f in folders]
    intervals = system_intervals(list(task.labels), [i.label for i in items], answers, names[1],
                                 resamples=settings.resamples)
    print(f"\n{len(items)} rows of {args.data}, greedy answers, {settings.resamples} paired bootstrap resamples\n")
    print(f"{'run':<24}{'accuracy':>26}{'macro F1':>26}")
    for name in names:
        systems = intervals["systems"][name]
        print(f"{name:<24}{_text(systems['accuracy']):>26}{_text(systems['macro_f1']):>26}")
    gains = intervals["gains"][names[0]]
    print(f"{names[1] + ' - ' + names[0]:<24}{gains['accuracy'].text():>26}{gains['macro_f1'].text():>26}")


def _text(interval) -> str:
    return f"{interval.estimate:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


if __name__ == "__main__":
    main()
