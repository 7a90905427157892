"""Tool-call metrics: one predicted assistant turn against the reference turn, as pure functions.

A turn's calls are compared as a multiset, so the order of parallel calls never matters:
- call accuracy: the same functions, each as many times (no call when none is due counts as right);
- arguments exact: the same calls, arguments included, compared as JSON values (3 equals 3.0, the
  string "3" does not; key order and spacing do not matter);
- argument accuracy: the share of the reference's arguments whose value the predicted call of the
  same function has, calls paired for the most matches (rows without reference arguments: n/a);
- schema valid: the share of predicted calls whose arguments parse as JSON and validate against the
  tool's `parameters` schema (jsonschema), a call of an unknown tool being invalid (no calls: n/a).

Shares are pooled over rows (argument accuracy = matched / all reference arguments), and their
paired bootstrap intervals resample rows with the draws of eval/intervals.py, so that a
base-vs-tuned comparison reports each metric with the interval of its gain.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.data.examples import Message, ToolCall
from tunesmith.eval.intervals import LEVEL, RESAMPLES, Interval, resample_indices

# (name, arguments as JSON text), a ToolCall, or an OpenAI tool call {"type": "function", "function": {...}}
PredictedCall = tuple[str, str | Mapping[str, Any]] | ToolCall | Mapping[str, Any]
Pair = tuple[str, str]
METRICS = ("call_accuracy", "arguments_exact", "argument_accuracy", "schema_valid")


@dataclass(frozen=True)
class TurnScore:
    """One predicted turn's scores, as counts so that rows pool into shares."""

    calls_right: bool
    arguments_exact: bool
    arguments_matched: int  # reference arguments whose value a paired predicted call has
    arguments_total: int  # arguments in the reference's calls
    calls_valid: int  # predicted calls that parse and validate against their tool's schema
    calls_predicted: int

    def counts(self) -> dict[str, tuple[int, int]]:
        """(numerator, denominator) of each metric on this row."""
        return {"call_accuracy": (int(self.calls_right), 1), "arguments_exact": (int(self.arguments_exact), 1),
                "argument_accuracy": (self.arguments_matched, self.arguments_total),
                "schema_valid": (self.calls_valid, self.calls_predicted)}


@dataclass(frozen=True)
class ReferenceTurn:
    """An assistant turn of a reference conversation and the conversation before it (the prompt)."""

    messages: list[dict[str, Any]]
    reference: dict[str, Any]
    final: bool  # the conversation's last turn (the answer)


def as_pairs(calls: Sequence[PredictedCall]) -> list[Pair]:
    """Calls as (name, arguments JSON text), whatever shape they came in: (name, arguments), a
    `ToolCall`, or OpenAI's {"type": "function", "function": {"name", "arguments"}}."""
    pairs = []
    for call in calls:
        if isinstance(call, ToolCall):
            name, arguments = call.name, call.arguments
        elif isinstance(call, Mapping):
            function = call.get("function", call)
            name, arguments = function["name"], function.get("arguments", "{}")
        else:
            name, arguments = call
        pairs.append((name, arguments if isinstance(arguments, str) else json.dumps(arguments)))
    return pairs


def reference_calls(message: Mapping[str, Any] | Message) -> list[Pair]:
    """The calls of an assistant message: an OpenAI-format dict or a `Message`."""
    if isinstance(message, Message):
        return as_pairs(message.tool_calls)
    return as_pairs(message.get("tool_calls") or [])


def reference_turns(row: Mapping[str, Any]) -> list[ReferenceTurn]:
    """Every assistant turn of a row (OpenAI chat format), with the messages before it: the prompts a
    turn-by-turn evaluation asks the model to continue."""
    messages = list(row["messages"])
    positions = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
    return [ReferenceTurn(messages[:index], messages[index], index == positions[-1]) for index in positions]


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 3.0 -> 3 (a bool is an int, never a float, and stays a bool)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def canonical_json(text: str) -> str | None:
    """JSON text in one spelling (sorted keys, numbers as numbers), None when it does not parse."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return json.dumps(_canonical(value), sort_keys=True, ensure_ascii=False)


def _arguments(text: str) -> dict[str, str] | None:
    """Each argument's value in canonical JSON, None when the arguments are not a JSON object."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    return {key: json.dumps(_canonical(item), sort_keys=True, ensure_ascii=False) for key, item in value.items()}


