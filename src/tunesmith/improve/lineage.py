"""The generations of a served run: `tunesmith retrain` adds one, its gate decides whether it is
promoted, `tunesmith rollback` goes back one. `RUN/generations.json` records them all; its
`current` is the generation a server of RUN answers with (it looks again before each request, so
a promotion or a rollback takes effect without a restart).

Generation 0 is the run folder itself; generation N is the run folder RUN/generations/gen-N,
trained from generation N-1's model (or whichever generation was current when it was trained).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import RunError
from tunesmith.files import write_json_atomic

LINEAGE_FILE = "generations.json"


@dataclass(frozen=True)
class Generation:
    number: int
    run_folder: Path
    started_from: int | None  # the generation it was trained from
    promoted: bool  # the gate's verdict (generation 0: true)
    record: dict  # everything generations.json keeps about it (data, gate, times)


def lineage_path(run_dir: Path) -> Path:
    return Path(run_dir) / LINEAGE_FILE


def has_lineage(run_dir: Path) -> bool:
    return lineage_path(run_dir).is_file()


def read_lineage(run_dir: Path) -> dict:
    """generations.json, or the lineage a run without retraining has: generation 0 alone, current."""
    path = lineage_path(run_dir)
    if path.is_file():
        return json.loads(path.read_text())
    if not (Path(run_dir) / "manifest.json").is_file():
        raise RunError(f"{run_dir}: not a finished run folder (no manifest.json); give a folder `tunesmith train` wrote")
    return {"current": 0, "history": [{"current": 0, "at": _now(), "why": "trained"}],
            "generations": [{"generation": 0, "run_folder": ".", "started_from": None, "promoted": True,
                             "created": _now()}]}


def generations(run_dir: Path, lineage: dict | None = None) -> list[Generation]:
    lineage = lineage or read_lineage(run_dir)
    return [Generation(g["generation"], resolve(run_dir, g["run_folder"]), g["started_from"], g["promoted"], g)
            for g in lineage["generations"]]


def current_generation(run_dir: Path) -> Generation:
    lineage = read_lineage(run_dir)  # read once: `current` and the list from the same file
    return next(g for g in generations(run_dir, lineage) if g.number == lineage["current"])


def resolve(run_dir: Path, folder: str) -> Path:
    """A generation's folder, kept relative to the run so the run can be moved."""
    return (Path(run_dir) / folder).resolve()


def next_number(run_dir: Path) -> int:
    return max(g.number for g in generations(run_dir)) + 1


def add_generation(run_dir: Path, number: int, folder: Path, started_from: int, *, promoted: bool, record: dict) -> dict:
    """Record a trained generation (and make it current when promoted)."""
    lineage = read_lineage(run_dir)
    entry = {"generation": number, "run_folder": str(Path(folder).resolve().relative_to(Path(run_dir).resolve())),
             "started_from": started_from, "promoted": promoted, "created": _now(), **record}
    lineage["generations"].append(entry)
    if promoted:
        lineage["current"] = number
        lineage["history"].append({"current": number, "at": _now(), "why": f"generation {number} passed its gate"})
    write_json_atomic(lineage_path(run_dir), lineage)
    return lineage


def rollback(run_dir: Path, to: int | None = None) -> tuple[int, int]:
    """Make the newest promoted generation before the current one (or `to`, any promoted one)
    current; returns (from, to)."""
    lineage = read_lineage(run_dir)
    current = lineage["current"]
    promoted = {g["generation"] for g in lineage["generations"] if g["promoted"]}
    if to is None:  # the newest promoted generation older than the current one
        earlier = sorted(number for number in promoted if number < current)
        if not earlier:
            raise RunError(f"{run_dir}: generation {current} is the first; nothing to roll back to")
        to = earlier[-1]
    if to not in promoted:
        raise RunError(f"{run_dir}: generation {to} was never promoted (promoted: {sorted(promoted)}); "
                       "give one of those")
    if to == current:
        raise RunError(f"{run_dir}: generation {to} is already current")
    lineage["current"] = to
    lineage["history"].append({"current": to, "at": _now(), "why": f"rollback from generation {current}"})
    write_json_atomic(lineage_path(run_dir), lineage)
    return current, to


def _now() -> int:
    return int(time.time())
