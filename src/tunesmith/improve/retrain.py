"""`tunesmith retrain RUN --data NEW`: fine-tune a served run again on new rows, and promote the
result only when it wins.

The new generation starts from the current generation's model (its merged weights; a LoRA run
gets a new adapter on them, as a chained stage does), trains on the new rows minus a held-out
share plus a replayed sample of the run's own training rows (`retrain.replay`, against
forgetting), and is then scored beside the current generation on two sets with paired bootstrap
intervals: the run's test set (`eval.test`) and the held-out new rows. The gate promotes it only
when it is not worse on the test set by more than `retrain.margin` and better on the new rows;
otherwise the current generation keeps answering and the report says why. generations.json
records every generation either way (lineage.py); a server of RUN switches on its next request.

"Not worse by more than the margin" is read as a non-inferiority test: the lower end of the 95%
interval of new - current on the test set must be at or above -margin, not only the estimate
(`gate_test_interval`, the default). The new rows cannot guard against what they teach: they are
held out from the same feedback, so rows that were poisoned score the poisoned generation well.
The test set is the one side no client writes, and a small test set on which the estimate passes
by chance is exactly where the interval is wide.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tunesmith.config import RunConfig, apply_overrides, replace
from tunesmith.errors import RunError
from tunesmith.improve.lineage import current_generation, next_number, read_lineage


@dataclass(frozen=True)
class GateSet:
    """One evaluation set of the gate: both models' headline metric, and the difference."""

    name: str
    rows: int
    metric: str
    current: dict  # Interval.as_dict()
    candidate: dict
    difference: dict


@dataclass(frozen=True)
class RetrainResult:
    generation: int
    run_folder: Path
    promoted: bool
    reasons: list[str]
    sets: list[GateSet]
    started_from: int

    def table(self) -> str:
        lines = [f"| set | rows | metric | current (gen {self.started_from}) | new (gen {self.generation}) "
                 "| new - current [95% interval] |", "|---|---|---|---|---|---|"]
        for s in self.sets:
            d = s.difference
            lines.append(f"| {s.name} | {s.rows} | {s.metric} | {s.current['estimate']:.3f} | {s.candidate['estimate']:.3f} "
                         f"| {d['estimate']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] |")
        return "\n".join(lines)

    def summary(self) -> str:
        verdict = "promoted" if self.promoted else "not promoted"
        return f"generation {self.generation}: {verdict} ({'; '.join(self.reasons)})"


def retrain(run_dir: Path, new_data: str, overrides: list[str] | None = None, *, show_progress: bool = True,
            say=print, gate_test_interval: bool = True) -> RetrainResult:
    """Train generation N+1 of `run_dir` on `new_data`, gate it, record it, promote it if it wins
    (with `gate_test_interval`, the test set's interval must clear -margin, not only its estimate)."""
    from tunesmith.data.tasks import LabelTask
    from tunesmith.pipeline.folder import run_config
    from tunesmith.pipeline.train import train

    run_dir = Path(run_dir).resolve()
    read_lineage(run_dir)  # refuses a folder that is not a finished run
    config = apply_overrides(run_config(run_dir), overrides or [])
    _check_retrainable(run_dir, config)
    task = LabelTask.load(run_dir / "task.json")
    current = current_generation(run_dir)
    number = next_number(run_dir)
    start_model = _merged_model(current.run_folder)
    data_dir = run_dir / "generations" / f"gen-{number}.data"
    train_file, test_file, counts = write_generation_data(run_dir, config, new_data, data_dir, task)
    say(f"generation {number} from generation {current.number}: {counts['new_train']} new rows + {counts['replayed']} "
        f"replayed training rows; {counts['new_test']} new rows held out for the gate")
    gen_config = replace(
        config, stages=[],
        model=replace(config.model, name=str(start_model)),
        data=replace(config.data, train=str(train_file), validation=None, columns={}, format="auto"),
        eval=replace(config.eval, test=None, compare=False),
        output=replace(config.output, dir=str(run_dir / "generations"), name=f"gen-{number}", overwrite=False,
                       save_merged=True, report_to=[]))
    result = train(gen_config, show_progress=show_progress)
    if task is not None:
        task.save(result.run_dir / "task.json")  # its rows were written with the run's own labels
    sets = gate_sets(config, task, current.run_folder, result.run_dir, test_file)
    promoted, reasons = decide(sets, config.retrain.margin, test_interval=gate_test_interval)
    outcome = RetrainResult(number, result.run_dir, promoted, reasons, sets, current.number)
    record = {"data": {"new_rows": str(Path(new_data).resolve()), **counts, "train_file": str(train_file),
                       "held_out_file": str(test_file)},
              "gate": {"promoted": promoted, "reasons": reasons, "margin": config.retrain.margin,
                       "test_interval": gate_test_interval, "sets": [s.__dict__ for s in sets]}}
    from tunesmith.files import write_atomic, write_json_atomic
    from tunesmith.improve.lineage import add_generation

    write_json_atomic(result.run_dir / "gate.json", record["gate"])
    write_atomic(result.run_dir / "gate.md", f"# Gate of generation {number}\n\n{outcome.table()}\n\n"
                                             f"**{outcome.summary()}**\n")
    add_generation(run_dir, number, result.run_dir, current.number, promoted=promoted, record=record)
    return outcome