def call_accuracy(reference: Sequence[PredictedCall], predicted: Sequence[PredictedCall]) -> float:
    """1.0 when the same functions are called, each as often (including no call when none is due)."""
    return float(Counter(name for name, _ in as_pairs(reference)) == Counter(name for name, _ in as_pairs(predicted)))


def arguments_exact_match(reference: Sequence[PredictedCall], predicted: Sequence[PredictedCall]) -> float:
    """1.0 when the calls, arguments included, are the same multiset (a call whose arguments do not
    parse matches nothing)."""
    def spelled(calls: Sequence[PredictedCall]) -> Counter:
        return Counter((name, canonical_json(arguments) or object()) for name, arguments in as_pairs(calls))

    return float(spelled(reference) == spelled(predicted))


def _matched_arguments(reference: Sequence[PredictedCall], predicted: Sequence[PredictedCall]) -> tuple[int, int]:
    """(reference arguments matched, reference arguments) under the pairing of calls with the most matches."""
    wanted = []
    for name, arguments in as_pairs(reference):
        parsed = _arguments(arguments)
        if parsed is None:
            raise ValueError(f"the reference call {name}({arguments}) does not have a JSON object as arguments; fix the reference row")
        wanted.append((name, parsed))
    offered = [(name, _arguments(arguments) or {}) for name, arguments in as_pairs(predicted)]
    return _best_pairing(tuple(wanted), tuple(offered)), sum(len(arguments) for _, arguments in wanted)


def _best_pairing(wanted: tuple[tuple[str, dict[str, str]], ...], offered: tuple[tuple[str, dict[str, str]], ...]) -> int:
    """The most reference arguments matched when each predicted call serves at most one reference call
    (an exhaustive search: a turn has a handful of calls, and greedy pairing can miss the best)."""
    if not wanted:
        return 0
    (name, arguments), rest = wanted[0], wanted[1:]
    best = _best_pairing(rest, offered)  # this reference call left unpaired
    for index, (offered_name, offered_arguments) in enumerate(offered):
        shared = sum(offered_arguments.get(key) == value for key, value in arguments.items()) if offered_name == name else 0
        if shared:
            best = max(best, shared + _best_pairing(rest, offered[:index] + offered[index + 1:]))
    return best


def argument_accuracy(reference: Sequence[PredictedCall], predicted: Sequence[PredictedCall]) -> float | None:
    """The share of the reference's arguments that the paired predicted calls have (None: no arguments due)."""
    matched, total = _matched_arguments(reference, predicted)
    return matched / total if total else None


@functools.lru_cache(maxsize=64)
def _validator(parameters_json: str) -> Any:
    import jsonschema  # here: only tool-call evaluations need it

    parameters = json.loads(parameters_json)
    try:
        jsonschema.validators.validator_for(parameters).check_schema(parameters)
    except jsonschema.SchemaError as error:
        raise ValueError(f"a tool's parameters are not a valid JSON schema ({error.message}); fix the row's tools") from None
    return jsonschema.validators.validator_for(parameters)(parameters)


def _schemas(tools: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each tool's parameters schema as JSON text, by name (OpenAI's {"type": "function", "function": ...})."""
    functions = (tool.get("function", tool) for tool in tools)
    return {function["name"]: json.dumps(function.get("parameters") or {"type": "object"}, sort_keys=True)
            for function in functions}


def _valid_calls(predicted: Sequence[PredictedCall], tools: Sequence[Mapping[str, Any]]) -> int:
    schemas = _schemas(tools)
    valid = 0
    for name, arguments in as_pairs(predicted):
        try:
            parsed = json.loads(arguments)
        except (TypeError, ValueError):
            continue
        valid += name in schemas and _validator(schemas[name]).is_valid(parsed)
    return valid


def schema_valid_share(predicted: Sequence[PredictedCall], tools: Sequence[Mapping[str, Any]]) -> float | None:
    """The share of predicted calls that parse as JSON and validate against their tool's schema (None: no calls)."""
    return _valid_calls(predicted, tools) / len(predicted) if predicted else None


