"""`tunesmith feedback export`: what users said about a served run's answers, as training rows.

SFT rows: a corrected answer (the correction), or an answer users liked (mean score above zero).
DPO pairs, in OpenAI's preference format: (prompt, correction, the answer it corrects), and
(prompt, an answer liked, an answer disliked) for the same prompt. Every export goes through the
audit before it is written: personal data scrubbed, duplicates within the export removed, prompts
that are (nearly) rows of the run's test set dropped (the retrain gate scores that set; training on
it would pass the gate by leakage), and rows that repeat a training row with the same answer
dropped (nothing new to learn). The report says what was dropped and why.

A label run's SFT rows are label rows (`text`, `label`): the prompt is read back through the run's
task template and the answer mapped to a label, so a retrain trains them exactly as the run did.

An export reads one project: completions are kept in the project of the key that asked, and one
project's prompts and corrections must not become rows another project's model is trained on
(store.completions.choose_project says which project when none is named). The report counts the
feedback each key gave (by fingerprint), so one key steering the rows shows.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["sft", "dpo"]


@dataclass
class ExportReport:
    output: Path
    kind: Kind
    completions: int  # stored completions of the run that were read
    with_feedback: int
    written: int
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    scrubbed: int = 0  # personal data found and replaced
    project: str | None = None  # the project read (None: the store held no completion of the run)
    by_key: Counter = field(default_factory=Counter)  # key fingerprint ("none": not recorded) -> feedback rows read

    def summary(self) -> str:
        dropped = ", ".join(f"{count} {reason}" for reason, count in self.dropped.most_common()) or "none"
        keys = ", ".join(f"{key} {count}" for key, count in self.by_key.most_common(3)) or "none"
        return (f"{self.output}: {self.written} {self.kind} rows from {self.with_feedback} completions with feedback "
                f"(of {self.completions} stored in project {self.project or '-'}); dropped: {dropped}; personal data "
                f"replaced: {self.scrubbed}; feedback rows by key: {keys}"
                + (f" (of {len(self.by_key)} keys)" if len(self.by_key) > 3 else ""))

    def as_dict(self) -> dict:
        return {"output": str(self.output), "kind": self.kind, "project": self.project, "completions": self.completions,
                "with_feedback": self.with_feedback, "written": self.written, "dropped": dict(self.dropped),
                "scrubbed": self.scrubbed, "feedback_by_key": dict(self.by_key)}


@dataclass(frozen=True)
class Candidate:
    prompt: tuple[dict, ...]  # the messages, ending with the user turn
    chosen: str
    rejected: str | None = None  # DPO pairs only
    why: str = ""


def open_completions(run_dir: Path, store_url: str | None):
    from tunesmith.store.completions import Completions, run_store_url
    from tunesmith.store.db import open_store

    return Completions(open_store(run_store_url(run_dir, store_url)))


def export_feedback(run_dir: Path, output: Path, kind: Kind, *, store_url: str | None = None,
                    project: str | None = None) -> ExportReport:
    """Write the feedback on the run's completions in `project` as `kind` rows to `output` (JSONL),
    audited; returns what happened. Without `project`, the one project the store holds completions
    of the run in; several are an error (choose_project)."""
    from tunesmith.files import write_atomic
    from tunesmith.pipeline.folder import run_config
    from tunesmith.store.completions import choose_project

    run_dir = Path(run_dir).resolve()
    config = run_config(run_dir)
    task = _task_of(run_dir)
    completions = open_completions(run_dir, store_url)
    project = choose_project(completions.projects(str(run_dir)), project, f"the run {run_dir}")
    rows = completions.rows(run_dir=str(run_dir), with_errors=False, project=project) if project is not None else []
    feedback = completions.feedback([row.id for row in rows], project=project) if rows else {}
    report = ExportReport(Path(output), kind, len(rows), sum(1 for row in rows if row.id in feedback), 0,
                          project=project, by_key=Counter(f.key_fingerprint or "none" for given in feedback.values()
                                                          for f in given))
    candidates = sft_candidates(rows, feedback, report) if kind == "sft" else dpo_candidates(rows, feedback, report)
    candidates = _scrubbed(candidates, report)
    candidates = _deduplicated(candidates, report)
    candidates = _without_test_rows(candidates, config, task, report)
    lines = []
    for candidate in candidates:
        line = _line(candidate, kind, task, report)
        if line is not None:
            lines.append(line)
    lines = _new_to_training(lines, kind, config, task, report)
    report.written = len(lines)
    write_atomic(output, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return report


def sft_candidates(rows: list, feedback: dict[str, list], report: ExportReport) -> list[Candidate]:
    found = []
    for row in rows:
        given = feedback.get(row.id)
        if not given:
            continue
        corrections = [f.correction for f in given if f.correction and f.correction.strip()]
        scores = [f.score for f in given if f.score is not None]
        if corrections:
            found.append(Candidate(tuple(row.messages), corrections[-1].strip(), why="correction"))
        elif scores and sum(scores) / len(scores) > 0 and row.answer:
            found.append(Candidate(tuple(row.messages), row.answer.strip(), why="liked"))
        else:
            report.dropped["disliked or unscored, without a correction"] += 1
    return found


def dpo_candidates(rows: list, feedback: dict[str, list], report: ExportReport) -> list[Candidate]:
    found, liked, disliked = [], defaultdict(list), defaultdict(list)
    for row in rows:
        given = feedback.get(row.id)
        if not given or not row.answer:
            continue
        key = json.dumps(row.messages, sort_keys=True)
        corrections = [f.correction.strip() for f in given if f.correction and f.correction.strip()]
        scores = [f.score for f in given if f.score is not None]
        mean = sum(scores) / len(scores) if scores else None
        if corrections and corrections[-1] != row.answer.strip():
            found.append(Candidate(tuple(row.messages), corrections[-1], row.answer.strip(), "correction"))
        elif mean is not None and mean > 0:
            liked[key].append(row)
        elif mean is not None and mean < 0:
            disliked[key].append(row)
        else:
            report.dropped["no preference (unscored, or a correction equal to the answer)"] += 1
    for key, bad_rows in disliked.items():
        good = liked.get(key)
        if not good:
            report.dropped["disliked, with no liked answer or correction to pair it with"] += len(bad_rows)
            continue
        for bad in bad_rows:
            found.append(Candidate(tuple(bad.messages), good[0].answer.strip(), bad.answer.strip(), "liked vs disliked"))
    for key, good_rows in liked.items():
        if key not in disliked:
            report.dropped["liked, with no disliked answer to pair it with"] += len(good_rows)
    return found


def _scrubbed(candidates: list[Candidate], report: ExportReport) -> list[Candidate]:
    from tunesmith.data.audit.pii import scrub

    def clean(text: str | None) -> str | None:
        if text is None:
            return None
        text, found = scrub(text)
        report.scrubbed += len(found)
        return text

    return [Candidate(tuple({**m, "content": clean(m["content"])} for m in c.prompt), clean(c.chosen), clean(c.rejected),
                      c.why) for c in candidates]


def _deduplicated(candidates: list[Candidate], report: ExportReport) -> list[Candidate]:
    seen, kept = set(), []
    for candidate in candidates:
        key = (json.dumps(candidate.prompt, sort_keys=True), candidate.chosen.strip().lower(),
               (candidate.rejected or "").strip().lower())
        if key in seen:
            report.dropped["duplicate within the export"] += 1
            continue
        seen.add(key)
        kept.append(candidate)
    return kept


def _last_user(prompt: tuple[dict, ...]) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def _key(candidate: Candidate, task) -> str:
    """The task input: a label run's text read back from its prompt, else the last user message."""
    text = _last_user(candidate.prompt)
    return (parse_label_prompt(text, task) or text) if task is not None else text


