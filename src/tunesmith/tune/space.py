"""The search space file: which settings a study varies, over what ranges, and what it optimises.

    train.learning_rate: {float: [1.0e-5, 1.0e-3], log: true}
    lora.rank: {choice: [4, 8, 16, 32]}
    train.max_steps: {int: [20, 200], step: 20}
    objective: {metric: val_loss, direction: minimize}

Every other key is a setting path (`tunesmith settings` lists them); an unknown one is an error
naming the closest valid path. A trial's config is the base config with the sampled values laid
over it, built and checked by config.py exactly as a `--set` would be.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.config import RunConfig, build_config, config_to_dict, describe_settings, read_yaml
from tunesmith.errors import ConfigError

# Objectives: the validation loss the loop measures, or a task metric of the trained run on the
# validation rows (computed after training with the evaluation code `tunesmith eval` uses).
METRICS = {"val_loss": "minimize", "accuracy": "maximize", "macro_f1": "maximize", "exact_match": "maximize"}
_KINDS = ("float", "int", "choice")
_OPTIONS = {"float": {"log", "step"}, "int": {"log", "step"}, "choice": set()}


@dataclass(frozen=True)
class Param:
    """One searched setting."""

    path: str
    """Setting path such as train.learning_rate."""
    kind: Literal["float", "int", "choice"]
    """float or int range, or a choice among listed values."""
    low: float | int | None = None
    """Lowest value of a range (included)."""
    high: float | int | None = None
    """Highest value of a range (included)."""
    log: bool = False
    """Sample a range on a log scale (learning rates)."""
    step: float | int | None = None
    """Spacing of a range's values (needed by the grid sampler for floats)."""
    choices: tuple[Any, ...] = ()
    """The values of a choice."""

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid_values(self) -> list[Any]:
        """Every value the grid sampler tries."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(f"{self.path}: the grid sampler needs `step` on a float range (or a choice list)")
        count = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 12) for i in range(count + 1)]


@dataclass(frozen=True)
class Objective:
    """What a study optimises."""

    metric: str = "val_loss"
    """val_loss, or a task metric on the validation rows: accuracy, macro_f1, exact_match."""
    direction: Literal["minimize", "maximize"] = "minimize"
    """minimize or maximize (default: the metric's natural direction)."""


@dataclass(frozen=True)
class SearchSpace:
    """The searched settings and the objective, as read from a space file."""

    params: tuple[Param, ...]
    """The settings varied, in file order."""
    objective: Objective = field(default_factory=Objective)
    """What the study optimises."""

    def grid(self) -> dict[str, list[Any]]:
        return {param.path: param.grid_values() for param in self.params}


def load_space(path: str | Path) -> SearchSpace:
    """A space file, every problem in it reported at once."""
    raw = read_yaml(Path(path), "no such space file; check the path")
    return parse_space(raw, str(path))


def parse_space(raw: Any, where: str = "space") -> SearchSpace:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a mapping of setting paths to ranges, such as "
                          "train.learning_rate: {float: [1.0e-5, 1.0e-3], log: true}")
    valid = [key for key, _, _ in describe_settings()]
    problems: list[str] = []
    objective = Objective()
    params = []
    for key, spec in raw.items():
        key = str(key)
        if key == "objective":
            objective = _objective(spec, where, problems)
        elif key not in valid:
            close = difflib.get_close_matches(key, [*valid, "objective"], n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else "; `tunesmith settings` lists the setting paths"
            problems.append(f"unknown setting '{key}'{hint}")
        else:
            param = _param(key, spec, problems)
            if param is not None:
                params.append(param)
    if not params and not problems:
        problems.append("no setting to search; add one such as lora.rank: {choice: [8, 16]}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return SearchSpace(tuple(params), objective)


def _objective(spec: Any, where: str, problems: list[str]) -> Objective:
    if not isinstance(spec, dict) or set(spec) - {"metric", "direction"}:
        problems.append("objective: expected {metric: NAME, direction: minimize|maximize}")
        return Objective()
    metric = str(spec.get("metric", "val_loss"))
    if metric not in METRICS:
        close = difflib.get_close_matches(metric, list(METRICS), n=1)
        problems.append(f"objective.metric={metric!r} is not one of {', '.join(METRICS)}"
                        + (f"; did you mean '{close[0]}'?" if close else ""))
        return Objective()
    direction = spec.get("direction", METRICS[metric])
    if direction not in ("minimize", "maximize"):
        problems.append(f"objective.direction={direction!r} must be minimize or maximize")
        return Objective()
    return Objective(metric, direction)


def _param(key: str, spec: Any, problems: list[str]) -> Param | None:
    kinds = [kind for kind in _KINDS if isinstance(spec, dict) and kind in spec]
    if len(kinds) != 1:
        problems.append(f"{key}: expected one of {{float: [low, high]}}, {{int: [low, high]}} or {{choice: [a, b, ...]}}")
        return None
    kind = kinds[0]
    extra = set(spec) - {kind} - _OPTIONS[kind]
    if extra:
        close = difflib.get_close_matches(str(sorted(extra)[0]), sorted(_OPTIONS[kind]), n=1)
        problems.append(f"{key}: unknown option '{sorted(extra)[0]}'" + (f"; did you mean '{close[0]}'?" if close else ""))
        return None
    values = spec[kind]
    if kind == "choice":
        if not isinstance(values, list) or not values:
            problems.append(f"{key}: choice needs a list of values")
            return None
        return Param(key, "choice", choices=tuple(values))
    number = int if kind == "int" else (int, float)
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, number) and not isinstance(v, bool) for v in values) or values[0] > values[1]):
        problems.append(f"{key}: {kind} needs [low, high] with low <= high")
        return None
    if spec.get("log") and values[0] <= 0:
        problems.append(f"{key}: a log range needs low > 0")
        return None
    if spec.get("log") and spec.get("step") is not None:
        problems.append(f"{key}: give log or step, not both")
        return None
    return Param(key, kind, values[0], values[1], bool(spec.get("log", False)), spec.get("step"))


def apply_values(base: RunConfig, values: dict[str, Any]) -> RunConfig:
    """The base config with each `path: value` laid over it, checked like any config."""
    raw = config_to_dict(base)
    for path, value in values.items():
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return build_config(raw)