def score_turn(reference: Mapping[str, Any] | Message, predicted: Sequence[PredictedCall],
               tools: Sequence[Mapping[str, Any]]) -> TurnScore:
    """Every metric of one predicted turn against the reference assistant message."""
    expected = reference_calls(reference)
    matched, total = _matched_arguments(expected, predicted)
    return TurnScore(calls_right=bool(call_accuracy(expected, predicted)),
                     arguments_exact=bool(arguments_exact_match(expected, predicted)),
                     arguments_matched=matched, arguments_total=total,
                     calls_valid=_valid_calls(predicted, tools), calls_predicted=len(predicted))


def summarize(scores: Sequence[TurnScore]) -> dict[str, float | None]:
    """Each metric pooled over rows (None where no row has a denominator: no arguments due, no calls made)."""
    totals = {metric: np.array([score.counts()[metric] for score in scores]).reshape(-1, 2).sum(axis=0)
              for metric in METRICS}
    return {metric: float(top / bottom) if bottom else None for metric, (top, bottom) in totals.items()}


def ratio_intervals(counts: Mapping[str, Mapping[str, np.ndarray]], tuned: str | None, *, resamples: int = RESAMPLES,
                    seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, dict[str, Interval | None]]]:
    """Pooled shares (sum of numerators / sum of denominators) of every system, and the gain of `tuned`
    over each other system, with paired bootstrap intervals: every system is resampled with the same
    row draws. `counts` maps system -> metric -> [rows, 2] (numerator, denominator). A share with no
    denominator is None; resamples without one are left out of the interval."""
    rows = {len(values) for metrics in counts.values() for values in metrics.values()}
    if len(rows) > 1:
        raise ValueError(f"paired intervals need every system scored on the same rows (got {sorted(rows)} rows)")
    draws = resample_indices(rows.pop() if rows else 0, resamples=resamples, seed=seed)
    result: dict[str, dict[str, dict[str, Interval | None]]] = {"systems": {}, "gains": {}}
    shares = {name: {metric: _shares(values, draws) for metric, values in metrics.items()} for name, metrics in counts.items()}
    for name, metrics in shares.items():
        result["systems"][name] = {metric: _interval(*pair, level) for metric, pair in metrics.items()}
        if tuned in shares and name != tuned:
            result["gains"][name] = {metric: _interval(shares[tuned][metric][0] - estimate,
                                                       shares[tuned][metric][1] - resampled, level)
                                     for metric, (estimate, resampled) in metrics.items()}
    return result


def tool_call_intervals(scores: Mapping[str, Sequence[TurnScore]], tuned: str | None, *, resamples: int = RESAMPLES,
                        seed: int = 0) -> dict[str, dict[str, dict[str, Interval | None]]]:
    """Every system's tool-call metrics with intervals, and the gain of `tuned` over each other system
    ({"systems": {name: {metric: Interval}}, "gains": {name: {metric: Interval of tuned - name}}})."""
    counts = {name: {metric: np.array([score.counts()[metric] for score in rows], dtype=np.float64).reshape(-1, 2)
                     for metric in METRICS} for name, rows in scores.items()}
    return ratio_intervals(counts, tuned, resamples=resamples, seed=seed)


def _shares(values: np.ndarray, draws: np.ndarray) -> tuple[float, np.ndarray]:
    """The pooled share on all rows (nan without a denominator) and on each resample of rows."""
    numerators, denominators = values[:, 0], values[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        whole = numerators.sum() / denominators.sum() if denominators.sum() else float("nan")
        return float(whole), numerators[draws].sum(axis=1) / denominators[draws].sum(axis=1)


def _interval(estimate: float, resampled: np.ndarray, level: float) -> Interval | None:
    if np.isnan(estimate):
        return None
    kept = resampled[~np.isnan(resampled)]
    if not kept.size:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), len(kept), level)