def _check_retrainable(run_dir: Path, config: RunConfig) -> None:
    if config.stages:
        raise RunError(f"{run_dir}: a chained run; retrain its last stage's folder (stages/NAME) instead")
    if config.train.method != "sft":
        raise RunError(f"{run_dir}: a {config.train.method} run; retrain works on sft runs (chat or labelled rows)")
    if not config.eval.test:
        raise RunError(f"{run_dir}: the run has no test set, and the gate needs one; give it with "
                       "--set eval.test=FILE")


def _merged_model(run_folder: Path) -> Path:
    manifest = json.loads((run_folder / "manifest.json").read_text())
    model = manifest.get("outputs", {}).get("model")
    if not model or not Path(model).is_dir():
        raise RunError(f"{run_folder}: no merged model to continue from (trained with output.save_merged=false); "
                       "merge it first or train it again with save_merged")
    return Path(model)


def write_generation_data(run_dir: Path, config: RunConfig, new_data: str, data_dir: Path, task) -> tuple[Path, Path, dict]:
    """The new rows split into training and held-out rows, and the training file: those plus
    `retrain.replay` x as many of the run's own training rows, all in one format (label rows
    for a label run, chat rows otherwise)."""
    from tunesmith.data.catalog import resolve_data_path
    from tunesmith.data.pipeline import read_source
    from tunesmith.files import write_atomic

    new_path = Path(resolve_data_path(new_data))
    new_raw = read_source(new_path, replace(config.data, columns={}, format="auto"))
    if new_raw.problems:
        first = new_raw.problems[0]
        raise RunError(f"{new_path}: {len(new_raw.problems)} bad rows, first {first.where}: {first.message}; "
                       f"{first.fix}")
    new_rows = [_row(e, task, new_path) for e in new_raw.examples]
    if len(new_rows) < 5:
        raise RunError(f"{new_path}: {len(new_rows)} rows; retrain needs at least 5 (some are held out for the gate)")
    old_raw = read_source(Path(resolve_data_path(config.data.train)), config.data)
    old_rows = [_row(e, task, Path(config.data.train)) for e in old_raw.examples]
    rng = random.Random(config.retrain.seed)
    rng.shuffle(new_rows)
    held = max(1, round(len(new_rows) * config.retrain.holdout))
    new_test, new_train = new_rows[:held], new_rows[held:]
    replayed = rng.sample(old_rows, min(len(old_rows), round(config.retrain.replay * len(new_train))))
    training = new_train + replayed
    rng.shuffle(training)
    data_dir.mkdir(parents=True, exist_ok=True)
    train_file, test_file = data_dir / "train.jsonl", data_dir / "new_held_out.jsonl"
    write_atomic(train_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in training))
    write_atomic(test_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new_test))
    return train_file, test_file, {"new_train": len(new_train), "new_test": len(new_test), "replayed": len(replayed)}


