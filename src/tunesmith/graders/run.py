"""Grading samples: one (`run_grader`, OpenAI's run response) or a batch (`grade_many`, rewards).

Both go through one `Grading`, so a batch's rewards are exactly the rewards each sample gets alone;
a batch differs only in sharing one python worker process and one model runner between samples.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

from tunesmith.graders.formula import evaluate_formula, parse_formula
from tunesmith.graders.model_graders import LocalModelRunner, ModelRunner, grade_with_model
from tunesmith.graders.outcome import Outcome, run_response
from tunesmith.graders.python_grader import PythonLimits, PythonWorker
from tunesmith.graders.schema import (
    Grader,
    MultiGrader,
    PythonGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from tunesmith.graders.similarity import similarity
from tunesmith.graders.templates import TemplateProblem, normalize_sample, render
from tunesmith.graders.validate import GraderError, validate_grader


def run_grader(grader: dict[str, Any] | Grader, *, sample: str | dict[str, Any], item: dict[str, Any] | None = None,
               allow_python: bool = False, model_runner: ModelRunner | None = None,
               python_limits: PythonLimits | None = None) -> dict[str, Any]:
    """Grade one sample: OpenAI's grader run response (reward, metadata, sub_rewards, ...).

    `sample` is the model's output text (the run endpoint's `model_sample`) or a dict of OpenAI's
    sample fields (output_text, output_json, output_tools); `item` is the data row. A python grader
    runs only with `allow_python=True`; model graders ask `model_runner` (default: LocalModelRunner).
    """
    checked = validate_grader(grader)
    started = time.perf_counter()
    with Grading(checked, allow_python=allow_python, model_runner=model_runner, python_limits=python_limits) as grading:
        outcome = grading.grade(normalize_sample(sample), _item(item))
    return run_response(checked.name, checked.type, outcome, time.perf_counter() - started)


def grade_many(grader: dict[str, Any] | Grader, samples: Sequence[str | dict[str, Any]],
               items: Sequence[dict[str, Any] | None], *, allow_python: bool = False,
               model_runner: ModelRunner | None = None, python_limits: PythonLimits | None = None) -> list[float]:
    """The reward of each sample against its item (training's rewards): one python worker process for
    the whole batch. A sample that cannot be graded gets 0, and one warning says how many and why."""
    checked = validate_grader(grader)
    outcomes = grade_outcomes(checked, samples, items, allow_python=allow_python, model_runner=model_runner,
                              python_limits=python_limits)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        warnings.warn(f"grader {checked.name!r}: {len(failed)} of {len(outcomes)} samples could not be graded and "
                      f"got reward 0; the first: {'; '.join(failed[0].messages)}", RuntimeWarning, stacklevel=2)
    return [outcome.reward for outcome in outcomes]


def grade_outcomes(grader: dict[str, Any] | Grader, samples: Sequence[str | dict[str, Any]],
                   items: Sequence[dict[str, Any] | None], *, allow_python: bool = False,
                   model_runner: ModelRunner | None = None, python_limits: PythonLimits | None = None) -> list[Outcome]:
    """Each sample's whole outcome (reward, sub-rewards, errors): what grade_many's rewards come from."""
    if len(samples) != len(items):
        raise GraderError(f"{len(samples)} samples and {len(items)} items; give one item per sample")
    checked = validate_grader(grader)
    with Grading(checked, allow_python=allow_python, model_runner=model_runner, python_limits=python_limits) as grading:
        return [grading.grade(normalize_sample(sample), _item(item)) for sample, item in zip(samples, items)]


def _item(item: dict[str, Any] | None) -> dict[str, Any]:
    if item is None:
        return {}
    if not isinstance(item, dict):
        raise GraderError(f"item: expected the data row as an object, got {type(item).__name__}")
    return item


class Grading:
    """A checked grader with what its kinds need: the python worker, the model runner."""

    def __init__(self, grader: Grader, *, allow_python: bool = False, model_runner: ModelRunner | None = None,
                 python_limits: PythonLimits | None = None) -> None:
        refuse_untrusted_python(grader, allow_python)
        self.grader = grader
        self.model_runner = model_runner
        self.formula = parse_formula(grader.calculate_output, set(grader.graders)) if isinstance(grader, MultiGrader) else None
        self.worker = PythonWorker(python_limits) if _has_python(grader) else None

    def grade(self, sample: dict[str, Any], item: dict[str, Any]) -> Outcome:
        if isinstance(self.grader, MultiGrader):
            return self._multi(self.grader, sample, item)
        return self._one(self.grader, sample, item)

    def _one(self, grader: Grader, sample: dict[str, Any], item: dict[str, Any]) -> Outcome:
        try:
            if isinstance(grader, StringCheckGrader):
                return Outcome(reward=string_check(grader.operation, render(grader.input, sample, item),
                                                   render(grader.reference, sample, item)))
            if isinstance(grader, TextSimilarityGrader):
                return Outcome(reward=similarity(grader.evaluation_metric, render(grader.input, sample, item),
                                                 render(grader.reference, sample, item)))
        except TemplateProblem as problem:
            return Outcome.failed(problem.kind, str(problem))
        if isinstance(grader, PythonGrader):
            return self._python(grader, sample, item)
        return grade_with_model(grader, sample, item, self.model_runner or default_model_runner())

    def _python(self, grader: PythonGrader, sample: dict[str, Any], item: dict[str, Any]) -> Outcome:
        result = self.worker.grade(grader.source, sample, item)
        if result.kind is None:
            return Outcome(reward=result.value)
        if result.kind == "runtime":
            return Outcome.failed("python_grader_runtime_error", result.error,
                                  python_grader_runtime_error_details=result.error)
        if result.kind == "timeout":
            return Outcome.failed("unresponsive_reward_error", result.error)
        return Outcome.failed("python_grader_server_error", result.error, python_grader_server_error_type="process_died")

    def _multi(self, grader: MultiGrader, sample: dict[str, Any], item: dict[str, Any]) -> Outcome:
        outcome = Outcome()
        for name, sub in grader.graders.items():
            sub_outcome = self._one(sub, sample, item)
            outcome.sub_rewards[name] = sub_outcome.reward
            if sub_outcome.scores:
                outcome.scores[name] = sub_outcome.scores
            outcome.take_errors(sub_outcome, name)
        try:
            reward = evaluate_formula(self.formula, outcome.sub_rewards)
        except (ArithmeticError, ValueError) as error:
            failed = Outcome.failed("other_error", f"calculate_output {grader.calculate_output!r}: {error}")
            outcome.take_errors(failed, "calculate_output")
            return outcome
        if not math.isfinite(reward):
            outcome.take_errors(Outcome.failed("other_error", f"the formula gave {reward}"), "calculate_output")
            return outcome
        outcome.reward = reward
        return outcome

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def __enter__(self) -> Grading:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def string_check(operation: str, text: str, reference: str) -> float:
    """OpenAI's string_check: eq and ne compare exactly; like: `text` contains `reference`; ilike: the
    same, ignoring case."""
    passed = {"eq": text == reference, "ne": text != reference, "like": reference in text,
              "ilike": reference.lower() in text.lower()}[operation]
    return 1.0 if passed else 0.0


def _has_python(grader: Grader) -> bool:
    return bool(python_paths(grader))


def python_paths(grader: Grader) -> list[str]:
    """Where `grader` holds python graders (`grader`, `grader.graders.NAME`)."""
    if isinstance(grader, PythonGrader):
        return ["grader"]
    if isinstance(grader, MultiGrader):
        return [f"grader.graders.{name}" for name, sub in grader.graders.items() if isinstance(sub, PythonGrader)]
    return []


def refuse_untrusted_python(grader: Grader, allow_python: bool) -> None:
    """GraderError unless the python graders in `grader` may run here."""
    paths = python_paths(grader)
    if paths and not allow_python:
        raise GraderError([f"{path}: a python grader runs its source code on this machine; it runs only when the "
                           "caller trusts it (allow_python=True; the CLI's and the server's trust flag): allow it only "
                           "for graders you wrote or whose author you trust" for path in paths])
    if paths and os.name != "posix":
        raise GraderError(f"{paths[0]}: python graders need a POSIX system (their limits are set with "
                          "resource.setrlimit); run them on Linux or macOS")


@functools.lru_cache(maxsize=1)
def default_model_runner() -> LocalModelRunner:
    """The local model runner on the catalog's default model, loaded once per process on first use."""
    return LocalModelRunner()
