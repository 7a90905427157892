"""The data audit: is the data set as a whole fit to train on? Duplicates, leakage into held-out
rows, personal and secret data, label balance and label noise, suspicious rows, preference pairs.

Row validation (data/read, data/formats) says whether each row is well formed; the audit looks
across rows, before any model is loaded. It reports; it never changes a file. `write_cleaned`
writes a new file without duplicates and/or with personal data replaced by placeholders (only the
spans `find_pii` reports; everything else is written as read).

Duplicates and leakage compare what a row asks and answers: system turns are left out (a system
prompt shared by every row would make every pair alike), and so are word runs that most rows share
(an instruction template, a stock opening); see duplicates.py. Personal data is searched in every
turn, system turns included.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.config import DataConfig
from tunesmith.data.audit.checks import (
    Finding,
    label_summary,
    language_outliers,
    preference_findings,
    suspicious_rows,
    words_by_label,
)
from tunesmith.data.audit.duplicates import DuplicateGroup, Leak, find_duplicates, find_leaks
from tunesmith.data.audit.pii import find_pii
from tunesmith.data.audit.rows import AuditRow, audit_row
from tunesmith.data.pipeline import read_source

AUDIT_VERSION = 1  # the JSON's shape; raised when a key changes meaning


@dataclass
class AuditReport:
    source: str
    rows: int
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    leaks: list[Leak] = field(default_factory=list)
    held_out: dict[str, int] = field(default_factory=dict)  # file -> rows checked for leakage
    pii: dict[str, list[str]] = field(default_factory=dict)  # kind -> file:line of each row holding one
    labels: dict | None = None
    findings: list[Finding] = field(default_factory=list)
    groups: dict | None = None  # --groups: rows and label rates per group
    words_by_label: dict[str, list[int]] = field(default_factory=dict)  # for the report's plot; not in the JSON
    chosen_longer: float | None = None  # preference rows: share where the chosen reply is the longer one
    seconds: float = 0.0

    @property
    def duplicate_rows(self) -> int:
        """Rows that --dedupe would remove: all but the first of each group."""
        return sum(len(group.rows) - 1 for group in self.duplicates)

    def as_dict(self) -> dict:
        return {"version": AUDIT_VERSION, "source": self.source, "rows": self.rows, "seconds": self.seconds,
                "duplicates": [asdict(g) for g in self.duplicates], "leaks": [asdict(leak) for leak in self.leaks],
                "held_out": self.held_out, "pii": self.pii, "labels": self.labels,
                "findings": [asdict(f) for f in self.findings], "groups": self.groups,
                "chosen_longer": self.chosen_longer}

    def summary_lines(self, examples: int = 3) -> list[str]:
        lines = [f"audit of {self.source}: {self.rows} rows in {self.seconds:.1f} s"]
        exact = [g for g in self.duplicates if g.exact]
        near = [g for g in self.duplicates if not g.exact]
        lines.append(f"duplicates: {len(exact)} groups of exact duplicates, {len(near)} of near duplicates "
                     f"({self.duplicate_rows} rows beyond the first of each; --dedupe removes them)")
        lines += [f"  {', '.join(g.rows[:4])}{' ...' if len(g.rows) > 4 else ''} (similarity {g.similarity:.2f})"
                  for g in self.duplicates[:examples]]
        for held, count in self.held_out.items():
            leaked = [leak for leak in self.leaks if leak.held_out.rsplit(":", 1)[0] == held]
            kinds = Counter(leak.kind for leak in leaked)
            lines.append(f"leakage: {len(leaked)} of {count} rows of {held} also appear in the training data "
                         f"({', '.join(f'{n} {k}' for k, n in kinds.items()) or 'none'})")
            lines += [f"  {leak.held_out} ~ {leak.train} ({leak.kind})" for leak in leaked[:examples]]
        if self.pii:
            lines.append("personal or secret data: " + ", ".join(f"{kind} in {len(w)} rows" for kind, w in self.pii.items())
                         + " (--scrub replaces each with a placeholder)")
            lines += [f"  {kind}: {', '.join(w[:examples])}" for kind, w in self.pii.items()]
        else:
            lines.append("personal or secret data: none found")
        if self.labels:
            counts = ", ".join(f"{label} {n}" for label, n in self.labels["counts"].items())
            lines.append(f"labels: {counts}; imbalance {self.labels['imbalance_ratio']:.1f}:1"
                         + ("; consider task.class_weights=balanced" if self.labels["suggest_class_weights"] else ""))
            if self.labels["singletons"]:
                lines.append(f"  labels seen once: {', '.join(self.labels['singletons'])}")
        for name, group in (self.groups or {}).items():
            rates = ", ".join(f"{label} {share:.0%}" for label, share in group["label_rates"].items())
            lines.append(f"group {name}: {group['rows']} rows; {rates or 'no rows'}")
        if self.chosen_longer is not None:
            lines.append(f"preference pairs: the chosen reply is the longer one in {self.chosen_longer:.0%} of pairs"
                         + (" (a length bias the model may learn)" if abs(self.chosen_longer - 0.5) > 0.2 else ""))
        by_check = Counter(f.check for f in self.findings)
        if by_check:
            lines.append("rows to look at: " + ", ".join(f"{n} {check}" for check, n in by_check.items()))
            lines += [f"  {f}" for f in self.findings[:examples * 2]]
        return lines

    @property
    def clean(self) -> bool:
        return not (self.duplicates or self.leaks or self.pii or self.findings)


def load_rows(path: Path, data: DataConfig, problems: list[Finding] | None = None) -> list[AuditRow]:
    """The rows the audit sees; rows that fail validation go to `problems` (as `invalid` findings)."""
    source = read_source(path, data)
    if problems is not None:
        problems += [Finding("invalid", p.where, p.what, p.fix or "fix or remove the row") for p in source.problems]
    return [audit_row(example) for example in source.examples]


def run_audit(train: Path, data: DataConfig | None = None, held_out: list[Path] | None = None,
              groups: str | Path | None = None, pii_detector: str = "builtin") -> AuditReport:
    """Every check on the rows of `train`; leakage against each of `held_out`; with `groups` (a YAML
    of group -> terms), the label rates of each group. `pii_detector="presidio"` adds Presidio's
    findings to the built-in ones."""
    extra = None
    if pii_detector == "presidio":
        from tunesmith.data.audit.pii import presidio_finder

        extra = presidio_finder()
    started = time.perf_counter()
    data = data or DataConfig()
    invalid: list[Finding] = []
    rows = load_rows(train, data, invalid)
    report = AuditReport(str(train), len(rows) + len({f.where for f in invalid}), findings=invalid)
    # label rows are compared by their text alone, so that one text under two labels is found (label noise)
    wheres, texts = [row.where for row in rows], [row.input if row.label is not None else row.text for row in rows]
    report.duplicates = find_duplicates(wheres, texts)
    for path in held_out or []:
        held = load_rows(path, data)
        report.held_out[held[0].where.rsplit(":", 1)[0] if held else str(path)] = len(held)
        report.leaks += find_leaks(wheres, [row.input for row in rows], [row.where for row in held],
                                   [row.input for row in held], [row.answer for row in rows], [row.answer for row in held])
    report.pii = _pii_rows(rows, extra)
    report.labels = label_summary(rows)
    report.words_by_label = words_by_label(rows)
    if groups and report.labels:
        from tunesmith.data.audit.slices import label_rates, load_groups

        labelled = [row for row in rows if row.label is not None]
        report.groups = label_rates([r.input for r in labelled], [str(r.label) for r in labelled], load_groups(groups))
    if report.labels:
        report.findings += _label_noise(rows, report.duplicates)
    report.findings += suspicious_rows(rows)
    report.findings += language_outliers(rows)
    pair_findings, report.chosen_longer = preference_findings(rows)
    report.findings += pair_findings
    report.seconds = time.perf_counter() - started
    return report


def _pii_rows(rows: list[AuditRow], extra: Callable[[str], list] | None) -> dict[str, list[str]]:
    """Kind -> the rows holding one, system turns included; a system prompt that every row repeats
    is searched once."""
    def kinds(text: str) -> list[str]:
        return [f.kind for f in find_pii(text) + (extra(text) if extra else [])]

    in_system: dict[str, list[str]] = {}
    found: dict[str, list[str]] = {}
    for row in rows:
        if row.system and row.system not in in_system:
            in_system[row.system] = kinds(row.system)
        for kind in dict.fromkeys(in_system.get(row.system, []) + kinds(row.text)):
            found.setdefault(kind, []).append(row.where)
    return found


def _label_noise(rows: list[AuditRow], groups: list[DuplicateGroup]) -> list[Finding]:
    """Duplicate groups whose rows carry different labels: one of them is probably wrong."""
    label_of = {row.where: row.label for row in rows}
    findings = []
    for group in groups:
        labels = {label_of[where] for where in group.rows}
        if len(labels) > 1:
            findings.append(Finding("label-noise", group.rows[0], f"the same text (similarity {group.similarity:.2f}) has "
                                    f"labels {', '.join(sorted(map(str, labels)))} at {', '.join(group.rows)}",
                                    "keep the right label, remove the others"))
    return findings