def _row(example, task, source: Path) -> dict:
    if task is not None:
        if example.kind != "label":
            raise RunError(f"{source}:{example.line}: a {example.kind} row, but the run learned labelled rows; give "
                           "rows with text and label (tunesmith feedback export writes them)")
        return {"text": example.text, "label": example.label}
    if example.kind != "chat":
        raise RunError(f"{source}:{example.line}: a {example.kind} row; retrain takes chat rows (messages), as "
                       "tunesmith feedback export --as sft writes them")
    return {"messages": [{"role": m.role, "content": m.content} for m in example.messages]}


def gate_sets(config: RunConfig, task, current_folder: Path, candidate_folder: Path, new_test: Path) -> list[GateSet]:
    """Both models on the run's test set and on the held-out new rows, with paired intervals."""
    from tunesmith.eval.compare import evaluate_system
    from tunesmith.eval.intervals import system_intervals
    from tunesmith.eval.items import load_items
    from tunesmith.models.generate import load_for_generation

    settings = replace(config.eval, scoring="generate")
    labels = list(task.labels) if task else None
    sets = [("run's test set", load_items(config.eval.test, config.data, task, config.task)[0]),
            ("held-out new rows", load_items(str(new_test), replace(config.data, columns={}), task, config.task)[0])]
    answers: dict[str, list[list]] = {"current": [], "candidate": []}
    for name, folder in (("current", current_folder), ("candidate", candidate_folder)):
        loaded = load_for_generation(str(folder), precision=settings.precision)
        for _, items in sets:
            result = evaluate_system(loaded, name, [i.prompt for i in items], items, labels, settings,
                                     with_perplexity=False)
            answers[name].append(result.predicted if labels else result.answers)
        del loaded
    metric = "macro_f1" if labels else "rouge_l"
    found = []
    for index, (name, items) in enumerate(sets):
        references = [i.label for i in items] if labels else [i.reference for i in items]
        intervals = system_intervals(labels, references, {"current": answers["current"][index],
                                                          "candidate": answers["candidate"][index]}, "candidate",
                                     resamples=settings.resamples)
        found.append(GateSet(name, len(items), metric, intervals["systems"]["current"][metric].as_dict(),
                             intervals["systems"]["candidate"][metric].as_dict(),
                             intervals["gains"]["current"][metric].as_dict()))
    return found


def decide(sets: list[GateSet], margin: float, *, test_interval: bool = True) -> tuple[bool, list[str]]:
    """Promote when not worse on the test set beyond `margin` (with `test_interval`: the lower end
    of the difference's 95% interval, else its estimate) and better on the new rows."""
    test, new = sets
    promoted, reasons = judge_test_set(test, margin, test_interval)
    gain = new.difference["estimate"]
    if gain <= 0:
        promoted = False
        reasons.append(f"{gain:+.3f} {new.metric} on the held-out new rows: no better than the current model")
    else:
        reasons.append(f"{gain:+.3f} {new.metric} on the held-out new rows")
    return promoted, reasons


def judge_test_set(test: GateSet, margin: float, interval: bool) -> tuple[bool, list[str]]:
    drop, low, level = test.difference["estimate"], test.difference["low"], test.difference.get("level", 0.95)
    if drop < -margin:
        return False, [f"{drop:+.3f} {test.metric} on the run's test set, worse than the margin of -{margin:g}"]
    if interval and low < -margin:
        return False, [f"{drop:+.3f} {test.metric} on the run's test set, but its {level:.0%} interval reaches "
                       f"{low:+.3f}, below the margin of -{margin:g}: these {test.rows} rows cannot rule out a larger "
                       "drop (a larger test set narrows the interval)"]
    within = f"{drop:+.3f} {test.metric} on the run's test set, within the margin of -{margin:g}"
    return True, [within + (f" ({level:.0%} interval down to {low:+.3f})" if interval else "")]