def _without_test_rows(candidates: list[Candidate], config, task, report: ExportReport) -> list[Candidate]:
    if not config.eval.test or not candidates:
        return candidates
    from tunesmith.data.audit.duplicates import find_leaks
    from tunesmith.eval.items import load_items

    items, _ = load_items(config.eval.test, config.data, task, config.task, skip_invalid=True)
    keys = [_key(c, task) for c in candidates]
    leaks = find_leaks([i.where for i in items], [i.key for i in items], [str(n) for n in range(len(keys))], keys,
                       [i.reference for i in items], [c.chosen for c in candidates])
    leaked = {int(leak.held_out) for leak in leaks}
    if leaked:
        report.dropped["prompt of the run's test set (the gate scores it)"] += len(leaked)
    return [c for n, c in enumerate(candidates) if n not in leaked]


def _line(candidate: Candidate, kind: Kind, task, report: ExportReport) -> dict | None:
    if kind == "dpo":
        return {"input": {"messages": list(candidate.prompt)},
                "preferred_output": [{"role": "assistant", "content": candidate.chosen}],
                "non_preferred_output": [{"role": "assistant", "content": candidate.rejected}]}
    if task is None:
        return {"messages": [*candidate.prompt, {"role": "assistant", "content": candidate.chosen}]}
    from tunesmith.eval.metrics import map_answer_to_label

    text = parse_label_prompt(_last_user(candidate.prompt), task)
    if text is None:
        report.dropped["not a prompt of the run's task template"] += 1
        return None
    label, _ = map_answer_to_label(candidate.chosen, list(task.labels))
    if label is None:
        report.dropped["answer is none of the run's labels"] += 1
        return None
    raw = {shown: raw for raw, shown in task.label_names}.get(label, label)
    return {"text": text, "label": raw}


def _new_to_training(lines: list[dict], kind: Kind, config, task, report: ExportReport) -> list[dict]:
    """Drop rows that repeat a training row with the same answer."""
    from tunesmith.data.catalog import resolve_data_path
    from tunesmith.data.pipeline import read_source

    if kind == "dpo" or not config.data.train or not lines:
        return lines
    examples = read_source(Path(resolve_data_path(config.data.train)), config.data).examples
    known = set()
    for example in examples:
        if example.kind == "label":
            known.add((example.text.strip(), example.label.strip()))
        elif example.messages:
            user = next((m.content for m in reversed(example.messages) if m.role == "user"), "")
            answer = example.messages[-1].content if example.messages[-1].role == "assistant" else ""
            known.add((user.strip(), answer.strip()))
    kept = []
    for line in lines:
        pair = ((line["text"].strip(), line["label"].strip()) if "text" in line else
                (_last_user(tuple(line["messages"][:-1])).strip(), line["messages"][-1]["content"].strip()))
        if pair in known:
            report.dropped["already a training row with the same answer"] += 1
        else:
            kept.append(line)
    return kept


def parse_label_prompt(prompt: str, task) -> str | None:
    """The text a label task's template was filled with to give `prompt`, or None if it was not."""
    sentinel = "\x00TEXT\x00"
    rendered = task.prompt(sentinel)
    if rendered.count(sentinel) != 1:
        return None
    prefix, suffix = rendered.split(sentinel)
    if prompt.startswith(prefix) and prompt.endswith(suffix) and len(prompt) >= len(prefix) + len(suffix):
        return prompt[len(prefix):len(prompt) - len(suffix)]
    return None


def _task_of(run_dir: Path):
    from tunesmith.data.tasks import LabelTask

    return LabelTask.load(Path(run_dir) / "task.json")
